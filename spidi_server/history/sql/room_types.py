"""The room-type catalogue of each tenant, and the one lookup of a type by its code.

Room types are tenant data (migration 0006): a type belongs to one tenant, its code is unique among
that tenant's live types, and a room or an alert rule can only name a type of its own tenant (a
composite foreign key). Room types are soft-deleted. The functions the REST API calls run inside
``tenancy.tenant_transaction``, so row-level security scopes them to the caller's tenant; the
explicit tenant conditions keep them scoped when a caller that sees every tenant (the server,
tests) uses them.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .common import ConflictError, page, soft_delete


class UnknownRoomTypeError(ValueError):
    """A room names a room type its tenant does not have (live)."""


_SELECT = """
SELECT id::text AS id, unidad_negocio_id AS tenant, code, name, default_capacity,
       created_at, created_by, updated_at, updated_by
FROM tba_spd_room_type WHERE deleted_at IS NULL AND unidad_negocio_id = %(tenant)s"""

# API field -> tba_spd_room_type column for partial updates.
_COLUMNS = {"code": "code", "name": "name", "default_capacity": "default_capacity"}


def id_for_code(conn: psycopg.Connection, tenant: str, code: str | None) -> str | None:
    """The id of ``tenant``'s live room type ``code`` (None for None); UnknownRoomTypeError if it
    has none (another tenant's type of that code is none of its business)."""
    if code is None:
        return None
    found = conn.execute(
        "SELECT id::text FROM tba_spd_room_type WHERE unidad_negocio_id = %s AND code = %s AND deleted_at IS NULL",
        [tenant, code],
    ).fetchone()
    if found is None:
        raise UnknownRoomTypeError(f"unknown room type {code!r}")
    return found[0]


def list_page(
    conn: psycopg.Connection, tenant: str, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """One page of ``tenant``'s live room types by code (byte order), and how many there are."""
    return page(conn, _SELECT, {"tenant": tenant, "limit": limit, "offset": offset}, 'code COLLATE "C"')


def get(conn: psycopg.Connection, tenant: str, type_id: str) -> dict[str, Any] | None:
    """``tenant``'s live room type ``type_id``, or None (also for another tenant's)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_SELECT + " AND id = %(id)s", {"tenant": tenant, "id": type_id}).fetchone()


def create(
    conn: psycopg.Connection,
    tenant: str,
    code: str,
    name: str,
    default_capacity: int | None = None,
    *,
    actor: str,
) -> dict[str, Any]:
    """Add a room type to ``tenant``'s catalogue; ConflictError if it has a live one of that code."""
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO tba_spd_room_type (unidad_negocio_id, code, name, default_capacity, created_by, updated_by)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (unidad_negocio_id, code) WHERE deleted_at IS NULL DO NOTHING RETURNING id::text""",
            [tenant, code, name, default_capacity, actor, actor],
        ).fetchone()
    if row is None:
        raise ConflictError(f"a room type with code {code!r} exists already")
    found = get(conn, tenant, row[0])
    assert found is not None
    return found


def update(
    conn: psycopg.Connection, tenant: str, type_id: str, changes: dict[str, Any], *, actor: str
) -> dict[str, Any] | None:
    """Apply ``changes`` (code, name, default_capacity) to a live room type of ``tenant``; None if
    it has none.

    ConflictError when the new code belongs to another live room type of the tenant.
    """
    unknown = set(changes) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    params: dict[str, Any] = {"id": type_id, "tenant": tenant, "actor": actor, **changes}
    sets = [sql.SQL("updated_at = now()"), sql.SQL("updated_by = %(actor)s")]
    sets += [
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(key))
        for key, column in _COLUMNS.items()
        if key in changes
    ]
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL(
                    "UPDATE tba_spd_room_type SET {} WHERE id = %(id)s AND unidad_negocio_id = %(tenant)s"
                    " AND deleted_at IS NULL RETURNING id"
                ).format(sql.SQL(", ").join(sets)),
                params,
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"a room type with code {changes.get('code')!r} exists already") from exc
    return get(conn, tenant, type_id) if row else None


def delete(conn: psycopg.Connection, tenant: str, type_id: str, *, actor: str) -> bool:
    """Soft-delete a room type of ``tenant``; False if it has no such live type.

    ConflictError while a live room uses it (only the type's own tenant's rooms can: the foreign
    key of migration 0006).
    """
    with conn.transaction():
        if get(conn, tenant, type_id) is None:
            return False
        in_use = conn.execute(
            "SELECT 1 FROM dat_spd_room WHERE room_type_id = %s AND unidad_negocio_id = %s"
            " AND deleted_at IS NULL LIMIT 1",
            [type_id, tenant],
        ).fetchone()
        if in_use is not None:
            raise ConflictError("the room type is still used by rooms; change or delete them first")
        return (
            soft_delete(
                conn, "tba_spd_room_type", "id = %s AND unidad_negocio_id = %s", [type_id, tenant], actor
            )
            > 0
        )
