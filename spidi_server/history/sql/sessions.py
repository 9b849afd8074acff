"""History reads: sessions and per-room statistics (minute rows rolled up in SQL), and the
latency-histogram helpers the migrations define.

The readers run inside ``tenancy.tenant_transaction`` (the REST API) or as the connecting user
(tests, benchmarks, diagnostics); ``spd_sessions`` and ``spd_room_stats`` are SQL functions of the
migrations, so row-level security applies to them as to the tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

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
) -> list[dict[str, Any]]:
    """Sessions that started in [start, end), newest first, as dicts of dat_spd_session columns.

    ``limit`` None returns them all (LIMIT NULL is no limit in PostgreSQL).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM spd_sessions(%s, %s, %s, %s) ORDER BY started_at DESC, session_id LIMIT %s OFFSET %s",
            [start, end, room_id, user_id, limit, offset],
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
) -> tuple[list[dict[str, Any]], int]:
    """One page of the sessions that started in [start, end), newest first, and how many in all."""
    rows = find(conn, start, end, room_id=room_id, user_id=user_id, limit=limit, offset=offset)
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(
            "SELECT count(*) AS n FROM spd_sessions(%s, %s, %s, %s)", [start, end, room_id, user_id]
        ).fetchone()["n"]
    return rows, total


def room_stats(
    conn: psycopg.Connection, room_id: str | None, start: datetime, end: datetime, bucket: str = "1m"
) -> list[dict[str, Any]]:
    """Room statistics in [start, end) per '1m', '1h' or '1d' bucket (see spd_room_stats in SQL).

    Each dict: room_id, bucket, online_avg, online_max, joins, leaves, timeouts, disconnects,
    latency_avg, latency_p95, latency_count, latency_hist. ``room_id`` None: every visible room.
    """
    if bucket not in ("1m", "1h", "1d"):
        raise ValueError(f"bucket must be 1m, 1h or 1d, got {bucket!r}")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM spd_room_stats(%s, %s, %s, %s)", [room_id, start, end, bucket]
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
