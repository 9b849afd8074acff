/*
 * The room view ("#/rooms/<code>"): entering and leaving a room, its metrics and roster (the
 * SDK's watchRoom keeps the roster from the snapshot and the deltas, and subscribes again for a
 * fresh snapshot on a seq gap or a reconnection), the KPIs, the roster table and the latency
 * distribution. The history card is views/history.js, the SLO card views/slos.js (both fetched
 * by REST, every HISTORY_REFRESH_MS).
 */

import { renderRoomAlerts } from "../alerts.js";
import { barChart } from "../charts.js";
import { $, el, reconcile, setClass, setText } from "../dom.js";
import { capacityClass, fmtAgo, fmtDuration, fmtInt, fmtMs, fullFmt, latencyClass, num } from "../format.js";
import { schedule, state } from "../state.js";
import { renderSortHeaders, sortRows } from "../tables.js";
import { HISTORY_REFRESH_MS, loadHistory, renderHistory } from "./history.js";
import { loadSlos, renderSlos } from "./slos.js";
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
    roster: new Map(), // the SDK's roster Map once the snapshot came (sessionId -> entry): read only
    rosterReady: false,
    watch: null, // the SDK's room watch ({roster, resyncs, stop()})
    error: null,
    history: null,
    historyAbort: null,
    historyTimer: null,
    slos: null,
    slosAbort: null,
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
  renderSlos();
  watchRoom(state.room);
  loadHistory();
  loadSlos();
  state.room.historyTimer = setInterval(() => {
    loadHistory();
    loadSlos();
  }, HISTORY_REFRESH_MS);
  enterReplay(state.room);
  window.scrollTo(0, 0);
}

export function leaveRoom() {
  const r = state.room;
  if (!r) return;
  if (r.watch) r.watch.stop();
  if (r.historyAbort) r.historyAbort.abort();
  if (r.slosAbort) r.slosAbort.abort();
  clearInterval(r.historyTimer);
  leaveReplay();
  state.room = null;
}

/** Watch the room's metrics and roster with the live client (kept across its reconnections). */
export function watchRoom(r) {
  if (!state.client || state.connState === "closed") return;
  if (r.watch) r.watch.stop();
  r.error = null;
  renderRoomError();
  try {
    r.watch = state.client.watchRoom(r.code, {
      onRoster: (roster, msg) => onRoster(r, roster, msg),
      onMetrics: (msg) => onMetrics(r, msg),
    });
  } catch (e) {
    r.error = e.message; // a code no room can have (the SDK checks it as the server would)
    renderRoomError();
  }
}

/** The room's id (from the rooms list, its metrics or its roster) is what its history is asked by. */
export function learnRoomId(r, roomId) {
  if (!roomId || r.roomId || state.room !== r) return;
  r.roomId = roomId;
  $("#room-id").textContent = "id " + roomId;
  loadHistory();
  loadSlos();
  enterReplay(r);
}

function onMetrics(r, msg) {
  if (state.room !== r || !msg) return;
  r.metrics = msg;
  r.metricsAt = Date.now();
  learnRoomId(r, msg.roomId);
  schedule("roomKpis");
}

function onRoster(r, roster, msg) {
  if (state.room !== r) return;
  learnRoomId(r, msg.roomId);
  r.roster = roster;
  r.rosterReady = true;
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
  const places = capacity > 0 ? "of " + fmtInt(capacity) + " places" : "no capacity limit";
  // Late and at-risk sessions room-wide (ROOM_METRICS, from the last heartbeats Redis holds).
  const late = num(m.late) || 0;
  const atRisk = num(m.atRisk) || 0;
  const graded = [late ? fmtInt(late) + " late" : "", atRisk ? fmtInt(atRisk) + " at risk" : ""].filter(Boolean);
  $("#room-capacity").textContent = graded.length ? places + " · " + graded.join(", ") : places;
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
  // The server's liveness grade (live, late, at_risk: docs/protocol.md), re-graded once a second.
  const grade = LIVENESS[u.liveness] || LIVENESS.live;
  setText(c[7], (last === null ? "—" : fmtAgo(silent)) + grade.suffix);
  setClass(c[7], "num c-last " + grade.cls);
  const title = (last === null ? "" : "Last heartbeat " + fullFmt.format(new Date(last)) + ". ") + grade.title;
  if (c[7].title !== title) c[7].title = title;
}

const LIVENESS = {
  live: { suffix: "", cls: "", title: "Live: heartbeats on time" },
  late: { suffix: " · late", cls: "warn", title: "Late: no heartbeat for over 1.5 intervals" },
  at_risk: { suffix: " · at risk", cls: "crit", title: "At risk: no heartbeat for over 2 intervals" },
};

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
