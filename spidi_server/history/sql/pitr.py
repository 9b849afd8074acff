"""Point-in-time reads of a room's session history: who was in it at an instant (``roster_at``) and
how many were online at evenly spaced instants (``online_counts``).

Both read session intervals of ``dat_spd_session`` (and, with ``archive``, of the archive's), a
session being in the room over [started_at, end). Its end is ``ended_at`` once history holds one.
A session history still holds as open is judged as the writer's reconciliation sweep will judge
it: if its last heartbeat is older than ``lost_before`` (now minus ``writer_sweep_after_s``) no
live node is refreshing it, the sweep will end it ``node_lost`` at that last heartbeat, so it
counts until then; otherwise it is live and counts up to now. Either way, a read of the past gives
the answer it will still give once the sweep has run.

Callers run these inside ``tenancy.tenant_transaction``: row-level security keeps them in the
tenant's rows, hot and archived. Migration 0015 indexes the reads (see ``_BRANCHES``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

# The sessions of a room that overlap [%(lo)s, %(hi)s] (started by hi, not ended by lo), in two
# branches each of which an index of migration 0015 answers: ended ones (room_id, ended_at,
# started_at) and open ones (room_id, started_at, partial on ended_at IS NULL). Plain column
# bounds, not coalesce(ended_at, 'infinity'): under row-level security the planner may use a
# column's statistics (through leakproof operators) but never an expression index's, and without
# them it misjudges the end bound and reads the whole room. eff_end is the session's end as the
# module docstring defines it (NULL: still live); the callers filter on it.
_BRANCHES = """
    SELECT session_id, user_id, client_id, device, os, app_version, ip, started_at, ended_at,
           end_reason, last_heartbeat_at, ended_at AS eff_end
    FROM {table}
    WHERE {gate} room_id = %(room)s AND deleted_at IS NULL AND ended_at > %(lo)s AND started_at <= %(hi)s
    UNION ALL
    SELECT session_id, user_id, client_id, device, os, app_version, ip, started_at, NULL::timestamptz,
           NULL::text, last_heartbeat_at,
           CASE WHEN coalesce(last_heartbeat_at, started_at) < %(lost_before)s
                THEN coalesce(last_heartbeat_at, started_at) END
    FROM {table}
    WHERE {gate} room_id = %(room)s AND deleted_at IS NULL AND ended_at IS NULL AND started_at <= %(hi)s
"""
# The hot table and, with %(archive)s, the archive's.
_OVERLAPPING = (
    _BRANCHES.format(table="dat_spd_session", gate="")
    + "    UNION ALL"
    + _BRANCHES.format(table="spd_archive.dat_spd_session", gate="%(archive)s AND")
)


def has_sessions(conn: psycopg.Connection, room_id: str, *, archive: bool = False) -> bool:
    """Whether history holds any session of ``room_id`` (with ``archive``, archived ones count):
    a room known only from its history (auto-created, then forgotten by Redis) is still a room."""
    return conn.execute(
        """SELECT EXISTS (SELECT 1 FROM dat_spd_session WHERE room_id = %(room)s AND deleted_at IS NULL)
               OR (%(archive)s AND EXISTS (SELECT 1 FROM spd_archive.dat_spd_session
                                           WHERE room_id = %(room)s AND deleted_at IS NULL))""",
        {"room": room_id, "archive": archive},
    ).fetchone()[0]


def roster_at(
    conn: psycopg.Connection, room_id: str, at: datetime, lost_before: datetime, *, archive: bool = False
) -> list[dict[str, Any]]:
    """The sessions in ``room_id`` at ``at`` (started_at <= at < end), oldest first; each a dict of
    session_id, user_id, client_id, device, os, app_version, ip, started_at, ended_at, end_reason,
    last_heartbeat_at. ``lost_before``: open sessions silent since before it are judged lost."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT * FROM ({_OVERLAPPING}) AS s WHERE eff_end IS NULL OR eff_end > %(at)s"
            " ORDER BY started_at, session_id",
            {"room": room_id, "lo": at, "hi": at, "at": at, "lost_before": lost_before, "archive": archive},
        ).fetchall()


def online_counts(
    conn: psycopg.Connection,
    room_id: str,
    start: datetime,
    step: timedelta,
    points: int,
    lost_before: datetime,
    *,
    archive: bool = False,
) -> list[int]:
    """Sessions online in ``room_id`` at each instant ``start + k * step`` (k = 0 .. points - 1):
    exact counts, a session counting at instant t when started_at <= t < end.

    One pass over the overlapping sessions: each adds +1 at the first instant it covers and -1 at
    the first instant at or after its end (timestamps have microseconds: exact at the boundaries);
    the counts are the running sum of those deltas. A session between two instants covers none.
    """
    if points < 1:
        return []
    if step < timedelta(microseconds=1):
        raise ValueError("step must be at least 1 microsecond")
    last = start + step * (points - 1)
    rows = conn.execute(
        f"""WITH s AS (
                -- ks: the first instant at or after the start (lo for a session already in);
                -- ke: the first instant at or after the end (NULL: still live). date_bin floors
                -- to the grid of instants lo + k * step, exactly, in C.
                SELECT greatest(%(lo)s, date_bin(%(step)s, started_at - %(us)s, %(lo)s) + %(step)s) AS ks,
                       date_bin(%(step)s, eff_end - %(us)s, %(lo)s) + %(step)s AS ke
                FROM ({_OVERLAPPING}) AS o
                WHERE eff_end IS NULL OR eff_end > %(lo)s
            )
            -- One scan, two hash aggregates: sessions per first instant, and per instant of end.
            SELECT grouping(ks) = 0 AS is_start, coalesce(ks, ke), count(*)
            FROM s
            WHERE ke IS NULL OR ke > ks
            GROUP BY GROUPING SETS ((ks), (ke))""",
        {
            "room": room_id,
            "lo": start,
            "hi": last,
            "step": step,
            "us": timedelta(microseconds=1),
            "lost_before": lost_before,
            "archive": archive,
        },
    ).fetchall()
    deltas = [0] * points
    for is_start, instant, n in rows:
        if instant is None or instant > last:
            continue  # live sessions, or ends after the last instant: they count to the end
        deltas[(instant - start) // step] += n if is_start else -n
    counts, running = [], 0
    for delta in deltas:
        running += delta
        counts.append(running)
    return counts
