"""One batch of stream entries, and writing it to PostgreSQL.

``Batch`` collects entries as they are read: each is staged at once (``staging.py``), malformed
ones are set aside for the dead-letter stream, an event read twice is written once.
``write_to_postgres`` then makes sure every partition the rows need exists (events for periods
retention has archived are counted and dropped), writes the presence rows in one transaction and
the alert events after them. When PostgreSQL rejects the batch for its data, it is split until
the bad events stand alone: the rest is written, those are dead-lettered. A lost connection
(``OperationalError``) propagates: the loop keeps the batch and retries it.
"""

from __future__ import annotations

import time

import psycopg

from ..stores import events
from .partitions import LEDGER, ROOM_STATS, PartitionManager, period_start, utc_day
from .sql.alerts import AlertRow
from .sql.alerts import write_events as write_alert_events
from .sql.ingest import BatchResult, write_batch
from .staging import InvalidEvent, Staged, stage_alert, stage_event


class Batch:
    """Stream entries read but not yet written and acknowledged."""

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n  # settings.slo_breakdown_top_n: the SLO breakdown's groups kept per minute
        self.ids: list[str] = []  # every stream id to XACK once the batch is written
        self._seen: set[str] = set()
        self.staged: dict[str, Staged] = {}  # by event id: an event read twice is written once
        # Alert events: id -> (stream id, fields, row).
        self.alerts: dict[str, tuple[str, dict, AlertRow]] = {}
        self.invalid: list[tuple[str, dict, str]] = []  # (stream id, fields, error)
        self.repeats = 0  # entries whose event id is already in this batch
        self.expired = 0  # events for periods retention already archived
        self.started = 0.0

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, stream_id: str, fields: dict | None) -> None:
        """Take one stream entry into the batch (validated and staged now, written at flush)."""
        if stream_id in self._seen:
            return  # re-delivered while still in this batch (own pending entries, then XAUTOCLAIM)
        if not self.ids:
            self.started = time.monotonic()
        self._seen.add(stream_id)
        self.ids.append(stream_id)
        if not fields:
            return  # the entry was trimmed away while pending: nothing left to write
        try:
            if fields.get("kind") == events.ALERT_EVENT:
                row = stage_alert(fields)
                if row.id in self.alerts:
                    self.repeats += 1
                self.alerts[row.id] = (stream_id, fields, row)
                return
            staged = stage_event(fields)
        except InvalidEvent as exc:
            self.invalid.append((stream_id, fields, str(exc)))
            return
        staged.stream_id, staged.fields = stream_id, fields
        if staged.event_id in self.staged:
            # A replay, or a session's second end (same id, see events.end_event_id): the first
            # stays, as the ledger keeps the first across batches.
            self.repeats += 1
            return
        self.staged[staged.event_id] = staged


def write_to_postgres(conn: psycopg.Connection, batch: Batch, partitions: PartitionManager) -> BatchResult:
    """Write the batch's presence events, then its alert events."""
    result = _write_presence(conn, batch, partitions)
    if batch.alerts:
        inserted = _write_alerts(conn, batch, list(batch.alerts.values()))
        result.applied += inserted
        result.duplicates += len(batch.alerts) - inserted
    return result


def _write_alerts(conn: psycopg.Connection, batch: Batch, alerts: list[tuple[str, dict, AlertRow]]) -> int:
    """Insert alert events (a replayed id changes nothing); one rejected event is dead-lettered
    alone. Returns the events stored for the first time; rejected ones count as stored."""
    try:
        return write_alert_events(conn, [row for _, _, row in alerts])
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        if len(alerts) == 1:
            stream_id, fields, _ = alerts[0]
            batch.invalid.append((stream_id, fields, f"{type(exc).__name__}: {exc}"))
            return 1
    return sum(_write_alerts(conn, batch, [one]) for one in alerts)


def _write_presence(conn: psycopg.Connection, batch: Batch, partitions: PartitionManager) -> BatchResult:
    """Ensure the partitions, then write in one transaction; isolate events PostgreSQL rejects."""
    staged = _writable(conn, batch, partitions)
    if not staged:
        return BatchResult()
    try:
        return write_batch(conn, [s.row for s in staged], top_n=batch.top_n)
    except psycopg.errors.CheckViolation as exc:
        if "no partition" not in str(exc):
            return _write_isolating(conn, staged, batch)
        # A partition went away under us (retention by another writer, a DBA): look again.
        partitions.forget()
        staged = _writable(conn, batch, partitions)
        return write_batch(conn, [s.row for s in staged], top_n=batch.top_n)
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        return _write_isolating(conn, staged, batch)


def _writable(conn: psycopg.Connection, batch: Batch, partitions: PartitionManager) -> list[Staged]:
    """The batch's events whose periods are not archived; creates missing partitions."""
    out = []
    # (table, UTC day number) -> whether its partition takes rows: a batch's events fall on a day
    # or two, so each question goes to ``partitions.ensure`` once, not three times per event.
    known: dict[tuple[str, int], bool] = {}

    def takes(table, ms: int) -> bool:
        key = (table.name, ms // 86_400_000)
        state = known.get(key)
        if state is None:
            state = known[key] = partitions.ensure(conn, table, period_start(table, utc_day(ms)))
        return state

    expired = 0
    for staged in batch.staged.values():
        # A session event is also counted in its room's minute. That quarter never ends before
        # the session's month, so retention archives it no earlier than the session partition.
        if (
            takes(staged.table, staged.table_ms)
            and takes(LEDGER, staged.event_ms)
            and (staged.stats_ms is None or takes(ROOM_STATS, staged.stats_ms))
        ):
            out.append(staged)
        else:
            expired += 1
    batch.expired = expired  # counted once the batch is written (this may run again on a retry)
    return out


def _write_isolating(conn: psycopg.Connection, staged: list[Staged], batch: Batch) -> BatchResult:
    """PostgreSQL rejected the batch for its data: split it until the bad events stand alone,
    write the rest, dead-letter those."""
    if len(staged) == 1:
        try:
            return write_batch(conn, [staged[0].row], top_n=batch.top_n)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            one = staged[0]
            batch.invalid.append(
                (one.stream_id, one.fields or {"id": one.event_id}, f"{type(exc).__name__}: {exc}")
            )
            return BatchResult()
    half = len(staged) // 2
    total = BatchResult()
    for part in (staged[:half], staged[half:]):
        try:
            result = write_batch(conn, [s.row for s in part], top_n=batch.top_n)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            result = _write_isolating(conn, part, batch)
        total.applied += result.applied
        total.duplicates += result.duplicates
        total.session_rows += result.session_rows
        total.stats_rows += result.stats_rows
    return total
