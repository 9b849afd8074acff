/*
 * Spidi operators' dashboard: the entry point. Plain ES modules, no build step; talks STOMP to
 * the node's WebSocket through the JavaScript SDK (live.js; vendor/, named by index.html's import
 * map) and reads room history from the REST API of the ops port (api.js).
 *
 * Views (location.hash, router.js): "#/" every room of the tenant (views/rooms.js),
 * "#/rooms/<code>" one room (views/room.js, views/history.js). Open alerts come from
 * /topic/alerts and show in both views (alerts.js). This module wires the page's controls,
 * registers the renderers that schedule() (state.js) runs, ticks the clocks every second, and
 * loads the config before signing in.
 */

import { renderAlertPanel, renderRoomAlerts } from "./alerts.js";
import { loadConfig } from "./api.js";
import { $ } from "./dom.js";
import { reconnectNow, renderConn } from "./live.js";
import { route } from "./router.js";
import { resumeSession, signIn, signOut } from "./session.js";
import { setRenderers, state } from "./state.js";
import { bindSortable } from "./tables.js";
import { loadHistory, renderHistory } from "./views/history.js";
import { renderHistogram, renderRoomKpis, renderRoomUpdated, renderRoster } from "./views/room.js";
import { renderRooms, renderRoomsUpdated } from "./views/rooms.js";

/** A change of the open alerts: the rooms table's alert column and the panel, or the room's card. */
function renderAlerts() {
  const view = document.body.dataset.view;
  if (view === "global") {
    renderRooms();
    renderAlertPanel();
  } else if (view === "room") {
    renderRoomAlerts();
  }
}

setRenderers({ rooms: renderRooms, roomKpis: renderRoomKpis, roster: renderRoster, alerts: renderAlerts });

/** Every second: the "… ago" and "for …" figures, and the reconnect countdown. */
function tick() {
  if (state.connState === "reconnecting") renderConn();
  const view = document.body.dataset.view;
  if (view === "global") {
    renderRoomsUpdated();
    renderAlertPanel();
  }
  if (view === "room" && state.room) {
    renderRoomUpdated();
    renderRoster();
    renderRoomAlerts();
  }
}

let resizeTimer = null;
function onResize() {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (document.body.dataset.view === "room" && state.room) {
      renderHistogram();
      renderHistory();
    }
  }, 150);
}

async function main() {
  $("#signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("#token").value.trim(), $("#ws-url").value.trim());
  });
  $("#signout").addEventListener("click", () => signOut());
  $("#retry").addEventListener("click", reconnectNow);
  $("#offline-retry").addEventListener("click", reconnectNow);
  $("#filter").addEventListener("input", (ev) => {
    state.filter = ev.target.value;
    renderRooms();
  });
  $("#roster-filter").addEventListener("input", (ev) => {
    state.rosterFilter = ev.target.value;
    renderRoster();
  });
  bindSortable($("#rooms-table"), () => state.sort, renderRooms);
  bindSortable($("#roster-table"), () => state.rosterSort, renderRoster);
  for (const b of document.querySelectorAll("#range button")) {
    b.addEventListener("click", () => {
      state.historyRange = b.dataset.range;
      loadHistory();
      renderHistory();
    });
  }
  // Back in view or back online: do not sit out the rest of a long back-off.
  const wake = () => {
    if (document.visibilityState === "visible") reconnectNow();
  };
  document.addEventListener("visibilitychange", wake);
  window.addEventListener("online", wake);
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", onResize);
  setInterval(tick, 1000);

  state.config = await loadConfig();
  document.body.dataset.dev = state.config.dev ? "1" : "0";
  $("#env").hidden = !state.config.dev;
  resumeSession();
  document.body.classList.add("ready");
}

document.addEventListener("DOMContentLoaded", main);
