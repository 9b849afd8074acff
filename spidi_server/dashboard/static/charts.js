/*
 * The SVG chart library: a time-series line chart (gaps for missing buckets, a hover read-out,
 * a legend) and a bar chart of counts. Each draws into a box from plain numbers; no state.
 */

import { el, svg } from "./dom.js";
import { dayFmt, fmtMs, fmtTick, fullFmt, timeFmt } from "./format.js";

function niceStep(raw) {
  if (!(raw > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const n = raw / p;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * p;
}

function timeTicks(from, to) {
  const span = to - from;
  const out = [];
  if (span <= 3 * 3600e3) {
    const step = 10 * 60e3;
    for (let t = Math.ceil(from / step) * step; t <= to; t += step) out.push([t, timeFmt.format(t)]);
  } else if (span <= 2 * 86400e3) {
    const d = new Date(from);
    d.setMinutes(0, 0, 0);
    d.setHours(d.getHours() + 1);
    while (d.getHours() % 3) d.setHours(d.getHours() + 1);
    for (; d.getTime() <= to; d.setHours(d.getHours() + 3)) out.push([d.getTime(), timeFmt.format(d)]);
  } else {
    const d = new Date(from);
    d.setHours(0, 0, 0, 0);
    d.setDate(d.getDate() + 1);
    for (; d.getTime() <= to; d.setDate(d.getDate() + 1)) out.push([d.getTime(), dayFmt.format(d)]);
  }
  return out;
}

/**
 * Lines over time into ``box``. opts: from, to (ms), stepMs (the bucket: a longer silence is a
 * gap), integer (whole-number ticks), unit (" ms" reads out as a latency), and series: [{name,
 * cls, points: [[t, value or null]], area, dashed}], all series on the same times.
 */
export function lineChart(box, opts) {
  const width = Math.max(320, box.clientWidth || 600);
  const height = 150;
  const m = { l: 46, r: 12, t: 10, b: 22 };
  const pw = width - m.l - m.r;
  const ph = height - m.t - m.b;
  let max = 0;
  for (const s of opts.series) for (const [, v] of s.points) if (v !== null && v > max) max = v;
  let step = niceStep(max / 4 || 1);
  if (opts.integer) step = Math.max(1, Math.ceil(step));
  const top = Math.max(step, Math.ceil(max / step) * step);
  const x = (t) => m.l + ((t - opts.from) / (opts.to - opts.from)) * pw;
  const y = (v) => m.t + ph - (v / top) * ph;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart" });
  for (let v = 0; v <= top + step / 2; v += step) {
    root.append(
      svg("line", { x1: m.l, x2: width - m.r, y1: Math.round(y(v)) + 0.5, y2: Math.round(y(v)) + 0.5, class: v ? "grid" : "axis" }),
      svg("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick", text: fmtTick(v) })
    );
  }
  for (const [t, label] of timeTicks(opts.from, opts.to)) {
    const xx = Math.round(x(t)) + 0.5;
    root.append(
      svg("line", { x1: xx, x2: xx, y1: m.t + ph, y2: m.t + ph + 4, class: "axis" }),
      svg("text", { x: xx, y: height - 6, "text-anchor": "middle", class: "tick", text: label })
    );
  }
  const clip = "clip-" + Math.random().toString(36).slice(2);
  root.append(svg("defs", {}, svg("clipPath", { id: clip }, svg("rect", { x: m.l, y: m.t - 2, width: pw, height: ph + 4 }))));
  const plot = svg("g", { "clip-path": `url(#${clip})` });
  root.append(plot);
  for (const s of opts.series) {
    // Split into runs of present values: a null leaves a gap.
    // A bucket missing from the answer (nothing recorded) is a gap as well.
    const runs = [];
    let run = [];
    let prevT = null;
    for (const [t, v] of s.points) {
      const missing = opts.stepMs && prevT !== null && t - prevT > opts.stepMs * 1.5;
      if ((v === null || missing) && run.length) {
        runs.push(run);
        run = [];
      }
      if (v !== null) run.push([x(t), y(v)]);
      prevT = t;
    }
    if (run.length) runs.push(run);
    for (const pts of runs) {
      if (pts.length === 1) {
        plot.append(svg("circle", { cx: pts[0][0], cy: pts[0][1], r: 2.5, class: "dot " + s.cls }));
        continue;
      }
      const d = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join("");
      if (s.area) {
        const base = y(0).toFixed(1);
        plot.append(svg("path", { d: d + `L${pts[pts.length - 1][0].toFixed(1)} ${base}L${pts[0][0].toFixed(1)} ${base}Z`, class: "area " + s.cls }));
      }
      plot.append(svg("path", { d, class: "line " + s.cls + (s.dashed ? " dashed" : "") }));
    }
  }
  // Hover read-out: the nearest bucket's values.
  const cursor = svg("line", { y1: m.t, y2: m.t + ph, class: "cursor", visibility: "hidden" });
  const overlay = svg("rect", { x: m.l, y: m.t, width: pw, height: ph, class: "overlay" });
  root.append(cursor, overlay);
  const tip = el("div", { class: "tip", hidden: true });
  const times = opts.series[0].points.map((p) => p[0]);
  overlay.addEventListener("mousemove", (ev) => {
    const rect = root.getBoundingClientRect();
    const px = ((ev.clientX - rect.left) / rect.width) * width;
    const t = opts.from + ((px - m.l) / pw) * (opts.to - opts.from);
    let best = 0;
    for (let i = 1; i < times.length; i++) if (Math.abs(times[i] - t) < Math.abs(times[best] - t)) best = i;
    const bx = x(times[best]);
    cursor.setAttribute("x1", bx);
    cursor.setAttribute("x2", bx);
    cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(
      el("div", { class: "tip-time", text: fullFmt.format(new Date(times[best])) }),
      ...opts.series.map((s) => {
        const v = s.points[best][1];
        return el("div", {}, el("span", { class: "swatch " + s.cls }), s.name + ": ",
          el("b", { text: v === null ? "—" : opts.unit === " ms" ? fmtMs(v) : fmtTick(v, 1) }));
      })
    );
    tip.hidden = false;
    const left = (bx / width) * rect.width;
    tip.style.left = Math.min(rect.width - 170, Math.max(0, left + 12)) + "px";
  });
  overlay.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    tip.hidden = true;
  });
  const legend = el(
    "div",
    { class: "legend" },
    opts.series.map((s) => el("span", { class: "legend-item" }, el("span", { class: "swatch " + s.cls + (s.dashed ? " dashed" : "") }), s.name))
  );
  box.replaceChildren(legend, el("div", { class: "chart-wrap" }, root, tip));
}

/**
 * Bars into ``box``: bars [{label, count, cls}] side by side on one axis, the count above each
 * when ``showCounts``, ``placeholder`` (if any) written across the middle; ``label`` for readers.
 */
export function barChart(box, { bars, showCounts, placeholder, label }) {
  const counts = bars.map((b) => b.count);
  const width = Math.max(260, box.clientWidth || 360);
  const height = 170;
  const m = { l: 8, r: 8, t: 18, b: 22 };
  const max = Math.max(1, ...counts);
  const slot = (width - m.l - m.r) / counts.length;
  const bw = Math.max(6, slot * 0.72);
  const plotH = height - m.t - m.b;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img",
    "aria-label": label,
  });
  root.append(svg("line", { x1: m.l, x2: width - m.r, y1: m.t + plotH + 0.5, y2: m.t + plotH + 0.5, class: "axis" }));
  counts.forEach((c, i) => {
    const x = m.l + i * slot + (slot - bw) / 2;
    const h = c ? Math.max(2, (c / max) * plotH) : 0;
    const b = bars[i];
    if (c) root.append(svg("rect", { x, y: m.t + plotH - h, width: bw, height: h, rx: 3, class: "hbar " + b.cls }));
    root.append(
      showCounts ? svg("text", { x: x + bw / 2, y: m.t + plotH - h - 5, class: "hcount" + (c ? "" : " zero"), "text-anchor": "middle", text: String(c) }) : null,
      svg("text", { x: x + bw / 2, y: height - 6, class: "tick", "text-anchor": "middle", text: b.label })
    );
  });
  if (placeholder) {
    root.append(svg("text", { x: width / 2, y: m.t + plotH / 2, "text-anchor": "middle", class: "placeholder",
      text: placeholder }));
  }
  box.replaceChildren(root);
}
