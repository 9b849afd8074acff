"""Time partitions of the history tables: naming, bounds, and creating them before they are needed.

Sessions are cut by month of ``started_at``, room statistics by quarter of ``ts_bucket``, the
event ledger by day of the event's own time. Partitions are named ``<table>_pYYYY_MM``,
``<table>_pYYYY_qN`` and ``<table>_pYYYY_MM_DD``; retention reads the period back from the name
(detached, archived tables no longer carry their bounds). All bounds are UTC.

There is no DEFAULT partition on purpose: rows in a default partition would block creating the
proper partition later. Instead the writer creates partitions ahead of time (current and next
period) and, for an event dated anywhere else (old or future), on demand before the batch that
needs it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class PartitionedTable:
    """A partitioned history table and the length of its partitions' periods."""

    name: str
    granularity: str  # "month", "quarter" or "day"
    key_is_date: bool = False  # the ledger's key is a date; the others are timestamptz


SESSIONS = PartitionedTable("dat_spd_session", "month")
ROOM_STATS = PartitionedTable("dat_spd_room_stats", "quarter")
LEDGER = PartitionedTable("spd_event_ledger", "day", key_is_date=True)
TABLES = (SESSIONS, ROOM_STATS, LEDGER)
_BY_NAME = {t.name: t for t in TABLES}
ARCHIVE_SCHEMA = "spd_archive"  # where retention moves old partitions (see retention.py)

_SUFFIX = re.compile(
    r"^(?P<table>.+)_p(?P<year>\d{4})_(?:q(?P<q>[1-4])|(?P<month>\d{2})(?:_(?P<day>\d{2}))?)$"
)


def period_start(table: PartitionedTable, day: date) -> date:
    """First day of the period of ``table`` that contains ``day``."""
    if table.granularity == "month":
        return day.replace(day=1)
    if table.granularity == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return day


def period_end(table: PartitionedTable, start: date) -> date:
    """First day after the period that starts on ``start``."""
    if table.granularity == "day":
        return start + timedelta(days=1)
    months = 1 if table.granularity == "month" else 3
    month = start.month - 1 + months
    return date(start.year + month // 12, month % 12 + 1, 1)


def partition_name(table: PartitionedTable, start: date) -> str:
    """The partition of ``table`` for the period starting on ``start``."""
    if table.granularity == "month":
        return f"{table.name}_p{start.year:04d}_{start.month:02d}"
    if table.granularity == "quarter":
        return f"{table.name}_p{start.year:04d}_q{(start.month - 1) // 3 + 1}"
    return f"{table.name}_p{start.year:04d}_{start.month:02d}_{start.day:02d}"


def parse_partition_name(name: str) -> tuple[PartitionedTable, date, date] | None:
    """(table, start, end) of a partition name made by ``partition_name``; None for anything else."""
    match = _SUFFIX.match(name)
    if not match or match["table"] not in _BY_NAME:
        return None
    table = _BY_NAME[match["table"]]
    year = int(match["year"])
    try:
        if table.granularity == "quarter" and match["q"]:
            start = date(year, 3 * (int(match["q"]) - 1) + 1, 1)
        elif table.granularity == "month" and match["month"] and not match["day"]:
            start = date(year, int(match["month"]), 1)
        elif table.granularity == "day" and match["day"]:
            start = date(year, int(match["month"]), int(match["day"]))
        else:
            return None
    except ValueError:
        return None
    return table, start, period_end(table, start)


def utc_day(ms: int) -> date:
    """The UTC calendar day of an epoch-milliseconds timestamp."""
    t = time.gmtime(ms // 1000)
    return date(t.tm_year, t.tm_mon, t.tm_mday)


def _bound(table: PartitionedTable, day: date) -> date | datetime:
    return day if table.key_is_date else datetime(day.year, day.month, day.day, tzinfo=UTC)


class PartitionManager:
    """Knows which partitions exist; creates missing ones. One per writer connection's lifetime.

    ``ensure`` answers True when rows for the period can be written (the partition exists or was
    just created) and False when the period has already been archived by retention: the writer
    then drops those events (history that old is read-only archive).
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, date], bool] = {}

    def forget(self) -> None:
        """Drop the cache (after retention moved partitions, or on a new connection)."""
        self._known.clear()

    def ensure(self, conn: psycopg.Connection, table: PartitionedTable, start: date) -> bool:
        """Whether rows of ``table`` for the period starting ``start`` can be written (creating
        its partition if needed); False if that period is archived."""
        key = (table.name, start)
        state = self._known.get(key)
        if state is None:
            name = partition_name(table, start)
            end = period_end(table, start)
            state = ensure_partition(conn, table.name, name, _bound(table, start), _bound(table, end))
            self._known[key] = state
        return state

    def ensure_ahead(self, conn: psycopg.Connection, now: datetime | None = None) -> None:
        """Create the current and next period of every table (and two days ahead for the ledger)."""
        today = (now or datetime.now(UTC)).astimezone(UTC).date()
        for table in TABLES:
            start = period_start(table, today)
            periods = 3 if table.granularity == "day" else 2
            for _ in range(periods):
                self.ensure(conn, table, start)
                start = period_end(table, start)


# -- the statements: create, list, archive and drop partitions ---------------------------------


def ensure_partition(
    conn: psycopg.Connection, parent: str, name: str, start: date | datetime, end: date | datetime
) -> bool:
    """Create partition ``name`` of ``parent`` for [start, end) unless it exists.

    True when the partition is (now) attached and writable; False when a table of that name sits
    in the archive schema (retention already moved that period out). An advisory lock on the
    name makes concurrent writers wait for each other instead of failing on a duplicate.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])
        hot, archived = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            [
                sql.Identifier(name).as_string(conn),
                f"{ARCHIVE_SCHEMA}.{sql.Identifier(name).as_string(conn)}",
            ],
        ).fetchone()
        if hot:
            return True
        if archived:
            return False
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(name), sql.Identifier(parent), sql.Literal(start), sql.Literal(end)
            )
        )
    return True


def list_partitions(conn: psycopg.Connection, parent: str) -> list[str]:
    """Names of the partitions attached to ``parent``."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
           WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname""",
        [parent],
    ).fetchall()
    return [r[0] for r in rows]


def list_archived(conn: psycopg.Connection) -> list[str]:
    """Names of the archived partitions (the archive schema's tables, not its parents: migration
    0011's ``spd_archive.dat_spd_session`` and the like)."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname""",
        [ARCHIVE_SCHEMA],
    ).fetchall()
    return [r[0] for r in rows if parse_partition_name(r[0]) is not None]


def archive_partition(conn: psycopg.Connection, parent: str, name: str, start: date, end: date) -> None:
    """Detach ``name`` (the period [start, end)) from ``parent`` and move it, data and indexes, into
    the archive schema, as a partition of the archive's ``parent``: readable there, under the same
    row-level security (migration 0011, ``spd_archive_attach``)."""
    table = _BY_NAME[parent]
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(parent), sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(name), sql.Identifier(ARCHIVE_SCHEMA)
            )
        )
        conn.execute(
            "SELECT spd_archive_attach(%s, %s, %s, %s)",
            [parent, name, _bound(table, start), _bound(table, end)],
        )


def archive_alert_events(conn: psycopg.Connection, before: datetime) -> int:
    """Move the alert events older than ``before`` into the archive; how many moved. Alert events
    are few and keyed by id (acknowledgements, replays), so their rows move, not partitions."""
    with conn.transaction():
        return conn.execute("SELECT spd_archive_alert_events(%s)", [before]).fetchone()[0]


def drop_archived_alert_events(conn: psycopg.Connection, before: datetime) -> int:
    """Delete the archived alert events older than ``before``; how many."""
    with conn.transaction():
        return conn.execute(
            sql.SQL("DELETE FROM {}.dat_spd_alert_event WHERE at < %s").format(
                sql.Identifier(ARCHIVE_SCHEMA)
            ),
            [before],
        ).rowcount


def drop_partition(conn: psycopg.Connection, parent: str, name: str) -> None:
    """Detach and drop an attached partition (data past every retention horizon)."""
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(parent), sql.Identifier(name))
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def drop_archived(conn: psycopg.Connection, name: str) -> None:
    """Drop table ``name`` of the archive schema."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(ARCHIVE_SCHEMA), sql.Identifier(name)))
