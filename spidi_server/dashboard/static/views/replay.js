/*
 * The room view's replay card: a time slider over the last 24 hours (or 7 days) that replays who
 * was in the room and how many, from session history. The counts come once per range from
 * /api/v1/rooms/{id}/timeline (exact counts at each instant); the roster at the instant the slider
 * points to from /api/v1/rooms/{id}/roster?at= (fetched when the slider rests, the older request
 * aborted). The card builds its own DOM, placed before the live roster card; the room view only
 * calls enterReplay (when the room's id is known) and leaveReplay.
 */

import { lineChart } from "../charts.js";
import { $, el, setText } from "../dom.js";
import { fmtInt, fullFmt, toMs } from "../format.js";
import { state } from "../state.js";

const RANGES = {
  "24h": { ms: 86400e3, points: 288, label: "last 24 hours" }, // every 5 minutes
  "7d": { ms: 7 * 86400e3, points: 336, label: "last 7 days" }, // every 30 minutes
};
const SETTLE_MS = 150; // the slider rests this long before its roster is fetched
const REASONS = {
  400: "the history API rejected the request",
  401: "the history API refused the token",
  403: "this token may not read history",
  404: "no history is recorded for this room",
  503: "the history store is unavailable",
};

let replay = null; // {roomId, range, points, index, abort, timer} of the room on screen

function card() {
  let box = $("#replay-card");
  if (box) return box;
  const seg = el(
    "div",
    { class: "seg", id: "replay-range", role: "group", "aria-label": "Replay range" },
    ...Object.keys(RANGES).map((key) =>
      el("button", { type: "button", dataset: { range: key }, "aria-pressed": "false", text: key === "24h" ? "24 h" : "7 d", onclick: () => setRange(key) }),
    ),
  );
  box = el(
    "div",
    { class: "card", id: "replay-card" },
    el("div", { class: "card-head" }, el("h2", { text: "Replay" }), el("div", { class: "spacer" }), seg),
    el("div", { class: "history-status", id: "replay-status" }),
    el(
      "div",
      { id: "replay-body", hidden: true },
      el("div", { id: "replay-chart", class: "chart-box" }),
      el(
        "div",
        { class: "stats" },
        el("input", { type: "range", id: "replay-slider", min: "0", max: "0", step: "1", value: "0", "aria-label": "Instant to replay", oninput: onSlide }),
      ),
      el(
        "div",
        { class: "stats" },
        el("div", {}, el("span", { class: "muted", text: "At " }), el("b", { id: "replay-time", text: "—" })),
        el("div", {}, el("span", { class: "muted", text: "Online " }), el("b", { id: "replay-online", text: "—" })),
      ),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "grid static", id: "replay-table" },
          el("thead", {}, el("tr", {}, ...["User / client", "Device", "OS", "App version", "IP", "Started", "Ended", "End reason"].map((t) => el("th", { scope: "col", text: t })))),
          el("tbody"),
        ),
      ),
      el("p", { class: "empty", id: "replay-empty", hidden: true, text: "Nobody was in the room then." }),
    ),
  );
  $("#replay-slider", box).style.width = "100%"; // CSSOM: the page's CSP refuses style attributes
  const roster = $("#roster-table").closest(".card");
  roster.parentNode.insertBefore(box, roster);
  return box;
}

function status(text) {
  const s = $("#replay-status");
  s.hidden = !text;
  s.replaceChildren(...(text ? [el("span", { class: "muted", text })] : []));
  $("#replay-body").hidden = Boolean(text);
}

async function getJson(url, signal) {
  try {
    const resp = await fetch(url, {
      headers: { Authorization: "Bearer " + state.token, Accept: "application/json" },
      signal,
      cache: "no-store",
    });
    if (!resp.ok) return { error: (REASONS[resp.status] || "the history API answered an error") + " (HTTP " + resp.status + ")" };
    return { data: await resp.json() };
  } catch (e) {
    if (e && e.name === "AbortError") return null;
    return { error: "the history API could not be reached" };
  }
}

/** Show the replay card for the room on screen, once its id is known (the API asks by id). */
export function enterReplay(r) {
  card();
  if (!r || !r.roomId) {
    status("Waiting for the room's id…");
    return;
  }
  if (replay && replay.roomId === r.roomId) return;
  leaveReplay();
  replay = { roomId: r.roomId, range: "24h", points: [], index: 0, abort: null, timer: null };
  loadTimeline();
}

export function leaveReplay() {
  if (!replay) return;
  if (replay.abort) replay.abort.abort();
  clearTimeout(replay.timer);
  replay = null;
}

function setRange(key) {
  if (!replay || replay.range === key) return;
  replay.range = key;
  loadTimeline();
}

async function loadTimeline() {
  const mine = replay;
  for (const b of document.querySelectorAll("#replay-range button")) b.setAttribute("aria-pressed", String(b.dataset.range === mine.range));
  if (mine.abort) mine.abort.abort();
  mine.abort = new AbortController();
  status("Loading replay…");
  const range = RANGES[mine.range];
  const to = new Date(Date.now() - 1000); // never "in the future" for the server's clock
  const from = new Date(to.getTime() - range.ms);
  const url =
    "/api/v1/rooms/" + encodeURIComponent(mine.roomId) + "/timeline?from=" + encodeURIComponent(from.toISOString()) +
    "&to=" + encodeURIComponent(to.toISOString()) + "&points=" + range.points;
  const result = await getJson(url, mine.abort.signal);
  if (!result || replay !== mine) return;
  if (result.error) {
    status("No replay — " + result.error + ".");
    return;
  }
  mine.points = (Array.isArray(result.data.points) ? result.data.points : [])
    .map((p) => ({ t: toMs(p.ts), ts: p.ts, online: typeof p.online === "number" ? p.online : null }))
    .filter((p) => p.t !== null && p.online !== null);
  if (!mine.points.length) {
    status("No replay — the history API answered no timeline.");
    return;
  }
  mine.from = from.getTime();
  mine.to = to.getTime();
  status("");
  const slider = $("#replay-slider");
  slider.max = String(mine.points.length - 1);
  slider.value = String(mine.points.length - 1);
  lineChart($("#replay-chart"), {
    from: mine.from, to: mine.to, stepMs: result.data.stepSeconds * 1000, integer: true, unit: "",
    series: [{ name: "Online", cls: "s-online", area: true, points: mine.points.map((p) => [p.t, p.online]) }],
  });
  select(mine.points.length - 1);
}

function onSlide(event) {
  if (!replay || !replay.points.length) return;
  const index = Number(event.target.value);
  showInstant(index);
  clearTimeout(replay.timer);
  replay.timer = setTimeout(() => select(index), SETTLE_MS);
}

function showInstant(index) {
  const p = replay.points[index];
  setText($("#replay-time"), fullFmt.format(new Date(p.t)));
  setText($("#replay-online"), fmtInt(p.online));
  $("#replay-card").dataset.at = p.ts;
}

/** The roster at the instant ``index``: fetched, then the table (the latest request wins). */
async function select(index) {
  const mine = replay;
  if (!mine || !mine.points.length) return;
  mine.index = index;
  showInstant(index);
  if (mine.abort) mine.abort.abort();
  mine.abort = new AbortController();
  const p = mine.points[index];
  const url = "/api/v1/rooms/" + encodeURIComponent(mine.roomId) + "/roster?at=" + encodeURIComponent(p.ts);
  const result = await getJson(url, mine.abort.signal);
  if (!result || replay !== mine || mine.index !== index) return;
  if (result.error) {
    status("No replay — " + result.error + ".");
    return;
  }
  renderRoster(Array.isArray(result.data.items) ? result.data.items : [], p.ts);
}

function renderRoster(items, at) {
  const when = (ts) => (ts ? fullFmt.format(new Date(toMs(ts))) : "—");
  const rows = items.map((s) =>
    el(
      "tr",
      { dataset: { session: s.sessionId } },
      el("td", {}, el("b", { text: s.userId || "—" }), el("span", { class: "muted small", text: " " + (s.clientId || "") })),
      el("td", { text: s.device || "—" }),
      el("td", { text: s.os || "—" }),
      el("td", { text: s.appVersion || "—" }),
      el("td", { class: "mono", text: "ip" in s ? s.ip || "—" : "hidden" }),
      el("td", { text: when(s.startedAt) }),
      el("td", { text: s.endedAt ? when(s.endedAt) : "still open" }),
      el("td", { text: s.endReason || "—" }),
    ),
  );
  $("#replay-table tbody").replaceChildren(...rows);
  $("#replay-empty").hidden = items.length > 0;
  const box = $("#replay-card");
  box.dataset.rosterAt = at; // what the table shows (tests wait on it)
}
