"""History reads: sessions and per-room statistics (minute rows rolled up in SQL), the
latency-histogram helpers the migrations define, and the writer's reconciliation sweep (sessions
open in history whose node is gone: ``open_before`` and ``end_lost``).

The readers run inside ``tenancy.tenant_transaction`` (the REST API) or as the connecting user
(tests, benchmarks, diagnostics); ``spd_sessions`` and ``spd_room_stats`` are SQL functions of the
migrations, so row-level security applies to them as to the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


def find(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    *,
    room_id: str | None = None,
    user_id: str | None = None,
    limit: int | None = 1000,
    offset: int = 0,
    archive: bool = False,
) -> list[dict[str, Any]]:
    """Sessions that started in [start, end), newest first, as dicts of dat_spd_session columns;
    with ``archive`` the archived ones too (see migration 0011).

    ``limit`` None returns them all (LIMIT NULL is no limit in PostgreSQL).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM spd_sessions(%s, %s, %s, %s, %s)"
            " ORDER BY started_at DESC, session_id LIMIT %s OFFSET %s",
            [start, end, room_id, user_id, archive, limit, offset],
        ).fetchall()


def list_page(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    *,
    room_id: str | None = None,
    user_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
    archive: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the sessions that started in [start, end), newest first, and how many in all
    (with ``archive``, archived sessions included)."""
    rows = find(
        conn, start, end, room_id=room_id, user_id=user_id, limit=limit, offset=offset, archive=archive
    )
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(
            "SELECT count(*) AS n FROM spd_sessions(%s, %s, %s, %s, %s)",
            [start, end, room_id, user_id, archive],
        ).fetchone()["n"]
    return rows, total


def room_stats(
    conn: psycopg.Connection,
    room_id: str | None,
    start: datetime,
    end: datetime,
    bucket: str = "1m",
    archive: bool = False,
) -> list[dict[str, Any]]:
    """Room statistics in [start, end) per '1m', '1h' or '1d' bucket (see spd_room_stats in SQL);
    with ``archive`` the archived minutes count too.

    Each dict: room_id, bucket, online_avg, online_max, joins, leaves, timeouts, disconnects,
    latency_avg, latency_p95, latency_count, latency_hist. ``room_id`` None: every visible room.
    """
    if bucket not in ("1m", "1h", "1d"):
        raise ValueError(f"bucket must be 1m, 1h or 1d, got {bucket!r}")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM spd_room_stats(%s, %s, %s, %s, %s)", [room_id, start, end, bucket, archive]
        ).fetchall()


def hist_quantile(conn: psycopg.Connection, hist: Iterable[int], q: float) -> float | None:
    """The SQL quantile of a latency histogram (for callers holding a histogram in Python)."""
    return conn.execute("SELECT spd_hist_quantile(%s::bigint[], %s)", [list(hist), q]).fetchone()[0]


def latency_bounds(conn: psycopg.Connection) -> list[float]:
    """The histogram bucket bounds the database was migrated with."""
    return list(conn.execute("SELECT spd_latency_bounds()").fetchone()[0])


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Row counts of the history tables (tests, benchmarks, ``spidi`` diagnostics)."""
    names = ("dat_spd_session", "dat_spd_room_stats", "spd_event_ledger", "dat_spd_room")
    return {
        n: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(n))).fetchone()[0]
        for n in names
    }


class OpenSession(NamedTuple):
    """A session history holds as open: what the sweep needs to judge it and end it."""

    session_id: str
    started_at: datetime
    last_heartbeat_at: datetime
    room_id: str | None
    node_id: str | None


class HistorySession(NamedTuple):
    """A session as history holds it, for the reconciliation report."""

    session_id: str
    started_at: datetime
    last_heartbeat_at: datetime
    ended_at: datetime | None
    user_id: str | None
    node_id: str | None


def in_room(
    conn: psycopg.Connection, room_id: str, session_ids: Sequence[str], limit: int
) -> list[HistorySession]:
    """The sessions of ``room_id`` open in history (up to ``limit``), and those of ``session_ids``
    whatever their state (ended ones included)."""
    rows = conn.execute(
        """(SELECT session_id::text, started_at, last_heartbeat_at, ended_at, user_id, node_id
            FROM dat_spd_session
            WHERE room_id = %(room)s AND ended_at IS NULL AND deleted_at IS NULL
            ORDER BY started_at DESC LIMIT %(limit)s)
           UNION
           (SELECT session_id::text, started_at, last_heartbeat_at, ended_at, user_id, node_id
            FROM dat_spd_session
            WHERE session_id = ANY(%(sids)s::uuid[]) AND deleted_at IS NULL)""",
        {"room": room_id, "sids": list(session_ids), "limit": limit},
    ).fetchall()
    return [HistorySession(*row) for row in rows]


def open_before(
    conn: psycopg.Connection,
    before: datetime,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[OpenSession]:
    """Up to ``limit`` sessions open in history whose last heartbeat is older than ``before``,
    oldest first; ``after`` (the last one's (last_heartbeat_at, session_id)) reads the next page."""
    after_hb, after_sid = after if after is not None else (None, None)
    rows = conn.execute(
        """SELECT session_id::text, started_at, last_heartbeat_at, room_id::text, node_id
           FROM dat_spd_session
           WHERE ended_at IS NULL AND deleted_at IS NULL AND last_heartbeat_at < %(before)s
             AND (%(after_hb)s::timestamptz IS NULL
                  OR (last_heartbeat_at, session_id) > (%(after_hb)s, %(after_sid)s::uuid))
           ORDER BY last_heartbeat_at, session_id LIMIT %(limit)s""",
        {"before": before, "after_hb": after_hb, "after_sid": after_sid, "limit": limit},
    ).fetchall()
    return [OpenSession(*row) for row in rows]


# End the given sessions as ``node_lost`` at their last heartbeat, in ONE statement: the session
# rows (only those still open: a batch may have ended one meanwhile), their end in the ledger
# under the id the node's own session_ended would carry (so that end, arriving later, is a replay),
# and a disconnect each in their room's minute, only for ends new to the ledger.
_END_LOST = """
WITH cand AS (
    SELECT * FROM unnest(%(sids)s::uuid[], %(starts)s::timestamptz[], %(eids)s::uuid[])
        AS c(session_id, started_at, event_id)
), ended AS (
    UPDATE dat_spd_session AS t
    SET ended_at = t.last_heartbeat_at, end_reason = %(reason)s, updated_at = now(), updated_by = %(actor)s
    FROM cand
    WHERE t.session_id = cand.session_id AND t.started_at = cand.started_at AND t.ended_at IS NULL
    RETURNING t.room_id, t.unidad_negocio_id, t.room_code, t.ended_at, cand.event_id
), fresh AS (
    INSERT INTO spd_event_ledger (event_id, event_day, kind)
    SELECT event_id, (ended_at AT TIME ZONE 'UTC')::date, 'session_ended' FROM ended
    ON CONFLICT DO NOTHING
    RETURNING event_id
), counted AS (
    INSERT INTO dat_spd_room_stats AS t (
        room_id, ts_bucket, unidad_negocio_id, room_code, online_sum, online_samples, online_avg,
        online_max, joins, leaves, timeouts, disconnects, latency_sum, latency_count, latency_hist,
        node_samples, created_by, updated_by)
    SELECT e.room_id, to_timestamp(floor(extract(epoch FROM e.ended_at) / 60) * 60), min(e.unidad_negocio_id),
           min(e.room_code), 0, 0, 0, 0, 0, 0, 0, count(*), 0, 0, '{}', 0, %(actor)s, %(actor)s
    FROM ended AS e JOIN fresh USING (event_id)
    WHERE e.room_id IS NOT NULL
    GROUP BY e.room_id, to_timestamp(floor(extract(epoch FROM e.ended_at) / 60) * 60)
    ON CONFLICT (room_id, ts_bucket) DO UPDATE SET
        room_code = coalesce(t.room_code, excluded.room_code),
        disconnects = t.disconnects + excluded.disconnects,
        updated_at = now(),
        updated_by = excluded.updated_by
    RETURNING 1
)
SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM counted)"""


def end_lost(
    conn: psycopg.Connection,
    sessions: Sequence[OpenSession],
    event_ids: Sequence[str],
    reason: str,
    actor: str = "spidi-writer",
) -> int:
    """End ``sessions`` (with ``reason``, at their last heartbeat) in one transaction; ``event_ids``
    are their session_ended ids (``events.end_event_id``). Every partition the ends need (ledger
    day, room-statistics period of the last heartbeat) must exist. Returns the sessions ended."""
    if not sessions:
        return 0
    with conn.transaction():
        ended, _ = conn.execute(
            _END_LOST,
            {
                "sids": [s.session_id for s in sessions],
                "starts": [s.started_at for s in sessions],
                "eids": list(event_ids),
                "reason": reason,
                "actor": actor,
            },
        ).fetchone()
    return ended
