"""Alerting's SQL: the evaluator's reads, the alert events the history writer stores, and the
operators' API for rules and events.

The evaluator reads every tenant's rules and rooms as the connecting user; the writer inserts the
events the evaluator sends through the stream (``AlertRow``); the API statements run inside
``tenancy.tenant_transaction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .common import page, soft_delete
from .rooms import EFFECTIVE_CAPACITY, TYPE_JOIN

_RULE_COLUMNS = """
id::text AS rule_id, unidad_negocio_id AS tenant, name, scope, room_id::text AS room_id,
room_type_id::text AS room_type_id, kind, expression, resolve_expression, threshold, share, severity,
for_seconds, channels, enabled, slo_id::text AS slo_id, burn_policy"""


def load_rules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every enabled, live alert rule of every tenant (the evaluator's role sees all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_RULE_COLUMNS} FROM dat_spd_alert_rule"
            " WHERE deleted_at IS NULL AND enabled ORDER BY unidad_negocio_id, id"
        ).fetchall()


def load_rooms(conn: psycopg.Connection, tenants: Sequence[str]) -> list[dict[str, Any]]:
    """The live, active rooms of ``tenants`` with their type id and effective capacity."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT r.id::text AS room_id, r.unidad_negocio_id AS tenant, r.code,
                       r.room_type_id::text AS room_type_id, {EFFECTIVE_CAPACITY} AS capacity
                FROM dat_spd_room AS r
                {TYPE_JOIN}
                WHERE r.deleted_at IS NULL AND r.status = 'active' AND r.unidad_negocio_id = ANY(%s)""",
            [list(tenants)],
        ).fetchall()


class AlertRow(NamedTuple):
    """One alert event as the writer stores it in ``dat_spd_alert_event`` (``at_ms``: epoch ms of
    its ``at``; ``details``: JSON text)."""

    id: str
    rule_id: str
    unidad_negocio_id: str
    room_id: str | None
    room_code: str | None
    state: str
    kind: str | None
    severity: str | None
    value: float | None
    at_ms: int
    details: str | None


def write_events(conn: psycopg.Connection, rows: Sequence[AlertRow], actor: str = "spidi-writer") -> int:
    """Insert alert events; an id already stored is a replay and changes nothing. Returns the rows
    inserted."""
    inserted = 0
    with conn.transaction(), conn.cursor() as cur:
        for row in rows:
            # An event retention already moved to the archive is a replay too.
            cur.execute(
                """INSERT INTO dat_spd_alert_event (id, rule_id, unidad_negocio_id, room_id, room_code, state,
                       kind, severity, value, at, details, created_by, updated_by)
                   SELECT %(id)s::uuid, %(rule_id)s::uuid, %(unidad_negocio_id)s::text, %(room_id)s::uuid,
                          %(room_code)s::text, %(state)s::text, %(kind)s::text, %(severity)s::text,
                          %(value)s::double precision, to_timestamp(%(at_ms)s / 1000.0),
                          %(details)s::jsonb, %(actor)s::text, %(actor)s::text
                   WHERE NOT EXISTS (SELECT 1 FROM spd_archive.dat_spd_alert_event WHERE id = %(id)s::uuid)
                   ON CONFLICT (id) DO NOTHING""",
                {**row._asdict(), "actor": actor},
            )
            inserted += cur.rowcount
    return inserted


# -- the operators' API ----------------------------------------------------------------------
#
# Like the room statements (rooms.py): run inside ``tenant_transaction`` only, so row-level security
# scopes every read and write to the caller's tenant (the explicit tenant conditions only help
# the planner). Rules are soft-deleted; events are written by the history writer and the API only
# acknowledges them (0005 grants spidi_reader those columns and nothing else of the table).

_API_RULE_SELECT = """
SELECT r.id::text AS id, r.name, r.scope, r.room_id::text AS room_id, r.room_type_id::text AS room_type_id,
       rt.code AS room_type, r.kind, r.threshold, r.share, r.expression, r.resolve_expression, r.severity,
       r.for_seconds, r.channels, r.enabled, r.slo_id::text AS slo_id, r.burn_policy, r.created_at, r.created_by, r.updated_at, r.updated_by
FROM dat_spd_alert_rule AS r
LEFT JOIN tba_spd_room_type AS rt ON rt.id = r.room_type_id AND rt.unidad_negocio_id = r.unidad_negocio_id
WHERE r.unidad_negocio_id = %(tenant)s AND r.deleted_at IS NULL"""

# The rule's columns the API writes; values of ``channels`` are lists (stored as jsonb).
RULE_API_COLUMNS = (
    "name",
    "scope",
    "room_id",
    "room_type_id",
    "kind",
    "threshold",
    "share",
    "expression",
    "resolve_expression",
    "severity",
    "for_seconds",
    "channels",
    "enabled",
    "slo_id",
    "burn_policy",
)

_API_EVENT_COLUMNS = """
SELECT e.id::text AS id, e.rule_id::text AS rule_id, r.name AS rule_name, e.room_id::text AS room_id,
       e.room_code, e.state, e.kind, e.severity, e.value, e.at, e.details, e.acknowledged_by, e.acknowledged_at"""
_API_EVENT_WHERE = """
LEFT JOIN dat_spd_alert_rule AS r ON r.id = e.rule_id
WHERE e.unidad_negocio_id = %(tenant)s AND e.deleted_at IS NULL"""
_API_EVENT_SELECT = _API_EVENT_COLUMNS + "\nFROM dat_spd_alert_event AS e" + _API_EVENT_WHERE
# With the archive (retention moved the events older than retention_hot_days there): both tables,
# each event in one of them, row-level security on both.
_ARCHIVED_EVENT_COLUMNS = (
    "id, rule_id, unidad_negocio_id, room_id, room_code, state, kind, severity, value, at, details,"
    " acknowledged_by, acknowledged_at, deleted_at"
)
_API_EVENT_SELECT_ARCHIVE = (
    _API_EVENT_COLUMNS
    + f"\nFROM (SELECT {_ARCHIVED_EVENT_COLUMNS} FROM dat_spd_alert_event"
    + f" UNION ALL SELECT {_ARCHIVED_EVENT_COLUMNS} FROM spd_archive.dat_spd_alert_event) AS e"
    + _API_EVENT_WHERE
)


def list_rules(
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
    query = _API_RULE_SELECT
    if kind:
        query += " AND r.kind = %(kind)s"
        params["kind"] = kind
    if enabled is not None:
        query += " AND r.enabled = %(enabled)s"
        params["enabled"] = enabled
    if room_id:
        query += " AND r.room_id = %(room_id)s"
        params["room_id"] = room_id
    return page(conn, query, params, 'r.name COLLATE "C", r.id')


def get_rule(conn: psycopg.Connection, tenant: str, rule_id: str) -> dict[str, Any] | None:
    """The live alert rule ``rule_id`` of ``tenant`` (with audit columns), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            _API_RULE_SELECT + " AND r.id = %(id)s", {"tenant": tenant, "id": rule_id}
        ).fetchone()


def _rule_values(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(RULE_API_COLUMNS)
    if unknown:
        raise ValueError(f"not alert rule columns: {sorted(unknown)}")
    out = dict(values)
    if "channels" in out:
        out["channels"] = Jsonb(out["channels"])
    return out


def create_rule(
    conn: psycopg.Connection, tenant: str, values: dict[str, Any], *, actor: str
) -> dict[str, Any]:
    """Store a new alert rule of ``tenant`` (``values``: RULE_API_COLUMNS, checked by the
    caller); the stored rule. ``actor`` is its created_by and updated_by."""
    params = {**_rule_values(values), "tenant": tenant, "actor": actor}
    columns = [c for c in RULE_API_COLUMNS if c in values]
    statement = sql.SQL(
        "INSERT INTO dat_spd_alert_rule (unidad_negocio_id, {}, created_by, updated_by)"
        " VALUES (%(tenant)s, {}, %(actor)s, %(actor)s) RETURNING id::text"
    ).format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
    )
    with conn.transaction():
        rule_id = conn.execute(statement, params).fetchone()[0]
    rule = get_rule(conn, tenant, rule_id)
    assert rule is not None
    return rule


def update_rule(
    conn: psycopg.Connection, tenant: str, rule_id: str, changes: dict[str, Any], *, actor: str
) -> dict[str, Any] | None:
    """Apply ``changes`` (RULE_API_COLUMNS) to a live rule of ``tenant``; the updated rule, or
    None if there is none. updated_at/updated_by move even when nothing else does."""
    params = {**_rule_values(changes), "id": rule_id, "tenant": tenant, "actor": actor}
    sets = [sql.SQL("updated_at = now()"), sql.SQL("updated_by = %(actor)s")]
    sets += [
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c))
        for c in RULE_API_COLUMNS
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
    return get_rule(conn, tenant, rule_id) if row else None


def delete_rule(conn: psycopg.Connection, tenant: str, rule_id: str, *, actor: str) -> bool:
    """Soft-delete a rule of ``tenant`` (its events stay); False if there is no such live rule."""
    with conn.transaction():
        return (
            soft_delete(
                conn, "dat_spd_alert_rule", "id = %s AND unidad_negocio_id = %s", [rule_id, tenant], actor
            )
            > 0
        )


def list_events(
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
    archive: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """One page of ``tenant``'s alert events at [start, end) (each bound optional), newest first,
    and how many match in all; with ``archive`` the archived events too. Events of deleted rules
    are kept (``rule_name`` still shows)."""
    params: dict[str, Any] = {"tenant": tenant, "limit": limit, "offset": offset}
    query = _API_EVENT_SELECT_ARCHIVE if archive else _API_EVENT_SELECT
    filters = (
        ("state", "e.state", state),
        ("room_id", "e.room_id", room_id),
        ("rule_id", "e.rule_id", rule_id),
        ("severity", "e.severity", severity),
    )
    for key, column, value in filters:
        if value is not None:
            query += f" AND {column} = %({key})s"
            params[key] = value
    if start is not None:
        query += " AND e.at >= %(start)s"
        params["start"] = start
    if end is not None:
        query += " AND e.at < %(end)s"
        params["end"] = end
    return page(conn, query, params, "e.at DESC, e.id DESC")


def get_event(
    conn: psycopg.Connection, tenant: str, event_id: str, archive: bool = False
) -> dict[str, Any] | None:
    """The alert event ``event_id`` of ``tenant`` (with ``archive``, also an archived one), or None."""
    query = _API_EVENT_SELECT_ARCHIVE if archive else _API_EVENT_SELECT
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query + " AND e.id = %(id)s", {"tenant": tenant, "id": event_id}).fetchone()


def acknowledge_event(
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
    return get_event(conn, tenant, event_id), row is not None
