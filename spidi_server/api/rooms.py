"""The tenant's rooms in the REST API: ``/api/v1/rooms[/{id}]``, their fields, rendering, handlers
and routes (``ROOM_ROUTES``).

Reads need an observer's role, writes an administrator's. A caller sees and changes only the rooms
of its token's tenant (PostgreSQL row-level security, ``Api.db``); every write tells every node
(``Api.rooms_changed``), so a new capacity or status takes effect within a second. A room's live
sessions and statistics are in ``sessions``.

The list is every room of the tenant as ``rooms.room_list`` gives it (what /topic/rooms and the
dashboard show): the stored rooms, and the configured and auto-created ones (``stored: false``),
each with its live figures. ``GET`` of one room answers its item of that list, stored or not;
``PUT``/``PATCH`` of a room that is not stored stores its definition (same id and code, the fields
given); ``DELETE`` also takes an auto-created room out of the list (a HELLO creates it again).
"""

from __future__ import annotations

import logging

from aiohttp import web
from redis.exceptions import RedisError

from .. import logs, roles
from ..auth import Claims
from ..history.sql import rooms
from ..history.sql.common import ConflictError
from ..history.sql.room_types import UnknownRoomTypeError
from ..room_index import unindex
from ..rooms import RoomCatalog, RoomDef, room_list
from ..stores import keys
from .params import CODE_HINT, CODE_PATTERN, OFFSET, iso, page, page_limit
from .problems import Problem, field_error, invalid, not_found
from .routing import Call, Route, json_response
from .service import Api, audit, audit_diff
from .validation import Body, Choice, Integer, StringMap, Text, Uuid

log = logging.getLogger("spidi.api")

ROOMS_PATH = "/api/v1/rooms"
ROOM_ID = Uuid("id", "room_id", "Room id (uuid5 of tenant and code; WELCOME's roomId)", required=True)

ROOM_CODE_FIELD = Text(
    "code",
    "code",
    "Room code, unique in the tenant; cannot change later",
    max_length=64,
    pattern=CODE_PATTERN,
    pattern_hint=CODE_HINT,
)
_ROOM_FIELDS = (
    ROOM_CODE_FIELD,
    Text("name", "name", "Display name", nullable=True, max_length=256),
    Text(
        "type",
        "room_type",
        "Code of one of the tenant's room types (see /api/v1/room-types); null for none",
        nullable=True,
        max_length=64,
        pattern=CODE_PATTERN,
        pattern_hint=CODE_HINT,
    ),
    Integer(
        "capacity",
        "capacity",
        "Most sessions at once; null: the type's default, else the server's",
        nullable=True,
        minimum=1,
        maximum=10_000_000,
        rule="a positive integer (at most 10000000)",
    ),
    Integer(
        "ttlSeconds",
        "ttl_s",
        "Seconds the room's live state (peak, figures) is kept once nobody is in it; null: the "
        "server's room_empty_ttl_s",
        nullable=True,
        minimum=1,
        maximum=2_147_483_647,
        rule="a positive integer",
    ),
    Choice(
        "status", "status", "disabled: HELLO is refused with ROOM_DISABLED", values=("active", "disabled")
    ),
    StringMap("attributes", "attrs", "Free-form attributes: string keys to string or null values"),
)
ROOM_CREATE = Body("RoomCreate", "A new room", (_ROOM_FIELDS[0].but(required=True), *_ROOM_FIELDS[1:]))
_SAME_CODE = ROOM_CODE_FIELD.but(description="If given, must equal the room's code (codes cannot change)")
ROOM_REPLACE = Body(
    "RoomReplace",
    "A room's whole definition; fields left out take their defaults",
    (_SAME_CODE, *_ROOM_FIELDS[1:]),
)
ROOM_PATCH = Body(
    "RoomPatch",
    "The fields to change; attributes, when given, replace the whole set",
    (_SAME_CODE, *_ROOM_FIELDS[1:]),
    partial=True,
)

ROOM_LIST_QUERY = (
    Text("codePrefix", "code_prefix", "Codes starting with this (case-insensitive)", max_length=64),
    Text("codeContains", "code_contains", "Codes containing this (case-insensitive)", max_length=64),
    Choice("status", "status", "Only rooms of this status", values=("active", "disabled")),
    Text("type", "room_type", "Only rooms of this room type code", max_length=64),
    page_limit(50, 500),
    OFFSET,
)


def room_json(row: dict, catalog: RoomCatalog) -> dict:
    """A room as the API shows it. ``capacity`` is the one in force (``RoomCatalog.effective_capacity``:
    the room's, else its type's default, else the server's ``default_room_capacity``), what HELLO is
    checked against."""
    return {
        "id": row["id"],
        "code": row["code"],
        "name": row["name"],
        "type": row["room_type"],
        "capacity": catalog.effective_capacity(row["capacity"]),
        "ttlSeconds": row["ttl_s"],
        "status": row["status"],
        "attributes": row["attrs"] or {},
        "createdAt": iso(row["created_at"]),
        "createdBy": row["created_by"],
        "updatedAt": iso(row["updated_at"]),
        "updatedBy": row["updated_by"],
    }


def _unknown_type(exc: UnknownRoomTypeError) -> Problem:
    return invalid([field_error("body", "type", str(exc))])


LIVE_FIGURES = ("online", "users", "peak", "avgLatencyMs")


def unstored_room_json(definition: RoomDef) -> dict:
    """A room that is not stored (configured, or auto-created by a HELLO) as the list shows it."""
    return {
        "id": definition.room_id,
        "code": definition.code,
        "name": None,
        "type": None,
        "capacity": definition.capacity,
        "ttlSeconds": None,
        "status": "active",
        "attributes": {},
        "createdAt": None,
        "createdBy": None,
        "updatedAt": None,
        "updatedBy": None,
    }


def _listed(query: dict, room: dict) -> bool:
    """Whether a room passes the list's filters (codes compared case-insensitively, literally)."""
    code = room["code"].lower()
    prefix, contains = query["code_prefix"], query["code_contains"]
    return (
        (not prefix or code.startswith(prefix.lower()))
        and (not contains or contains.lower() in code)
        and (not query["status"] or room["status"] == query["status"])
        and (not query["room_type"] or room["type"] == query["room_type"])
    )


def _list_item(m: dict, row: dict | None, known: dict[str, RoomDef], catalog: RoomCatalog) -> dict:
    """A room as the list shows it, from its live figures ``m`` (``room_list``) and its stored
    ``row`` (None: not stored; then its definition in ``known``, else the auto-created room Redis
    knows)."""
    if row is not None:
        item = room_json(row, catalog)
    else:
        definition = known.get(m["roomId"])
        if definition is None:  # auto-created: Redis knows its code and capacity
            definition = RoomDef(m["roomId"], m["tenant"], m["roomCode"], m["capacity"])
        item = unstored_room_json(definition)
    item["stored"] = row is not None
    for name in LIVE_FIGURES:
        item[name] = m.get(name)
    return item


async def _unstored_code(api: Api, tenant: str, room_id: str) -> str | None:
    """The code of ``room_id`` if it is a room of ``tenant`` that is not stored: configured, or
    auto-created and in the tenant's Redis index (ids are uuid5(tenant, code), so an id found
    there is the tenant's); None if it is neither."""
    definition = api.host.catalog.configured(tenant).get(room_id)
    if definition is not None:
        return definition.code
    store = api.host.store
    await store.flush(2.0)  # a join made just before is in the index too
    code = await api.live(store.redis.hget(keys.tenant_rooms(tenant), room_id))
    return code.decode() if isinstance(code, bytes) else code


async def list_rooms(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms: a page of the tenant's rooms (stored or not), filtered, with live figures.

    The live figures are null while Redis cannot be reached (the stored rooms are listed then);
    a node without PostgreSQL lists the configured and auto-created rooms."""
    q, tenant = call.query, call.claims.tenant
    rows = await api.db(tenant, lambda c: rooms.list_of(c, tenant)) if api.host.dsn else []
    catalog = api.host.catalog
    stored = {r["id"]: r for r in rows}
    known = catalog.known(tenant, [catalog.stored_room(r) for r in rows])
    try:
        live = await room_list(api.host.store, tenant, known)
    except (RedisError, OSError) as exc:
        logs.event(log, "room_list_without_live_state", logging.WARNING, tenant=tenant, error=str(exc))
        live = [{"roomId": room_id} for room_id in known]
    items = [item for m in live if _listed(q, item := _list_item(m, stored.get(m["roomId"]), known, catalog))]
    items.sort(key=lambda item: item["code"])
    offset = q["offset"]
    return json_response(page(items[offset : offset + q["limit"]], len(items), q))


async def _store_room(api: Api, claims: Claims, code: str, fields: dict) -> dict:
    """Store room ``code`` of the caller's tenant with ``fields`` (the body's, by column), log who
    did, make every node know it; its row. 409 if a live room has that code (stored meanwhile)."""
    try:
        row = await api.db(
            claims.tenant,
            lambda c: rooms.create(
                c,
                claims.tenant,
                code,
                name=fields.get("name"),
                room_type=fields.get("room_type"),
                capacity=fields.get("capacity"),
                ttl_s=fields.get("ttl_s"),
                status=fields.get("status") or "active",
                attrs=fields.get("attrs"),
                actor=claims.user_id,
            ),
        )
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    except UnknownRoomTypeError as exc:
        raise _unknown_type(exc) from None
    audit("room_created", claims, room_id=row["id"], room_code=row["code"], fields=fields)
    await api.rooms_changed(claims.tenant, row["code"])
    return row


async def create_room(api: Api, call: Call) -> web.Response:
    """POST /api/v1/rooms: create a room and make every node know it."""
    row = await _store_room(api, call.claims, call.body["code"], call.body)
    return json_response(room_json(row, api.host.catalog), 201, {"Location": f"/api/v1/rooms/{row['id']}"})


async def get_room(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}: the room as the list shows it (stored or not, its live figures)."""
    room_id, tenant = call.path["room_id"], call.claims.tenant
    row = await api.db(tenant, lambda c: rooms.get(c, tenant, room_id)) if api.host.dsn else None
    catalog = api.host.catalog
    if row is not None:
        known = {room_id: catalog.stored_room(row)}
    else:
        configured = catalog.configured(tenant).get(room_id)
        known = {room_id: configured} if configured is not None else {}
    code = None if known else await _unstored_code(api, tenant, room_id)
    if not known and code is None:
        raise not_found("room", room_id)
    metrics = api.host.store.room_metrics([room_id])
    if known:
        try:
            [m] = await metrics
        except (RedisError, OSError):  # a stored or configured room is shown without its figures
            m = {"roomId": room_id}
    else:  # all that is known of an auto-created room is in Redis
        [m] = await api.live(metrics)
        if not (m["roomCode"] or m["online"]):
            raise not_found("room", room_id)  # its live state expired: gone, as from the list
        m["roomCode"] = m["roomCode"] or code
    m["tenant"] = tenant
    return json_response(_list_item(m, row, known, catalog))


async def _update_room(api: Api, call: Call, changes: dict) -> web.Response:
    """Apply changes to a room in one transaction, log who changed what, tell every node."""
    room_id, claims = call.path["room_id"], call.claims
    code = changes.pop("code", None)

    def work(conn):
        before = rooms.get(conn, claims.tenant, room_id)
        if before is None:
            return None, None
        if code is not None and code != before["code"]:
            raise invalid(
                [field_error("body", "code", f"cannot change (is {before['code']!r}); create a new room")]
            )
        return before, rooms.update(conn, claims.tenant, room_id, changes, actor=claims.user_id)

    try:
        before, after = await api.db(claims.tenant, work)
    except UnknownRoomTypeError as exc:
        raise _unknown_type(exc) from None
    if after is None:
        return await _store_unstored_room(api, call, code, changes)
    catalog = api.host.catalog
    old, new = room_json(before, catalog), room_json(after, catalog)
    audit("room_updated", claims, room_id=room_id, room_code=after["code"], changes=audit_diff(old, new))
    await api.rooms_changed(claims.tenant, after["code"])
    return json_response(new)


async def _store_unstored_room(api: Api, call: Call, code: str | None, fields: dict) -> web.Response:
    """PUT/PATCH of a room that is not stored (configured, or auto-created and live): store its
    definition under its id and code with ``fields``, the rest at their defaults."""
    room_id, claims = call.path["room_id"], call.claims
    known_code = await _unstored_code(api, claims.tenant, room_id)
    if known_code is None:
        raise not_found("room", room_id)
    if code is not None and code != known_code:
        raise invalid([field_error("body", "code", f"cannot change (is {known_code!r}); create a new room")])
    row = await _store_room(api, claims, known_code, fields)
    return json_response(room_json(row, api.host.catalog))


async def replace_room(api: Api, call: Call) -> web.Response:
    """PUT /api/v1/rooms/{id}: the whole definition; fields left out take their defaults."""
    b = call.body
    changes = {
        "name": b.get("name"),
        "room_type": b.get("room_type"),
        "capacity": b.get("capacity"),
        "ttl_s": b.get("ttl_s"),
        "status": b.get("status") or "active",
        "attrs": b.get("attrs") or {},
    }
    if "code" in b:
        changes["code"] = b["code"]
    return await _update_room(api, call, changes)


async def patch_room(api: Api, call: Call) -> web.Response:
    """PATCH /api/v1/rooms/{id}: only the fields given."""
    return await _update_room(api, call, dict(call.body))


async def delete_room(api: Api, call: Call) -> web.Response:
    """DELETE /api/v1/rooms/{id}: soft delete (and its attributes); out of the list at once.

    Sessions still in the room stay until they end; new HELLOs are refused (unless rooms are
    auto-created: the room then comes back as an auto-created one)."""
    room_id, claims = call.path["room_id"], call.claims

    def work(conn):
        room = rooms.get(conn, claims.tenant, room_id)
        if room is None:
            return None
        rooms.delete(conn, claims.tenant, room_id, actor=claims.user_id)
        return room["code"]

    code = await api.db(claims.tenant, work)
    store = api.host.store
    if code is None:
        # Not stored: an auto-created room the list shows (Redis knows it) leaves the list too.
        code = (await api.live(store.tenant_rooms(claims.tenant))).get(room_id)
        if code is None:
            raise not_found("room", room_id)
        await api.live(unindex(store, claims.tenant, room_id))
    else:
        # Out of the tenant's index at once, on every node's list (its keys too if nobody is in
        # it). The deletion is committed: Redis away only leaves the index as it was.
        try:
            await unindex(store, claims.tenant, room_id)
        except (RedisError, OSError) as exc:
            logs.event(log, "room_not_unindexed", logging.WARNING, room_id=room_id, error=str(exc))
    audit("room_deleted", claims, room_id=room_id, room_code=code)
    await api.rooms_changed(claims.tenant, code)
    return web.Response(status=204)


_CHANGE_NOTE = (
    "Lowering capacity below the sessions online refuses new HELLOs (ROOM_FULL) but "
    "drops nobody; status disabled refuses HELLO with ROOM_DISABLED. A room that is not stored "
    "(configured, or auto-created by a HELLO) gets a stored definition with these fields."
)

ROOM_ROUTES: tuple[Route, ...] = (
    Route("GET", ROOMS_PATH, list_rooms, "listRooms", "List the tenant's rooms", "rooms", roles.OBSERVE,
          query=ROOM_LIST_QUERY, response="RoomList"),
    Route("POST", ROOMS_PATH, create_room, "createRoom", "Create a room", "rooms", roles.ADMINISTER, body=ROOM_CREATE,
          status=201, response="Room", problems=(409,),
          description="Takes effect on every node within a second (capacity, status)."),
    Route("GET", ROOMS_PATH + "/{id}", get_room, "getRoom", "Get a room", "rooms", roles.OBSERVE, path_params=(ROOM_ID,),
          response="RoomListItem", problems=(404,),
          description="As the list shows it: stored, configured or auto-created, with its live figures."),
    Route("PUT", ROOMS_PATH + "/{id}", replace_room, "replaceRoom", "Replace a room's definition", "rooms", roles.ADMINISTER,
          path_params=(ROOM_ID,), body=ROOM_REPLACE, response="Room", problems=(404, 409),
          description=_CHANGE_NOTE),
    Route("PATCH", ROOMS_PATH + "/{id}", patch_room, "updateRoom", "Change fields of a room", "rooms", roles.ADMINISTER,
          path_params=(ROOM_ID,), body=ROOM_PATCH, response="Room", problems=(404, 409),
          description=_CHANGE_NOTE),
    Route("DELETE", ROOMS_PATH + "/{id}", delete_room, "deleteRoom", "Delete a room (soft)", "rooms", roles.ADMINISTER,
          path_params=(ROOM_ID,), status=204, problems=(404,)),
)  # fmt: skip
