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
tenant's rows, hot and archived. Migration 0015 indexes the reads (room_id with started_at, and
with coalesce(ended_at, 'infinity')).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

# The effective end of a session (NULL: still live), see the module docstring.
_END = """CASE WHEN ended_at IS NOT NULL THEN ended_at
                WHEN coalesce(last_heartbeat_at, started_at) < %(lost_before)s
                THEN coalesce(last_heartbeat_at, started_at) END"""

# The sessions of a room that overlap [%(lo)s, %(hi)s] (started by hi, not ended by lo), from the
# hot table and, with %(archive)s, the archive's. The coalesce(...) condition is the indexed
# expression of migration 0015; the exact end (_END) is applied by the callers.
_OVERLAPPING = f"""
    SELECT session_id, user_id, client_id, device, os, app_version, ip, started_at, ended_at,
           end_reason, last_heartbeat_at, {_END} AS eff_end
    FROM dat_spd_session
    WHERE room_id = %(room)s AND deleted_at IS NULL
      AND started_at <= %(hi)s AND coalesce(ended_at, 'infinity'::timestamptz) > %(lo)s
    UNION ALL
    SELECT session_id, user_id, client_id, device, os, app_version, ip, started_at, ended_at,
           end_reason, last_heartbeat_at, {_END} AS eff_end
    FROM spd_archive.dat_spd_session
    WHERE %(archive)s AND room_id = %(room)s AND deleted_at IS NULL
      AND started_at <= %(hi)s AND coalesce(ended_at, 'infinity'::timestamptz) > %(lo)s
"""


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
    the first instant after its end (in whole microseconds, exact at the boundaries); the counts
    are the running sum of those deltas. A session between two instants covers none.
    """
    if points < 1:
        return []
    step_us = step // timedelta(microseconds=1)
    if step_us < 1:
        raise ValueError("step must be at least 1 microsecond")
    last = start + step * (points - 1)
    rows = conn.execute(
        f"""WITH s AS (
                SELECT greatest(0, ceil(extract(epoch FROM started_at - %(lo)s) * 1000000 / %(step)s))::bigint AS ks,
                       ceil(extract(epoch FROM eff_end - %(lo)s) * 1000000 / %(step)s)::bigint AS ke
                FROM ({_OVERLAPPING}) AS o
                WHERE eff_end IS NULL OR eff_end > %(lo)s
            ), d AS (
                SELECT ks AS k, 1 AS delta FROM s WHERE ke IS NULL OR ke > ks
                UNION ALL
                SELECT ke, -1 FROM s WHERE ke > ks AND ke < %(points)s
            )
            SELECT k, sum(delta)::bigint FROM d GROUP BY k""",
        {
            "room": room_id,
            "lo": start,
            "hi": last,
            "step": step_us,
            "points": points,
            "lost_before": lost_before,
            "archive": archive,
        },
    ).fetchall()
    deltas = [0] * points
    for k, delta in rows:
        deltas[k] += delta
    counts, running = [], 0
    for delta in deltas:
        running += delta
        counts.append(running)
    return counts
