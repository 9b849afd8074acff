/*
 * Which view is on screen: location.hash ("#/" every room, "#/rooms/<code>" one room) decides,
 * the body's data-view says, and the breadcrumbs and the title follow.
 */

import { $, el } from "./dom.js";
import { schedule, state } from "./state.js";
import { enterRoom, leaveRoom } from "./views/room.js";

/** Show one of "signin", "global", "room" and hide the others. */
export function showView(name) {
  for (const id of ["signin", "global", "room"]) $("#" + id).hidden = id !== name;
  document.body.dataset.view = name;
  document.title = (name === "room" && state.room ? state.room.code + " · " : name === "global" ? "Rooms · " : "") + "Spidi";
  renderCrumbs();
}

function renderCrumbs() {
  const crumbs = $("#crumbs");
  crumbs.replaceChildren();
  const view = document.body.dataset.view;
  if (view === "global") crumbs.append(el("span", { class: "crumb current", text: "Rooms" }));
  if (view === "room" && state.room) {
    crumbs.append(
      el("a", { class: "crumb", href: "#/", text: "Rooms" }),
      el("span", { class: "crumb-sep", text: "/" }),
      el("span", { class: "crumb current", text: state.room.code })
    );
  }
}

/** The view of location.hash (signed in only). */
export function route() {
  if (!state.token) return;
  const m = location.hash.match(/^#\/rooms\/(.+)$/);
  if (m) {
    let code;
    try {
      code = decodeURIComponent(m[1]);
    } catch (e) {
      code = m[1];
    }
    if (!state.room || state.room.code !== code) enterRoom(code);
    showView("room");
  } else {
    leaveRoom();
    showView("global");
    schedule("rooms");
  }
}
