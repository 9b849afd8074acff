"""The room, room-type and session operations of the REST API (``/api/v1``) and their routes.

``ROOM_ROUTES`` (with the OpenAPI document's own route) joins ``alerts.ALERT_ROUTES`` in
``api.ROUTES``, the one table that registers and documents every operation.

Reads need ``spidi:monitor`` or ``spidi:admin``; writes need ``spidi:admin``. Everything a caller
sees or changes belongs to the tenant of its token: PostgreSQL through row-level security
(``Api.db``), Redis through tenant-scoped keys and the room-id check of ``Api.room_known_live``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from .. import roles
from ..history.sql import room_types, rooms, sessions
from ..history.sql.common import ConflictError
from ..history.sql.room_types import UnknownRoomTypeError
from ..rooms import ROOM_CODE, RoomCatalog
from .params import FROM, OFFSET, TO, iso, page, page_limit
from .problems import Problem, field_error, invalid
from .routing import Call, Route, json_response
from .service import Api, audit
from .validation import Body, Choice, Integer, StringMap, Text, Uuid

# -- rendering ---------------------------------------------------------------------------------

ROSTER_KEYS = (
    "sessionId",
    "userId",
    "clientId",
    "device",
    "os",
    "appVersion",
    "ip",
    "latencyMs",
    "connectedAt",
    "lastHeartbeatAt",
)
BUCKET_STEPS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
# Default window of the stats endpoint per bucket, when ``from`` is not given.
BUCKET_WINDOWS = {"1m": timedelta(hours=1), "1h": timedelta(days=1), "1d": timedelta(days=30)}
MAX_BUCKETS = 10_080  # a week of minutes
SESSIONS_WINDOW = timedelta(days=1)


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


def roster_entry(raw: dict) -> dict:
    """A live session as in a ROOM_ROSTER message (docs/protocol.md), whatever else Redis holds."""
    out = {key: raw.get(key) for key in ROSTER_KEYS}
    for key in ("device", "os", "ip"):
        if out[key] == "":  # Redis stores a missing value as an empty string
            out[key] = None
    return out


def session_json(row: dict) -> dict:
    """A stored session (dat_spd_session row) as the API shows it."""
    return {
        "sessionId": str(row["session_id"]),
        "roomId": str(row["room_id"]) if row["room_id"] is not None else None,
        "roomCode": row["room_code"],
        "userId": row["user_id"],
        "clientId": row["client_id"],
        "device": row["device"],
        "os": row["os"],
        "appVersion": row["app_version"],
        "ip": row["ip"],
        "nodeId": row["node_id"],
        "startedAt": iso(row["started_at"]),
        "endedAt": iso(row["ended_at"]),
        "endReason": row["end_reason"],
        "heartbeatCount": row["heartbeat_count"],
        "latencyAvgMs": row["latency_avg"],
        "latencyMinMs": row["latency_min"],
        "latencyMaxMs": row["latency_max"],
        "lastHeartbeatAt": iso(row["last_heartbeat_at"]),
    }


def stats_point(row: dict) -> dict:
    """One bucket of spd_room_stats as the API shows it."""
    return {
        "ts": iso(row["bucket"]),
        "onlineAvg": round(row["online_avg"], 3) if row["online_avg"] is not None else 0.0,
        "onlineMax": row["online_max"],
        "joins": row["joins"],
        "leaves": row["leaves"],
        "timeouts": row["timeouts"],
        "disconnects": row["disconnects"],
        "latencyAvgMs": row["latency_avg"],
        "latencyP95Ms": row["latency_p95"],
    }


def _window(query: dict, default: timedelta) -> tuple[datetime, datetime]:
    """``from`` and ``to`` of a query, with defaults (``to`` now, ``from`` = ``to`` - default)."""
    end = query["to"] or datetime.now(UTC)
    start = query["from"] or end - default
    if start >= end:
        raise invalid(
            [field_error("query", "from", f"must be before to ({iso(start)} is not before {iso(end)})")]
        )
    return start, end


# Columns every write moves: not "changed fields" of an audit line.
_AUDIT_COLUMNS = ("createdAt", "createdBy", "updatedAt", "updatedBy")


def _not_found(what: str, ident: str) -> Problem:
    return Problem("not-found", f"no {what} {ident}")


def _unknown_type(exc: UnknownRoomTypeError) -> Problem:
    return invalid([field_error("body", "type", str(exc))])


# -- fields ------------------------------------------------------------------------------------

_CODE_PATTERN = ROOM_CODE.pattern.removeprefix("^").removesuffix("$").replace("{1,64}", "+")
_CODE_HINT = "1 to 64 of letters, digits and _ . : -"

ROOM_ID = Uuid("id", "room_id", "Room id (uuid5 of tenant and code; WELCOME's roomId)", required=True)
TYPE_ID = Uuid("id", "type_id", "Room type id", required=True)
USER_ID = Text("userId", "user_id", "User id (the token's sub claim)", required=True, max_length=256)


ROOM_CODE_FIELD = Text(
    "code",
    "code",
    "Room code, unique in the tenant; cannot change later",
    max_length=64,
    pattern=_CODE_PATTERN,
    pattern_hint=_CODE_HINT,
)
_ROOM_FIELDS = (
    ROOM_CODE_FIELD,
    Text("name", "name", "Display name", nullable=True, max_length=256),
    Text(
        "type",
        "room_type",
        "Room type code (see /api/v1/room-types); null for none",
        nullable=True,
        max_length=64,
        pattern=_CODE_PATTERN,
        pattern_hint=_CODE_HINT,
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
        "Time to live of the room's data, seconds",
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

_TYPE_FIELDS = (
    Text(
        "code",
        "code",
        "Room type code, unique",
        required=True,
        max_length=64,
        pattern=_CODE_PATTERN,
        pattern_hint=_CODE_HINT,
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

ROOM_LIST_QUERY = (
    Text("codePrefix", "code_prefix", "Codes starting with this (case-insensitive)", max_length=64),
    Text("codeContains", "code_contains", "Codes containing this (case-insensitive)", max_length=64),
    Choice("status", "status", "Only rooms of this status", values=("active", "disabled")),
    Text("type", "room_type", "Only rooms of this room type code", max_length=64),
    page_limit(50, 500),
    OFFSET,
)
STATS_QUERY = (
    FROM.but(description=FROM.description + "; default: to minus 1 h (1m), 24 h (1h) or 30 d (1d)"),
    TO,
    Choice("bucket", "bucket", "Bucket width (UTC-aligned)", values=tuple(BUCKET_STEPS), default="1m"),
)
SESSIONS_QUERY = (
    Text("userId", "user_id", "Only sessions of this user", max_length=256),
    Uuid("roomId", "room_id", "Only sessions in this room"),
    FROM.but(description=FROM.description + "; sessions that started then or later; default: to minus 24 h"),
    TO,
    page_limit(100, 1000),
    OFFSET,
)

# -- room types --------------------------------------------------------------------------------


async def list_room_types(api: Api, call: Call) -> web.Response:
    """GET /api/v1/room-types: a page of the room-type catalogue."""
    q = call.query
    rows, total = await api.db(call.claims.tenant, lambda c: room_types.list_page(c, q["limit"], q["offset"]))
    return json_response(page([room_type_json(r) for r in rows], total, q))


async def create_room_type(api: Api, call: Call) -> web.Response:
    """POST /api/v1/room-types: add a room type (409 on a duplicate code)."""
    b, claims = call.body, call.claims
    try:
        row = await api.db(
            claims.tenant,
            lambda c: room_types.create(
                c, b["code"], b["name"], b.get("default_capacity"), actor=claims.user_id
            ),
        )
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    audit("room_type_created", claims, room_type_id=row["id"], code=row["code"], fields=b)
    return json_response(room_type_json(row), 201, {"Location": f"/api/v1/room-types/{row['id']}"})


async def get_room_type(api: Api, call: Call) -> web.Response:
    """GET /api/v1/room-types/{id}."""
    type_id = call.path["type_id"]
    row = await api.db(call.claims.tenant, lambda c: room_types.get(c, type_id))
    if row is None:
        raise _not_found("room type", type_id)
    return json_response(room_type_json(row))


async def _update_room_type(api: Api, call: Call, changes: dict) -> web.Response:
    """Apply changes to a room type; rooms of the type may get a new capacity, so every node refreshes."""
    type_id, claims = call.path["type_id"], call.claims

    def work(conn):
        # Read before writing, in the same transaction, so the audit line says what changed.
        before = room_types.get(conn, type_id)
        if before is None:
            return None, None
        return before, room_types.update(conn, type_id, changes, actor=claims.user_id)

    try:
        before, row = await api.db(claims.tenant, work)
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    if row is None:
        raise _not_found("room type", type_id)
    old, new = room_type_json(before), room_type_json(row)
    diff = {k: [old[k], new[k]] for k in new if old[k] != new[k] and k not in _AUDIT_COLUMNS}
    audit("room_type_updated", claims, room_type_id=type_id, code=row["code"], changes=diff)
    # A new default capacity changes every room of the type, in any tenant.
    await api.rooms_changed("*", "*")
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
    """DELETE /api/v1/room-types/{id}: soft delete, refused while any room uses it."""
    type_id, claims = call.path["type_id"], call.claims
    try:
        deleted = await api.db(claims.tenant, lambda c: room_types.delete(c, type_id, actor=claims.user_id))
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    if not deleted:
        raise _not_found("room type", type_id)
    audit("room_type_deleted", claims, room_type_id=type_id)
    return web.Response(status=204)


# -- rooms -------------------------------------------------------------------------------------


async def list_rooms(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms: a page of the tenant's rooms, filtered."""
    q, tenant = call.query, call.claims.tenant
    rows, total = await api.db(
        tenant,
        lambda c: rooms.list_page(
            c,
            tenant,
            code_prefix=q["code_prefix"],
            code_contains=q["code_contains"],
            status=q["status"],
            room_type=q["room_type"],
            limit=q["limit"],
            offset=q["offset"],
        ),
    )
    catalog = api.host.catalog
    return json_response(page([room_json(r, catalog) for r in rows], total, q))


async def create_room(api: Api, call: Call) -> web.Response:
    """POST /api/v1/rooms: create a room and make every node know it."""
    b, claims = call.body, call.claims
    try:
        row = await api.db(
            claims.tenant,
            lambda c: rooms.create(
                c,
                claims.tenant,
                b["code"],
                name=b.get("name"),
                room_type=b.get("room_type"),
                capacity=b.get("capacity"),
                ttl_s=b.get("ttl_s"),
                status=b.get("status") or "active",
                attrs=b.get("attrs"),
                actor=claims.user_id,
            ),
        )
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    except UnknownRoomTypeError as exc:
        raise _unknown_type(exc) from None
    audit("room_created", claims, room_id=row["id"], room_code=row["code"], fields=b)
    await api.rooms_changed(claims.tenant, row["code"])
    return json_response(room_json(row, api.host.catalog), 201, {"Location": f"/api/v1/rooms/{row['id']}"})


async def get_room(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}."""
    room_id, tenant = call.path["room_id"], call.claims.tenant
    row = await api.db(tenant, lambda c: rooms.get(c, tenant, room_id))
    if row is None:
        raise _not_found("room", room_id)
    return json_response(room_json(row, api.host.catalog))


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
        raise _not_found("room", room_id)
    catalog = api.host.catalog
    old, new = room_json(before, catalog), room_json(after, catalog)
    diff = {k: [old[k], new[k]] for k in new if old[k] != new[k] and k not in _AUDIT_COLUMNS}
    audit("room_updated", claims, room_id=room_id, room_code=after["code"], changes=diff)
    await api.rooms_changed(claims.tenant, after["code"])
    return json_response(new)


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
    """DELETE /api/v1/rooms/{id}: soft delete (and its attributes)."""
    room_id, claims = call.path["room_id"], call.claims

    def work(conn):
        room = rooms.get(conn, claims.tenant, room_id)
        if room is None:
            return None
        rooms.delete(conn, claims.tenant, room_id, actor=claims.user_id)
        return room["code"]

    code = await api.db(claims.tenant, work)
    if code is None:
        raise _not_found("room", room_id)
    audit("room_deleted", claims, room_id=room_id, room_code=code)
    await api.rooms_changed(claims.tenant, code)
    return web.Response(status=204)


async def _room_known(api: Api, tenant: str, room_id: str) -> bool:
    """A room of ``tenant``: known live (catalog, configuration, Redis) or stored in PostgreSQL."""
    if await api.room_known_live(tenant, room_id):
        return True
    if api.host.dsn is None:
        return False
    return await api.db(tenant, lambda c: rooms.exists(c, tenant, room_id))


async def room_sessions(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/sessions: the live roster from Redis (every node's sessions)."""
    room_id, tenant = call.path["room_id"], call.claims.tenant
    if not await _room_known(api, tenant, room_id):
        raise _not_found("room", room_id)
    roster = await api.live(api.host.store.roster(room_id))
    items = sorted((roster_entry(e) for e in roster), key=lambda e: (e["connectedAt"] or 0, e["sessionId"]))
    return json_response({"items": items})


async def room_stats(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/stats: buckets of spd_room_stats between from and to."""
    room_id, tenant, q = call.path["room_id"], call.claims.tenant, call.query
    bucket = q["bucket"]
    start, end = _window(q, BUCKET_WINDOWS[bucket])
    buckets = (end - start) / BUCKET_STEPS[bucket]
    if buckets > MAX_BUCKETS:
        raise invalid(
            [
                field_error(
                    "query",
                    "bucket",
                    f"the range holds {int(buckets)} buckets of {bucket}; at most "
                    f"{MAX_BUCKETS}: shorten the range or use a larger bucket",
                )
            ]
        )

    def work(conn):
        rows = sessions.room_stats(conn, room_id, start, end, bucket)
        return rows, bool(rows) or rooms.exists(conn, tenant, room_id)

    rows, exists = await api.db(tenant, work)
    if not exists and not await api.room_known_live(tenant, room_id):
        raise _not_found("room", room_id)
    return json_response(
        {
            "roomId": room_id,
            "bucket": bucket,
            "from": iso(start),
            "to": iso(end),
            "points": [stats_point(r) for r in rows],
        }
    )


# -- sessions ----------------------------------------------------------------------------------


async def list_sessions(api: Api, call: Call) -> web.Response:
    """GET /api/v1/sessions: stored sessions that started in [from, to), newest first."""
    q = call.query
    start, end = _window(q, SESSIONS_WINDOW)
    rows, total = await api.db(
        call.claims.tenant,
        lambda c: sessions.list_page(
            c, start, end, room_id=q["room_id"], user_id=q["user_id"], limit=q["limit"], offset=q["offset"]
        ),
    )
    return json_response(page([session_json(r) for r in rows], total, q))


async def user_sessions(api: Api, call: Call) -> web.Response:
    """GET /api/v1/users/{userId}/sessions: the user's live sessions across rooms and nodes."""
    user_id = call.path["user_id"]
    # The index key carries the tenant: another tenant's user of the same id is another key.
    live = await api.live(api.host.store.user_sessions(call.claims.tenant, user_id))
    items = [{**roster_entry(e), "roomId": e.get("roomId"), "roomCode": e.get("roomCode")} for e in live]
    items.sort(key=lambda e: (e["connectedAt"] or 0, e["sessionId"]))
    return json_response({"items": items})


# -- the OpenAPI document ----------------------------------------------------------------------


async def openapi_document(api: Api, call: Call) -> web.Response:
    """GET /api/openapi.json: the document built from ``api.ROUTES`` at registration."""
    return web.Response(body=api.openapi, content_type="application/json")


# -- the route table ---------------------------------------------------------------------------

_ROOM_TYPES = "/api/v1/room-types"
_ROOMS = "/api/v1/rooms"

ROOM_ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/openapi.json", openapi_document, "getOpenApi", "This OpenAPI document", "meta",
          None, response="OpenApiDocument"),
    Route("GET", _ROOM_TYPES, list_room_types, "listRoomTypes", "List room types", "room-types", roles.OBSERVE,
          query=(page_limit(50, 500), OFFSET), response="RoomTypeList"),
    Route("POST", _ROOM_TYPES, create_room_type, "createRoomType", "Create a room type", "room-types", roles.ADMINISTER,
          body=ROOM_TYPE_CREATE, status=201, response="RoomType", problems=(409,),
          description="Room types are a catalogue shared by every tenant."),
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
          description="Refused (409) while a live room of any tenant uses the type."),
    Route("GET", _ROOMS, list_rooms, "listRooms", "List the tenant's rooms", "rooms", roles.OBSERVE,
          query=ROOM_LIST_QUERY, response="RoomList"),
    Route("POST", _ROOMS, create_room, "createRoom", "Create a room", "rooms", roles.ADMINISTER, body=ROOM_CREATE,
          status=201, response="Room", problems=(409,),
          description="Takes effect on every node within a second (capacity, status)."),
    Route("GET", _ROOMS + "/{id}", get_room, "getRoom", "Get a room", "rooms", roles.OBSERVE, path_params=(ROOM_ID,),
          response="Room", problems=(404,)),
    Route("PUT", _ROOMS + "/{id}", replace_room, "replaceRoom", "Replace a room's definition", "rooms", roles.ADMINISTER,
          path_params=(ROOM_ID,), body=ROOM_REPLACE, response="Room", problems=(404,),
          description="Lowering capacity below the sessions online refuses new HELLOs (ROOM_FULL) but "
                      "drops nobody; status disabled refuses HELLO with ROOM_DISABLED."),
    Route("PATCH", _ROOMS + "/{id}", patch_room, "updateRoom", "Change fields of a room", "rooms", roles.ADMINISTER,
          path_params=(ROOM_ID,), body=ROOM_PATCH, response="Room", problems=(404,),
          description="Lowering capacity below the sessions online refuses new HELLOs (ROOM_FULL) but "
                      "drops nobody; status disabled refuses HELLO with ROOM_DISABLED."),
    Route("DELETE", _ROOMS + "/{id}", delete_room, "deleteRoom", "Delete a room (soft)", "rooms", roles.ADMINISTER,
          path_params=(ROOM_ID,), status=204, problems=(404,)),
    Route("GET", _ROOMS + "/{id}/sessions", room_sessions, "listRoomLiveSessions",
          "Sessions in a room now (from Redis, every node)", "rooms", roles.OBSERVE, path_params=(ROOM_ID,),
          response="LiveSessions", problems=(404,)),
    Route("GET", _ROOMS + "/{id}/stats", room_stats, "getRoomStats", "A room's statistics over time",
          "rooms", roles.OBSERVE, path_params=(ROOM_ID,), query=STATS_QUERY, response="RoomStats", problems=(404,)),
    Route("GET", "/api/v1/sessions", list_sessions, "listSessions", "Session history", "sessions", roles.OBSERVE,
          query=SESSIONS_QUERY, response="SessionList",
          description="Sessions that started in [from, to), newest first."),
    Route("GET", "/api/v1/users/{userId}/sessions", user_sessions, "listUserLiveSessions",
          "A user's sessions now, across rooms and nodes", "sessions", roles.OBSERVE, path_params=(USER_ID,),
          response="UserLiveSessions"),
)  # fmt: skip
