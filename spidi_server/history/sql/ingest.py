"""The writer's batches in SQL: staging table, COPY, event ledger, set-based upserts.

A batch is written in ONE transaction: its events are COPYed into a temporary staging table (one
``StageRow`` per event, whatever its kind), the event ledger drops the ones already applied
(replays), then one statement upserts the sessions and one the room-minute statistics. Either all
of the batch's effects and ledger entries commit, or none do: delivery is at-least-once, the
effect exactly-once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import psycopg
from psycopg import sql


class StageRow(NamedTuple):
    """One staging row per event, whatever its kind; its fields ARE the columns of ``spd_stage``.

    Timestamps stay epoch milliseconds here and are converted in SQL (cheaper than building
    datetimes in Python for every event). ``bucket_ms`` is the room minute the event counts in
    (a room sample's bucket; the minute of a session's start or end). ``latency_hist`` is an array
    literal (``{1,2,3}``). Fields an event kind does not carry stay None.
    """

    event_id: str
    event_ms: int
    kind: str
    session_id: str | None = None
    room_id: str | None = None
    room_code: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    client_id: str | None = None
    app_version: str | None = None
    device: str | None = None
    os: str | None = None
    ip: str | None = None
    node_id: str | None = None
    started_ms: int | None = None
    ended_ms: int | None = None
    end_reason: str | None = None
    heartbeats: int | None = None
    last_hb_ms: int | None = None
    latency_sum: float | None = None
    latency_count: int | None = None
    latency_min: float | None = None
    latency_max: float | None = None
    bucket_ms: int | None = None
    online_sum: int | None = None
    online_samples: int | None = None
    online_max: int | None = None
    online_secs: str | None = None  # a room sample's per-second online counts (array literal)
    latency_hist: str | None = None
    latency_breakdown: str | None = None  # a room sample's SLO breakdown (JSON text, see events)


_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS spd_stage (
    event_id uuid NOT NULL, event_ms bigint NOT NULL, kind text NOT NULL,
    session_id uuid, room_id uuid, room_code text, tenant text, user_id text, client_id text,
    app_version text, device text, os text, ip text, node_id text,
    started_ms bigint, ended_ms bigint, end_reason text, heartbeats bigint, last_hb_ms bigint,
    latency_sum double precision, latency_count bigint, latency_min double precision,
    latency_max double precision, bucket_ms bigint, online_sum bigint, online_samples bigint,
    online_max integer, online_secs bigint[], latency_hist bigint[], latency_breakdown jsonb
) ON COMMIT DELETE ROWS"""

# StageRow's fields name the columns: the COPY sends them in that order.
_COPY_STAGE = sql.SQL("COPY spd_stage ({}) FROM STDIN").format(
    sql.SQL(", ").join(map(sql.Identifier, StageRow._fields))
)

# Record the staged events that add to a stored figure in the ledger; the ones already there
# (replays) leave the stage. Room samples add to their minute, session_started and session_ended
# add to the joins/leaves/timeouts/disconnects of theirs (one each per session, so they cost little).
# Checkpoints skip it: they carry cumulative figures that the session upsert below only moves
# forward, so a replay of one changes nothing by construction, and skipping the ledger for them
# halves the rows written per checkpoint (the writer's main load: one per session per minute).
_LEDGER = """
WITH fresh AS (
    INSERT INTO spd_event_ledger (event_id, event_day, kind)
    SELECT event_id, (to_timestamp(event_ms / 1000.0) AT TIME ZONE 'UTC')::date, kind FROM spd_stage
    WHERE kind <> 'session_checkpoint'
    ON CONFLICT DO NOTHING
    RETURNING event_id
)
DELETE FROM spd_stage AS s
WHERE s.kind <> 'session_checkpoint' AND NOT EXISTS (SELECT 1 FROM fresh WHERE fresh.event_id = s.event_id)"""

# A session ends once: an end for a session history already holds as ended leaves the stage (its
# node was cut off, the others reaped its sessions, then it ended them itself; the sweep ended it
# first). Its id is the session's end id (events.end_event_id), so the ledger drops most of these;
# this catches the rest (an end whose ledger day differs, an end older than the id scheme).
_ENDED_ALREADY = """
DELETE FROM spd_stage AS s
USING dat_spd_session AS t
WHERE s.kind = 'session_ended' AND t.session_id = s.session_id
  AND t.started_at = to_timestamp(s.started_ms / 1000.0) AND t.ended_at IS NOT NULL"""

# One row per session of the batch: descriptive fields from session_started, cumulative figures
# from the most advanced checkpoint/end (highest heartbeat count; the end wins a tie), the end
# from session_ended. On conflict the cumulative figures only move forward, so the result does
# not depend on the order batches arrive in, and descriptive fields fill in whenever they come.
_SESSIONS = """
INSERT INTO dat_spd_session AS t (
    session_id, started_at, room_id, room_code, unidad_negocio_id, user_id, client_id, app_version,
    device, os, ip, node_id, ended_at, end_reason, heartbeat_count, last_heartbeat_at, latency_sum,
    latency_count, latency_min, latency_max, created_by, updated_by)
SELECT k.session_id, to_timestamp(k.started_ms / 1000.0), coalesce(st.room_id, p.room_id), st.room_code,
       coalesce(st.tenant, p.tenant), st.user_id, st.client_id, st.app_version, st.device, st.os, st.ip,
       st.node_id, to_timestamp(e.ended_ms / 1000.0), e.end_reason, coalesce(p.heartbeats, 0),
       to_timestamp(coalesce(p.last_hb_ms, k.started_ms) / 1000.0), coalesce(p.latency_sum, 0),
       coalesce(p.latency_count, 0), p.latency_min, p.latency_max, %(actor)s, %(actor)s
FROM (SELECT DISTINCT session_id, started_ms FROM spd_stage WHERE session_id IS NOT NULL) AS k
LEFT JOIN (SELECT DISTINCT ON (session_id, started_ms) * FROM spd_stage
           WHERE kind = 'session_started' ORDER BY session_id, started_ms) AS st
       USING (session_id, started_ms)
LEFT JOIN (SELECT DISTINCT ON (session_id, started_ms) * FROM spd_stage
           WHERE kind IN ('session_checkpoint', 'session_ended')
           ORDER BY session_id, started_ms, heartbeats DESC, (kind = 'session_ended') DESC,
                    last_hb_ms DESC) AS p
       USING (session_id, started_ms)
LEFT JOIN (SELECT DISTINCT ON (session_id, started_ms) session_id, started_ms, ended_ms, end_reason
           FROM spd_stage WHERE kind = 'session_ended'
           ORDER BY session_id, started_ms, ended_ms DESC) AS e
       USING (session_id, started_ms)
ON CONFLICT (session_id, started_at) DO UPDATE SET
    room_id = coalesce(excluded.room_id, t.room_id),
    room_code = coalesce(excluded.room_code, t.room_code),
    user_id = coalesce(excluded.user_id, t.user_id),
    client_id = coalesce(excluded.client_id, t.client_id),
    app_version = coalesce(excluded.app_version, t.app_version),
    device = coalesce(excluded.device, t.device),
    os = coalesce(excluded.os, t.os),
    ip = coalesce(excluded.ip, t.ip),
    node_id = coalesce(excluded.node_id, t.node_id),
    ended_at = greatest(excluded.ended_at, t.ended_at),
    end_reason = CASE WHEN excluded.ended_at IS NOT NULL AND excluded.ended_at >= coalesce(t.ended_at, excluded.ended_at)
                      THEN excluded.end_reason ELSE t.end_reason END,
    heartbeat_count = greatest(excluded.heartbeat_count, t.heartbeat_count),
    last_heartbeat_at = CASE WHEN excluded.heartbeat_count >= t.heartbeat_count
                             THEN excluded.last_heartbeat_at ELSE t.last_heartbeat_at END,
    latency_sum = CASE WHEN excluded.heartbeat_count >= t.heartbeat_count
                       THEN excluded.latency_sum ELSE t.latency_sum END,
    latency_count = CASE WHEN excluded.heartbeat_count >= t.heartbeat_count
                         THEN excluded.latency_count ELSE t.latency_count END,
    latency_min = CASE WHEN excluded.heartbeat_count >= t.heartbeat_count
                       THEN coalesce(excluded.latency_min, t.latency_min) ELSE t.latency_min END,
    latency_max = CASE WHEN excluded.heartbeat_count >= t.heartbeat_count
                       THEN coalesce(excluded.latency_max, t.latency_max) ELSE t.latency_max END,
    updated_at = now(),
    updated_by = excluded.updated_by"""

# The batch's figures per (room, minute), added to the stored minute: every figure is a sum or a
# maximum, so nodes and batches combine in any order. The nodes' per-second online counts add
# second by second (online_secs), and online_max is the largest of those sums: the room's count
# across nodes at one instant (a node's own maximum, all an older node sends, is a lower bound). Online and latency figures come from room
# samples (what only a node knows); joins from session_started and leaves/timeouts/disconnects from
# session_ended events (bucket_ms: the minute of started_at/ended_at, set by the writer), so they are
# exact whatever process dies (a session event's latency columns are the session's own: not summed
# here). Any reason other than leave or timeout (disconnect, shutdown, node_lost) counts as a
# disconnect: the client went away without leaving, whoever noticed. A
# minute may start with session events alone: its online figures stay 0 until a sample arrives
# (node_samples says how many did). The SLO breakdown (latency histograms per app version and OS)
# adds label by label and keeps the top_n labels of each dimension by heartbeats, folding the
# others into "other" (spd_breakdown_add, migration 0016): counts are conserved, labels bounded.
_ROOM_STATS = """
INSERT INTO dat_spd_room_stats AS t (
    room_id, ts_bucket, unidad_negocio_id, room_code, online_sum, online_samples, online_avg,
    online_max, online_secs, joins, leaves, timeouts, disconnects, latency_sum, latency_count, latency_hist,
    latency_breakdown, node_samples, created_by, updated_by)
SELECT room_id, to_timestamp(bucket_ms / 1000.0), min(tenant), min(room_code),
       coalesce(sum(online_sum), 0), coalesce(sum(online_samples), 0),
       coalesce(sum(CASE WHEN online_samples > 0 THEN online_sum::double precision / online_samples END), 0),
       greatest(coalesce(max(online_max), 0),
                spd_array_max(spd_hist_sum(online_secs) FILTER (WHERE kind = 'room_sample'))),
       coalesce(spd_hist_sum(online_secs) FILTER (WHERE kind = 'room_sample'), '{}')::integer[],
       count(*) FILTER (WHERE kind = 'session_started'),
       count(*) FILTER (WHERE kind = 'session_ended' AND end_reason = 'leave'),
       count(*) FILTER (WHERE kind = 'session_ended' AND end_reason = 'timeout'),
       count(*) FILTER (WHERE kind = 'session_ended' AND end_reason IS DISTINCT FROM 'leave'
                        AND end_reason IS DISTINCT FROM 'timeout'),
       coalesce(sum(latency_sum) FILTER (WHERE kind = 'room_sample'), 0),
       coalesce(sum(latency_count) FILTER (WHERE kind = 'room_sample'), 0),
       coalesce(spd_hist_sum(latency_hist) FILTER (WHERE kind = 'room_sample'), '{}'),
       spd_breakdown_sum(latency_breakdown, %(top_n)s) FILTER (WHERE kind = 'room_sample'),
       count(*) FILTER (WHERE kind = 'room_sample'),
       %(actor)s, %(actor)s
FROM spd_stage WHERE kind <> 'session_checkpoint' AND bucket_ms IS NOT NULL
GROUP BY room_id, bucket_ms
ON CONFLICT (room_id, ts_bucket) DO UPDATE SET
    room_code = coalesce(excluded.room_code, t.room_code),
    online_sum = t.online_sum + excluded.online_sum,
    online_samples = t.online_samples + excluded.online_samples,
    online_avg = t.online_avg + excluded.online_avg,
    online_max = greatest(t.online_max, excluded.online_max,
                          spd_array_max(spd_array_add(t.online_secs::bigint[], excluded.online_secs::bigint[]))),
    online_secs = spd_array_add(t.online_secs::bigint[], excluded.online_secs::bigint[])::integer[],
    joins = t.joins + excluded.joins,
    leaves = t.leaves + excluded.leaves,
    timeouts = t.timeouts + excluded.timeouts,
    disconnects = t.disconnects + excluded.disconnects,
    latency_sum = t.latency_sum + excluded.latency_sum,
    latency_count = t.latency_count + excluded.latency_count,
    latency_hist = spd_array_add(t.latency_hist, excluded.latency_hist),
    latency_breakdown = spd_breakdown_add(t.latency_breakdown, excluded.latency_breakdown, %(top_n)s),
    node_samples = t.node_samples + excluded.node_samples,
    updated_at = now(),
    updated_by = excluded.updated_by"""


@dataclass
class BatchResult:
    """What one batch did: events new to the ledger, replays skipped, rows upserted."""

    applied: int = 0
    duplicates: int = 0
    session_rows: int = 0
    stats_rows: int = 0


def write_batch(
    conn: psycopg.Connection, rows: Sequence[StageRow], actor: str = "spidi-writer", *, top_n: int
) -> BatchResult:
    """Apply staged event rows (unique event ids) in ONE transaction; ``top_n``: the SLO
    breakdown's labels kept per room minute and dimension (settings.slo_breakdown_top_n).

    Every partition the rows need must exist already (``partitions.PartitionManager``). Either all
    of the batch's effects and ledger entries commit, or none do.
    """
    result = BatchResult()
    with conn.transaction():
        conn.execute(_CREATE_STAGE)
        with conn.cursor() as cur:
            with cur.copy(_COPY_STAGE) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_LEDGER)
            result.duplicates = cur.rowcount
            cur.execute(_ENDED_ALREADY)
            result.duplicates += cur.rowcount
            result.applied = len(rows) - result.duplicates
            if result.applied:
                cur.execute(_SESSIONS, {"actor": actor})
                result.session_rows = cur.rowcount
                cur.execute(_ROOM_STATS, {"actor": actor, "top_n": top_n})
                result.stats_rows = cur.rowcount
    return result
