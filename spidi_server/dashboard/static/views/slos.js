/*
 * The room view's SLO card: every latency SLO that covers the room on screen, judged on that
 * room's heartbeats alone (REST, refreshed with the history): compliance over the SLO's window,
 * the error budget left and the burn rates, and under each SLO the same figures per client app
 * version or OS (the breakdown the select picks: which release is burning), the most overspent
 * first. Hidden when no SLO covers the room.
 */

import { loadRoomSlos } from "../api.js";
import { $, el } from "../dom.js";
import { num } from "../format.js";
import { state } from "../state.js";

const BURN_WINDOWS = ["5m", "1h", "6h", "3d"];

const GROUP_NAMES = { appVersion: "app version", os: "OS" };
let breakdownWired = false;

/** Fetch the SLOs of the room on screen; a newer call supersedes one still on its way. */
export async function loadSlos() {
  const r = state.room;
  if (!r || !r.roomId) return;
  const select = $("#room-slos-breakdown");
  if (!breakdownWired) {
    breakdownWired = true;
    select.addEventListener("change", () => loadSlos());
  }
  if (r.slosAbort) r.slosAbort.abort();
  const abort = new AbortController();
  r.slosAbort = abort;
  const result = await loadRoomSlos(state.token, r.roomId, abort.signal, select.value);
  if (!result || state.room !== r || r.slosAbort !== abort) return;
  r.slosAbort = null;
  r.slos = result;
  renderSlos();
}

function pct(v, digits) {
  v = num(v);
  return v === null ? "—" : (v * 100).toFixed(digits) + " %";
}

function objective(slo) {
  const ms = slo.thresholdMs + " ms";
  return slo.objective === "percentile" ? "p" + slo.percentile + " ≤ " + ms : "≥ " + pct(slo.target, 2) + " ≤ " + ms;
}

/** The figure cells of an SLO or of one of its breakdown groups (same columns, same meaning). */
function figureCells(s) {
  const budget = num(s.errorBudgetRemaining);
  const cells = [
    el("td", { class: "num c-compliance" + (s.met === false ? " warn" : ""), text: pct(s.compliance, 3) }),
    el("td", { class: "num c-budget" + (budget !== null && budget < 0 ? " warn" : ""), text: pct(budget, 1) }),
  ];
  for (const w of BURN_WINDOWS) {
    const rate = num(s.burnRates[w]);
    cells.push(
      el("td", {
        class: "num c-burn-" + w + (rate !== null && rate > 1 ? " warn" : ""),
        text: rate === null ? "—" : rate.toFixed(rate < 1 ? 2 : 1) + "×",
      })
    );
  }
  return cells;
}

function sloRow(slo, s) {
  const tr = el("tr", { "data-slo": slo.id });
  tr.append(
    el("td", { class: "c-name", text: slo.name }),
    el("td", { class: "c-objective", text: objective(slo) + " over " + slo.windowDays + " d" }),
    ...figureCells(s)
  );
  return tr;
}

function groupLabel(dimension, g) {
  if (g.other) return "other " + GROUP_NAMES[dimension] + "s";
  if (dimension === "os" && g.value === "") return "no OS given";
  return g.value;
}

/** A breakdown group's row under its SLO: which app version or OS, how many heartbeats. */
function groupRow(slo, dimension, g) {
  const tr = el("tr", { class: "slo-group", "data-slo": slo.id, "data-group": g.other ? "" : g.value });
  tr.append(
    el("td", { class: "c-name c-group", text: "↳ " + groupLabel(dimension, g) }),
    el("td", { class: "c-objective muted", text: g.total + " heartbeats" }),
    ...figureCells(g)
  );
  return tr;
}

function rows(item) {
  const out = [sloRow(item.slo, item.status)];
  const b = item.status.breakdown;
  if (b) for (const g of b.groups) out.push(groupRow(item.slo, b.dimension, g));
  return out;
}

export function renderSlos() {
  const r = state.room;
  const card = $("#room-slos-card");
  if (!r || !r.slos || r.slos.status !== "ok") {
    card.hidden = true;
    return;
  }
  card.hidden = false;
  $("#room-slos-count").textContent = String(r.slos.items.length);
  $("#room-slos-table tbody").replaceChildren(...r.slos.items.flatMap(rows));
}
