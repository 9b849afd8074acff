"""Retention: hot history stays in the partitioned tables, older history moves to ``spd_archive``,
the oldest is dropped.

* Session and room-statistics partitions whose whole period ended more than
  ``retention_hot_days`` ago are detached and moved to the ``spd_archive`` schema (data, indexes
  and all, by ``ALTER TABLE ... SET SCHEMA``: no rows are copied).
* Archived tables (and any still-attached partition) whose period ended more than
  ``retention_drop_days`` ago are dropped.
* Alert events follow the same two ages: older than ``retention_hot_days`` they move to
  ``spd_archive.dat_spd_alert_event``, older than ``retention_drop_days`` they are deleted there.
  They are few and keyed by id, so rows move rather than partitions.
* Archived history stays readable: archived partitions are partitions of the archive's own
  ``dat_spd_session`` / ``dat_spd_room_stats``, which carry the hot tables' row-level security
  (migration 0011), and the API reads them with ``?archive=true``.
* Event-ledger partitions older than ``LEDGER_KEEP_DAYS`` are dropped: the ledger only has to
  outlive the window in which a stream entry can be replayed.

The writer runs this once a day; ``run_retention`` is the ``spidi retention --now`` entry point.
Partitions are judged by the period in their name, so a partition straddling a cutoff stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

from .. import logs
from .partitions import (
    ARCHIVE_SCHEMA,
    LEDGER,
    ROOM_STATS,
    SESSIONS,
    archive_alert_events,
    archive_partition,
    drop_archived,
    drop_archived_alert_events,
    drop_partition,
    list_archived,
    list_partitions,
    parse_partition_name,
)

log = logging.getLogger("spidi.history.retention")

# Replays happen between a batch's commit and its XACK, or when a dead writer's entries are
# reclaimed; a week covers any realistic outage of the writer.
LEDGER_KEEP_DAYS = 7
_RETENTION_LOCK = 0x5350_4944_4932  # pg_advisory_lock key "SPIDI2" (migrate.py has "SPIDI1")


def try_retention_lock(conn: psycopg.Connection) -> bool:
    """Take the retention lock (session-level) unless another session holds it."""
    return conn.execute("SELECT pg_try_advisory_lock(%s)", [_RETENTION_LOCK]).fetchone()[0]


def retention_unlock(conn: psycopg.Connection) -> None:
    """Release the retention lock."""
    conn.execute("SELECT pg_advisory_unlock(%s)", [_RETENTION_LOCK])


@dataclass
class RetentionReport:
    """Partitions moved to the archive and tables dropped by one retention run, and the alert
    events moved to the archive and deleted from it."""

    archived: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    alert_events_archived: int = 0
    alert_events_dropped: int = 0

    def as_dict(self) -> dict:
        """JSON-ready form (for ``spidi retention --now`` output)."""
        return {
            "archived": self.archived,
            "dropped": self.dropped,
            "alert_events_archived": self.alert_events_archived,
            "alert_events_dropped": self.alert_events_dropped,
        }


def apply_retention(
    conn: psycopg.Connection,
    hot_days: int,
    drop_days: int,
    now: datetime | None = None,
    ledger_days: int = LEDGER_KEEP_DAYS,
) -> RetentionReport:
    """Archive and drop partitions by age on ``conn`` (an autocommit connection is best: each move
    commits on its own). Several writers may call it at once: one does the work, the others skip."""
    if not try_retention_lock(conn):
        return RetentionReport()
    try:
        return _apply(conn, hot_days, drop_days, now, ledger_days)
    finally:
        retention_unlock(conn)


def _apply(
    conn: psycopg.Connection, hot_days: int, drop_days: int, now: datetime | None, ledger_days: int
) -> RetentionReport:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    hot_cutoff = (now - timedelta(days=hot_days)).date()
    drop_cutoff = (now - timedelta(days=drop_days)).date()
    ledger_cutoff = (now - timedelta(days=ledger_days)).date()
    report = RetentionReport()

    for table in (SESSIONS, ROOM_STATS):
        for name in list_partitions(conn, table.name):
            parsed = parse_partition_name(name)
            if parsed is None:
                continue  # not ours (added by hand): leave it alone
            _, start, end = parsed
            if end <= drop_cutoff:
                drop_partition(conn, table.name, name)
                report.dropped.append(name)
            elif end <= hot_cutoff:
                archive_partition(conn, table.name, name, start, end)
                report.archived.append(name)

    # Alert events by the same two ages (a partition goes once its whole period is past a cutoff:
    # an event once its own time is).
    report.alert_events_archived = archive_alert_events(conn, _midnight(hot_cutoff))
    report.alert_events_dropped = drop_archived_alert_events(conn, _midnight(drop_cutoff))

    for name in list_partitions(conn, LEDGER.name):
        parsed = parse_partition_name(name)
        if parsed is not None and parsed[2] <= ledger_cutoff:
            drop_partition(conn, LEDGER.name, name)
            report.dropped.append(name)

    for name in list_archived(conn):
        parsed = parse_partition_name(name)
        if parsed is not None and parsed[2] <= drop_cutoff:
            drop_archived(conn, name)
            report.dropped.append(f"{ARCHIVE_SCHEMA}.{name}")

    if report.archived or report.dropped or report.alert_events_archived or report.alert_events_dropped:
        logs.event(
            log,
            "retention_applied",
            archived=report.archived,
            dropped=report.dropped,
            alert_events_archived=report.alert_events_archived,
            alert_events_dropped=report.alert_events_dropped,
            hot_cutoff=hot_cutoff.isoformat(),
            drop_cutoff=drop_cutoff.isoformat(),
        )
    return report


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def run_retention(settings, now: datetime | None = None) -> RetentionReport:
    """Apply retention with ``settings`` (``spidi retention --now``); starts the embedded PostgreSQL
    when no DSN is configured (joining the running one if ``spidi serve`` has it up)."""
    from .embedded_pg import resolve_dsn

    dsn, embedded = resolve_dsn(settings)
    try:
        with psycopg.connect(dsn) as conn:
            return apply_retention(conn, settings.retention_hot_days, settings.retention_drop_days, now)
    finally:
        if embedded is not None:
            embedded.stop()
