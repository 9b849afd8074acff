"""What the evaluator reads of latency SLOs: burn rates per room for ``slo_burn`` rules, and each
SLO's compliance, budget and burn rates for the ``spidi_slo_*`` metrics. From PostgreSQL, cached.

The figures come from the room statistics' minutes (``history.sql.slos.sli_counts``), which the
writer stores once a minute: reading them every evaluation round (each second) would only repeat
the same answer. So, per SLO at most once per ``slo_refresh_s``, one query gives every covered
room's (good, total) over 5 m, 30 m, 1 h and 6 h (only SLOs an enabled slo_burn rule watches);
and at most once per ``slo_budget_refresh_s`` one query per SLO gives its whole scope's figures
over the burn-rate windows and its own window (e.g. 28 days: the longest scan) for the metrics.
Only the process holding the evaluator lease reads and exports them; a follower exports none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import logs
from ..history.sql import slos as slo_sql
from . import slo

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings
    from .rules import AlertRule

log = logging.getLogger("spidi.alerting")

Run = Callable[[Callable[[Any], Any]], Any]  # awaitable: run fn(connection) in the worker thread


def slo_from_row(row: dict) -> slo.Slo:
    """An ``slo.Slo`` from a ``slos.load_slos`` row (SloError: a threshold off the bucket bounds)."""
    slo.bucket_count(row["threshold_ms"])
    return slo.Slo(
        slo_id=row["slo_id"],
        tenant=row["tenant"],
        name=row["name"],
        scope=row["scope"],
        room_id=row["room_id"],
        room_type_id=row["room_type_id"],
        threshold_ms=float(row["threshold_ms"]),
        target=float(row["target"]),
        window_days=int(row["window_days"]),
    )


class SloReader:
    """The evaluator's SLOs and their cached figures."""

    def __init__(self, settings: Settings, metrics: NodeMetrics):
        self.settings = settings
        self.metrics = metrics
        self.slos: dict[str, slo.Slo] = {}
        # slo id -> room id -> CEL burn-rate variables, and when each SLO was last read.
        self.burns: dict[str, dict[str, dict[str, float]]] = {}
        self._burn_read: dict[str, float] = {}
        self._budget_read = float("-inf")

    def load(self, rows: list[dict]) -> None:
        """The SLOs as reloaded with the rules; figures of changed or removed SLOs are read again."""
        fresh = {}
        for row in rows:
            try:
                fresh[row["slo_id"]] = slo_from_row(row)
            except slo.SloError as exc:  # stored around the API: not evaluated
                logs.event(log, "slo_unusable", logging.ERROR, slo_id=row["slo_id"], error=str(exc))
        for slo_id in set(self.slos) | set(fresh):
            if self.slos.get(slo_id) != fresh.get(slo_id):
                self.burns.pop(slo_id, None)
                self._burn_read.pop(slo_id, None)
                self._budget_read = float("-inf")
        self.slos = fresh

    def variables(self, slo_id: str, room_id: str) -> dict[str, float]:
        """The burn-rate variables of one room under one SLO (zeros without heartbeats)."""
        return self.burns.get(slo_id, {}).get(room_id) or dict.fromkeys(
            ("burnRate" + w for w in slo.ALERT_WINDOWS), 0.0
        )

    async def refresh(self, run: Run, rules: list[AlertRule], now_ms: int) -> None:
        """Read again what is due: burn rates of the SLOs that slo_burn rules watch, then metrics."""
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        clock = time.monotonic()
        watched = {r.slo_id for r in rules if r.kind == "slo_burn" and r.slo_id in self.slos}
        for slo_id in sorted(watched):
            if clock - self._burn_read.get(slo_id, float("-inf")) < self.settings.slo_refresh_s:
                continue
            s = self.slos[slo_id]
            self._burn_read[slo_id] = clock  # also when the read fails: tried again a period later
            counts = await run(
                lambda c, s=s: self._counts(
                    c, s, now, [(w, slo.BURN_WINDOWS[w]) for w in slo.ALERT_WINDOWS], True
                )
            )
            self.burns[slo_id] = {
                room_id: slo.burn_variables({w: slo.Counts(*gt) for w, gt in per.items()}, s.target)
                for room_id, per in counts.items()
            }
        for slo_id in set(self.burns) - watched:
            del self.burns[slo_id]
        if clock - self._budget_read >= self.settings.slo_budget_refresh_s:
            self._budget_read = clock
            await self._export(run, now)

    async def _export(self, run: Run, now: datetime) -> None:
        """Set the spidi_slo_* gauges of every SLO (and of no other)."""
        figures = {}
        for slo_id, s in self.slos.items():
            windows = [*slo.BURN_WINDOWS.items(), ("window", s.window_days * 86_400)]
            figures[slo_id] = (
                s,
                (await run(lambda c, s=s, w=windows: self._counts(c, s, now, w, False)))[None],
            )
        self.clear()
        m = self.metrics
        for slo_id, (s, counts) in figures.items():
            whole = slo.Counts(*counts["window"])
            compliance = slo.compliance(whole)
            m.slo_compliance.labels(slo=slo_id).set(1.0 if compliance is None else compliance)
            m.slo_error_budget_remaining.labels(slo=slo_id).set(slo.budget_remaining(whole, s.target))
            for w in slo.BURN_WINDOWS:
                m.slo_burn_rate.labels(slo=slo_id, window=w).set(
                    slo.burn_rate(slo.Counts(*counts[w]), s.target)
                )

    @staticmethod
    def _counts(conn, s: slo.Slo, now: datetime, windows, per_room: bool):
        return slo_sql.sli_counts(
            conn,
            tenant=s.tenant,
            scope=s.scope,
            room_id=s.room_id,
            room_type_id=s.room_type_id,
            buckets=s.buckets,
            now=now,
            windows=windows,
            per_room=per_room,
        )

    def clear(self) -> None:
        """Export nothing (a follower, or before the gauges are set again)."""
        for gauge in (
            self.metrics.slo_compliance,
            self.metrics.slo_error_budget_remaining,
            self.metrics.slo_burn_rate,
        ):
            gauge.clear()

    def reset(self) -> None:
        """Forget every figure (the lease is lost: a successor reads its own)."""
        self.burns.clear()
        self._burn_read.clear()
        self._budget_read = float("-inf")
        self.clear()
