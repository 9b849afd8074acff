/*
 * The room view's history card: the stats of the room on screen over the chosen range (REST,
 * refreshed every minute by the room view), drawn as the online and latency line charts with the
 * room's anomaly flags marked on them (anomalies.js).
 */

import { loadAnomalies, markAnomalies } from "../anomalies.js";
import { loadRoomStats } from "../api.js";
import { lineChart } from "../charts.js";
import { $, el } from "../dom.js";
import { num } from "../format.js";
import { state } from "../state.js";

export const HISTORY_REFRESH_MS = 60000;
const RANGES = {
  "1h": { ms: 3600e3, bucket: "1m", label: "last hour" },
  "24h": { ms: 86400e3, bucket: "1h", label: "last 24 hours" },
  "7d": { ms: 7 * 86400e3, bucket: "1h", label: "last 7 days" },
};

/** Fetch the room's history for state.historyRange; a newer call supersedes one still on its way. */
export async function loadHistory() {
  const r = state.room;
  if (!r) return;
  if (!r.roomId) {
    r.history = { status: "waiting" };
    renderHistory();
    return;
  }
  if (r.historyAbort) r.historyAbort.abort();
  const abort = new AbortController();
  r.historyAbort = abort;
  const rangeKey = state.historyRange;
  const range = RANGES[rangeKey];
  const to = new Date();
  const from = new Date(to.getTime() - range.ms);
  if (!r.history || r.history.range !== rangeKey) {
    r.history = { status: "loading", range: rangeKey };
    renderHistory();
  }
  const [result, anomalies] = await Promise.all([
    loadRoomStats(state.token, r.roomId, range, from, to, abort.signal),
    loadAnomalies(state.token, r.roomId, from, to, abort.signal),
  ]);
  if (!result || !anomalies) return; // aborted
  if (state.room !== r || r.historyAbort !== abort) return;
  r.historyAbort = null;
  r.history = Object.assign(result, { range: rangeKey, from: from.getTime(), to: to.getTime(), anomalies });
  renderHistory();
}

export function renderHistory() {
  const r = state.room;
  if (!r) return;
  for (const b of document.querySelectorAll("#range button")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === state.historyRange));
  }
  const h = r.history || { status: "loading" };
  const status = $("#history-status");
  const charts = $("#history-charts");
  if (h.status !== "ok") {
    charts.hidden = true;
    status.hidden = false;
    status.replaceChildren();
    if (h.status === "none") {
      status.append(el("strong", { text: "No history" }), el("span", { class: "muted", text: " — " + h.reason + "." }));
    } else {
      status.append(el("span", { class: "muted", text: h.status === "waiting" ? "Waiting for the room's id…" : "Loading history…" }));
    }
    return;
  }
  status.replaceChildren(); // not "Loading…" behind the charts: readers and tests see the truth
  status.hidden = true;
  charts.hidden = false;
  const t = (p) => p.t;
  const stepMs = { "1m": 60e3, "1h": 3600e3, "1d": 86400e3 }[h.bucket] || 0;
  lineChart($("#chart-online"), {
    from: h.from, to: h.to, stepMs, integer: true, unit: "",
    series: [
      { name: "Online (avg)", cls: "s-online", area: true, points: h.points.map((p) => [t(p), num(p.onlineAvg)]) },
      { name: "Online (max)", cls: "s-online-max", dashed: true, points: h.points.map((p) => [t(p), num(p.onlineMax)]) },
    ],
  });
  lineChart($("#chart-latency"), {
    from: h.from, to: h.to, stepMs, unit: " ms",
    series: [
      { name: "Latency (avg)", cls: "s-lat", points: h.points.map((p) => [t(p), num(p.latencyAvgMs)]) },
      { name: "Latency (p95)", cls: "s-lat-p95", dashed: true, points: h.points.map((p) => [t(p), num(p.latencyP95Ms)]) },
    ],
  });
  markAnomalies($("#chart-online"), h.anomalies, h.from, h.to, false);
  markAnomalies($("#chart-latency"), h.anomalies, h.from, h.to, true);
}
