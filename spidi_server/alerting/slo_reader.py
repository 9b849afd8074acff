"""What the evaluator reads of latency SLOs: burn rates per room for ``slo_burn`` rules, and each
SLO's compliance, budget and burn rates for the ``spidi_slo_*`` metrics. From PostgreSQL, cached.

The figures come from the room statistics' minutes (``history.sql.slos.sli_counts``), which the
writer stores once a minute: reading them every evaluation round (each second) would only repeat
the same answer. So, per SLO at most once per ``slo_refresh_s``, one query gives every covered
room's (good, total) over 5 m, 30 m, 1 h and 6 h (only SLOs an enabled slo_burn rule watches);
and at most once per ``slo_budget_refresh_s`` one query per SLO gives its whole scope's figures
over the burn-rate windows and its own window (e.g. 28 days: the longest scan) for the metrics.
Only the process holding the evaluator lease reads and exports them; a follower exports none. The
reads run as a background task on a connection of their own; each round uses the figures at hand
(an SLO's first figures arrive a round or two after it is loaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .. import logs
from ..history.sql import slos as slo_sql
from . import slo

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings
    from .rules import AlertRule

log = logging.getLogger("spidi.alerting")


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
    """The evaluator's SLOs and their cached figures, read in the background on a connection of
    their own: a long scan (an SLO window of 28 days over a big tenant) must never hold up an
    evaluation round, whose lease renewal it would delay."""

    def __init__(self, settings: Settings, metrics: NodeMetrics, dsn: str):
        self.settings = settings
        self.metrics = metrics
        self.dsn = dsn
        self.slos: dict[str, slo.Slo] = {}
        # slo id -> room id -> CEL burn-rate variables, and when each SLO was last read.
        self.burns: dict[str, dict[str, dict[str, float]]] = {}
        self._burn_read: dict[str, float] = {}
        self._budget_read = float("-inf")
        self._task: asyncio.Task | None = None
        self._generation = 0  # moves on reset: figures read before it are dropped
        self._failing = False
        self._conn = None  # psycopg connection, used from one worker thread at a time

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
        """The burn-rate variables of one room under one SLO (zeros without heartbeats or figures)."""
        return self.burns.get(slo_id, {}).get(room_id) or dict.fromkeys(
            ("burnRate" + w for w in slo.ALERT_WINDOWS), 0.0
        )

    def refresh(self, rules: list[AlertRule], now_ms: int) -> None:
        """Start reading what is due in the background (unless a read is under way): burn rates of
        the SLOs that enabled slo_burn rules watch, then the metrics. Rounds use the figures at hand."""
        if self._task is not None and not self._task.done():
            return
        clock = time.monotonic()
        watched = {r.slo_id for r in rules if r.kind == "slo_burn" and r.slo_id in self.slos}
        for slo_id in set(self.burns) - watched:
            del self.burns[slo_id]
        due = [
            self.slos[i]
            for i in sorted(watched)
            if clock - self._burn_read.get(i, float("-inf")) >= self.settings.slo_refresh_s
        ]
        budgets = clock - self._budget_read >= self.settings.slo_budget_refresh_s
        if not due and not budgets:
            return
        # Marked now, also when the read fails: tried again a period later, not every round.
        for s in due:
            self._burn_read[s.slo_id] = clock
        if budgets:
            self._budget_read = clock
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        todo = list(self.slos.values()) if budgets else []
        self._task = asyncio.get_running_loop().create_task(
            self._read(due, todo, now, self._generation), name="spidi-slo-reader"
        )

    async def settled(self) -> None:
        """Wait for the read under way, if any (tests; a clean stop)."""
        if self._task is not None:
            await asyncio.wait({self._task})

    async def _read(self, due: list[slo.Slo], budgets: list[slo.Slo], now: datetime, generation: int) -> None:
        try:
            burns, figures = await asyncio.to_thread(self._read_all, due, budgets, now)
        except Exception as exc:  # PostgreSQL away: rules keep the figures last read
            if not self._failing:  # once per outage
                logs.event(log, "slo_read_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
            self._failing = True
            await asyncio.to_thread(self.close)
            return
        if self._failing:
            logs.event(log, "slo_read_recovered")
        self._failing = False
        if generation != self._generation:  # the lease was lost meanwhile: export nothing
            return
        for s in due:
            if s.slo_id in self.slos:
                self.burns[s.slo_id] = burns[s.slo_id]
        if budgets:
            self._export(figures)

    def _read_all(self, due: list[slo.Slo], budgets: list[slo.Slo], now: datetime):
        """(burn variables by SLO and room, whole-scope counts by SLO and window): in a worker thread."""
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
        windows = [(w, slo.BURN_WINDOWS[w]) for w in slo.ALERT_WINDOWS]
        burns = {}
        for s in due:
            counts = self._counts(s, now, windows, True)
            burns[s.slo_id] = {
                room_id: slo.burn_variables({w: slo.Counts(*gt) for w, gt in per.items()}, s.target)
                for room_id, per in counts.items()
            }
        figures = {}
        for s in budgets:
            whole = [*slo.BURN_WINDOWS.items(), ("window", s.window_days * 86_400)]
            figures[s.slo_id] = (s, self._counts(s, now, whole, False)[None])
        return burns, figures

    def _counts(self, s: slo.Slo, now: datetime, windows, per_room: bool):
        return slo_sql.sli_counts(
            self._conn,
            tenant=s.tenant,
            scope=s.scope,
            room_id=s.room_id,
            room_type_id=s.room_type_id,
            buckets=s.buckets,
            now=now,
            windows=windows,
            per_room=per_room,
        )

    def _export(self, figures: dict) -> None:
        """Set the spidi_slo_* gauges of the SLOs read (and of no other)."""
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
        self._generation += 1
        self.burns.clear()
        self._burn_read.clear()
        self._budget_read = float("-inf")
        self.clear()

    async def stop(self, timeout: float) -> None:
        """Let a read under way finish (up to ``timeout``), then close the connection."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=timeout)
        if self._task is None or self._task.done():
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the reader's connection (from the thread that last used it, or after it)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
