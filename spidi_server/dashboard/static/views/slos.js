/*
 * The room view's SLO card: every latency SLO that covers the room on screen, judged on that
 * room's heartbeats alone (REST, refreshed with the history): compliance over the SLO's window,
 * the error budget left and the burn rates. Hidden when no SLO covers the room.
 */

import { loadRoomSlos } from "../api.js";
import { $, el } from "../dom.js";
import { num } from "../format.js";
import { state } from "../state.js";

const BURN_WINDOWS = ["5m", "1h", "6h", "3d"];

/** Fetch the SLOs of the room on screen; a newer call supersedes one still on its way. */
export async function loadSlos() {
  const r = state.room;
  if (!r || !r.roomId) return;
  if (r.slosAbort) r.slosAbort.abort();
  const abort = new AbortController();
  r.slosAbort = abort;
  const result = await loadRoomSlos(state.token, r.roomId, abort.signal);
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

function sloRow(slo, s) {
  const budget = num(s.errorBudgetRemaining);
  const cells = [
    el("td", { class: "c-name", text: slo.name }),
    el("td", { class: "c-objective", text: objective(slo) + " over " + slo.windowDays + " d" }),
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
  const tr = el("tr", { "data-slo": slo.id });
  tr.append(...cells);
  return tr;
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
  $("#room-slos-table tbody").replaceChildren(...r.slos.items.map((i) => sloRow(i.slo, i.status)));
}
