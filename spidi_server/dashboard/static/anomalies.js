/*
 * Anomaly markers on the history charts: the room's stored anomaly flags (REST
 * /api/v1/rooms/{id}/anomalies, raised by rules of kind anomaly) as a mark at the time each rose,
 * explaining itself on hover (metric, value, baseline median and MAD, z, group). Drawn over a chart
 * lineChart already made, in the plot area it laid out; plain data in, SVG out, no state.
 */

import { svg } from "./dom.js";
import { fullFmt, toMs } from "./format.js";

const NAMES = {
  join_storm: "Join storm",
  leave_storm: "Leave storm",
  latency_spike: "Latency spike",
  mass_disconnect: "Mass disconnect",
  flapping: "Flapping client",
};
const LATENCY_FLAGS = new Set(["latency_spike"]);

/**
 * The room's flags between ``from`` and ``to`` (Dates), each with t (ms it rose), oldest first;
 * [] when the API has none or cannot answer (markers are extra: the charts stand without them);
 * null when ``signal`` aborted the request.
 */
export async function loadAnomalies(token, roomId, from, to, signal) {
  // Milliseconds kept: a flag raised within the second before ``to`` is in the range.
  const url =
    "/api/v1/rooms/" + encodeURIComponent(roomId) + "/anomalies?from=" + encodeURIComponent(from.toISOString()) +
    "&to=" + encodeURIComponent(to.toISOString());
  try {
    const resp = await fetch(url, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      signal,
      cache: "no-store",
    });
    if (!resp.ok) return [];
    const data = await resp.json();
    return (data && Array.isArray(data.items) ? data.items : [])
      .map((f) => Object.assign({}, f, { t: toMs(f.startedAt) }))
      .filter((f) => f.t !== null);
  } catch (e) {
    if (e && e.name === "AbortError") return null;
    return [];
  }
}

const fmt = (v) => (v === null || v === undefined ? "—" : String(Math.round(Number(v) * 100) / 100));

/** One flag in words: what, when, and why it is unusual. */
export function explain(f) {
  const parts = [(NAMES[f.flag] || f.flag) + (f.group ? " (" + f.group + ")" : ""), fullFmt.format(new Date(f.t))];
  parts.push(f.metric + " " + fmt(f.value));
  if (f.baselineMedian !== null && f.baselineMedian !== undefined) {
    parts.push("baseline median " + fmt(f.baselineMedian) + ", MAD " + fmt(f.baselineMad) + " (" + fmt(f.baselineMinutes) + " min)");
  }
  if (f.z !== null && f.z !== undefined) parts.push("z " + fmt(f.z) + " > " + fmt(f.threshold));
  else if (f.threshold !== null && f.threshold !== undefined) parts.push("more than " + fmt(f.threshold));
  return parts.join(" · ");
}

/**
 * Mark ``flags`` on the line chart drawn in ``box`` (over from..to ms): latency spikes on the
 * latency chart (``latency`` true), the others on the online chart. A flag outside the range is left out.
 */
export function markAnomalies(box, flags, from, to, latency) {
  const root = box && box.querySelector("svg.chart");
  const plot = root && root.querySelector(".overlay");
  if (!plot) return;
  const px = Number(plot.getAttribute("x"));
  const pw = Number(plot.getAttribute("width"));
  const py = Number(plot.getAttribute("y"));
  const ph = Number(plot.getAttribute("height"));
  const g = svg("g", { class: "anomalies" });
  for (const f of flags || []) {
    if (LATENCY_FLAGS.has(f.flag) !== Boolean(latency) || f.t < from || f.t > to) continue;
    const x = px + ((f.t - from) / (to - from)) * pw;
    // The line under the hover overlay (the read-out keeps working), the head above the plot with its explanation.
    root.insertBefore(svg("line", { x1: x, x2: x, y1: py, y2: py + ph, class: "anomaly-line" }), plot);
    g.append(
      svg("path", { d: `M${(x - 5).toFixed(1)} ${py - 9}L${(x + 5).toFixed(1)} ${py - 9}L${x.toFixed(1)} ${py - 1}Z`, class: "anomaly-mark", "data-flag": f.flag },
        svg("title", { text: explain(f) }))
    );
  }
  root.append(g);
}
