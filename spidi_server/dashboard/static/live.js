/*
 * The live feed: one SpidiClient (the project's JavaScript SDK, vendored under vendor/) on the
 * node's WebSocket with the signed-in token. Its watches (the rooms list, the open alerts, the
 * room on screen) subscribe again after every reconnection by themselves, and it backs off with
 * jitter between attempts; this module keeps the connection indicator and the offline banner, and
 * shows the errors the server sends on /user/queue/errors where the refused data would be.
 */

import { CLIENT_CODES, SpidiClient } from "spidi-client";
import { onAlerts } from "./alerts.js";
import { $, toast } from "./dom.js";
import { schedule, state } from "./state.js";
import { renderRoomError, watchRoom } from "./views/room.js";
import { onRooms } from "./views/rooms.js";

// An operator looking at a stale page waits at most this long for the next attempt (the SDK's
// default cap, 30 s, suits a device better than a dashboard).
const RECONNECT_CAP_MS = 15000;

let onAuthFailed = () => {};

/** Connect with state.token to state.wsUrl; ``onAuthFailure(message)`` when the server refuses the token. */
export function connect(onAuthFailure) {
  disconnect();
  onAuthFailed = onAuthFailure;
  let client;
  try {
    client = new SpidiClient({ url: state.wsUrl, token: state.token, reconnectCapMs: RECONNECT_CAP_MS });
  } catch (e) {
    // A WebSocket URL typed on the sign-in form that is not ws:// or wss://.
    setConnState("closed", { why: e.message });
    toast(e.message);
    return;
  }
  state.client = client;
  const current = () => state.client === client;
  let lastError = ""; // an ERROR frame's message: why the connection that follows it closed
  client.on("connecting", () => {
    if (current()) setConnState("connecting", state.wsUrl);
  });
  client.on("connected", () => {
    if (!current()) return;
    lastError = "";
    if (state.room && state.room.error) {
      state.room.error = null; // subscribed again: it may be allowed now
      renderRoomError();
    }
    setConnState("connected", "");
  });
  client.on("reconnecting", ({ attempt, delayMs, code, reason }) => {
    if (!current()) return;
    state.retryAt = Date.now() + delayMs;
    const why = lastError || reason || (code ? "closed (" + code + ")" : "closed");
    lastError = "";
    setConnState("reconnecting", { why, delay: delayMs, attempt });
  });
  client.on("error", (err) => {
    if (!current() || err.fatal) return; // a fatal one: "ended" follows
    if (err.code === CLIENT_CODES.PROTOCOL) {
      lastError = err.message;
      toast("Server error: " + err.message);
    } else {
      onAppError(err);
    }
  });
  client.on("ended", ({ reason, error }) => {
    if (!current() || reason !== "error") return;
    setConnState("closed", { why: error.message });
    if (error.code === CLIENT_CODES.UNAUTHORIZED) onAuthFailed(error.message);
    else toast("The server refused this connection: " + error.message);
  });
  client.watchRooms((_rooms, msg) => onRooms(msg));
  client.watchAlerts((_alerts, msg) => onAlerts(msg));
  if (state.room) watchRoom(state.room);
}

/** Close the connection for good (signing out, or before a new one). */
export function disconnect() {
  const client = state.client;
  state.client = null;
  if (client) void client.close();
}

/** Skip the rest of the back-off wait: a new connection now (the same watches, the same token). */
export function reconnectNow() {
  if (state.client && state.connState === "reconnecting") connect(onAuthFailed);
}

export function setConnState(s, detail) {
  state.connState = s;
  state.connDetail = detail;
  renderConn();
}

export function renderConn() {
  const box = $("#conn");
  const s = state.connState;
  box.dataset.state = s;
  let text;
  if (s === "connected") text = "Live";
  else if (s === "connecting") text = "Connecting…";
  else if (s === "reconnecting") {
    const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    text = "Reconnecting in " + left + " s";
  } else if (s === "closed") text = "Disconnected";
  else text = "Not connected";
  $("#conn-text").textContent = text;
  const why = (s === "reconnecting" || s === "closed") && state.connDetail ? state.connDetail.why : "";
  box.title = s === "connected" ? "Connected to " + state.wsUrl : why ? "Connection lost: " + why : state.wsUrl;
  $("#retry").hidden = s !== "reconnecting";
  const banner = $("#offline");
  const offline = !!state.token && (s === "reconnecting" || (s === "connecting" && state.roomsLoaded));
  banner.hidden = !offline;
  if (offline) {
    banner.querySelector(".msg").textContent =
      "Connection to " + state.wsUrl + " lost" + (why ? " (" + why + ")" : "") + ". Figures below may be stale.";
  }
  document.body.classList.toggle("stale", offline);
}

/** /user/queue/errors (a SpidiError): shown where the refused subscription's data would be, else as a toast. */
function onAppError(err) {
  const text = err.message || err.code || "unknown error";
  const ref = err.ref || "";
  if (state.room && ref.startsWith("/topic/rooms/" + state.room.code + "/")) {
    state.room.error = text;
    renderRoomError();
  } else if (ref === "/topic/rooms") {
    $("#rooms-error").hidden = false;
    $("#rooms-error").textContent = text;
  } else if (ref === "/topic/alerts") {
    state.alertsError = text;
    schedule("alerts");
  } else {
    toast(text);
  }
}
