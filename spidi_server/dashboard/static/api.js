/*
 * The REST calls of the ops port: the dashboard's config, an alert's acknowledgement and a room's
 * history. Each takes what it needs (the token too) and answers a plain result; no DOM, no state.
 */

import { toMs } from "./format.js";

/** /dashboard/config; unreachable or refused, a guess: the node's default WebSocket port on this host. */
export async function loadConfig() {
  try {
    const resp = await fetch("/dashboard/config", { cache: "no-store" });
    if (resp.ok) return await resp.json();
  } catch (e) {
    /* fall through */
  }
  return { wsUrl: (location.protocol === "https:" ? "wss://" : "ws://") + location.hostname + ":8765/ws" };
}

/**
 * POST the acknowledgement of an alert episode: {ok: true, acknowledgedBy, acknowledgedAt}, or
 * {ok: false, reason} with the reason as the toast says it.
 */
export async function acknowledgeAlert(token, id) {
  try {
    const resp = await fetch("/api/v1/alerts/" + encodeURIComponent(id) + "/acknowledge", {
      method: "POST",
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
    });
    if (resp.ok) {
      const body = await resp.json();
      return { ok: true, acknowledgedBy: body.acknowledgedBy, acknowledgedAt: body.acknowledgedAt };
    }
    let detail = "";
    try {
      detail = (await resp.json()).detail || "";
    } catch (e) {
      /* not a problem document */
    }
    const reasons = {
      401: "the API refused the token",
      403: "this token may not acknowledge alerts",
      404: "the alert is not in the history yet; try again in a few seconds",
      503: "the history store is unavailable",
    };
    return { ok: false, reason: reasons[resp.status] || detail || "HTTP " + resp.status };
  } catch (e) {
    return { ok: false, reason: "the API could not be reached." };
  }
}

/**
 * A room's stats from ``from`` to ``to`` (Dates) in the buckets of ``range`` ({bucket, label}):
 * {status: "ok", points (each with t, its time in ms, oldest first), bucket}, or {status: "none",
 * reason}; null when ``signal`` aborted the request.
 */
export async function loadRoomStats(token, roomId, range, from, to, signal) {
  const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
  const url =
    "/api/v1/rooms/" + encodeURIComponent(roomId) + "/stats?from=" + encodeURIComponent(iso(from)) +
    "&to=" + encodeURIComponent(iso(to)) + "&bucket=" + range.bucket;
  try {
    const resp = await fetch(url, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      signal,
      cache: "no-store",
    });
    if (!resp.ok) {
      const reasons = {
        400: "the history API rejected the request",
        401: "the history API refused the token",
        403: "this token may not read history",
        404: "no history is recorded for this room",
        503: "the history store is unavailable",
      };
      return { status: "none", reason: (reasons[resp.status] || "the history API answered an error") + " (HTTP " + resp.status + ")" };
    }
    const data = await resp.json();
    const points = (data && Array.isArray(data.points) ? data.points : [])
      .map((p) => Object.assign({}, p, { t: toMs(p.ts) }))
      .filter((p) => p.t !== null)
      .sort((a, b) => a.t - b.t);
    return points.length
      ? { status: "ok", points, bucket: data.bucket || range.bucket }
      : { status: "none", reason: "nothing recorded in the " + range.label };
  } catch (e) {
    if (e && e.name === "AbortError") return null;
    return { status: "none", reason: "the history API could not be reached" };
  }
}

/**
 * The latency SLOs that cover a room, each with its status counted on that room's heartbeats
 * (and broken down by ``breakdown``, appVersion or os, when given):
 * {status: "ok", items: [{slo, status}]} (an SLO whose scope leaves the room out answers 400 and
 * is skipped), or {status: "none", reason}; null when ``signal`` aborted the request.
 */
export async function loadRoomSlos(token, roomId, signal, breakdown) {
  const get = (url) =>
    fetch(url, { headers: { Authorization: "Bearer " + token, Accept: "application/json" }, signal, cache: "no-store" });
  try {
    const resp = await get("/api/v1/slos?limit=500");
    if (!resp.ok) {
      const reasons = { 401: "the API refused the token", 403: "this token may not read SLOs", 503: "the history store is unavailable" };
      return { status: "none", reason: (reasons[resp.status] || "the SLO API answered an error") + " (HTTP " + resp.status + ")" };
    }
    const slos = ((await resp.json()) || {}).items || [];
    const items = [];
    for (const slo of slos) {
      const r = await get("/api/v1/slos/" + encodeURIComponent(slo.id) + "/status?roomId=" + encodeURIComponent(roomId) +
        (breakdown ? "&breakdown=" + encodeURIComponent(breakdown) : ""));
      if (r.ok) items.push({ slo, status: await r.json() });
    }
    return items.length ? { status: "ok", items } : { status: "none", reason: "no SLO covers this room" };
  } catch (e) {
    if (e && e.name === "AbortError") return null;
    return { status: "none", reason: "the SLO API could not be reached" };
  }
}
