"""The room catalogue: one set of functions for the REST API, the node's room cache and the tests.

A room's id is ``rooms.room_id_for(tenant, code)``. Rows come back as dicts of snake_case columns
(``id``, ``tenant``, ``code``, ``name``, ``room_type`` (its code), ``capacity`` (the effective one:
``EFFECTIVE_CAPACITY``), ``ttl_s``, ``status``, ``attrs`` and the audit columns); the API maps them
to its camelCase JSON. Rooms and their attributes are soft-deleted.

The API runs these inside ``tenancy.tenant_transaction``, so row-level security scopes every read
and write to the caller's tenant (the explicit tenant conditions only help the planner);
``list_all`` is the server's own read of every tenant's rooms.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ...rooms import room_id_for
from . import room_types
from .common import ConflictError, soft_delete

# A room's capacity is its own, else its type's default (``rt``: the type joined by TYPE_JOIN;
# None when neither has one, and the server's default_room_capacity applies). The type is always
# the room's own tenant's: the foreign key of migration 0006 says so, and the join says it again
# so that no capacity can ever come from another tenant's catalogue.
EFFECTIVE_CAPACITY = "coalesce(r.capacity, rt.default_capacity)"
TYPE_JOIN = (
    "LEFT JOIN tba_spd_room_type AS rt ON rt.id = r.room_type_id"
    " AND rt.unidad_negocio_id = r.unidad_negocio_id AND rt.deleted_at IS NULL"
)

_SELECT = f"""
SELECT r.id::text AS id, r.unidad_negocio_id AS tenant, r.code, r.name, rt.code AS room_type,
       {EFFECTIVE_CAPACITY} AS capacity, r.ttl_s, r.status,
       coalesce((SELECT jsonb_object_agg(a.attr_key, a.attr_value) FROM dat_spd_room_attr AS a
                 WHERE a.room_id = r.id AND a.deleted_at IS NULL), '{{}}'::jsonb) AS attrs,
       r.created_at, r.created_by, r.updated_at, r.updated_by
FROM dat_spd_room AS r
{TYPE_JOIN}
WHERE r.deleted_at IS NULL"""
_OF_TENANT = _SELECT + " AND r.unidad_negocio_id = %(tenant)s"

# API field -> dat_spd_room column for partial updates (room_type is resolved to room_type_id).
_COLUMNS = {"name": "name", "capacity": "capacity", "ttl_s": "ttl_s", "status": "status"}


def list_of(conn: psycopg.Connection, tenant: str) -> list[dict[str, Any]]:
    """Every live room of ``tenant``, by code (byte order). The API merges them with the rooms that
    live only in Redis and filters and pages the whole (api/rooms.py)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_OF_TENANT + ' ORDER BY r.code COLLATE "C"', {"tenant": tenant}).fetchall()


def list_all(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every live room of every tenant, by tenant and code (the server's room cache; the
    connecting user sees all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_SELECT + " ORDER BY r.unidad_negocio_id, r.code").fetchall()


def get(conn: psycopg.Connection, tenant: str, room_id: str) -> dict[str, Any] | None:
    """The live room ``room_id`` of ``tenant`` (with audit columns), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_OF_TENANT + " AND r.id = %(id)s", {"tenant": tenant, "id": room_id}).fetchone()


def exists(conn: psycopg.Connection, tenant: str, room_id: str) -> bool:
    """Whether ``tenant`` has a live stored room ``room_id``."""
    return (
        conn.execute(
            "SELECT 1 FROM dat_spd_room WHERE id = %s AND unidad_negocio_id = %s AND deleted_at IS NULL",
            [room_id, tenant],
        ).fetchone()
        is not None
    )


def _replace_attrs(
    conn: psycopg.Connection, room_id: str, tenant: str, attrs: dict[str, str | None], actor: str
) -> None:
    """Make ``attrs`` the room's whole attribute set: others are soft-deleted, unchanged ones untouched."""
    soft_delete(
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


def create(
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
    UnknownRoomTypeError for a ``room_type`` code the tenant has no live type of.
    """
    room_id = room_id_for(tenant, code)
    params = {
        "id": room_id,
        "tenant": tenant,
        "code": code,
        "name": name,
        "capacity": capacity,
        "ttl_s": ttl_s,
        "status": status,
        "actor": actor,
    }
    with conn.transaction():
        params["type_id"] = room_types.id_for_code(conn, tenant, room_type)
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
            params,
        ).fetchone()
        if row is None:
            raise ConflictError(f"a room with code {code!r} exists already")
        if attrs:
            _replace_attrs(conn, room_id, tenant, attrs, actor)
    room = get(conn, tenant, room_id)
    assert room is not None
    return room


def update(
    conn: psycopg.Connection, tenant: str, room_id: str, changes: dict[str, Any], *, actor: str
) -> dict[str, Any] | None:
    """Apply ``changes`` to a live room of ``tenant``; the updated room, or None if there is none.

    Keys of ``changes``: name, room_type (a code of the tenant's catalogue or None;
    UnknownRoomTypeError if it has none), capacity, ttl_s, status, attrs (the room's whole new
    attribute set). Keys left out stay as they are; updated_at/updated_by move even when only
    attributes change.
    """
    unknown = set(changes) - set(_COLUMNS) - {"room_type", "attrs"}
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    params: dict[str, Any] = {"id": room_id, "tenant": tenant, "actor": actor}
    sets = [sql.SQL("updated_at = now()"), sql.SQL("updated_by = %(actor)s")]
    with conn.transaction():
        if "room_type" in changes:
            params["room_type_id"] = room_types.id_for_code(conn, tenant, changes["room_type"])
            sets.append(sql.SQL("room_type_id = %(room_type_id)s"))
        for key, column in _COLUMNS.items():
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
            _replace_attrs(conn, room_id, tenant, changes["attrs"], actor)
    return get(conn, tenant, room_id)


def delete(conn: psycopg.Connection, tenant: str, room_id: str, *, actor: str) -> bool:
    """Soft-delete a room of ``tenant`` and its attributes; False if there was no such live room."""
    with conn.transaction():
        deleted = soft_delete(
            conn, "dat_spd_room", "id = %s AND unidad_negocio_id = %s", [room_id, tenant], actor
        )
        soft_delete(conn, "dat_spd_room_attr", "room_id = %s", [room_id], actor)
        return deleted > 0
