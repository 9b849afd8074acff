/*
 * The live feed: one STOMP client on the node's WebSocket (stomp.js) with the signed-in token,
 * its subscriptions after every (re)connection, the connection indicator and offline banner, and
 * the errors the server sends on /user/queue/errors.
 */

import { onAlerts } from "./alerts.js";
import { $, toast } from "./dom.js";
import { schedule, state } from "./state.js";
import { StompClient } from "./stomp.js";
import { renderRoomError, subscribeRoom } from "./views/room.js";
import { onRooms } from "./views/rooms.js";

/** Connect with state.token to state.wsUrl; ``onAuthFailure(message)`` when the server refuses the token. */
export function connect(onAuthFailure) {
  if (state.client) state.client.deactivate();
  const client = new StompClient(state.wsUrl, { token: state.token, tokenIn: "passcode" });
  state.client = client;
  client.onStateChange = (s, detail) => {
    if (state.client === client) setConnState(s, detail);
  };
  client.onConnect = () => onConnected(client);
  client.onAuthFailure = (message) => {
    if (state.client === client) onAuthFailure(message);
  };
  client.onError = (message) => {
    if (client.state === "connected") toast("Server error: " + message);
  };
  client.activate();
}

function onConnected(client) {
  client.subscribe("/user/queue/errors", onAppError);
  client.subscribe("/topic/rooms", onRooms);
  client.subscribe("/topic/alerts", onAlerts);
  if (state.room) subscribeRoom(state.room);
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
    const left = Math.max(0, Math.ceil(((state.client && state.client.retryAt) - Date.now()) / 1000));
    text = "Reconnecting in " + left + " s";
  } else if (s === "closed") text = "Disconnected";
  else text = "Not connected";
  $("#conn-text").textContent = text;
  const why = s === "reconnecting" && state.connDetail ? state.connDetail.why : "";
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

/** /user/queue/errors: shown where the refused subscription's data would be, else as a toast. */
function onAppError(msg) {
  const text = (msg && (msg.message || msg.code)) || "unknown error";
  const ref = (msg && msg.ref) || "";
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
