/*
 * The dashboard's one mutable state object, and the render scheduler: a module that changes the
 * state calls schedule("rooms" | "roomKpis" | "roster" | "alerts"), and the renderers registered
 * under those names (by main.js) run once on the next animation frame.
 */

export const state = {
  config: null,
  wsUrl: "",
  token: "",
  claims: null,
  client: null, // the SpidiClient (spidi-client) of the signed-in token
  connState: "idle", // idle | connecting | connected | reconnecting | closed
  connDetail: null,
  retryAt: 0, // when the next connection attempt starts (epoch ms), while reconnecting
  rooms: new Map(),
  roomsLoaded: false,
  roomsAt: 0,
  sort: { key: "online", dir: -1 },
  filter: "",
  room: null,
  rosterSort: { key: "connectedAt", dir: -1 },
  rosterFilter: "",
  historyRange: "1h",
  alerts: new Map(), // "<ruleId>/<roomId>" -> open alert: the ALERT message, plus its acknowledgement
  alertsByRoom: new Map(), // roomCode -> the room's open alerts, worst first
  alertsReady: false,
  alertsError: null,
  acking: new Set(), // keys of the alerts whose acknowledgement is on its way
};

const renderers = {};
const pending = new Set();

/** Name the function that schedule(name) runs; main.js registers the views' renderers. */
export function setRenderers(map) {
  Object.assign(renderers, map);
}

export function schedule(what) {
  if (pending.size === 0) requestAnimationFrame(flushRenders);
  pending.add(what);
}

function flushRenders() {
  const items = [...pending];
  pending.clear();
  for (const what of items) {
    const render = renderers[what];
    if (render) render();
  }
}
