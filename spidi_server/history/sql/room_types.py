"""The room-type catalogue (shared by every tenant) and the one lookup of a type by its code.

Room types are soft-deleted; a code is unique among the live ones. The functions the REST API
calls run inside ``tenancy.tenant_transaction`` like every other API statement.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .common import ConflictError, page, soft_delete


class UnknownRoomTypeError(ValueError):
    """A room names a room type the catalogue does not have (live)."""


_SELECT = """
SELECT id::text AS id, code, name, default_capacity, created_at, created_by, updated_at, updated_by
FROM tba_spd_room_type WHERE deleted_at IS NULL"""

# API field -> tba_spd_room_type column for partial updates.
_COLUMNS = {"code": "code", "name": "name", "default_capacity": "default_capacity"}


def id_for_code(conn: psycopg.Connection, code: str | None) -> str | None:
    """The id of the live room type ``code`` (None for None); UnknownRoomTypeError if there is none."""
    if code is None:
        return None
    found = conn.execute(
        "SELECT id::text FROM tba_spd_room_type WHERE code = %s AND deleted_at IS NULL", [code]
    ).fetchone()
    if found is None:
        raise UnknownRoomTypeError(f"unknown room type {code!r}")
    return found[0]


def list_page(conn: psycopg.Connection, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """One page of the live room types by code (byte order), and how many there are."""
    return page(conn, _SELECT, {"limit": limit, "offset": offset}, 'code COLLATE "C"')


def get(conn: psycopg.Connection, type_id: str) -> dict[str, Any] | None:
    """The live room type ``type_id``, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_SELECT + " AND id = %s", [type_id]).fetchone()


def create(
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
    found = get(conn, row[0])
    assert found is not None
    return found


def update(
    conn: psycopg.Connection, type_id: str, changes: dict[str, Any], *, actor: str
) -> dict[str, Any] | None:
    """Apply ``changes`` (code, name, default_capacity) to a live room type; None if there is none.

    ConflictError when the new code belongs to another live room type.
    """
    unknown = set(changes) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    params: dict[str, Any] = {"id": type_id, "actor": actor, **changes}
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
                    "UPDATE tba_spd_room_type SET {} WHERE id = %(id)s AND deleted_at IS NULL RETURNING id"
                ).format(sql.SQL(", ").join(sets)),
                params,
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"a room type with code {changes.get('code')!r} exists already") from exc
    return get(conn, type_id) if row else None


def delete(conn: psycopg.Connection, type_id: str, *, actor: str) -> bool:
    """Soft-delete a room type; False if there is no such live type.

    ConflictError while a live room of any tenant still uses it (``spd_room_type_in_use`` looks
    past row-level security and answers only yes or no).
    """
    with conn.transaction():
        if conn.execute("SELECT spd_room_type_in_use(%s)", [type_id]).fetchone()[0]:
            raise ConflictError("the room type is still used by rooms; change or delete them first")
        return soft_delete(conn, "tba_spd_room_type", "id = %s", [type_id], actor) > 0
