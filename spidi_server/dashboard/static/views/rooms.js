/*
 * The global view ("#/"): the /topic/rooms feed kept in state.rooms, the tenant's KPIs and the
 * rooms table (filter, sort, capacity bars, each room's worst open alert).
 */

import { SEVERITY_RANK, severityBadge } from "../alerts.js";
import { $, el, reconcile, setClass, setText } from "../dom.js";
import { capacityClass, fmtAgo, fmtInt, fmtMs, latencyClass, num } from "../format.js";
import { schedule, state } from "../state.js";
import { renderSortHeaders, sortRows } from "../tables.js";
import { learnRoomId } from "./room.js";

/** /topic/rooms: every room of the tenant, each time whole. */
export function onRooms(msg) {
  if (!msg || !Array.isArray(msg.rooms)) return;
  const rooms = new Map();
  for (const r of msg.rooms) {
    if (r && r.roomCode) rooms.set(r.roomCode, r);
  }
  state.rooms = rooms;
  state.roomsLoaded = true;
  state.roomsAt = Date.now();
  $("#rooms-error").hidden = true;
  schedule("rooms");
  if (state.room) {
    const r = rooms.get(state.room.code);
    if (r) learnRoomId(state.room, r.roomId);
    schedule("roomKpis");
  }
}

const ROOM_COLUMNS = {
  roomCode: (r) => String(r.roomCode).toLowerCase(),
  online: (r) => num(r.online) || 0,
  users: (r) => num(r.users) || 0,
  peak: (r) => num(r.peak) || 0,
  avgLatencyMs: (r) => num(r.avgLatencyMs),
  alert: (r) => {
    const alerts = state.alertsByRoom.get(r.roomCode);
    return alerts ? SEVERITY_RANK[alerts[0].severity] || 0 : null;
  },
};

export function renderRooms() {
  if (document.body.dataset.view !== "global") return;
  const all = [...state.rooms.values()];
  let online = 0, users = 0, capacity = 0, latSum = 0, latN = 0;
  for (const r of all) {
    const o = num(r.online) || 0;
    online += o;
    users += num(r.users) || 0;
    capacity += num(r.capacity) || 0;
    const lat = num(r.avgLatencyMs);
    if (lat !== null && o > 0) {
      latSum += lat * o;
      latN += o;
    }
  }
  $("#total-rooms").textContent = state.roomsLoaded ? fmtInt(all.length) : "…";
  $("#total-online").textContent = state.roomsLoaded ? fmtInt(online) : "…";
  $("#total-users").textContent = state.roomsLoaded ? fmtInt(users) : "…";
  $("#total-capacity").textContent = capacity > 0 ? ((online / capacity) * 100).toFixed(1) + " %" : "—";
  $("#total-capacity-sub").textContent = capacity > 0 ? "of " + fmtInt(capacity) + " places" : "no capacity set";
  $("#total-latency").textContent = latN ? fmtMs(latSum / latN) : "—";

  const filter = state.filter.trim().toLowerCase();
  const rows = filter ? all.filter((r) => String(r.roomCode).toLowerCase().includes(filter)) : all;
  sortRows(rows, ROOM_COLUMNS, state.sort, (r) => String(r.roomCode));
  const table = $("#rooms-table");
  renderSortHeaders(table, state.sort);
  reconcile(table.tBodies[0], rows, "room", (r) => r.roomCode, createRoomRow, updateRoomRow);
  const empty = $("#rooms-empty");
  empty.hidden = rows.length > 0 || !state.roomsLoaded;
  empty.textContent = all.length ? "No room matches “" + state.filter + "”." : "No rooms yet: rooms appear when a client joins one.";
  $("#rooms-loading").hidden = state.roomsLoaded;
  $("#rooms-count").textContent = state.roomsLoaded
    ? filter
      ? rows.length + " of " + all.length
      : all.length + (all.length === 1 ? " room" : " rooms")
    : "";
  renderRoomsUpdated();
}

function capacityBar(online, capacity) {
  const ratio = capacity > 0 ? Math.min(1, online / capacity) : 0;
  const fill = el("span", { class: "bar-fill " + capacityClass(ratio) });
  fill.style.width = (ratio * 100).toFixed(1) + "%";
  return el(
    "div",
    { class: "cap" },
    el("div", { class: "bar", role: "presentation" }, fill),
    el(
      "span",
      { class: "cap-text" },
      el("b", { class: "online", text: fmtInt(online) }),
      el("span", { class: "muted", text: " / " + (capacity > 0 ? fmtInt(capacity) : "∞") })
    )
  );
}

function createRoomRow(r) {
  const href = "#/rooms/" + encodeURIComponent(r.roomCode);
  const tr = el(
    "tr",
    { class: "clickable" },
    el("td", { class: "c-code" }, el("a", { href, text: r.roomCode })),
    el("td", { class: "c-cap" }, capacityBar(0, 0)),
    el("td", { class: "num c-users" }),
    el("td", { class: "num c-peak" }),
    el("td", { class: "num c-latency" }),
    el("td", { class: "c-alert muted", text: "—" })
  );
  tr.addEventListener("click", (ev) => {
    if (!ev.target.closest("a") && !String(window.getSelection() || "")) location.hash = href;
  });
  return tr;
}

function updateRoomRow(tr, r) {
  const online = num(r.online) || 0;
  const capacity = num(r.capacity) || 0;
  const ratio = capacity > 0 ? Math.min(1, online / capacity) : 0;
  const fill = tr.querySelector(".bar-fill");
  fill.style.width = (ratio * 100).toFixed(1) + "%";
  setClass(fill, "bar-fill " + capacityClass(ratio));
  setText(tr.querySelector(".online"), fmtInt(online));
  setText(tr.querySelector(".cap-text .muted"), " / " + (capacity > 0 ? fmtInt(capacity) : "∞"));
  setText(tr.querySelector(".c-users"), fmtInt(num(r.users) || 0));
  setText(tr.querySelector(".c-peak"), fmtInt(num(r.peak) || 0));
  const lat = num(r.avgLatencyMs);
  const cell = tr.querySelector(".c-latency");
  setText(cell, fmtMs(lat));
  setClass(cell, "num c-latency " + latencyClass(lat));
  updateAlertCell(tr.querySelector(".c-alert"), state.alertsByRoom.get(r.roomCode) || []);
}

/** A room's alert cell: its worst open alert's severity (more: "+n"), the rule names as tooltip. */
function updateAlertCell(cell, alerts) {
  const sig = alerts.map((a) => [a.ruleName, a.severity, a.state].join(":")).join("|");
  if (cell.dataset.sig === sig) return;
  cell.dataset.sig = sig;
  if (!alerts.length) {
    cell.className = "c-alert muted";
    cell.replaceChildren("—");
    cell.removeAttribute("title");
    return;
  }
  cell.className = "c-alert";
  cell.replaceChildren(severityBadge(alerts[0].severity, alerts.every((a) => a.state === "pending")));
  if (alerts.length > 1) cell.append(el("span", { class: "muted small more", text: "+" + (alerts.length - 1) }));
  cell.title = alerts.map((a) => (a.ruleName || "rule") + " (" + a.severity + ", " + a.state + ")").join("\n");
}

export function renderRoomsUpdated() {
  $("#rooms-updated").textContent = state.roomsAt ? "Updated " + fmtAgo(Date.now() - state.roomsAt) : "";
}
