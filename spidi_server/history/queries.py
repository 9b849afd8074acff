"""Every SQL statement of the history side (migrations aside) lives here.

Connections are psycopg 3 ``Connection`` objects. Functions that write open their own
``conn.transaction()`` (a savepoint when the caller already has a transaction), so they commit on
their own in autocommit-off connections used outside a transaction.

Readers isolate tenants with ``tenant_transaction``; the writer and the server's own lookups run
as the connecting user, which sees every tenant (see migrations/0003_security.sql).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..rooms import room_id_for

ARCHIVE_SCHEMA = "spd_archive"
READER_ROLE = "spidi_reader"
_MIGRATION_LOCK = 0x5350_4944_4931  # pg_advisory_lock keys: "SPIDI1", "SPIDI2"
_RETENTION_LOCK = 0x5350_4944_4932

# -- migrations --------------------------------------------------------------------------------


def migration_lock(conn: psycopg.Connection) -> None:
    """Serialise migrations of concurrent nodes (session-level advisory lock)."""
    conn.execute("SELECT pg_advisory_lock(%s)", [_MIGRATION_LOCK])


def migration_unlock(conn: psycopg.Connection) -> None:
    """Release the migration lock."""
    conn.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATION_LOCK])


def ensure_migrations_table(conn: psycopg.Connection) -> None:
    """Create ``spd_schema_migrations`` (the record of applied migrations) if missing."""
    conn.execute(
        """CREATE TABLE IF NOT EXISTS spd_schema_migrations (
               version    text PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now(),
               applied_by text NOT NULL DEFAULT current_user)"""
    )


def applied_migrations(conn: psycopg.Connection) -> dict[str, str]:
    """version -> checksum of every applied migration."""
    return dict(conn.execute("SELECT version, checksum FROM spd_schema_migrations").fetchall())


def record_migration(conn: psycopg.Connection, version: str, name: str, checksum: str) -> None:
    """Note a migration as applied (inside its own transaction)."""
    conn.execute(
        "INSERT INTO spd_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
        [version, name, checksum],
    )


# -- partitions --------------------------------------------------------------------------------


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
    """Names of the tables in the archive schema."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname""",
        [ARCHIVE_SCHEMA],
    ).fetchall()
    return [r[0] for r in rows]


def archive_partition(conn: psycopg.Connection, parent: str, name: str) -> None:
    """Detach ``name`` from ``parent`` and move it, data and indexes, into the archive schema."""
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(parent), sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(name), sql.Identifier(ARCHIVE_SCHEMA)
            )
        )


def drop_partition(conn: psycopg.Connection, parent: str, name: str) -> None:
    """Detach and drop an attached partition (data past every retention horizon)."""
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(parent), sql.Identifier(name))
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def try_retention_lock(conn: psycopg.Connection) -> bool:
    """Take the retention lock (session-level) unless another session holds it."""
    return conn.execute("SELECT pg_try_advisory_lock(%s)", [_RETENTION_LOCK]).fetchone()[0]


def retention_unlock(conn: psycopg.Connection) -> None:
    """Release the retention lock."""
    conn.execute("SELECT pg_advisory_unlock(%s)", [_RETENTION_LOCK])


def drop_archived(conn: psycopg.Connection, name: str) -> None:
    """Drop table ``name`` of the archive schema."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(ARCHIVE_SCHEMA), sql.Identifier(name)))


# -- writer batches ----------------------------------------------------------------------------

# One staging row per event, whatever its kind; timestamps stay epoch milliseconds here and are
# converted in SQL (cheaper than building datetimes in Python for every event).
STAGE_COLUMNS = (
    "event_id", "event_ms", "kind", "session_id", "room_id", "room_code", "tenant", "user_id",
    "client_id", "app_version", "device", "os", "ip", "node_id", "started_ms", "ended_ms",
    "end_reason", "heartbeats", "last_hb_ms", "latency_sum", "latency_count", "latency_min",
    "latency_max", "bucket_ms", "online_sum", "online_samples", "online_max", "latency_hist",
)  # fmt: skip

_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS spd_stage (
    event_id uuid NOT NULL, event_ms bigint NOT NULL, kind text NOT NULL,
    session_id uuid, room_id uuid, room_code text, tenant text, user_id text, client_id text,
    app_version text, device text, os text, ip text, node_id text,
    started_ms bigint, ended_ms bigint, end_reason text, heartbeats bigint, last_hb_ms bigint,
    latency_sum double precision, latency_count bigint, latency_min double precision,
    latency_max double precision, bucket_ms bigint, online_sum bigint, online_samples bigint,
    online_max integer, latency_hist bigint[]
) ON COMMIT DELETE ROWS"""

_COPY_STAGE = sql.SQL("COPY spd_stage ({}) FROM STDIN").format(
    sql.SQL(", ").join(map(sql.Identifier, STAGE_COLUMNS))
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
# maximum, so nodes and batches combine in any order. Online and latency figures come from room
# samples (what only a node knows); joins from session_started and leaves/timeouts/disconnects from
# session_ended events (bucket_ms: the minute of started_at/ended_at, set by the writer), so they are
# exact whatever process dies (a session event's latency columns are the session's own: not summed
# here). Any reason other than leave or timeout (disconnect, shutdown) counts as a disconnect. A minute may start with session events alone: its online figures stay 0 until
# a sample arrives (node_samples says how many did).
_ROOM_STATS = """
INSERT INTO dat_spd_room_stats AS t (
    room_id, ts_bucket, unidad_negocio_id, room_code, online_sum, online_samples, online_avg,
    online_max, joins, leaves, timeouts, disconnects, latency_sum, latency_count, latency_hist,
    node_samples, created_by, updated_by)
SELECT room_id, to_timestamp(bucket_ms / 1000.0), min(tenant), min(room_code),
       coalesce(sum(online_sum), 0), coalesce(sum(online_samples), 0),
       coalesce(sum(CASE WHEN online_samples > 0 THEN online_sum::double precision / online_samples END), 0),
       coalesce(max(online_max), 0),
       count(*) FILTER (WHERE kind = 'session_started'),
       count(*) FILTER (WHERE kind = 'session_ended' AND end_reason = 'leave'),
       count(*) FILTER (WHERE kind = 'session_ended' AND end_reason = 'timeout'),
       count(*) FILTER (WHERE kind = 'session_ended' AND end_reason IS DISTINCT FROM 'leave'
                        AND end_reason IS DISTINCT FROM 'timeout'),
       coalesce(sum(latency_sum) FILTER (WHERE kind = 'room_sample'), 0),
       coalesce(sum(latency_count) FILTER (WHERE kind = 'room_sample'), 0),
       coalesce(spd_hist_sum(latency_hist) FILTER (WHERE kind = 'room_sample'), '{}'),
       count(*) FILTER (WHERE kind = 'room_sample'),
       %(actor)s, %(actor)s
FROM spd_stage WHERE kind <> 'session_checkpoint' AND bucket_ms IS NOT NULL
GROUP BY room_id, bucket_ms
ON CONFLICT (room_id, ts_bucket) DO UPDATE SET
    room_code = coalesce(excluded.room_code, t.room_code),
    online_sum = t.online_sum + excluded.online_sum,
    online_samples = t.online_samples + excluded.online_samples,
    online_avg = t.online_avg + excluded.online_avg,
    online_max = greatest(t.online_max, excluded.online_max),
    joins = t.joins + excluded.joins,
    leaves = t.leaves + excluded.leaves,
    timeouts = t.timeouts + excluded.timeouts,
    disconnects = t.disconnects + excluded.disconnects,
    latency_sum = t.latency_sum + excluded.latency_sum,
    latency_count = t.latency_count + excluded.latency_count,
    latency_hist = spd_array_add(t.latency_hist, excluded.latency_hist),
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


def write_batch(conn: psycopg.Connection, rows: Sequence[tuple], actor: str = "spidi-writer") -> BatchResult:
    """Apply staged event rows (``STAGE_COLUMNS`` tuples, unique event ids) in ONE transaction.

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
            result.applied = len(rows) - result.duplicates
            if result.applied:
                cur.execute(_SESSIONS, {"actor": actor})
                result.session_rows = cur.rowcount
                cur.execute(_ROOM_STATS, {"actor": actor})
                result.stats_rows = cur.rowcount
    return result


# -- tenants -----------------------------------------------------------------------------------


@contextlib.contextmanager
def tenant_transaction(conn: psycopg.Connection, tenant: str) -> Iterator[psycopg.Connection]:
    """A transaction that sees only ``tenant``'s rows (row-level security), as role spidi_reader.

    Must start outside any transaction: the role and tenant are SET LOCAL, and inside an outer
    transaction they would outlive this block. Commits on success, rolls back on error.
    """
    if not tenant:
        raise ValueError("tenant_transaction needs a tenant")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise psycopg.ProgrammingError("tenant_transaction must start outside a transaction")
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(READER_ROLE)))
        conn.execute("SELECT set_config('spidi.tenant', %s, true)", [tenant])
        yield conn


# -- rooms -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomRecord:
    """A room as stored: ``capacity`` is the effective one (the room's, else its type's default)."""

    room_id: str
    tenant: str
    code: str
    name: str | None
    room_type: str | None
    capacity: int | None
    ttl_s: int | None
    status: str
    attrs: dict[str, str | None] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether sessions may join (status ``active``)."""
        return self.status == "active"


_ROOM_SELECT = """
SELECT r.id::text AS room_id, r.unidad_negocio_id AS tenant, r.code, r.name, rt.code AS room_type,
       coalesce(r.capacity, rt.default_capacity) AS capacity, r.ttl_s, r.status,
       coalesce((SELECT jsonb_object_agg(a.attr_key, a.attr_value) FROM dat_spd_room_attr AS a
                 WHERE a.room_id = r.id AND a.deleted_at IS NULL), '{}'::jsonb) AS attrs
FROM dat_spd_room AS r
LEFT JOIN tba_spd_room_type AS rt ON rt.id = r.room_type_id AND rt.deleted_at IS NULL
WHERE r.unidad_negocio_id = %(tenant)s AND r.deleted_at IS NULL"""


def _room(row: dict) -> RoomRecord:
    return RoomRecord(**row)


def list_rooms(conn: psycopg.Connection, tenant: str, include_disabled: bool = True) -> list[RoomRecord]:
    """Every live room of ``tenant``, by code."""
    query = _ROOM_SELECT + ("" if include_disabled else " AND r.status = 'active'") + " ORDER BY r.code"
    with conn.cursor(row_factory=dict_row) as cur:
        return [_room(r) for r in cur.execute(query, {"tenant": tenant}).fetchall()]


def list_all_rooms(conn: psycopg.Connection) -> list[RoomRecord]:
    """Every live room of every tenant (the server's room cache; the writer's role sees all)."""
    query = _ROOM_SELECT.replace("WHERE r.unidad_negocio_id = %(tenant)s AND", "WHERE")
    with conn.cursor(row_factory=dict_row) as cur:
        return [_room(r) for r in cur.execute(query + " ORDER BY r.unidad_negocio_id, r.code").fetchall()]


def get_room_by_code(conn: psycopg.Connection, tenant: str, code: str) -> RoomRecord | None:
    """The live room ``code`` of ``tenant``, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            _ROOM_SELECT + " AND r.code = %(code)s", {"tenant": tenant, "code": code}
        ).fetchone()
    return _room(row) if row else None


def upsert_room_type(
    conn: psycopg.Connection, code: str, name: str, default_capacity: int | None = None, actor: str = "spidi"
) -> str:
    """Create or update a room type of the catalogue; return its id."""
    with conn.transaction():
        row = conn.execute(
            """UPDATE tba_spd_room_type SET name = %s, default_capacity = %s, updated_at = now(), updated_by = %s
               WHERE code = %s AND deleted_at IS NULL RETURNING id::text""",
            [name, default_capacity, actor, code],
        ).fetchone()
        if row is None:
            row = conn.execute(
                """INSERT INTO tba_spd_room_type (code, name, default_capacity, created_by, updated_by)
                   VALUES (%s, %s, %s, %s, %s) RETURNING id::text""",
                [code, name, default_capacity, actor, actor],
            ).fetchone()
    return row[0]


def upsert_room(
    conn: psycopg.Connection,
    tenant: str,
    code: str,
    *,
    capacity: int | None = None,
    name: str | None = None,
    room_type: str | None = None,
    ttl_s: int | None = None,
    status: str = "active",
    attrs: dict[str, str | None] | None = None,
    actor: str = "spidi",
) -> RoomRecord:
    """Create or update room ``code`` of ``tenant`` (its id is ``rooms.room_id_for``); undeletes it.

    ``room_type`` is a catalogue code (ValueError if unknown). ``attrs``, when given, becomes the
    room's whole attribute set (keys left out are soft-deleted); None leaves attributes alone.
    """
    room_id = room_id_for(tenant, code)
    with conn.transaction():
        type_id = None
        if room_type is not None:
            found = conn.execute(
                "SELECT id FROM tba_spd_room_type WHERE code = %s AND deleted_at IS NULL", [room_type]
            ).fetchone()
            if found is None:
                raise ValueError(f"unknown room type {room_type!r}")
            type_id = found[0]
        conn.execute(
            """INSERT INTO dat_spd_room AS r (id, unidad_negocio_id, code, name, room_type_id, capacity, ttl_s,
                                              status, created_by, updated_by)
               VALUES (%(id)s, %(tenant)s, %(code)s, %(name)s, %(type_id)s, %(capacity)s, %(ttl_s)s, %(status)s,
                       %(actor)s, %(actor)s)
               ON CONFLICT (id) DO UPDATE SET name = excluded.name, room_type_id = excluded.room_type_id,
                   capacity = excluded.capacity, ttl_s = excluded.ttl_s, status = excluded.status,
                   deleted_at = NULL, updated_at = now(), updated_by = excluded.updated_by""",
            {"id": room_id, "tenant": tenant, "code": code, "name": name, "type_id": type_id,
             "capacity": capacity, "ttl_s": ttl_s, "status": status, "actor": actor},
        )  # fmt: skip
        if attrs is not None:
            _replace_room_attrs(conn, room_id, tenant, attrs, actor)
    room = get_room_by_code(conn, tenant, code)
    assert room is not None
    return room


def _soft_delete(conn: psycopg.Connection, table: str, where: str, params: Sequence, actor: str) -> int:
    """Mark the live rows of ``table`` matching ``where`` (SQL of this module, never user text)
    deleted: rows stay for history and audit. Returns how many."""
    query = sql.SQL(
        "UPDATE {} SET deleted_at = now(), updated_at = now(), updated_by = %s WHERE deleted_at IS NULL AND "
    ).format(sql.Identifier(table)) + sql.SQL(where)
    return conn.execute(query, [actor, *params]).rowcount


def delete_room(conn: psycopg.Connection, tenant: str, code: str, actor: str = "spidi") -> bool:
    """Soft-delete a room and its attributes; False if there was no such live room."""
    room_id = room_id_for(tenant, code)
    with conn.transaction():
        deleted = _soft_delete(conn, "dat_spd_room", "id = %s", [room_id], actor)
        _soft_delete(conn, "dat_spd_room_attr", "room_id = %s", [room_id], actor)
        return deleted > 0


# -- history reads -----------------------------------------------------------------------------


def list_sessions(
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


# -- the operators' REST API -------------------------------------------------------------------
#
# Every function below is meant to run inside ``tenant_transaction`` (the API never calls them
# otherwise): row-level security scopes reads and writes to the tenant, and the explicit tenant
# conditions only help the planner. Rows come back as dicts of snake_case columns; the API maps
# them to its camelCase JSON.


class ConflictError(Exception):
    """The change collides with live rows: a duplicate code, or a room type still in use."""


class UnknownRoomTypeError(ValueError):
    """A room names a room type the catalogue does not have (live)."""


_API_ROOM_SELECT = """
SELECT r.id::text AS id, r.code, r.name, rt.code AS room_type,
       coalesce(r.capacity, rt.default_capacity) AS capacity, r.ttl_s, r.status,
       coalesce((SELECT jsonb_object_agg(a.attr_key, a.attr_value) FROM dat_spd_room_attr AS a
                 WHERE a.room_id = r.id AND a.deleted_at IS NULL), '{}'::jsonb) AS attrs,
       r.created_at, r.created_by, r.updated_at, r.updated_by
FROM dat_spd_room AS r
LEFT JOIN tba_spd_room_type AS rt ON rt.id = r.room_type_id AND rt.deleted_at IS NULL
WHERE r.unidad_negocio_id = %(tenant)s AND r.deleted_at IS NULL"""

_ROOM_TYPE_SELECT = """
SELECT id::text AS id, code, name, default_capacity, created_at, created_by, updated_at, updated_by
FROM tba_spd_room_type WHERE deleted_at IS NULL"""

# API field -> dat_spd_room column for partial updates (room_type is resolved to room_type_id).
_ROOM_COLUMNS = {"name": "name", "capacity": "capacity", "ttl_s": "ttl_s", "status": "status"}
_ROOM_TYPE_COLUMNS = {"code": "code", "name": "name", "default_capacity": "default_capacity"}


def _page(
    conn: psycopg.Connection, query: str, params: dict[str, Any], order_by: str
) -> tuple[list[dict], int]:
    """One page (``params`` has limit and offset) of ``query``'s rows in ``order_by``, and how many in all."""
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM ({query}) AS q", params).fetchone()["n"]
        rows = cur.execute(
            f"{query} ORDER BY {order_by} LIMIT %(limit)s OFFSET %(offset)s", params
        ).fetchall()
    return rows, total


def api_list_rooms(
    conn: psycopg.Connection,
    tenant: str,
    *,
    code_prefix: str | None = None,
    code_contains: str | None = None,
    status: str | None = None,
    room_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of ``tenant``'s live rooms by code (byte order), and how many match in all.

    ``code_prefix`` and ``code_contains`` match case-insensitively and literally (no wildcards).
    """
    params: dict[str, Any] = {"tenant": tenant, "limit": limit, "offset": offset}
    query = _API_ROOM_SELECT
    if code_prefix:
        query += " AND starts_with(lower(r.code), lower(%(prefix)s))"
        params["prefix"] = code_prefix
    if code_contains:
        query += " AND strpos(lower(r.code), lower(%(contains)s)) > 0"
        params["contains"] = code_contains
    if status:
        query += " AND r.status = %(status)s"
        params["status"] = status
    if room_type:
        query += " AND rt.code = %(type)s"
        params["type"] = room_type
    return _page(conn, query, params, 'r.code COLLATE "C"')


def api_get_room(conn: psycopg.Connection, tenant: str, room_id: str) -> dict[str, Any] | None:
    """The live room ``room_id`` of ``tenant`` (with audit columns), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            _API_ROOM_SELECT + " AND r.id = %(id)s", {"tenant": tenant, "id": room_id}
        ).fetchone()


def _room_type_id(conn: psycopg.Connection, code: str | None) -> str | None:
    if code is None:
        return None
    found = conn.execute(
        "SELECT id FROM tba_spd_room_type WHERE code = %s AND deleted_at IS NULL", [code]
    ).fetchone()
    if found is None:
        raise UnknownRoomTypeError(f"unknown room type {code!r}")
    return found[0]


def _replace_room_attrs(
    conn: psycopg.Connection, room_id: str, tenant: str, attrs: dict[str, str | None], actor: str
) -> None:
    """Make ``attrs`` the room's whole attribute set: others are soft-deleted, unchanged ones untouched."""
    _soft_delete(
        conn, "dat_spd_room_attr", "room_id = %s AND NOT (attr_key = ANY(%s))", [room_id, list(attrs)], actor
    )
    for key, value in attrs.items():
        conn.execute(
            """INSERT INTO dat_spd_room_attr AS a (room_id, unidad_negocio_id, attr_key, attr_value,
                                                   created_by, updated_by)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (room_id, attr_key) WHERE deleted_at IS NULL DO UPDATE
               SET attr_value = excluded.attr_value, updated_at = now(), updated_by = excluded.updated_by
               WHERE a.attr_value IS DISTINCT FROM excluded.attr_value""",
            [room_id, tenant, key, value, actor, actor],
        )


def api_create_room(
    conn: psycopg.Connection,
    tenant: str,
    code: str,
    *,
    name: str | None = None,
    room_type: str | None = None,
    capacity: int | None = None,
    ttl_s: int | None = None,
    status: str = "active",
    attrs: dict[str, str | None] | None = None,
    actor: str,
) -> dict[str, Any]:
    """Create room ``code`` of ``tenant``; ConflictError if a live room has that code.

    The id is ``rooms.room_id_for(tenant, code)``, so a soft-deleted room of the same code is
    brought back as a new room (fresh created_at/created_by, no old attributes).
    UnknownRoomTypeError for an unknown ``room_type``.
    """
    room_id = room_id_for(tenant, code)
    with conn.transaction():
        type_id = _room_type_id(conn, room_type)
        # DO UPDATE ... WHERE deleted_at IS NOT NULL: revive a deleted row, but leave a live one
        # alone and return nothing, which is the duplicate (atomic, also between two API calls).
        row = conn.execute(
            """INSERT INTO dat_spd_room AS r (id, unidad_negocio_id, code, name, room_type_id, capacity, ttl_s,
                                              status, created_by, updated_by)
               VALUES (%(id)s, %(tenant)s, %(code)s, %(name)s, %(type_id)s, %(capacity)s, %(ttl_s)s, %(status)s,
                       %(actor)s, %(actor)s)
               ON CONFLICT (id) DO UPDATE SET name = excluded.name, room_type_id = excluded.room_type_id,
                   capacity = excluded.capacity, ttl_s = excluded.ttl_s, status = excluded.status,
                   deleted_at = NULL, created_at = now(), created_by = excluded.created_by,
                   updated_at = now(), updated_by = excluded.updated_by
               WHERE r.deleted_at IS NOT NULL
               RETURNING r.id""",
            {"id": room_id, "tenant": tenant, "code": code, "name": name, "type_id": type_id,
             "capacity": capacity, "ttl_s": ttl_s, "status": status, "actor": actor},
        ).fetchone()  # fmt: skip
        if row is None:
            raise ConflictError(f"a room with code {code!r} exists already")
        if attrs:
            _replace_room_attrs(conn, room_id, tenant, attrs, actor)
    room = api_get_room(conn, tenant, room_id)
    assert room is not None
    return room


def api_update_room(
    conn: psycopg.Connection,
    tenant: str,
    room_id: str,
    changes: dict[str, Any],
    *,
    actor: str,
) -> dict[str, Any] | None:
    """Apply ``changes`` to a live room of ``tenant``; the updated room, or None if there is none.

    Keys of ``changes``: name, room_type (a catalogue code or None; UnknownRoomTypeError if unknown),
    capacity, ttl_s, status, attrs (the room's whole new attribute set). Keys left out stay as
    they are; updated_at/updated_by move even when only attributes change.
    """
    unknown = set(changes) - set(_ROOM_COLUMNS) - {"room_type", "attrs"}
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    params: dict[str, Any] = {"id": room_id, "tenant": tenant, "actor": actor}
    sets = [sql.SQL("updated_at = now()"), sql.SQL("updated_by = %(actor)s")]
    with conn.transaction():
        if "room_type" in changes:
            params["room_type_id"] = _room_type_id(conn, changes["room_type"])
            sets.append(sql.SQL("room_type_id = %(room_type_id)s"))
        for key, column in _ROOM_COLUMNS.items():
            if key in changes:
                params[key] = changes[key]
                sets.append(sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(key)))
        row = conn.execute(
            sql.SQL(
                "UPDATE dat_spd_room SET {} WHERE id = %(id)s AND unidad_negocio_id = %(tenant)s"
                " AND deleted_at IS NULL RETURNING id"
            ).format(sql.SQL(", ").join(sets)),
            params,
        ).fetchone()
        if row is None:
            return None
        if changes.get("attrs") is not None:
            _replace_room_attrs(conn, room_id, tenant, changes["attrs"], actor)
    return api_get_room(conn, tenant, room_id)


def api_room_exists(conn: psycopg.Connection, tenant: str, room_id: str) -> bool:
    """Whether ``tenant`` has a live stored room ``room_id``."""
    return (
        conn.execute(
            "SELECT 1 FROM dat_spd_room WHERE id = %s AND unidad_negocio_id = %s AND deleted_at IS NULL",
            [room_id, tenant],
        ).fetchone()
        is not None
    )


def list_room_types_page(
    conn: psycopg.Connection, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """One page of the live room types by code (byte order), and how many there are."""
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(
            "SELECT count(*) AS n FROM tba_spd_room_type WHERE deleted_at IS NULL"
        ).fetchone()["n"]
        rows = cur.execute(
            _ROOM_TYPE_SELECT + ' ORDER BY code COLLATE "C" LIMIT %s OFFSET %s', [limit, offset]
        ).fetchall()
    return rows, total


def get_room_type(conn: psycopg.Connection, type_id: str) -> dict[str, Any] | None:
    """The live room type ``type_id``, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_ROOM_TYPE_SELECT + " AND id = %s", [type_id]).fetchone()


def create_room_type(
    conn: psycopg.Connection, code: str, name: str, default_capacity: int | None = None, *, actor: str
) -> dict[str, Any]:
    """Add a room type to the catalogue; ConflictError if a live one has that code."""
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO tba_spd_room_type (code, name, default_capacity, created_by, updated_by)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (code) WHERE deleted_at IS NULL DO NOTHING RETURNING id::text""",
            [code, name, default_capacity, actor, actor],
        ).fetchone()
    if row is None:
        raise ConflictError(f"a room type with code {code!r} exists already")
    found = get_room_type(conn, row[0])
    assert found is not None
    return found


def update_room_type(
    conn: psycopg.Connection, type_id: str, changes: dict[str, Any], *, actor: str
) -> dict[str, Any] | None:
    """Apply ``changes`` (code, name, default_capacity) to a live room type; None if there is none.

    ConflictError when the new code belongs to another live room type.
    """
    unknown = set(changes) - set(_ROOM_TYPE_COLUMNS)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    params: dict[str, Any] = {"id": type_id, "actor": actor, **changes}
    sets = [sql.SQL("updated_at = now()"), sql.SQL("updated_by = %(actor)s")]
    sets += [
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(key))
        for key, column in _ROOM_TYPE_COLUMNS.items()
        if key in changes
    ]
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL(
                    "UPDATE tba_spd_room_type SET {} WHERE id = %(id)s AND deleted_at IS NULL RETURNING id"
                ).format(sql.SQL(", ").join(sets)),
                params,
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"a room type with code {changes.get('code')!r} exists already") from exc
    return get_room_type(conn, type_id) if row else None


def delete_room_type(conn: psycopg.Connection, type_id: str, *, actor: str) -> bool:
    """Soft-delete a room type; False if there is no such live type.

    ConflictError while a live room of any tenant still uses it (``spd_room_type_in_use`` looks
    past row-level security and answers only yes or no).
    """
    with conn.transaction():
        if conn.execute("SELECT spd_room_type_in_use(%s)", [type_id]).fetchone()[0]:
            raise ConflictError("the room type is still used by rooms; change or delete them first")
        return _soft_delete(conn, "tba_spd_room_type", "id = %s", [type_id], actor) > 0


def list_sessions_page(
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
    rows = list_sessions(conn, start, end, room_id=room_id, user_id=user_id, limit=limit, offset=offset)
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(
            "SELECT count(*) AS n FROM spd_sessions(%s, %s, %s, %s)", [start, end, room_id, user_id]
        ).fetchone()["n"]
    return rows, total


# -- alerting: the evaluator's reads and the writer's alert events -----------------------------
# (The operators' API statements for rules and events follow in their own section.)

_ALERT_RULE_COLUMNS = """
id::text AS rule_id, unidad_negocio_id AS tenant, name, scope, room_id::text AS room_id,
room_type_id::text AS room_type_id, kind, expression, resolve_expression, threshold, severity,
for_seconds, channels, enabled"""


def load_alert_rules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every enabled, live alert rule of every tenant (the evaluator's role sees all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_ALERT_RULE_COLUMNS} FROM dat_spd_alert_rule"
            " WHERE deleted_at IS NULL AND enabled ORDER BY unidad_negocio_id, id"
        ).fetchall()


def load_alert_rooms(conn: psycopg.Connection, tenants: Sequence[str]) -> list[dict[str, Any]]:
    """The live, active rooms of ``tenants`` with their type id and effective capacity."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT r.id::text AS room_id, r.unidad_negocio_id AS tenant, r.code,
                      r.room_type_id::text AS room_type_id, coalesce(r.capacity, rt.default_capacity) AS capacity
               FROM dat_spd_room AS r
               LEFT JOIN tba_spd_room_type AS rt ON rt.id = r.room_type_id AND rt.deleted_at IS NULL
               WHERE r.deleted_at IS NULL AND r.status = 'active' AND r.unidad_negocio_id = ANY(%s)""",
            [list(tenants)],
        ).fetchall()


ALERT_EVENT_COLUMNS = (
    "id", "rule_id", "unidad_negocio_id", "room_id", "room_code", "state", "kind", "severity", "value",
    "at_ms", "details",
)  # fmt: skip


def write_alert_events(conn: psycopg.Connection, rows: Sequence[tuple], actor: str = "spidi-writer") -> int:
    """Insert alert events (``ALERT_EVENT_COLUMNS`` tuples); an id already stored is a replay and
    changes nothing. Returns the rows inserted."""
    inserted = 0
    with conn.transaction(), conn.cursor() as cur:
        for row in rows:
            cur.execute(
                """INSERT INTO dat_spd_alert_event (id, rule_id, unidad_negocio_id, room_id, room_code, state,
                       kind, severity, value, at, details, created_by, updated_by)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), %s::jsonb, %s, %s)
                   ON CONFLICT (id) DO NOTHING""",
                (*row, actor, actor),
            )
            inserted += cur.rowcount
    return inserted


# -- alerting: the operators' API --------------------------------------------------------------
#
# Like the room statements above: run inside ``tenant_transaction`` only, so row-level security
# scopes every read and write to the caller's tenant (the explicit tenant conditions only help
# the planner). Rules are soft-deleted; events are written by the history writer and the API only
# acknowledges them (0005 grants spidi_reader those columns and nothing else of the table).

_API_ALERT_RULE_SELECT = """
SELECT r.id::text AS id, r.name, r.scope, r.room_id::text AS room_id, r.room_type_id::text AS room_type_id,
       rt.code AS room_type, r.kind, r.threshold, r.expression, r.resolve_expression, r.severity,
       r.for_seconds, r.channels, r.enabled, r.created_at, r.created_by, r.updated_at, r.updated_by
FROM dat_spd_alert_rule AS r
LEFT JOIN tba_spd_room_type AS rt ON rt.id = r.room_type_id
WHERE r.unidad_negocio_id = %(tenant)s AND r.deleted_at IS NULL"""

# The rule's columns the API writes; values of ``channels`` are lists (stored as jsonb).
ALERT_RULE_API_COLUMNS = ("name", "scope", "room_id", "room_type_id", "kind", "threshold", "expression",
                          "resolve_expression", "severity", "for_seconds", "channels", "enabled")  # fmt: skip

_API_ALERT_EVENT_SELECT = """
SELECT e.id::text AS id, e.rule_id::text AS rule_id, r.name AS rule_name, e.room_id::text AS room_id,
       e.room_code, e.state, e.kind, e.severity, e.value, e.at, e.details, e.acknowledged_by, e.acknowledged_at
FROM dat_spd_alert_event AS e
LEFT JOIN dat_spd_alert_rule AS r ON r.id = e.rule_id
WHERE e.unidad_negocio_id = %(tenant)s AND e.deleted_at IS NULL"""


def api_room_type_id(conn: psycopg.Connection, code: str | None) -> str | None:
    """The id of the live room type ``code`` (None for None); UnknownRoomTypeError if there is none."""
    found = _room_type_id(conn, code)
    return None if found is None else str(found)


def api_list_alert_rules(
    conn: psycopg.Connection,
    tenant: str,
    *,
    kind: str | None = None,
    enabled: bool | None = None,
    room_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of ``tenant``'s live alert rules by name (byte order), and how many match in all.

    ``room_id`` matches the rules scoped to that one room (not the room-type or tenant rules that
    also watch it).
    """
    params: dict[str, Any] = {"tenant": tenant, "limit": limit, "offset": offset}
    query = _API_ALERT_RULE_SELECT
    if kind:
        query += " AND r.kind = %(kind)s"
        params["kind"] = kind
    if enabled is not None:
        query += " AND r.enabled = %(enabled)s"
        params["enabled"] = enabled
    if room_id:
        query += " AND r.room_id = %(room_id)s"
        params["room_id"] = room_id
    return _page(conn, query, params, 'r.name COLLATE "C", r.id')


def api_get_alert_rule(conn: psycopg.Connection, tenant: str, rule_id: str) -> dict[str, Any] | None:
    """The live alert rule ``rule_id`` of ``tenant`` (with audit columns), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            _API_ALERT_RULE_SELECT + " AND r.id = %(id)s", {"tenant": tenant, "id": rule_id}
        ).fetchone()


def _rule_values(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(ALERT_RULE_API_COLUMNS)
    if unknown:
        raise ValueError(f"not alert rule columns: {sorted(unknown)}")
    out = dict(values)
    if "channels" in out:
        out["channels"] = Jsonb(out["channels"])
    return out


def api_create_alert_rule(
    conn: psycopg.Connection, tenant: str, values: dict[str, Any], *, actor: str
) -> dict[str, Any]:
    """Store a new alert rule of ``tenant`` (``values``: ALERT_RULE_API_COLUMNS, checked by the
    caller); the stored rule. ``actor`` is its created_by and updated_by."""
    params = {**_rule_values(values), "tenant": tenant, "actor": actor}
    columns = [c for c in ALERT_RULE_API_COLUMNS if c in values]
    statement = sql.SQL(
        "INSERT INTO dat_spd_alert_rule (unidad_negocio_id, {}, created_by, updated_by)"
        " VALUES (%(tenant)s, {}, %(actor)s, %(actor)s) RETURNING id::text"
    ).format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
    )
    with conn.transaction():
        rule_id = conn.execute(statement, params).fetchone()[0]
    rule = api_get_alert_rule(conn, tenant, rule_id)
    assert rule is not None
    return rule


def api_update_alert_rule(
    conn: psycopg.Connection, tenant: str, rule_id: str, changes: dict[str, Any], *, actor: str
) -> dict[str, Any] | None:
    """Apply ``changes`` (ALERT_RULE_API_COLUMNS) to a live rule of ``tenant``; the updated rule, or
    None if there is none. updated_at/updated_by move even when nothing else does."""
    params = {**_rule_values(changes), "id": rule_id, "tenant": tenant, "actor": actor}
    sets = [sql.SQL("updated_at = now()"), sql.SQL("updated_by = %(actor)s")]
    sets += [
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c))
        for c in ALERT_RULE_API_COLUMNS
        if c in changes
    ]
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "UPDATE dat_spd_alert_rule SET {} WHERE id = %(id)s AND unidad_negocio_id = %(tenant)s"
                " AND deleted_at IS NULL RETURNING id"
            ).format(sql.SQL(", ").join(sets)),
            params,
        ).fetchone()
    return api_get_alert_rule(conn, tenant, rule_id) if row else None


def api_delete_alert_rule(conn: psycopg.Connection, tenant: str, rule_id: str, *, actor: str) -> bool:
    """Soft-delete a rule of ``tenant`` (its events stay); False if there is no such live rule."""
    with conn.transaction():
        return (
            _soft_delete(
                conn, "dat_spd_alert_rule", "id = %s AND unidad_negocio_id = %s", [rule_id, tenant], actor
            )
            > 0
        )


def api_list_alert_events(
    conn: psycopg.Connection,
    tenant: str,
    *,
    state: str | None = None,
    room_id: str | None = None,
    rule_id: str | None = None,
    severity: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of ``tenant``'s alert events at [start, end) (each bound optional), newest first,
    and how many match in all. Events of deleted rules are kept (``rule_name`` still shows)."""
    params: dict[str, Any] = {"tenant": tenant, "limit": limit, "offset": offset}
    query = _API_ALERT_EVENT_SELECT
    for key, column, value in (("state", "e.state", state), ("room_id", "e.room_id", room_id),
                               ("rule_id", "e.rule_id", rule_id), ("severity", "e.severity", severity)):  # fmt: skip
        if value is not None:
            query += f" AND {column} = %({key})s"
            params[key] = value
    if start is not None:
        query += " AND e.at >= %(start)s"
        params["start"] = start
    if end is not None:
        query += " AND e.at < %(end)s"
        params["end"] = end
    return _page(conn, query, params, "e.at DESC, e.id DESC")


def api_get_alert_event(conn: psycopg.Connection, tenant: str, event_id: str) -> dict[str, Any] | None:
    """The alert event ``event_id`` of ``tenant``, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            _API_ALERT_EVENT_SELECT + " AND e.id = %(id)s", {"tenant": tenant, "id": event_id}
        ).fetchone()


def api_acknowledge_alert_event(
    conn: psycopg.Connection, tenant: str, event_id: str, *, actor: str
) -> tuple[dict[str, Any] | None, bool]:
    """Mark an event of ``tenant`` acknowledged by ``actor`` now, unless it already is.

    Returns (the event, whether this call acknowledged it); (None, False) if there is no such
    event. Of two concurrent calls one waits for the other's row lock and then finds the event
    acknowledged, so the first acknowledgement is never overwritten.
    """
    with conn.transaction():
        row = conn.execute(
            """UPDATE dat_spd_alert_event
               SET acknowledged_by = %(actor)s, acknowledged_at = now(), updated_at = now(), updated_by = %(actor)s
               WHERE id = %(id)s AND unidad_negocio_id = %(tenant)s AND deleted_at IS NULL
                 AND acknowledged_at IS NULL
               RETURNING id""",
            {"actor": actor, "id": event_id, "tenant": tenant},
        ).fetchone()
    return api_get_alert_event(conn, tenant, event_id), row is not None
