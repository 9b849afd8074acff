/*
 * Open alerts: the /topic/alerts feed (a snapshot, then transitions and acknowledgements) kept in
 * state.alerts and indexed per room, the global view's alerts panel, the room view's alerts card,
 * and the Acknowledge button (REST, with the signed-in token).
 */

import { acknowledgeAlert } from "./api.js";
import { $, el, reconcile, setText, toast } from "./dom.js";
import { fmtDuration, fmtMs, fmtTick, fullFmt, num, timeFmt, toMs } from "./format.js";
import { schedule, state } from "./state.js";

// Worst first where alerts are ranked; the rank also sorts the rooms table's alert column.
export const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 };

const alertKey = (a) => a.ruleId + "/" + a.roomId;

/**
 * /topic/alerts: ALERTS (the open alerts, at once and after every reconnection) replaces what we
 * hold; ALERT is one transition ("resolved" ends the rule's alert in that room); ALERT_ACK marks
 * the open alert of that episode acknowledged. Alerts are keyed by rule and room.
 */
export function onAlerts(msg) {
  if (!msg) return;
  if (msg.type === "ALERTS" && Array.isArray(msg.alerts)) {
    state.alerts = new Map();
    for (const a of msg.alerts) if (a && a.ruleId) state.alerts.set(alertKey(a), Object.assign({}, a));
    state.alertsReady = true;
    state.alertsError = null;
  } else if (msg.type === "ALERT" && msg.ruleId) {
    const key = alertKey(msg);
    if (msg.state === "resolved") state.alerts.delete(key);
    else {
      const prev = state.alerts.get(key);
      const next = Object.assign({}, msg);
      // pending -> firing continues the episode: an acknowledgement of it still holds.
      if (prev && prev.episodeId === msg.episodeId && !next.acknowledgedBy) {
        next.acknowledgedBy = prev.acknowledgedBy;
        next.acknowledgedAt = prev.acknowledgedAt;
      }
      state.alerts.set(key, next);
    }
  } else if (msg.type === "ALERT_ACK" && msg.ruleId) {
    markAcknowledged(alertKey(msg), msg.alertId, msg.acknowledgedBy, msg.acknowledgedAt);
  } else {
    return;
  }
  indexAlerts();
  schedule("alerts");
}

function markAcknowledged(key, alertId, by, at) {
  const a = state.alerts.get(key);
  // An acknowledgement of an earlier episode says nothing about this one.
  if (!a || (a.episodeId !== alertId && a.alertId !== alertId)) return;
  a.acknowledgedBy = by;
  a.acknowledgedAt = toMs(at);
}

function byWorst(a, b) {
  return (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) ||
    (a.state === "firing" ? 0 : 1) - (b.state === "firing" ? 0 : 1) || (num(b.since) || 0) - (num(a.since) || 0);
}

const byNewest = (a, b) => (num(b.since) || 0) - (num(a.since) || 0) || (num(b.at) || 0) - (num(a.at) || 0);

function indexAlerts() {
  const byRoom = new Map();
  for (const a of state.alerts.values()) {
    if (!a.roomCode) continue;
    if (!byRoom.has(a.roomCode)) byRoom.set(a.roomCode, []);
    byRoom.get(a.roomCode).push(a);
  }
  for (const list of byRoom.values()) list.sort(byWorst);
  state.alertsByRoom = byRoom;
}

/** The global view's panel: every open alert of the tenant, newest first. */
export function renderAlertPanel() {
  if (document.body.dataset.view !== "global") return;
  const now = Date.now();
  const alerts = [...state.alerts.values()].sort(byNewest);
  reconcile($("#alerts-table").tBodies[0], alerts, "alert", alertKey, () => createAlertRow(true),
    (tr, a) => updateAlertRow(tr, a, now));
  const err = $("#alerts-error");
  err.hidden = !state.alertsError;
  err.textContent = state.alertsError ? "Alerts are unavailable: " + state.alertsError : "";
  const empty = $("#alerts-empty");
  empty.hidden = alerts.length > 0 || !!state.alertsError;
  empty.textContent = state.alertsReady ? "No open alerts." : "Waiting for alerts…";
  const firing = alerts.filter((a) => a.state === "firing").length;
  $("#alerts-count").textContent = alerts.length
    ? alerts.length + " open" + (firing && firing < alerts.length ? " · " + firing + " firing" : "")
    : "";
}

/** The room view's card: the open alerts of the room on screen (hidden when none). */
export function renderRoomAlerts() {
  const r = state.room;
  if (!r) return;
  const alerts = (state.alertsByRoom.get(r.code) || []).slice().sort(byNewest);
  const now = Date.now();
  $("#room-alerts-card").hidden = !alerts.length;
  reconcile($("#room-alerts-table").tBodies[0], alerts, "alert", alertKey, () => createAlertRow(false),
    (tr, a) => updateAlertRow(tr, a, now));
  $("#room-alerts-count").textContent = alerts.length ? String(alerts.length) : "";
}

export function severityBadge(severity, pending) {
  return el("span", { class: "sev sev-" + (severity || "info") + (pending ? " pending" : ""), text: severity || "?" });
}

function createAlertRow(withRoom) {
  const tr = el(
    "tr",
    {},
    el("td", { class: "c-sev" }),
    el("td", { class: "c-rule" }, el("div", { class: "primary-text" }), el("div", { class: "muted small mono expr" })),
    withRoom ? el("td", { class: "c-room" }, el("a", { class: "mono" })) : null,
    el("td", { class: "c-state" }),
    el("td", { class: "num c-value" }),
    el("td", { class: "num c-since" }),
    el("td", { class: "c-ack" })
  );
  return tr;
}

// ``ratio``: a heartbeat rule's figure is seconds of silence, or with a share (its expression then
// tests silentShare) the share of the room's sessions silent; its threshold is always seconds.
function fmtAlertValue(kind, v, ratio) {
  v = num(v);
  if (v === null) return "—";
  if (kind === "latency") return fmtMs(v);
  if (kind === "slo_burn") return fmtTick(v, 1) + "×"; // an error-budget burn rate
  if (kind === "heartbeat" && !ratio) return fmtTick(v, 1) + " s";
  if (kind === "capacity" || kind === "heartbeat_rate" || kind === "heartbeat") {
    return (v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0) + " %";
  }
  return fmtTick(v, 2);
}

function updateAlertRow(tr, a, now) {
  const sev = tr.querySelector(".c-sev");
  const sevSig = a.severity + ":" + a.state;
  if (sev.dataset.sig !== sevSig) {
    sev.dataset.sig = sevSig;
    sev.replaceChildren(severityBadge(a.severity, a.state === "pending"));
  }
  const rule = tr.querySelector(".c-rule");
  setText(rule.firstChild, a.ruleName || "—");
  setText(rule.lastChild, a.expression || "");
  if (rule.lastChild.title !== (a.expression || "")) rule.lastChild.title = a.expression || "";
  const link = tr.querySelector(".c-room a");
  if (link) {
    setText(link, a.roomCode || "—");
    const href = "#/rooms/" + encodeURIComponent(a.roomCode || "");
    if (link.getAttribute("href") !== href) link.setAttribute("href", href);
  }
  const st = tr.querySelector(".c-state");
  if (st.textContent !== a.state) st.replaceChildren(el("span", { class: "tag state-" + a.state, text: a.state }));
  const value = tr.querySelector(".c-value");
  setText(value, fmtAlertValue(a.kind, a.value, /silentShare/.test(a.expression || "")));
  const threshold = num(a.threshold) === null ? "" : "threshold " + fmtAlertValue(a.kind, a.threshold);
  if (value.title !== threshold) value.title = threshold;
  const since = num(a.since);
  setText(tr.querySelector(".c-since"), since === null ? "—" : fmtDuration(now - since));
  updateAckCell(tr.querySelector(".c-ack"), a);
}

/** The roles that may acknowledge but this token lacks (none: it may; unknown config: the server decides). */
function ackRolesMissing() {
  const allowed = state.config && state.config.acknowledgeRoles;
  if (!Array.isArray(allowed)) return null;
  const held = (state.claims && state.claims.roles) || [];
  const mine = Array.isArray(held) ? held : [held];
  return mine.some((r) => allowed.includes(r)) ? null : allowed;
}

function updateAckCell(cell, a) {
  const key = alertKey(a);
  const busy = state.acking.has(key);
  const missing = ackRolesMissing();
  const sig = a.acknowledgedBy
    ? "by:" + a.acknowledgedBy + ":" + a.acknowledgedAt
    : missing
      ? "denied"
      : busy
        ? "busy"
        : "open";
  if (cell.dataset.sig === sig) return;
  cell.dataset.sig = sig;
  if (a.acknowledgedBy) {
    const at = toMs(a.acknowledgedAt);
    cell.replaceChildren(
      el("span", { class: "acked" }, "✓ ", el("b", { text: a.acknowledgedBy }), at ? " · " + timeFmt.format(at) : "")
    );
    cell.title = "Acknowledged by " + a.acknowledgedBy + (at ? ", " + fullFmt.format(new Date(at)) : "");
    return;
  }
  if (missing) {
    cell.title = "Acknowledging alerts needs the role " + missing.join(" or ");
    cell.replaceChildren(el("button", { type: "button", class: "small-btn ack", disabled: true, text: "Acknowledge" }));
    return;
  }
  cell.removeAttribute("title");
  cell.replaceChildren(
    el("button", {
      type: "button",
      class: "small-btn ack",
      disabled: busy,
      text: busy ? "Acknowledging…" : "Acknowledge",
      onclick: () => acknowledge(key),
    })
  );
}

/** POST the acknowledgement of the alert's episode; the ALERT_ACK that follows tells every dashboard. */
async function acknowledge(key) {
  const a = state.alerts.get(key);
  if (!a || state.acking.has(key)) return;
  const id = a.episodeId || a.alertId;
  state.acking.add(key);
  schedule("alerts");
  try {
    const result = await acknowledgeAlert(state.token, id);
    if (result.ok) markAcknowledged(key, id, result.acknowledgedBy, result.acknowledgedAt);
    else toast("Could not acknowledge the alert: " + result.reason);
  } finally {
    state.acking.delete(key);
    schedule("alerts");
  }
}
