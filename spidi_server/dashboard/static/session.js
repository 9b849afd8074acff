/*
 * Signing in and out: the token (a JWT checked here for shape, expiry and a read role, then by the
 * server) kept in this tab's sessionStorage with a WebSocket URL chosen on the form, the sign-in
 * form, and who is signed in.
 */

import { $ } from "./dom.js";
import { fullFmt } from "./format.js";
import { connect, disconnect, setConnState } from "./live.js";
import { route, showView } from "./router.js";
import { state } from "./state.js";
import { leaveRoom } from "./views/room.js";

const TOKEN_KEY = "spidi.dashboard.token";
const WSURL_KEY = "spidi.dashboard.wsUrl";

function decodeJwt(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch (e) {
    return null;
  }
}

function rolesOf(claims) {
  const roles = claims && claims.roles;
  return Array.isArray(roles) ? roles : typeof roles === "string" ? [roles] : [];
}

function showSignin(message) {
  showView("signin");
  $("#who").hidden = true;
  const input = $("#token");
  if (!input.value && state.config && state.config.devToken) input.value = state.config.devToken;
  $("#dev-hint").hidden = !(state.config && state.config.devToken);
  $("#ws-url").value = state.wsUrl;
  const err = $("#signin-error");
  err.hidden = !message;
  err.textContent = message || "";
  input.focus();
}

/** Why the page refuses ``token`` before trying it, or null. */
function checkToken(token) {
  if (!token) return "Paste a token first.";
  const claims = decodeJwt(token);
  if (!claims) return "This does not look like a JWT (three base64url parts separated by dots).";
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
    return "This token expired " + fullFmt.format(new Date(claims.exp * 1000)) + ".";
  }
  // The roles that may watch come from the server (roles.py); without its config the server decides.
  const watchRoles = state.config && state.config.watchRoles;
  if (Array.isArray(watchRoles) && !rolesOf(claims).some((r) => watchRoles.includes(r))) {
    return "This token cannot watch rooms: it needs the role " + watchRoles.join(" or ") + ".";
  }
  return null;
}

export function signIn(token, wsUrl) {
  const problem = checkToken(token);
  if (problem) {
    showSignin(problem);
    return;
  }
  state.token = token;
  state.claims = decodeJwt(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  if (wsUrl && wsUrl !== (state.config && state.config.wsUrl)) {
    sessionStorage.setItem(WSURL_KEY, wsUrl);
    state.wsUrl = wsUrl;
  } else if (wsUrl) {
    sessionStorage.removeItem(WSURL_KEY);
    state.wsUrl = wsUrl;
  }
  renderWho();
  connect((message) => signOut("The server refused the token: " + message, true));
  route();
}

/** Back to the sign-in form; after a refusal the refused token stays in the box to be seen. */
export function signOut(message, keepToken) {
  disconnect();
  leaveRoom();
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  state.claims = null;
  state.rooms.clear();
  state.roomsLoaded = false;
  state.alerts.clear();
  state.alertsByRoom.clear();
  state.alertsReady = false;
  state.alertsError = null;
  if (!keepToken) $("#token").value = "";
  if (location.hash && location.hash !== "#/") history.replaceState(null, "", "#/");
  setConnState("idle", null);
  showSignin(message);
}

/** At page load (state.config known): the tab's WebSocket URL, and its token if still good, else the form. */
export function resumeSession() {
  state.wsUrl = sessionStorage.getItem(WSURL_KEY) || state.config.wsUrl;
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved && !checkToken(saved)) {
    $("#token").value = saved;
    signIn(saved, state.wsUrl);
  } else {
    if (saved) sessionStorage.removeItem(TOKEN_KEY);
    showSignin(saved ? checkToken(saved) : null);
  }
}

function renderWho() {
  const c = state.claims || {};
  $("#who").hidden = false;
  $("#who-name").textContent = c.sub || "?";
  const roles = rolesOf(c).filter((r) => r.startsWith("spidi:")).map((r) => r.slice(6));
  $("#who-meta").textContent = (c.tenant || "default") + " · " + roles.join(", ");
}
