/*
 * How values read: numbers, durations, times and the ok / warn / crit class of a capacity ratio
 * or a latency; and the parsing of the wire's loose values (timestamps, numbers). No DOM.
 */

const numberFmt = new Intl.NumberFormat(undefined);
export const fmtInt = (v) => (typeof v === "number" && isFinite(v) ? numberFmt.format(Math.round(v)) : "—");

export function fmtMs(v) {
  if (v === null || v === undefined || v === "" || !isFinite(Number(v))) return "—";
  v = Number(v);
  if (v >= 10000) return (v / 1000).toFixed(1) + " s";
  if (v < 10 && v !== Math.round(v)) return v.toFixed(1) + " ms";
  return numberFmt.format(Math.round(v)) + " ms";
}

export function fmtDuration(ms) {
  if (!(ms >= 0)) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + (s % 60) + " s";
  const h = Math.floor(m / 60);
  if (h < 24) return h + " h " + (m % 60) + " min";
  return Math.floor(h / 24) + " d " + (h % 24) + " h";
}

export function fmtAgo(ms) {
  if (!(ms >= 0)) ms = 0;
  return ms < 1500 ? "just now" : fmtDuration(ms) + " ago";
}

/** A chart's tick or read-out: 12k, 1.5M, 3.5, 1,200. */
export function fmtTick(v, digits) {
  if (v >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
  if (v !== Math.round(v)) return v.toFixed(digits || 1);
  return numberFmt.format(v);
}

export const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
export const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric" });
export const fullFmt = new Intl.DateTimeFormat(undefined, {
  weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hour12: false,
});

/** A timestamp in seconds or milliseconds (number or numeric string) or ISO 8601, as ms; else null. */
export function toMs(ts) {
  if (typeof ts === "number") return ts > 1e11 ? ts : ts * 1000;
  if (typeof ts === "string") {
    if (/^\d+(\.\d+)?$/.test(ts)) return toMs(Number(ts));
    const t = Date.parse(ts);
    return isNaN(t) ? null : t;
  }
  return null;
}

export const num = (v) => (v === null || v === undefined || v === "" || !isFinite(Number(v)) ? null : Number(v));

export function capacityClass(ratio) {
  return ratio >= 0.9 ? "crit" : ratio >= 0.7 ? "warn" : "ok";
}

export function latencyClass(v) {
  return v === null ? "" : v >= 500 ? "crit" : v >= 200 ? "warn" : "";
}
