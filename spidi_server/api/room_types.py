"""The room-type catalogue of the REST API: ``/api/v1/room-types[/{id}]``, its fields, rendering,
handlers and routes (``ROOM_TYPE_ROUTES``).

Room types belong to a tenant, like its rooms: each tenant has its own catalogue, sees and changes
only its own types (another tenant's type id is a 404, like an unknown one) and its rooms can only
be of its own types. A type's default capacity applies to the tenant's rooms of the type that set
none, so changing one makes every node refresh its rooms. Reads need an observer's role, writes an
administrator's.
"""

from __future__ import annotations

from aiohttp import web

from .. import roles
from ..history.sql import room_types
from ..history.sql.common import ConflictError
from .params import CODE_HINT, CODE_PATTERN, OFFSET, iso, page, page_limit
from .problems import Problem, not_found
from .routing import Call, Route, json_response
from .service import Api, audit, audit_diff
from .validation import Body, Integer, Text, Uuid

TYPE_ID = Uuid("id", "type_id", "Room type id", required=True)

_TYPE_FIELDS = (
    Text(
        "code",
        "code",
        "Room type code, unique within the tenant",
        required=True,
        max_length=64,
        pattern=CODE_PATTERN,
        pattern_hint=CODE_HINT,
    ),
    Text("name", "name", "Display name", required=True, max_length=256),
    Integer(
        "defaultCapacity",
        "default_capacity",
        "Capacity of rooms of this type that set none",
        nullable=True,
        minimum=1,
        maximum=10_000_000,
        rule="a positive integer (at most 10000000)",
    ),
)
ROOM_TYPE_CREATE = Body("RoomTypeCreate", "A new room type", _TYPE_FIELDS)
ROOM_TYPE_REPLACE = Body("RoomTypeReplace", "A room type's whole definition", _TYPE_FIELDS)
ROOM_TYPE_PATCH = Body("RoomTypePatch", "The fields of a room type to change", _TYPE_FIELDS, partial=True)


def room_type_json(row: dict) -> dict:
    """A room type as the API shows it."""
    return {
        "id": row["id"],
        "code": row["code"],
        "name": row["name"],
        "defaultCapacity": row["default_capacity"],
        "createdAt": iso(row["created_at"]),
        "createdBy": row["created_by"],
        "updatedAt": iso(row["updated_at"]),
        "updatedBy": row["updated_by"],
    }


async def list_room_types(api: Api, call: Call) -> web.Response:
    """GET /api/v1/room-types: a page of the tenant's room-type catalogue."""
    q, tenant = call.query, call.claims.tenant
    rows, total = await api.db(tenant, lambda c: room_types.list_page(c, tenant, q["limit"], q["offset"]))
    return json_response(page([room_type_json(r) for r in rows], total, q))


async def create_room_type(api: Api, call: Call) -> web.Response:
    """POST /api/v1/room-types: add a room type to the tenant's catalogue (409 on a duplicate code)."""
    b, claims = call.body, call.claims
    try:
        row = await api.db(
            claims.tenant,
            lambda c: room_types.create(
                c, claims.tenant, b["code"], b["name"], b.get("default_capacity"), actor=claims.user_id
            ),
        )
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    audit("room_type_created", claims, room_type_id=row["id"], code=row["code"], fields=b)
    return json_response(room_type_json(row), 201, {"Location": f"/api/v1/room-types/{row['id']}"})


async def get_room_type(api: Api, call: Call) -> web.Response:
    """GET /api/v1/room-types/{id}."""
    type_id, tenant = call.path["type_id"], call.claims.tenant
    row = await api.db(tenant, lambda c: room_types.get(c, tenant, type_id))
    if row is None:
        raise not_found("room type", type_id)
    return json_response(room_type_json(row))


async def _update_room_type(api: Api, call: Call, changes: dict) -> web.Response:
    """Apply changes to a room type of the tenant; its rooms of the type may get a new capacity, so
    every node refreshes."""
    type_id, claims = call.path["type_id"], call.claims

    def work(conn):
        # Read before writing, in the same transaction, so the audit line says what changed.
        before = room_types.get(conn, claims.tenant, type_id)
        if before is None:
            return None, None
        return before, room_types.update(conn, claims.tenant, type_id, changes, actor=claims.user_id)

    try:
        before, row = await api.db(claims.tenant, work)
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    if row is None:
        raise not_found("room type", type_id)
    diff = audit_diff(room_type_json(before), room_type_json(row))
    audit("room_type_updated", claims, room_type_id=type_id, code=row["code"], changes=diff)
    # A new default capacity changes every room of the type: all of them are this tenant's.
    await api.rooms_changed(claims.tenant, "*")
    return json_response(room_type_json(row))


async def replace_room_type(api: Api, call: Call) -> web.Response:
    """PUT /api/v1/room-types/{id}: the whole definition (defaultCapacity left out: none)."""
    b = call.body
    return await _update_room_type(
        api, call, {"code": b["code"], "name": b["name"], "default_capacity": b.get("default_capacity")}
    )


async def patch_room_type(api: Api, call: Call) -> web.Response:
    """PATCH /api/v1/room-types/{id}: only the fields given."""
    return await _update_room_type(api, call, dict(call.body))


async def delete_room_type(api: Api, call: Call) -> web.Response:
    """DELETE /api/v1/room-types/{id}: soft delete, refused while a room of the tenant uses it."""
    type_id, claims = call.path["type_id"], call.claims
    try:
        deleted = await api.db(
            claims.tenant, lambda c: room_types.delete(c, claims.tenant, type_id, actor=claims.user_id)
        )
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    if not deleted:
        raise not_found("room type", type_id)
    audit("room_type_deleted", claims, room_type_id=type_id)
    return web.Response(status=204)


_ROOM_TYPES = "/api/v1/room-types"

ROOM_TYPE_ROUTES: tuple[Route, ...] = (
    Route("GET", _ROOM_TYPES, list_room_types, "listRoomTypes", "List room types", "room-types", roles.OBSERVE,
          query=(page_limit(50, 500), OFFSET), response="RoomTypeList"),
    Route("POST", _ROOM_TYPES, create_room_type, "createRoomType", "Create a room type", "room-types", roles.ADMINISTER,
          body=ROOM_TYPE_CREATE, status=201, response="RoomType", problems=(409,),
          description="Each tenant has its own room-type catalogue."),
    Route("GET", _ROOM_TYPES + "/{id}", get_room_type, "getRoomType", "Get a room type", "room-types", roles.OBSERVE,
          path_params=(TYPE_ID,), response="RoomType", problems=(404,)),
    Route("PUT", _ROOM_TYPES + "/{id}", replace_room_type, "replaceRoomType", "Replace a room type",
          "room-types", roles.ADMINISTER, path_params=(TYPE_ID,), body=ROOM_TYPE_REPLACE, response="RoomType",
          problems=(404, 409)),
    Route("PATCH", _ROOM_TYPES + "/{id}", patch_room_type, "updateRoomType", "Change fields of a room type",
          "room-types", roles.ADMINISTER, path_params=(TYPE_ID,), body=ROOM_TYPE_PATCH, response="RoomType",
          problems=(404, 409)),
    Route("DELETE", _ROOM_TYPES + "/{id}", delete_room_type, "deleteRoomType", "Delete a room type (soft)",
          "room-types", roles.ADMINISTER, path_params=(TYPE_ID,), status=204, problems=(404, 409),
          description="Refused (409) while a live room uses the type."),
)  # fmt: skip
