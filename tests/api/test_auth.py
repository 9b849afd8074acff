"""Who may call what (roles), 401 for missing or bad tokens, and tenant isolation through the API."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest

from spidi_server.rooms import room_id_for
from tests.conftest import TEST_SECRET

from ..history.helpers import FakeSession, ms, room_sample
from ..stomp_client import connected
from .conftest import assert_problem, create_room, write_history

ANY_ROOM = "6c0f0000-0000-0000-0000-000000000000"
READS = [
    ("GET", "/api/v1/room-types"),
    ("GET", f"/api/v1/room-types/{ANY_ROOM}"),
    ("GET", "/api/v1/rooms"),
    ("GET", f"/api/v1/rooms/{ANY_ROOM}"),
    ("GET", f"/api/v1/rooms/{ANY_ROOM}/sessions"),
    ("GET", f"/api/v1/rooms/{ANY_ROOM}/stats"),
]
# Session history and a user's sessions across rooms: admins only (ADR-0001, "view all sessions").
ADMIN_READS = [
    ("GET", "/api/v1/sessions"),
    ("GET", "/api/v1/users/alice/sessions"),
]
WRITES = [
    ("POST", "/api/v1/room-types", {"code": "t", "name": "T"}),
    ("PUT", f"/api/v1/room-types/{ANY_ROOM}", {"code": "t", "name": "T"}),
    ("PATCH", f"/api/v1/room-types/{ANY_ROOM}", {"name": "T"}),
    ("DELETE", f"/api/v1/room-types/{ANY_ROOM}", None),
    ("POST", "/api/v1/rooms", {"code": "r"}),
    ("PUT", f"/api/v1/rooms/{ANY_ROOM}", {"name": "R"}),
    ("PATCH", f"/api/v1/rooms/{ANY_ROOM}", {"name": "R"}),
    ("DELETE", f"/api/v1/rooms/{ANY_ROOM}", None),
]


async def test_roles(api):
    for method, path in READS:
        assert_problem(await api.call(method, path, role="user"), 403, "forbidden")
        for role in ("monitor", "admin"):
            reply = await api.call(method, path, role=role)
            assert reply.status in (200, 404), (
                method,
                path,
                role,
                reply.body,
            )  # allowed; maybe no such thing
    for method, path in ADMIN_READS:
        for role in ("user", "monitor"):
            forbidden = assert_problem(await api.call(method, path, role=role), 403, "forbidden")
            assert forbidden["detail"] == "this needs role spidi:admin"
        assert (await api.call(method, path, role="admin")).status == 200
    for method, path, body in WRITES:
        for role in ("user", "monitor"):
            forbidden = assert_problem(await api.call(method, path, role=role, json=body), 403, "forbidden")
            assert forbidden["detail"] == "this needs role spidi:admin"
        reply = await api.call(method, path, role="admin", json=body)
        assert reply.status in (201, 404), (method, path, reply.body)
    # A user's token is refused before its (invalid) input is looked at.
    assert_problem(await api.post("/api/v1/rooms", {"capacity": 0}, role="user"), 403, "forbidden")


def _token(**claims) -> str:
    now = int(datetime.now(UTC).timestamp())
    # An hour: tokens are built when the tests are collected, and a full run outlasts a minute.
    payload = {"sub": "eve", "roles": ["spidi:admin"], "exp": now + 3600} | claims
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, TEST_SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("authorization", "detail", "error"),
    [
        (None, "missing token: send Authorization: Bearer <jwt>", None),
        ("Basic YWxpY2U6c2VjcmV0", "the Authorization header must be 'Bearer <jwt>'", "invalid_request"),
        ("Bearer", "the Authorization header must be 'Bearer <jwt>'", "invalid_request"),
        ("Bearer not.a.jwt", "invalid token", "invalid_token"),
        (f"Bearer {_token(exp=1)}", "token expired", "invalid_token"),
        (
            f"Bearer {jwt.encode({'sub': 'x', 'roles': ['spidi:admin'], 'exp': 2**40}, 'wrong-key-0123456789-0123456789-xx')}",
            "invalid token",
            "invalid_token",
        ),
        (f"Bearer {_token(roles=['other'])}", "token carries no spidi role", "invalid_token"),
    ],
)
async def test_unauthenticated(api, authorization, detail, error):
    headers = {"Authorization": authorization} if authorization else {}
    reply = await api.call("GET", "/api/v1/rooms", role=None, headers=headers)
    body = assert_problem(reply, 401, "unauthorized")
    assert body["detail"] == detail
    challenge = reply.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="spidi"')
    if error:
        assert f'error="{error}"' in challenge


async def test_the_openapi_document_is_public(api):
    reply = await api.get("/api/openapi.json", role=None)
    assert reply.status == 200 and reply.body["openapi"].startswith("3.")


async def test_tenant_isolation(api, api_node, redis_sync):
    """Tenant B's monitor and admin see nothing of tenant A: not its rooms, sessions or stats."""
    room = await create_room(api, "lobby", tenant="tenant-a", capacity=5)
    a_id = room["id"]
    # Live sessions of tenant A in its room, and history rows of tenant A.
    a_user = await connected(api_node.ws_url, api.token("user", "tenant-a", "alice"))
    await a_user.hello("lobby", "phone")
    t0 = ms("2026-05-04T10:00")
    session = FakeSession("tenant-a", "lobby", "alice", t0)
    evs = [session.started(), room_sample("tenant-a", "lobby", t0, joins=1, latencies=[10])]
    await write_history(api_node, redis_sync, evs)
    window = {"from": "2026-05-04T00:00:00Z", "to": "2026-05-05T00:00:00Z"}

    # Tenant A sees its own.
    assert (await api.get(f"/api/v1/rooms/{a_id}", role="monitor", tenant="tenant-a")).status == 200
    live = await api.get(f"/api/v1/rooms/{a_id}/sessions", role="monitor", tenant="tenant-a")
    assert [s["userId"] for s in live.body["items"]] == ["alice"]
    stats = await api.get(f"/api/v1/rooms/{a_id}/stats", role="monitor", tenant="tenant-a", params=window)
    assert len(stats.body["points"]) == 1
    history = await api.get("/api/v1/sessions", role="admin", tenant="tenant-a", params=window)
    assert history.body["total"] == 1
    mine = await api.get("/api/v1/users/alice/sessions", role="admin", tenant="tenant-a")
    assert len(mine.body["items"]) == 1

    # Tenant B: 404 for A's room by id, whatever the operation, and empty lists.
    for role in ("monitor", "admin"):
        for path in (
            f"/api/v1/rooms/{a_id}",
            f"/api/v1/rooms/{a_id}/sessions",
            f"/api/v1/rooms/{a_id}/stats",
        ):
            assert_problem(await api.get(path, role=role, tenant="tenant-b", params=None), 404, "not-found")
        listed = await api.get("/api/v1/rooms", role=role, tenant="tenant-b")
        assert listed.body == {"items": [], "total": 0, "limit": 50, "offset": 0}
    history = await api.get("/api/v1/sessions", tenant="tenant-b", params={**window, "roomId": a_id})
    assert history.body["items"] == [] and history.body["total"] == 0
    users = await api.get("/api/v1/users/alice/sessions", tenant="tenant-b")
    assert users.body == {"items": []}
    assert_problem(
        await api.patch(f"/api/v1/rooms/{a_id}", {"capacity": 1}, tenant="tenant-b"), 404, "not-found"
    )
    assert_problem(
        await api.put(f"/api/v1/rooms/{a_id}", {"name": "mine"}, tenant="tenant-b"), 404, "not-found"
    )
    assert_problem(await api.delete(f"/api/v1/rooms/{a_id}", tenant="tenant-b"), 404, "not-found")
    # The same code in tenant B is another room, with another id.
    b_room = await create_room(api, "lobby", tenant="tenant-b")
    assert b_room["id"] == room_id_for("tenant-b", "lobby") != a_id
    assert (await api.get(f"/api/v1/rooms/{a_id}", tenant="tenant-a")).body["capacity"] == 5
    await a_user.close()
