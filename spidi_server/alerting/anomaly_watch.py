"""The evaluator's anomaly reads and writes: baselines and recent activity from PostgreSQL, the
flags raised stored in ``dat_spd_anomaly`` (the statistics themselves: ``anomaly.py``).

Only rules whose expressions use an anomaly metric (``rules.ANOMALY_VARIABLES``: every rule of kind
``anomaly``, and custom rules that name one) cost anything: their rooms' baselines are computed in
SQL once per hour of week and kept in memory; their recent joins, ends and new sessions are read at
most every ``anomaly_refresh_s`` (what the writer has stored: flags follow the writer's flush).

A flag is stored when it rises for a rule and room, and ended when it clears (or its rule or room
no longer applies); a new leader carries on the flags its predecessor left raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .. import logs
from ..history.sql import anomalies as anomaly_sql
from .anomaly import Baseline, Flag, Recent, Sensitivity, Stat, counts, drop_groups, flags
from .rules import ANOMALY_VARIABLES

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings
    from .readings import RoomRef
    from .rules import AlertRule

log = logging.getLogger("spidi.alerting")
HOUR_MS = 3_600_000
WINDOW_S = 60.0  # storms and mass disconnects: events per minute, over the last minute


@dataclass
class Found:
    """What a rule sees of a room: its CEL anomaly metrics and the flags behind them."""

    counts: dict[str, int]
    flags: list[Flag] = field(default_factory=list)


def _stat(row: dict, name: str) -> Stat:
    return Stat(float(row[f"{name}_med"] or 0.0), float(row[f"{name}_mad"] or 0.0))


def baseline_of(row: dict | None) -> Baseline | None:
    """A room's baseline from its row of ``anomaly_sql.baselines``."""
    if row is None or not row["minutes"]:
        return None
    return Baseline(
        minutes=int(row["minutes"]),
        latency_minutes=int(row["latency_minutes"]),
        joins=_stat(row, "joins"),
        leaves=_stat(row, "leaves"),
        drops=_stat(row, "drops"),
        latency_p95=_stat(row, "p95") if row["latency_minutes"] else None,
    )


def recent_of(room_id: str, raw: dict) -> Recent:
    """A room's recent activity from ``anomaly_sql.recent``'s answer."""
    return Recent(
        joins=int(raw["joins"].get(room_id, 0)),
        leaves=int(raw["ends"].get(room_id, 0)),
        latency_p95=raw["p95"].get(room_id),
        drops=drop_groups(r[1:] for r in raw["drops"] if r[0] == room_id),
        reconnects={f"{r[1]}/{r[2]}": int(r[3]) - 1 for r in raw["flaps"] if r[0] == room_id},
    )


class AnomalyWatch:
    """The leader's anomaly state: cached baselines and readings, and the flags it holds raised."""

    def __init__(self, settings: Settings, dsn: str, metrics: NodeMetrics | None = None):
        self.settings = settings
        self.dsn = dsn
        self.metrics = metrics
        self._conn = None  # psycopg connection, used from one worker thread at a time
        self._baselines: dict[str, tuple[int, Baseline | None]] = {}  # room -> (hour start ms, baseline)
        self._recent: dict[str, Recent] = {}
        self._recent_at = float("-inf")
        self._recent_rooms: frozenset[str] = frozenset()
        self._open: dict[tuple[str, str, str], str] | None = None  # (rule, room, flag key) -> row id
        self._failing = False

    def reset(self) -> None:
        """Forget everything (the lead was lost: a successor owns the flags now)."""
        self._baselines, self._recent, self._open = {}, {}, None
        self._recent_at = float("-inf")

    async def close(self) -> None:
        """Close the PostgreSQL connection."""
        if self._conn is not None:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _db(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
        return self._conn

    # -- one round ------------------------------------------------------------------------------

    async def evaluate(
        self,
        rules: Iterable[AlertRule],
        targets: dict[str, list[RoomRef]],
        metrics: dict[str, dict],
        now_ms: int,
    ) -> dict[tuple[str, str], Found]:
        """Each anomaly-using rule's view of each of its rooms, by (rule id, room id); stores the
        flags that rose and ends those that cleared. PostgreSQL away: the last readings serve."""
        pairs = [
            (rule, room) for rule in rules if rule.anomaly_types for room in targets.get(rule.rule_id, ())
        ]
        if not pairs and not self._open:
            return {}
        room_ids = sorted({room.room_id for _, room in pairs})
        try:
            await asyncio.to_thread(self._read, room_ids, now_ms)
        except Exception as exc:
            self._trouble("anomaly_read_failed", exc)
            if self._open is None:  # without the raised flags a store would raise them twice
                return {
                    (rule.rule_id, room.room_id): Found(counts((), rule.anomaly_types, ANOMALY_VARIABLES))
                    for rule, room in pairs
                }
        out: dict[tuple[str, str], Found] = {}
        raised: dict[tuple[str, str, str], dict] = {}
        for rule, room in pairs:
            sens = self._sensitivity(rule)
            hour = self._baselines.get(room.room_id)
            found = flags(
                hour[1] if hour else None, self._recent.get(room.room_id, Recent()), sens, rule.anomaly_types
            )
            out[(rule.rule_id, room.room_id)] = Found(
                counts(found, rule.anomaly_types, ANOMALY_VARIABLES), found
            )
            for f in found:
                raised[(rule.rule_id, room.room_id, f.key)] = {
                    "tenant": rule.tenant,
                    "room_id": room.room_id,
                    "room_code": metrics.get(room.room_id, {}).get("roomCode") or room.code,
                    "rule_id": rule.rule_id,
                    "flag": f.flag,
                    "metric": f.metric,
                    "group_key": f.group,
                    "value": f.value,
                    "median": f.median,
                    "mad": f.mad,
                    "minutes": f.minutes,
                    "z": f.z,
                    "threshold": f.threshold,
                    "details": f.to_json(),
                }
        if self._open is not None:
            await self._store(raised, now_ms)
        return out

    def _sensitivity(self, rule: AlertRule) -> Sensitivity:
        s = self.settings
        return Sensitivity(
            z=float(rule.threshold) if rule.kind == "anomaly" and rule.threshold else s.anomaly_z_threshold,
            min_excess=s.anomaly_min_excess,
            latency_min_excess_ms=s.anomaly_latency_min_excess_ms,
            flap_reconnects=s.anomaly_flap_reconnects,
        )

    def _read(self, room_ids: list[str], now_ms: int) -> None:
        """Refresh what is due: the open flags once, baselines per hour, recent activity."""
        s = self.settings
        conn = self._db()
        if self._open is None:
            self._open = {(r[0], r[1], f"{r[2]}/{r[3] or ''}"): r[4] for r in anomaly_sql.open_flags(conn)}
        hour_ms = now_ms - now_ms % HOUR_MS
        due = [r for r in room_ids if self._baselines.get(r, (None,))[0] != hour_ms]
        if due:
            # A new hour: what is kept is this hour's, for the rooms watched now.
            watched = set(room_ids)
            self._baselines = {r: b for r, b in self._baselines.items() if b[0] == hour_ms and r in watched}
            hour = datetime.fromtimestamp(hour_ms / 1000, UTC)
            rows = anomaly_sql.baselines(conn, due, hour, s.anomaly_baseline_weeks)
            for room_id in due:
                self._baselines[room_id] = (hour_ms, baseline_of(rows.get(room_id)))
        rooms = frozenset(room_ids)
        if rooms and (
            time.monotonic() - self._recent_at >= s.anomaly_refresh_s or rooms != self._recent_rooms
        ):
            now = datetime.fromtimestamp(now_ms / 1000, UTC)
            raw = anomaly_sql.recent(
                conn, room_ids, now, WINDOW_S, s.anomaly_flap_window_s, s.anomaly_flap_reconnects + 2
            )
            self._recent = {room_id: recent_of(room_id, raw) for room_id in room_ids}
            self._recent_at, self._recent_rooms = time.monotonic(), rooms
        if self._failing:
            logs.event(log, "anomaly_read_recovered")
        self._failing = False

    async def _store(self, raised: dict[tuple[str, str, str], dict], now_ms: int) -> None:
        """Store the flags that rose, end those no longer raised."""
        new = [key for key in raised if key not in self._open]
        gone = [key for key in self._open if key not in raised]
        if not new and not gone:
            return
        at = datetime.fromtimestamp(now_ms / 1000, UTC)

        def work():
            conn = self._db()
            ids = anomaly_sql.raise_flags(conn, [{**raised[k], "at": at} for k in new])
            anomaly_sql.end_flags(conn, [self._open[k] for k in gone], at)
            return ids

        try:
            ids = await asyncio.to_thread(work)
        except Exception as exc:  # tried again next round: the flags are still new
            self._trouble("anomaly_store_failed", exc)
            return
        for key, row_id in zip(new, ids, strict=True):
            self._open[key] = row_id
        for key in gone:
            self._open.pop(key, None)
        for key in new:
            row = raised[key]
            if self.metrics is not None:
                self.metrics.anomaly_flags.labels(flag=row["flag"]).inc()
            logs.event(
                log,
                "anomaly_flag",
                logging.WARNING,
                rule_id=row["rule_id"],
                room_id=row["room_id"],
                flag=row["flag"],
                group=row["group_key"],
                value=row["value"],
                z=row["z"],
            )

    def _trouble(self, what: str, exc: Exception) -> None:
        if not self._failing:  # once per outage
            logs.event(log, what, logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        self._failing = True
        self._close()
