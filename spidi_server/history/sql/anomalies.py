"""Anomaly flags' SQL: the rooms' hour-of-week baselines, their recent joins, ends and reconnects,
and the flags the evaluator stores (``dat_spd_anomaly``, migration 0014) and the API reads.

The evaluator runs these as the connecting user (every tenant); ``list_flags`` runs inside
``tenancy.tenant_transaction`` (row-level security).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

# The baseline of each room for the hour starting at %(hour)s: the minutes of that hour of week in
# the last %(weeks)s weeks, from the room's first statistics row on (earlier weeks the room did not
# exist: they are not a calm baseline). Minutes without a row count zero joins and ends. MAD is the
# median of the absolute deviations from the median: two passes of percentile_cont.
_BASELINE = """
WITH weeks AS (
    SELECT %(hour)s::timestamptz - k * interval '1 week' AS h FROM generate_series(1, %(weeks)s) AS k
), first AS (
    SELECT s.room_id, min(s.ts_bucket) AS first_at
    FROM dat_spd_room_stats AS s
    WHERE s.room_id = ANY(%(rooms)s::uuid[]) AND s.deleted_at IS NULL
      AND s.ts_bucket >= %(hour)s::timestamptz - %(weeks)s * interval '1 week' AND s.ts_bucket < %(hour)s
    GROUP BY s.room_id
), minutes AS (
    SELECT f.room_id, m
    FROM first AS f CROSS JOIN weeks AS w
    CROSS JOIN LATERAL generate_series(w.h, w.h + interval '59 minutes', interval '1 minute') AS m
    WHERE w.h >= date_trunc('hour', f.first_at)
), vals AS (
    SELECT mi.room_id,
           coalesce(s.joins, 0)::double precision AS joins,
           coalesce(s.leaves + s.timeouts + s.disconnects, 0)::double precision AS leaves,
           coalesce(s.timeouts + s.disconnects, 0)::double precision AS drops,
           spd_hist_quantile(s.latency_hist, 0.95) AS p95
    FROM minutes AS mi
    LEFT JOIN dat_spd_room_stats AS s
        ON s.room_id = mi.room_id AND s.ts_bucket = mi.m AND s.deleted_at IS NULL
), med AS (
    SELECT room_id, count(*) AS minutes, count(p95) AS latency_minutes,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY joins) AS joins_med,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY leaves) AS leaves_med,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY drops) AS drops_med,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY p95) AS p95_med
    FROM vals GROUP BY room_id
)
SELECT med.room_id::text, med.minutes, med.latency_minutes,
       med.joins_med, percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(v.joins - med.joins_med)) AS joins_mad,
       med.leaves_med, percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(v.leaves - med.leaves_med)) AS leaves_mad,
       med.drops_med, percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(v.drops - med.drops_med)) AS drops_mad,
       med.p95_med, percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(v.p95 - med.p95_med)) AS p95_mad
FROM med JOIN vals AS v USING (room_id)
GROUP BY med.room_id, med.minutes, med.latency_minutes, med.joins_med, med.leaves_med, med.drops_med, med.p95_med"""


def baselines(
    conn: psycopg.Connection, room_ids: Sequence[str], hour: datetime, weeks: int
) -> dict[str, dict[str, Any]]:
    """Each room's baseline for the hour of week of ``hour`` (its start), by room id: minutes,
    latency_minutes and <metric>_med / <metric>_mad of joins, leaves, drops and p95. Rooms without
    statistics in the window are left out."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_BASELINE, {"rooms": list(room_ids), "hour": hour, "weeks": weeks}).fetchall()
    return {r["room_id"]: r for r in rows}


def recent(
    conn: psycopg.Connection,
    room_ids: Sequence[str],
    now: datetime,
    window_s: float,
    flap_window_s: float,
    flap_min: int,
) -> dict[str, Any]:
    """The rooms' recent activity up to ``now``, each part by room id:

    ``joins`` / ``ends``: sessions started / ended in the last ``window_s``; ``drops``: (room,
    app_version, os, ip, count) of the abnormal ends (disconnect, timeout, node_lost) in it;
    ``p95``: the latency p95 of the last complete minute (the one before while the last one's
    samples are not in); ``flaps``: (room, user, client, sessions)
    of the clients with at least ``flap_min`` sessions started in the last ``flap_window_s``.
    """
    params = {
        "rooms": list(room_ids),
        "now": now,
        "window": window_s,
        "flap_window": flap_window_s,
        "flap_min": flap_min,
    }
    since = "%(now)s::timestamptz - make_interval(secs => %(window)s)"
    joins = conn.execute(
        f"""SELECT room_id::text, count(*) FROM dat_spd_session
            WHERE room_id = ANY(%(rooms)s::uuid[]) AND deleted_at IS NULL
              AND started_at >= {since} AND started_at < %(now)s
            GROUP BY room_id""",
        params,
    ).fetchall()
    ends = conn.execute(
        f"""SELECT room_id::text, count(*) FROM dat_spd_session
            WHERE room_id = ANY(%(rooms)s::uuid[]) AND ended_at IS NOT NULL AND deleted_at IS NULL
              AND ended_at >= {since} AND ended_at < %(now)s
            GROUP BY room_id""",
        params,
    ).fetchall()
    drops = conn.execute(
        f"""SELECT room_id::text, app_version, os, ip, count(*) FROM dat_spd_session
            WHERE room_id = ANY(%(rooms)s::uuid[]) AND ended_at IS NOT NULL AND deleted_at IS NULL
              AND ended_at >= {since} AND ended_at < %(now)s
              AND end_reason IN ('disconnect', 'timeout', 'node_lost')
            GROUP BY room_id, app_version, os, ip""",
        params,
    ).fetchall()
    p95 = conn.execute(
        # The newest of the last two complete minutes with latency: the nodes' samples of the last
        # minute arrive a moment after it ends, and a spike must not clear while they are on their way.
        """SELECT DISTINCT ON (room_id) room_id::text, spd_hist_quantile(latency_hist, 0.95)
           FROM dat_spd_room_stats
           WHERE room_id = ANY(%(rooms)s::uuid[]) AND deleted_at IS NULL AND latency_count > 0
             AND ts_bucket >= date_trunc('minute', %(now)s::timestamptz) - interval '2 minutes'
             AND ts_bucket < date_trunc('minute', %(now)s::timestamptz)
           ORDER BY room_id, ts_bucket DESC""",
        params,
    ).fetchall()
    flaps = conn.execute(
        """SELECT room_id::text, coalesce(user_id, ''), coalesce(client_id, ''), count(*)
           FROM dat_spd_session
           WHERE room_id = ANY(%(rooms)s::uuid[]) AND deleted_at IS NULL
             AND started_at >= %(now)s::timestamptz - make_interval(secs => %(flap_window)s)
             AND started_at < %(now)s
           GROUP BY room_id, user_id, client_id HAVING count(*) >= %(flap_min)s""",
        params,
    ).fetchall()
    return {
        "joins": dict(joins),
        "ends": dict(ends),
        "drops": drops,
        "p95": {room: value for room, value in p95 if value is not None},
        "flaps": flaps,
    }


def raise_flags(
    conn: psycopg.Connection, rows: Sequence[dict[str, Any]], actor: str = "spidi-evaluator"
) -> list[str]:
    """Store newly raised flags (dicts of ``dat_spd_anomaly`` columns); their ids, in order."""
    ids = []
    with conn.transaction(), conn.cursor() as cur:
        for row in rows:
            ids.append(
                cur.execute(
                    """INSERT INTO dat_spd_anomaly (unidad_negocio_id, room_id, room_code, rule_id, flag, metric,
                           group_key, value, baseline_median, baseline_mad, baseline_minutes, z, threshold,
                           started_at, details, created_by, updated_by)
                       VALUES (%(tenant)s, %(room_id)s, %(room_code)s, %(rule_id)s, %(flag)s, %(metric)s,
                               %(group_key)s, %(value)s, %(median)s, %(mad)s, %(minutes)s, %(z)s, %(threshold)s,
                               %(at)s, %(details)s, %(actor)s, %(actor)s)
                       RETURNING id::text""",
                    {**row, "details": Jsonb(row.get("details") or {}), "actor": actor},
                ).fetchone()[0]
            )
    return ids


def end_flags(
    conn: psycopg.Connection, ids: Sequence[str], at: datetime, actor: str = "spidi-evaluator"
) -> int:
    """Mark flags cleared at ``at``; returns how many were still raised."""
    if not ids:
        return 0
    return conn.execute(
        """UPDATE dat_spd_anomaly SET ended_at = %s, updated_at = now(), updated_by = %s
           WHERE id = ANY(%s::uuid[]) AND ended_at IS NULL""",
        [at, actor, list(ids)],
    ).rowcount


def open_flags(conn: psycopg.Connection) -> list[tuple[str, str, str, str | None, str]]:
    """Every flag still raised, as (rule_id, room_id, flag, group_key, id): a new evaluator carries
    them on (and ends those it no longer sees) instead of raising them again."""
    return conn.execute(
        """SELECT rule_id::text, room_id::text, flag, group_key, id::text FROM dat_spd_anomaly
           WHERE ended_at IS NULL AND deleted_at IS NULL AND rule_id IS NOT NULL"""
    ).fetchall()


def list_flags(
    conn: psycopg.Connection, tenant: str, room_id: str, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """A room's flags raised in [start, end) or still raised at ``start``, oldest first (inside
    ``tenant_transaction``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id::text, room_id::text, room_code, rule_id::text, flag, metric, group_key, value,
                      baseline_median, baseline_mad, baseline_minutes, z, threshold, started_at, ended_at, details
               FROM dat_spd_anomaly
               WHERE unidad_negocio_id = %(tenant)s AND room_id = %(room)s AND deleted_at IS NULL
                 AND started_at < %(end)s AND (ended_at IS NULL OR ended_at >= %(start)s)
               ORDER BY started_at, id LIMIT %(limit)s""",
            {"tenant": tenant, "room": room_id, "start": start, "end": end, "limit": limit},
        ).fetchall()
