/*
 * The room view ("#/rooms/<code>"): entering and leaving a room, its metrics and roster topics
 * (a roster snapshot, then deltas ordered by seq; a gap asks for a fresh snapshot), the KPIs,
 * the roster table and the latency distribution. The history card is views/history.js.
 */

import { renderRoomAlerts } from "../alerts.js";
import { barChart } from "../charts.js";
import { $, el, reconcile, setClass, setText } from "../dom.js";
import { capacityClass, fmtAgo, fmtDuration, fmtInt, fmtMs, fullFmt, latencyClass, num } from "../format.js";
import { schedule, state } from "../state.js";
import { renderSortHeaders, sortRows } from "../tables.js";
import { HISTORY_REFRESH_MS, loadHistory, renderHistory } from "./history.js";
import { enterReplay, leaveReplay } from "./replay.js";

const MAX_ROSTER_ROWS = 500;
const LATENCY_BUCKETS = [
  { lo: 0, hi: 25, label: "<25" },
  { lo: 25, hi: 50, label: "25–50" },
  { lo: 50, hi: 100, label: "50–100" },
  { lo: 100, hi: 200, label: "100–200" },
  { lo: 200, hi: 500, label: "200–500" },
  { lo: 500, hi: 1000, label: "0.5–1 s" },
  { lo: 1000, hi: Infinity, label: "≥1 s" },
];

export function enterRoom(code) {
  leaveRoom();
  const known = state.rooms.get(code);
  state.room = {
    code,
    roomId: (known && known.roomId) || null,
    metrics: null,
    metricsAt: 0,
    roster: new Map(),
    rosterSeq: 0,
    rosterReady: false,
    resubscribes: 0,
    subs: {},
    error: null,
    history: null,
    historyAbort: null,
    historyTimer: null,
  };
  $("#room-title").textContent = code;
  $("#room-id").textContent = state.room.roomId ? "id " + state.room.roomId : "";
  $("#roster-filter").value = state.rosterFilter;
  renderRoomError();
  renderRoomKpis();
  renderRoomAlerts();
  renderRoster();
  renderHistogram();
  renderHistory();
  if (state.client && state.client.connected) subscribeRoom(state.room);
  loadHistory();
  state.room.historyTimer = setInterval(loadHistory, HISTORY_REFRESH_MS);
  enterReplay(state.room);
  window.scrollTo(0, 0);
}

export function leaveRoom() {
  const r = state.room;
  if (!r) return;
  for (const sub of Object.values(r.subs)) if (sub) sub.unsubscribe();
  if (r.historyAbort) r.historyAbort.abort();
  clearInterval(r.historyTimer);
  leaveReplay();
  state.room = null;
}

/** Watch the room's metrics and roster on the current connection (again after a reconnect). */
export function subscribeRoom(r) {
  const client = state.client;
  r.error = null;
  renderRoomError();
  r.subs.metrics = client.subscribe("/topic/rooms/" + r.code + "/metrics", (msg) => onMetrics(r, msg));
  subscribeRoster(r);
}

function subscribeRoster(r) {
  if (r.subs.roster) r.subs.roster.unsubscribe();
  r.rosterReady = false;
  r.rosterSeq = 0;
  r.subs.roster = state.client.subscribe("/topic/rooms/" + r.code + "/roster", (msg) => onRoster(r, msg));
}

/** The room's id (from the rooms list, its metrics or its roster) is what its history is asked by. */
export function learnRoomId(r, roomId) {
  if (!roomId || r.roomId || state.room !== r) return;
  r.roomId = roomId;
  $("#room-id").textContent = "id " + roomId;
  loadHistory();
  enterReplay(r);
}

function onMetrics(r, msg) {
  if (state.room !== r || !msg) return;
  r.metrics = msg;
  r.metricsAt = Date.now();
  learnRoomId(r, msg.roomId);
  schedule("roomKpis");
}

function onRoster(r, msg) {
  if (state.room !== r || !msg) return;
  learnRoomId(r, msg.roomId);
  const seq = typeof msg.seq === "number" ? msg.seq : null;
  if (msg.full) {
    r.roster = new Map();
    for (const u of msg.users || []) if (u && u.sessionId) r.roster.set(u.sessionId, u);
    r.rosterReady = true;
    if (seq !== null) r.rosterSeq = seq;
  } else {
    if (!r.rosterReady) {
      // A delta ahead of the snapshot: the snapshot (read later) already holds it.
      if (seq !== null) r.rosterSeq = seq;
      return;
    }
    if (seq !== null) {
      if (seq <= r.rosterSeq) return; // a repeat
      if (seq !== r.rosterSeq + 1) {
        // A gap: we missed a delta. Start again from a fresh snapshot.
        r.resubscribes++;
        subscribeRoster(r);
        return;
      }
      r.rosterSeq = seq;
    }
    for (const u of msg.joined || []) if (u && u.sessionId) r.roster.set(u.sessionId, u);
    for (const u of msg.updated || []) {
      if (!u || !u.sessionId) continue;
      r.roster.set(u.sessionId, Object.assign({}, r.roster.get(u.sessionId) || {}, u));
    }
    for (const u of msg.left || []) if (u && u.sessionId) r.roster.delete(u.sessionId);
  }
  schedule("roster");
  schedule("roomKpis");
}

export function renderRoomError() {
  const box = $("#room-error");
  const err = state.room && state.room.error;
  box.hidden = !err;
  box.textContent = err ? "This room cannot be watched: " + err : "";
}

export function renderRoomKpis() {
  const r = state.room;
  if (!r) return;
  const m = r.metrics || state.rooms.get(r.code) || {};
  const online = num(m.online);
  const capacity = num(m.capacity) || 0;
  $("#room-online").textContent = online === null ? "…" : fmtInt(online);
  $("#room-capacity").textContent = capacity > 0 ? "of " + fmtInt(capacity) + " places" : "no capacity limit";
  const fill = $("#room-cap-fill");
  const ratio = capacity > 0 && online !== null ? Math.min(1, online / capacity) : 0;
  fill.style.width = (ratio * 100).toFixed(1) + "%";
  fill.className = "bar-fill " + capacityClass(ratio);
  $("#room-users").textContent = m.users === undefined ? "…" : fmtInt(num(m.users) || 0);
  $("#room-peak").textContent = m.peak === undefined ? "…" : fmtInt(num(m.peak) || 0);
  let lat = num(m.avgLatencyMs);
  // The room's average counts only reported latencies: with none reported it says 0, show "—".
  if (r.rosterReady && r.roster.size && ![...r.roster.values()].some((u) => num(u.latencyMs) !== null)) lat = null;
  const latBox = $("#room-latency");
  latBox.textContent = fmtMs(lat);
  latBox.className = "kpi-value " + latencyClass(lat);
  renderRoomUpdated();
}

export function renderRoomUpdated() {
  const r = state.room;
  if (!r) return;
  $("#room-updated").textContent = r.metricsAt ? "Updated " + fmtAgo(Date.now() - r.metricsAt) : "Waiting for metrics…";
}

const ROSTER_COLUMNS = {
  userId: (u) => String(u.userId || "").toLowerCase(),
  device: (u) => String(u.device || "").toLowerCase() || null,
  os: (u) => String(u.os || "").toLowerCase() || null,
  appVersion: (u) => versionKey(u.appVersion),
  ip: (u) => ipKey(u.ip),
  latencyMs: (u) => num(u.latencyMs),
  // Durations: "connected for" and "last heartbeat … ago" grow as the timestamp gets older.
  connectedAt: (u) => negate(num(u.connectedAt)),
  lastHeartbeatAt: (u) => negate(num(u.lastHeartbeatAt)),
};

const negate = (v) => (v === null ? null : -v);

function versionKey(v) {
  if (!v) return null;
  return String(v).split(/[.\-+]/).map((p) => (/^\d+$/.test(p) ? p.padStart(8, "0") : p)).join(".");
}

function ipKey(ip) {
  if (!ip) return null;
  const m = String(ip).match(/^(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
  return m ? m.slice(1).map((p) => p.padStart(3, "0")).join(".") : String(ip);
}

export function renderRoster() {
  const r = state.room;
  if (!r) return;
  const now = Date.now();
  const all = [...r.roster.values()];
  const f = state.rosterFilter.trim().toLowerCase();
  const rows = f
    ? all.filter((u) =>
        [u.userId, u.clientId, u.device, u.os, u.appVersion, u.ip].some((v) => v && String(v).toLowerCase().includes(f))
      )
    : all;
  sortRows(rows, ROSTER_COLUMNS, state.rosterSort, (u) => String(u.sessionId));
  const table = $("#roster-table");
  renderSortHeaders(table, state.rosterSort);
  reconcile(table.tBodies[0], rows.slice(0, MAX_ROSTER_ROWS), "session", (u) => u.sessionId, createRosterRow,
    (tr, u) => updateRosterRow(tr, u, now));
  const empty = $("#roster-empty");
  empty.hidden = rows.length > 0 || !r.rosterReady;
  empty.textContent = all.length ? "Nobody matches “" + state.rosterFilter + "”." : "Nobody is in this room right now.";
  $("#roster-loading").hidden = r.rosterReady || !!r.error;
  let count = r.rosterReady ? all.length + (all.length === 1 ? " session" : " sessions") : "";
  if (f && r.rosterReady) count = rows.length + " of " + all.length;
  if (rows.length > MAX_ROSTER_ROWS) count += " · first " + MAX_ROSTER_ROWS + " shown";
  $("#roster-count").textContent = count;
  renderHistogram();
}

function createRosterRow() {
  return el(
    "tr",
    {},
    el("td", { class: "c-user" }, el("div", { class: "primary-text" }), el("div", { class: "muted small" })),
    el("td", { class: "c-device" }),
    el("td", { class: "c-os" }),
    el("td", { class: "c-app" }),
    el("td", { class: "c-ip mono" }),
    el("td", { class: "num c-latency" }),
    el("td", { class: "num c-since" }),
    el("td", { class: "num c-last" })
  );
}

function updateRosterRow(tr, u, now) {
  const c = tr.cells;
  setText(c[0].firstChild, u.userId || "—");
  setText(c[0].lastChild, u.clientId || "");
  setText(c[1], u.device || "—");
  setText(c[2], u.os || "—");
  if (c[3].textContent !== (u.appVersion || "—")) {
    c[3].replaceChildren(u.appVersion ? el("span", { class: "tag", text: u.appVersion }) : "—");
  }
  setText(c[4], u.ip || "—");
  // A roster without the key is one this token's role may not see addresses in (roles.VIEW_IP).
  const ipTitle = "ip" in u ? "" : "IP addresses are not shown to this token's role";
  if (c[4].title !== ipTitle) c[4].title = ipTitle;
  const lat = num(u.latencyMs);
  setText(c[5], fmtMs(lat));
  setClass(c[5], "num c-latency " + latencyClass(lat));
  const connectedAt = num(u.connectedAt);
  setText(c[6], connectedAt === null ? "—" : fmtDuration(now - connectedAt));
  const last = num(u.lastHeartbeatAt);
  const silent = last === null ? 0 : now - last;
  setText(c[7], last === null ? "—" : fmtAgo(silent));
  setClass(c[7], "num c-last " + (silent > 45000 ? "crit" : silent > 30000 ? "warn" : ""));
  const title = last === null ? "" : "Last heartbeat " + fullFmt.format(new Date(last));
  if (c[7].title !== title) c[7].title = title;
}

// -- latency distribution -----------------------------------------------------------------------

function quantile(sorted, q) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

export function renderHistogram() {
  const r = state.room;
  const box = $("#histogram");
  if (!r) return;
  const latencies = [];
  let unknown = 0;
  for (const u of r.roster.values()) {
    const v = num(u.latencyMs);
    if (v === null) unknown++;
    else latencies.push(v);
  }
  latencies.sort((a, b) => a - b);
  const counts = LATENCY_BUCKETS.map((b) => latencies.filter((v) => v >= b.lo && v < b.hi).length);
  $("#lat-p50").textContent = fmtMs(quantile(latencies, 0.5));
  $("#lat-p95").textContent = fmtMs(quantile(latencies, 0.95));
  $("#lat-max").textContent = fmtMs(latencies.length ? latencies[latencies.length - 1] : null);
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  $("#lat-note").textContent =
    (latencies.length ? plural(latencies.length, "session") + " reporting" : "") +
    (latencies.length && unknown ? " · " : "") +
    (unknown ? plural(unknown, "session") + " without a heartbeat yet" : "");

  barChart(box, {
    bars: LATENCY_BUCKETS.map((b, i) => ({
      label: b.label,
      count: counts[i],
      cls: b.lo >= 500 ? "crit" : b.lo >= 200 ? "warn" : "ok",
    })),
    showCounts: latencies.length > 0,
    placeholder: latencies.length ? null : r.roster.size ? "No latency reported yet" : "Nobody in the room",
    label: "Latency distribution of the roster",
  });
}
