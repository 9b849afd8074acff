"""Live sessions from Redis with real clients connected: a room's roster, a user's sessions."""

from __future__ import annotations

import time

from spidi_server.rooms import room_id_for

from ..stomp_client import connected
from .conftest import assert_problem, check_shape

ROSTER_KEYS = {
    "liveness",
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
}


async def _beat(client, session_id: str, latency: float) -> None:
    await client.app("/app/heartbeat", {"sessionId": session_id, "latencyMs": latency}, receipt="hb")
    await client.next(command="RECEIPT")


async def test_room_roster_and_user_sessions(api, api_node):
    doc = (await api.get("/api/openapi.json", role=None)).body
    token = api.token("user", sub="alice")
    phone = await connected(api_node.ws_url, token)
    laptop = await connected(api_node.ws_url, token)
    bob = await connected(api_node.ws_url, api.token("user", sub="bob"))
    started = int(time.time() * 1000)
    s_phone = (await phone.hello("lobby", "phone-1", device="Pixel 8", os="Android 15"))["sessionId"]
    s_laptop = (await laptop.hello("office", "laptop-1"))["sessionId"]
    s_bob = (await bob.hello("lobby", "bob-web"))["sessionId"]
    await _beat(phone, s_phone, 42)
    await _beat(bob, s_bob, 7.5)

    lobby = room_id_for("default", "lobby")
    reply = await api.get(f"/api/v1/rooms/{lobby}/sessions", role="admin")
    assert reply.status == 200, reply.body
    check_shape(doc["components"]["schemas"]["LiveSessions"], reply.body, doc, "roster")
    items = {e["sessionId"]: e for e in reply.body["items"]}
    assert set(items) == {s_phone, s_bob}
    entry = items[s_phone]
    assert set(entry) == ROSTER_KEYS
    assert (
        entry["userId"],
        entry["clientId"],
        entry["device"],
        entry["os"],
        entry["appVersion"],
        entry["ip"],
    ) == ("alice", "phone-1", "Pixel 8", "Android 15", "1.0.0", "127.0.0.1")
    assert entry["latencyMs"] == 42 and items[s_bob]["latencyMs"] == 7.5
    assert {e["liveness"] for e in items.values()} == {"live"}  # both beat just now
    assert items[s_bob]["device"] is None and items[s_bob]["os"] is None
    assert started - 1000 <= entry["connectedAt"] <= entry["lastHeartbeatAt"] <= int(time.time() * 1000)
    # A monitor reads the same roster without the clients' IP addresses (ADR-0001).
    watched = await api.get(f"/api/v1/rooms/{lobby}/sessions", role="monitor")
    check_shape(doc["components"]["schemas"]["LiveSessions"], watched.body, doc, "monitor's roster")
    assert watched.body["items"] == [{k: v for k, v in e.items() if k != "ip"} for e in reply.body["items"]]

    # The room is auto-created (not stored in PostgreSQL): the live endpoint knows it from Redis.
    mine = await api.get("/api/v1/users/alice/sessions", role="admin")
    assert mine.status == 200, mine.body
    check_shape(doc["components"]["schemas"]["UserLiveSessions"], mine.body, doc, "user")
    by_id = {e["sessionId"]: e for e in mine.body["items"]}
    assert set(by_id) == {s_phone, s_laptop}
    assert set(by_id[s_phone]) == ROSTER_KEYS | {"roomId", "roomCode"}
    assert (by_id[s_phone]["roomId"], by_id[s_phone]["roomCode"], by_id[s_phone]["latencyMs"]) == (
        lobby,
        "lobby",
        42,
    )
    assert (by_id[s_laptop]["roomCode"], by_id[s_laptop]["latencyMs"], by_id[s_laptop]["clientId"]) == (
        "office",
        None,
        "laptop-1",
    )
    assert by_id[s_laptop]["roomId"] == room_id_for("default", "office")

    # Leaving shows at once (reads are ordered after the node's buffered writes).
    await phone.app("/app/leave", {"sessionId": s_phone}, receipt="bye")
    await phone.next(command="RECEIPT")
    assert [e["sessionId"] for e in (await api.get("/api/v1/users/alice/sessions")).body["items"]] == [
        s_laptop
    ]
    assert [e["sessionId"] for e in (await api.get(f"/api/v1/rooms/{lobby}/sessions")).body["items"]] == [
        s_bob
    ]

    # Unknown rooms, and rooms of other tenants, are 404; an unknown user simply has no sessions.
    assert_problem(
        await api.get(f"/api/v1/rooms/{room_id_for('default', 'nowhere')}/sessions"), 404, "not-found"
    )
    assert_problem(await api.get(f"/api/v1/rooms/{lobby}/sessions", tenant="acme"), 404, "not-found")
    assert (await api.get("/api/v1/users/nobody/sessions")).body == {"items": []}
    assert (await api.get("/api/v1/users/alice/sessions", tenant="acme")).body == {"items": []}
    for client in (phone, laptop, bob):
        await client.close()


async def test_a_stored_room_without_sessions_has_an_empty_roster(api):
    room = (await api.post("/api/v1/rooms", {"code": "quiet"})).body
    reply = await api.get(f"/api/v1/rooms/{room['id']}/sessions", role="monitor")
    assert reply.status == 200 and reply.body == {"items": []}


async def test_without_postgres_live_reads_work_and_history_is_503(http, node_factory):
    from .conftest import ApiClient

    node = await node_factory()  # no postgres_dsn: no history store
    api = ApiClient(http, node)
    client = await connected(node.ws_url, api.token("user", sub="carol"))
    sid = (await client.hello("solo", "c"))["sessionId"]
    live = await api.get(f"/api/v1/rooms/{room_id_for('default', 'solo')}/sessions", role="monitor")
    assert [e["sessionId"] for e in live.body["items"]] == [sid]
    assert [e["sessionId"] for e in (await api.get("/api/v1/users/carol/sessions")).body["items"]] == [sid]
    # The rooms list needs no PostgreSQL: the rooms Redis knows (here the auto-created one).
    listed = (await api.get("/api/v1/rooms", role="monitor")).body["items"]
    assert [(r["code"], r["stored"], r["online"]) for r in listed] == [("solo", False, 1)]
    for method, path in [
        ("POST", "/api/v1/rooms"),
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/room-types"),
    ]:
        reply = await api.call(method, path, json={"code": "x"} if method == "POST" else None)
        body = assert_problem(reply, 503, "unavailable")
        assert body["detail"] == "history store not configured: this node has no PostgreSQL"
    await client.close()


async def test_postgres_unreachable_is_503_and_live_reads_still_work(api, api_node, monkeypatch):
    from spidi_server.api import service

    monkeypatch.setattr(service, "POOL_TIMEOUT_S", 0.5)
    # Before the pool exists (it is created on first use): point the node at a port nobody serves.
    monkeypatch.setattr(api_node.services, "dsn", "postgresql://spidi@127.0.0.1:1/spidi?connect_timeout=1")
    body = assert_problem(await api.get("/api/v1/rooms", role="monitor"), 503, "unavailable")
    assert body["detail"] == "the history store (PostgreSQL) cannot be reached; retry later"
    live = await api.get("/api/v1/users/anyone/sessions", role="admin")
    assert live.status == 200 and live.body == {"items": []}
