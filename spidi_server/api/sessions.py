"""Sessions in the REST API: who is in a room now, a room's statistics over time, stored session
history, and a user's sessions now; their fields, rendering, handlers and routes
(``SESSION_ROUTES``).

    /api/v1/rooms/{id}/sessions         the live roster from Redis (every node's sessions)
    /api/v1/rooms/{id}/stats            buckets of ``spd_room_stats`` (PostgreSQL)
    /api/v1/sessions                    stored sessions (``dat_spd_session``), newest first
    /api/v1/users/{userId}/sessions     a user's live sessions across rooms and nodes (Redis)

The roster and statistics need an observer's role (``roles.OBSERVE``); session history and a
user's sessions across rooms need ``roles.VIEW_SESSIONS`` (admins). IP addresses are left out of
every answer for a caller without ``roles.VIEW_IP``. Live reads stay in the token's tenant through tenant-scoped Redis
keys and the room-id check of ``Api.room_known_live``; stored ones through row-level security.
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from .. import roles
from ..history.sql import rooms, sessions
from ..presence.liveness import graded
from ..presence.model import now_ms
from .params import ARCHIVE, FROM, OFFSET, TO, iso, page, page_limit, window
from .problems import field_error, invalid, not_found
from .rooms import ROOM_ID, ROOMS_PATH
from .routing import Call, Route, json_response
from .service import Api
from .validation import Choice, Text, Uuid

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
    "liveness",
)
BUCKET_STEPS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
# Default window of the stats endpoint per bucket, when ``from`` is not given.
BUCKET_WINDOWS = {"1m": timedelta(hours=1), "1h": timedelta(days=1), "1d": timedelta(days=30)}
MAX_BUCKETS = 10_080  # a week of minutes
SESSIONS_WINDOW = timedelta(days=1)

USER_ID = Text("userId", "user_id", "User id (the token's sub claim)", required=True, max_length=256)
STATS_QUERY = (
    FROM.but(description=FROM.description + "; default: to minus 1 h (1m), 24 h (1h) or 30 d (1d)"),
    TO,
    Choice("bucket", "bucket", "Bucket width (UTC-aligned)", values=tuple(BUCKET_STEPS), default="1m"),
    ARCHIVE,
)
SESSIONS_QUERY = (
    Text("userId", "user_id", "Only sessions of this user", max_length=256),
    Uuid("roomId", "room_id", "Only sessions in this room"),
    FROM.but(description=FROM.description + "; sessions that started then or later; default: to minus 24 h"),
    TO,
    page_limit(100, 1000),
    OFFSET,
    ARCHIVE,
)


def roster_entry(raw: dict, with_ip: bool = True) -> dict:
    """A live session as in a ROOM_ROSTER message (docs/protocol.md), whatever else Redis holds;
    without its ``ip`` key unless ``with_ip``."""
    out = {key: raw.get(key) for key in ROSTER_KEYS}
    for key in ("device", "os", "ip"):
        if out[key] == "":  # Redis stores a missing value as an empty string
            out[key] = None
    if not with_ip:
        del out["ip"]
    return out


def stored_session_fields(row: dict) -> dict:
    """What every view of a stored session (session history, a past roster, an attendance export)
    shows of its client and its lifetime, from a dat_spd_session row."""
    return {
        "userId": row["user_id"],
        "clientId": row["client_id"],
        "device": row["device"],
        "os": row["os"],
        "appVersion": row["app_version"],
        "ip": row["ip"],
        "startedAt": iso(row["started_at"]),
        "endedAt": iso(row["ended_at"]),
        "endReason": row["end_reason"],
    }


def session_json(row: dict, with_ip: bool = True) -> dict:
    """A stored session (dat_spd_session row) as the API shows it; without ``ip`` unless ``with_ip``."""
    out = {
        "sessionId": str(row["session_id"]),
        "roomId": str(row["room_id"]) if row["room_id"] is not None else None,
        "roomCode": row["room_code"],
        **stored_session_fields(row),
        "nodeId": row["node_id"],
        "heartbeatCount": row["heartbeat_count"],
        "latencyAvgMs": row["latency_avg"],
        "latencyMinMs": row["latency_min"],
        "latencyMaxMs": row["latency_max"],
        "lastHeartbeatAt": iso(row["last_heartbeat_at"]),
    }
    if not with_ip:
        del out["ip"]
    return out


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


async def room_known(api: Api, tenant: str, room_id: str) -> bool:
    """A room of ``tenant``: known live (catalog, configuration, Redis) or stored in PostgreSQL."""
    if await api.room_known_live(tenant, room_id):
        return True
    if api.host.dsn is None:
        return False
    return await api.db(tenant, lambda c: rooms.exists(c, tenant, room_id))


async def room_sessions(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/sessions: the live roster from Redis (every node's sessions)."""
    room_id, tenant = call.path["room_id"], call.claims.tenant
    if not await room_known(api, tenant, room_id):
        raise not_found("room", room_id)
    roster = graded(
        await api.live(api.host.store.roster(room_id)), api.host.settings.heartbeat_interval_ms, now_ms()
    )
    with_ip = api.may(call.claims, roles.VIEW_IP)
    items = sorted(
        (roster_entry(e, with_ip) for e in roster), key=lambda e: (e["connectedAt"] or 0, e["sessionId"])
    )
    return json_response({"items": items})


async def room_stats(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/stats: buckets of spd_room_stats between from and to."""
    room_id, tenant, q = call.path["room_id"], call.claims.tenant, call.query
    bucket = q["bucket"]
    start, end = window(q, BUCKET_WINDOWS[bucket])
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
        rows = sessions.room_stats(conn, room_id, start, end, bucket, archive=q["archive"])
        return rows, bool(rows) or rooms.exists(conn, tenant, room_id)

    rows, exists = await api.db(tenant, work)
    if not exists and not await api.room_known_live(tenant, room_id):
        raise not_found("room", room_id)
    return json_response(
        {
            "roomId": room_id,
            "bucket": bucket,
            "from": iso(start),
            "to": iso(end),
            "points": [stats_point(r) for r in rows],
        }
    )


async def list_sessions(api: Api, call: Call) -> web.Response:
    """GET /api/v1/sessions: stored sessions that started in [from, to), newest first."""
    q = call.query
    start, end = window(q, SESSIONS_WINDOW)
    rows, total = await api.db(
        call.claims.tenant,
        lambda c: sessions.list_page(
            c,
            start,
            end,
            room_id=q["room_id"],
            user_id=q["user_id"],
            limit=q["limit"],
            offset=q["offset"],
            archive=q["archive"],
        ),
    )
    with_ip = api.may(call.claims, roles.VIEW_IP)
    return json_response(page([session_json(r, with_ip) for r in rows], total, q))


async def user_sessions(api: Api, call: Call) -> web.Response:
    """GET /api/v1/users/{userId}/sessions: the user's live sessions across rooms and nodes."""
    user_id = call.path["user_id"]
    # The index key carries the tenant: another tenant's user of the same id is another key.
    live = graded(
        await api.live(api.host.store.user_sessions(call.claims.tenant, user_id)),
        api.host.settings.heartbeat_interval_ms,
        now_ms(),
    )
    with_ip = api.may(call.claims, roles.VIEW_IP)
    items = [
        {**roster_entry(e, with_ip), "roomId": e.get("roomId"), "roomCode": e.get("roomCode")} for e in live
    ]
    items.sort(key=lambda e: (e["connectedAt"] or 0, e["sessionId"]))
    return json_response({"items": items})


SESSION_ROUTES: tuple[Route, ...] = (
    Route("GET", ROOMS_PATH + "/{id}/sessions", room_sessions, "listRoomLiveSessions",
          "Sessions in a room now (from Redis, every node)", "rooms", roles.OBSERVE, path_params=(ROOM_ID,),
          response="LiveSessions", problems=(404,), ip_addresses=True),
    Route("GET", ROOMS_PATH + "/{id}/stats", room_stats, "getRoomStats", "A room's statistics over time",
          "rooms", roles.OBSERVE, path_params=(ROOM_ID,), query=STATS_QUERY, response="RoomStats", problems=(404,)),
    Route("GET", "/api/v1/sessions", list_sessions, "listSessions", "Session history", "sessions",
          roles.VIEW_SESSIONS, query=SESSIONS_QUERY, response="SessionList",
          description="Sessions that started in [from, to), newest first.", ip_addresses=True),
    Route("GET", "/api/v1/users/{userId}/sessions", user_sessions, "listUserLiveSessions",
          "A user's sessions now, across rooms and nodes", "sessions", roles.VIEW_SESSIONS,
          path_params=(USER_ID,), response="UserLiveSessions", ip_addresses=True),
)  # fmt: skip
