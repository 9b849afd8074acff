"""End to end over loopback: real WebSocket clients, a real Spidi node, a real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

from .conftest import TRANSPORTS, token_for
from .stomp_client import Client, connected


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    """Every end-to-end test runs on both transports: same session, same behaviour."""
    return request.param


async def user(node, sub="alice", tenant="default", role="spidi:user"):
    return await connected(node.ws_url, token_for(node.settings, sub, role, tenant))


async def monitor(node, sub="mo", tenant="default", role="spidi:monitor"):
    return await connected(node.ws_url, token_for(node.settings, sub, role, tenant))


async def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# -- CONNECT and credentials ---------------------------------------------------------------------


async def test_connect_with_bearer_header(node):
    client = await Client.open(node.ws_url)
    assert client.ws.subprotocol == "v12.stomp"
    command, headers, _ = await client.connect(token_for(node.settings, "alice", "spidi:user"))
    assert command == "CONNECTED"
    assert headers["version"] == "1.2"
    assert headers["server"].startswith("spidi/")
    assert headers["user-name"] == "alice"
    assert headers["session"]
    await client.close()


async def test_connect_with_passcode(node):
    client = await Client.open(node.ws_url)
    frame = await client.connect(
        None, login="ignored", passcode=token_for(node.settings, "bob", "spidi:user")
    )
    assert frame[0] == "CONNECTED" and frame[1]["user-name"] == "bob"
    await client.close()


async def test_connect_with_query_token(node):
    url = f"{node.ws_url}?access_token={token_for(node.settings, 'carol', 'spidi:user')}"
    client = await Client.open(url)
    frame = await client.connect(None)
    assert frame[0] == "CONNECTED" and frame[1]["user-name"] == "carol"
    await client.close()


async def test_stomp_command_and_version_negotiation(node):
    client = await Client.open(node.ws_url, subprotocols=("v10.stomp", "v11.stomp", "v12.stomp"))
    # The server picks the highest subprotocol the client offers, whatever the client's order.
    assert client.ws.subprotocol == "v12.stomp"
    await client.send(
        "STOMP",
        {
            "accept-version": "1.0,1.1",
            "host": "x",
            "Authorization": "Bearer " + token_for(node.settings, "a", "spidi:user"),
        },
    )
    frame = await client.next()
    assert frame[0] == "CONNECTED" and frame[1]["version"] == "1.1"
    await client.close()


@pytest.mark.parametrize(
    "token_kind, message",
    [
        ("none", "missing token"),
        ("garbage", "invalid token"),
        ("expired", "token expired"),
        ("wrong-secret", "invalid token"),
        ("no-role", "no spidi role"),
    ],
)
async def test_bad_token_gets_error_and_close(node, token_kind, message):
    import jwt

    now = int(time.time())
    tokens = {
        "none": None,
        "garbage": "not.a.jwt",
        "expired": token_for(node.settings, "a", "spidi:user", ttl_s=-120),
        "wrong-secret": jwt.encode({"sub": "a", "roles": ["spidi:user"], "exp": now + 60}, "x" * 40, "HS256"),
        "no-role": jwt.encode(
            {"sub": "a", "roles": ["admin"], "exp": now + 60}, node.settings.jwt_secret, "HS256"
        ),
    }
    client = await Client.open(node.ws_url)
    frame = await client.connect(tokens[token_kind])
    assert frame[0] == "ERROR"
    assert message in frame[1]["message"]
    await asyncio.wait_for(client.closed.wait(), 3)
    assert client.ws.close_code == 1008


async def test_frame_before_connect_is_refused(node):
    client = await Client.open(node.ws_url)
    await client.send("SUBSCRIBE", {"id": "1", "destination": "/topic/rooms"})
    frame = await client.next()
    assert frame[0] == "ERROR" and "before CONNECT" in frame[1]["message"]
    await asyncio.wait_for(client.closed.wait(), 3)


async def test_oversized_frame_gets_error_and_others_keep_working(node_factory):
    node = await node_factory(max_frame_size=4096)
    other = await user(node, "other")
    welcome = await other.hello("lobby")
    big = await user(node, "big")
    await big.app("/app/hello", {"roomCode": "lobby", "clientId": "x" * 5000, "appVersion": "1"})
    frame = await big.next(command="ERROR")
    assert "frame-too-large" in frame[1]["message"]
    await asyncio.wait_for(big.closed.wait(), 3)
    assert big.ws.close_code == 1009
    # The server still serves everybody else.
    await other.app("/app/heartbeat", {"sessionId": welcome["sessionId"], "latencyMs": 5}, receipt="r1")
    assert (await other.next(command="RECEIPT"))[1]["receipt-id"] == "r1"
    await other.close()


async def test_malformed_frame_closes_only_that_connection(node):
    bad = await user(node, "bad")
    await bad.ws.send("SEND\ndestination:/app/hello\nbroken-header-without-colon\n\n{}\x00")
    frame = await bad.next(command="ERROR")
    assert "bad-header" in frame[1]["message"]
    await asyncio.wait_for(bad.closed.wait(), 3)
    good = await user(node, "good")
    assert (await good.hello("lobby"))["type"] == "WELCOME"
    await good.close()


async def test_unknown_path_is_404(node):
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(node.ws_url.replace("/ws", "/nope"))
    assert info.value.response.status_code == 404


# -- HELLO / HEARTBEAT / LEAVE --------------------------------------------------------------------


async def test_hello_heartbeat_leave_and_redis_state(node, redis_sync):
    alice = await user(node, "alice")
    await alice.app(
        "/app/hello",
        {
            "roomCode": "lobby",
            "clientId": "phone-1",
            "appVersion": "2.3.4",
            "device": "Pixel 8",
            "os": "Android 15",
        },
        receipt="h1",
    )
    welcome = await alice.json("/user/queue/session", type_="WELCOME")
    # RECEIPT comes after WELCOME.
    assert (await alice.next(command="RECEIPT"))[1]["receipt-id"] == "h1"
    assert welcome["roomCode"] == "lobby"
    assert welcome["heartbeatIntervalMs"] == 15000 and welcome["timeoutMs"] == 45000
    sid = welcome["sessionId"]
    room_id = room_id_for("default", "lobby")
    assert welcome["roomId"] == room_id

    await alice.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 42}, receipt="b1")
    assert (await alice.next(command="RECEIPT"))[1]["receipt-id"] == "b1"
    await node.store.flush()
    info = redis_sync.hgetall(keys.session(room_id, sid))
    assert info["userId"] == "alice" and info["clientId"] == "phone-1" and info["device"] == "Pixel 8"
    assert info["os"] == "Android 15" and info["appVersion"] == "2.3.4" and info["ip"] == "127.0.0.1"
    assert redis_sync.zscore(keys.room_online(room_id), sid) is not None
    assert float(redis_sync.hget(keys.room_latency(room_id), sid)) == 42
    assert redis_sync.hget(keys.room_users(room_id), "alice") == "1"
    assert 0 < redis_sync.ttl(keys.session(room_id, sid)) <= node.presence.session_ttl_s

    await alice.app("/app/leave", {"sessionId": sid}, receipt="l1")
    assert (await alice.next(command="RECEIPT"))[1]["receipt-id"] == "l1"
    await node.store.flush()
    assert redis_sync.zcard(keys.room_online(room_id)) == 0
    assert not redis_sync.exists(keys.session(room_id, sid))
    assert redis_sync.hlen(keys.room_users(room_id)) == 0
    assert redis_sync.hlen(keys.room_latency(room_id)) == 0
    await alice.close()


async def test_heartbeat_without_latency_is_no_latency_sample(node, redis_sync):
    # latencyMs is optional: a heartbeat without it keeps the session alive and counts as a
    # heartbeat, but is no 0 ms sample; latencyMs 0 is a sample like any other.
    alice = await user(node, "alice")
    sid = (await alice.hello("quiet"))["sessionId"]
    room_id = room_id_for("default", "quiet")

    async def beat(body: dict, receipt: str) -> None:
        await alice.app("/app/heartbeat", body, receipt=receipt)
        assert (await alice.next(command="RECEIPT"))[1]["receipt-id"] == receipt
        await node.store.flush()

    async def avg_latency() -> float:
        """The room's avgLatencyMs as a new subscriber's snapshot shows it."""
        mon = await monitor(node)
        await mon.subscribe("/topic/rooms/quiet/metrics")
        avg = (await mon.json("/topic/rooms/quiet/metrics"))["avgLatencyMs"]
        await mon.close()
        return avg

    await beat({"sessionId": sid, "latencyMs": 40}, "b1")
    before = redis_sync.zscore(keys.room_online(room_id), sid)
    await asyncio.sleep(0.01)  # the next beat's time is later
    await beat({"sessionId": sid}, "b2")
    await beat({"sessionId": sid, "latencyMs": None}, "b3")
    session = node.presence.sessions[sid]
    last, latency, beats, latency_sum, low, high, samples = session.figures()
    assert (latency, beats, latency_sum, low, high, samples) == (40, 3, 40.0, 40, 40, 1)
    assert redis_sync.zscore(keys.room_online(room_id), sid) == last > before  # alive, and later
    assert float(redis_sync.hget(keys.room_latency(room_id), sid)) == 40
    assert await avg_latency() == 40.0
    checkpoint = session.checkpoint_event()
    assert (checkpoint["heartbeats"], checkpoint["latency_count"], checkpoint["latency_sum"]) == (3, 1, 40.0)

    await beat({"sessionId": sid, "latencyMs": 0}, "b4")
    assert session.figures()[1:] == (0, 4, 40.0, 0, 40, 2)
    assert float(redis_sync.hget(keys.room_latency(room_id), sid)) == 0
    assert await avg_latency() == 0.0
    await alice.close()


@pytest.mark.parametrize(
    "destination, body, code",
    [
        ("/app/hello", "{not json", "BAD_JSON"),
        ("/app/hello", "[1,2]", "BAD_JSON"),
        ("/app/hello", json.dumps({"clientId": "c", "appVersion": "1"}), "BAD_REQUEST"),
        (
            "/app/hello",
            json.dumps({"roomCode": "bad/room", "clientId": "c", "appVersion": "1"}),
            "BAD_REQUEST",
        ),
        ("/app/hello", json.dumps({"roomCode": "r", "appVersion": "1"}), "BAD_REQUEST"),
        ("/app/heartbeat", json.dumps({"sessionId": "nope", "latencyMs": 1}), "UNKNOWN_SESSION"),
        ("/app/heartbeat", json.dumps({"sessionId": "x", "latencyMs": "slow"}), "BAD_REQUEST"),
        ("/app/heartbeat", json.dumps({"latencyMs": 3}), "BAD_REQUEST"),
        ("/app/leave", json.dumps({"sessionId": "nope"}), "UNKNOWN_SESSION"),
        ("/app/nowhere", "{}", "UNKNOWN_DESTINATION"),
        ("/app/hello", "[" * 50 + "]" * 50, "BAD_JSON"),
    ],
)
async def test_application_errors_keep_connection_open(node, destination, body, code):
    client = await user(node)
    await client.send(
        "SEND", {"destination": destination, "content-type": "application/json", "receipt": "e1"}, body
    )
    error = await client.json("/user/queue/errors")
    assert error["type"] == "ERROR" and error["code"] == code and error["message"]
    assert error["ref"] == "e1"
    assert (await client.next(command="RECEIPT"))[1]["receipt-id"] == "e1"
    # Still connected and serving.
    assert (await client.hello("lobby"))["type"] == "WELCOME"
    await client.close()


async def test_foreign_session_is_refused(node):
    alice = await user(node, "alice")
    sid = (await alice.hello("lobby"))["sessionId"]
    mallory = await user(node, "mallory")
    await mallory.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 1})
    assert (await mallory.json("/user/queue/errors"))["code"] == "UNKNOWN_SESSION"
    await mallory.app("/app/leave", {"sessionId": sid})
    assert (await mallory.json("/user/queue/errors"))["code"] == "UNKNOWN_SESSION"
    assert sid in node.presence.sessions
    await alice.close()
    await mallory.close()


async def test_wrong_role(node):
    mon = await monitor(node)
    await mon.app("/app/hello", {"roomCode": "lobby", "clientId": "c", "appVersion": "1"})
    assert (await mon.json("/user/queue/errors"))["code"] == "FORBIDDEN"
    usr = await user(node)
    await usr.send("SUBSCRIBE", {"id": "m", "destination": "/topic/rooms/lobby/metrics", "receipt": "s"})
    assert (await usr.json("/user/queue/errors"))["code"] == "FORBIDDEN"
    await usr.send("SUBSCRIBE", {"id": "r", "destination": "/topic/rooms"})
    assert (await usr.json("/user/queue/errors"))["code"] == "FORBIDDEN"
    await mon.close()
    await usr.close()


async def test_room_full(node_factory):
    node = await node_factory(rooms={"tiny": 2})
    clients = [await user(node, f"u{i}") for i in range(3)]
    await clients[0].hello("tiny")
    await clients[1].hello("tiny")
    await clients[2].app("/app/hello", {"roomCode": "tiny", "clientId": "c", "appVersion": "1"})
    error = await clients[2].json("/user/queue/errors")
    assert error["code"] == "ROOM_FULL" and "tiny" in error["message"]
    assert await node.store.room_online(room_id_for("default", "tiny")) == 2
    for c in clients:
        await c.close()


async def test_unknown_room_without_auto_create(node_factory):
    node = await node_factory(auto_create_rooms=False, rooms={"known": 10})
    client = await user(node)
    await client.app("/app/hello", {"roomCode": "unknown", "clientId": "c", "appVersion": "1"})
    assert (await client.json("/user/queue/errors"))["code"] == "ROOM_NOT_FOUND"
    assert (await client.hello("known"))["type"] == "WELCOME"
    mon = await monitor(node)
    await mon.send("SUBSCRIBE", {"id": "m", "destination": "/topic/rooms/unknown/metrics"})
    assert (await mon.json("/user/queue/errors"))["code"] == "ROOM_NOT_FOUND"
    await client.close()
    await mon.close()


# -- subscribers: metrics, roster, /topic/rooms ---------------------------------------------------


async def test_metrics_snapshot_and_updates(node):
    mon = await monitor(node)
    await mon.subscribe("/topic/rooms/lobby/metrics")
    snap = await mon.json("/topic/rooms/lobby/metrics")
    assert snap["type"] == "ROOM_METRICS" and snap["online"] == 0 and snap["capacity"] == 1000
    assert snap["roomCode"] == "lobby" and snap["seq"] == 1

    a1 = await user(node, "alice")
    a2 = await user(node, "alice")
    b = await user(node, "bob")
    s1 = (await a1.hello("lobby", "phone"))["sessionId"]
    s2 = (await a2.hello("lobby", "laptop"))["sessionId"]
    s3 = (await b.hello("lobby"))["sessionId"]
    await a1.app("/app/heartbeat", {"sessionId": s1, "latencyMs": 10})
    await a2.app("/app/heartbeat", {"sessionId": s2, "latencyMs": 20})
    await b.app("/app/heartbeat", {"sessionId": s3, "latencyMs": 60})
    started = time.monotonic()
    while True:
        m = await mon.json("/topic/rooms/lobby/metrics")
        if m["online"] == 3 and m["avgLatencyMs"] == 30.0:
            break
    assert time.monotonic() - started < 1.0
    assert m["users"] == 2 and m["peak"] == 3 and m["roomId"] == room_id_for("default", "lobby")
    assert m["seq"] > snap["seq"]

    await b.app("/app/leave", {"sessionId": s3})
    while (m := await mon.json("/topic/rooms/lobby/metrics"))["online"] != 2:
        pass
    assert m["users"] == 1 and m["peak"] == 3 and m["avgLatencyMs"] == 15.0
    for c in (mon, a1, a2, b):
        await c.close()


async def test_roster_snapshot_and_deltas(node):
    alice = await user(node, "alice")
    sa = (await alice.hello("lobby", "phone", device="iPhone", os="iOS 18"))["sessionId"]
    mon = await monitor(node, role="spidi:admin")  # an admin: it sees the ip (tests/test_roles.py)
    await mon.subscribe("/topic/rooms/lobby/roster")
    snap = await mon.json("/topic/rooms/lobby/roster")
    assert snap["full"] is True and snap["seq"] == 1 and snap["roomId"] == room_id_for("default", "lobby")
    (entry,) = snap["users"]
    assert entry["sessionId"] == sa and entry["userId"] == "alice" and entry["device"] == "iPhone"
    assert entry["os"] == "iOS 18" and entry["clientId"] == "phone" and entry["appVersion"] == "1.0.0"
    assert entry["ip"] == "127.0.0.1" and entry["connectedAt"] > 0 and entry["lastHeartbeatAt"] > 0

    bob = await user(node, "bob")
    sb = (await bob.hello("lobby"))["sessionId"]
    delta = await mon.json("/topic/rooms/lobby/roster")
    assert delta["full"] is False and delta["seq"] == 2
    assert [e["sessionId"] for e in delta["joined"]] == [sb] and delta["left"] == []

    await alice.app("/app/heartbeat", {"sessionId": sa, "latencyMs": 77})
    delta = await mon.json("/topic/rooms/lobby/roster")
    assert delta["seq"] == 3 and delta["joined"] == [] and delta["left"] == []
    assert delta["updated"][0]["sessionId"] == sa and delta["updated"][0]["latencyMs"] == 77

    await bob.app("/app/leave", {"sessionId": sb})
    delta = await mon.json("/topic/rooms/lobby/roster")
    assert delta["seq"] == 4 and delta["left"] == [{"sessionId": sb, "reason": "leave"}]
    for c in (alice, bob, mon):
        await c.close()


async def test_topic_rooms_lists_tenant_rooms(node):
    mon = await monitor(node)
    await mon.subscribe("/topic/rooms")
    first = await mon.json("/topic/rooms")
    assert first["type"] == "ROOMS" and first["rooms"] == []
    a = await user(node, "a")
    await a.hello("r1")
    await a.hello("r2")
    while True:
        msg = await mon.json("/topic/rooms")
        if len(msg["rooms"]) == 2 and all(r["online"] == 1 for r in msg["rooms"]):
            break
    assert sorted(r["roomCode"] for r in msg["rooms"]) == ["r1", "r2"]
    await a.close()
    await mon.close()


async def test_wrong_tenant_sees_nothing(node_factory, redis_sync):
    node = await node_factory(auto_create_rooms=False, rooms={"acme/vault": 10, "shared": 10})
    acme = await user(node, "u", tenant="acme")
    await acme.hello("vault")
    await acme.hello("shared")
    spy = await monitor(node, tenant="globex")
    await spy.send("SUBSCRIBE", {"id": "x", "destination": "/topic/rooms/vault/roster"})
    assert (await spy.json("/user/queue/errors"))["code"] == "ROOM_NOT_FOUND"
    # Same code, other tenant: a different room, empty.
    await spy.subscribe("/topic/rooms/shared/roster")
    assert (await spy.json("/topic/rooms/shared/roster"))["users"] == []
    await spy.subscribe("/topic/rooms")
    # Its own rooms only: "shared" is configured for every tenant (empty for globex), not acme's vault.
    listed = (await spy.json("/topic/rooms"))["rooms"]
    assert [(r["roomCode"], r["online"]) for r in listed] == [("shared", 0)]
    await acme.close()
    await spy.close()


# -- liveness -------------------------------------------------------------------------------------


async def test_timeout_ends_session(node_factory, redis_sync):
    node = await node_factory(heartbeat_interval_ms=200, heartbeat_timeout_ms=400)
    mon = await monitor(node)
    await mon.subscribe("/topic/rooms/lobby/roster")
    await mon.json("/topic/rooms/lobby/roster")
    alice = await user(node)
    sid = (await alice.hello("lobby"))["sessionId"]
    # Heartbeats keep it alive past the timeout...
    for _ in range(4):
        await asyncio.sleep(0.2)
        await alice.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 1})
    assert sid in node.presence.sessions
    # ...silence ends it with reason timeout, and the client is told.
    ended = await alice.json("/user/queue/session", timeout=3, type_="SESSION_ENDED")
    assert ended == {"type": "SESSION_ENDED", "sessionId": sid, "reason": "timeout"}
    while True:
        delta = await mon.json("/topic/rooms/lobby/roster")
        if delta["left"]:
            break
    assert delta["left"] == [{"sessionId": sid, "reason": "timeout"}]
    await node.store.flush()
    assert redis_sync.zcard(keys.room_online(room_id_for("default", "lobby"))) == 0
    await alice.close()
    await mon.close()


async def test_grace_period_resume_without_leave_or_join(node_factory):
    node = await node_factory(grace_period_ms=1500)
    mon = await monitor(node)
    await mon.subscribe("/topic/rooms/lobby/roster")
    await mon.json("/topic/rooms/lobby/roster")
    first = await user(node, "alice")
    sid = (await first.hello("lobby"))["sessionId"]
    assert (await mon.json("/topic/rooms/lobby/roster"))["joined"][0]["sessionId"] == sid
    first.ws.transport.abort()  # abrupt: no DISCONNECT, no close handshake
    await asyncio.sleep(0.3)
    second = await user(node, "alice")
    welcome = await second.hello("lobby", resumeSessionId=sid)
    assert welcome["sessionId"] == sid and welcome["resumed"] is True
    await second.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 3}, receipt="r")
    await second.next(command="RECEIPT")
    await asyncio.sleep(1.6)  # past the grace period: still there
    assert sid in node.presence.sessions
    # The monitor never saw a leave or a second join.
    seen = list(mon.skipped)
    while not mon.frames.empty():
        seen.append(mon.frames.get_nowait())
    for frame in seen:
        payload = json.loads(frame[2])
        assert payload["left"] == [] and all(e["sessionId"] != sid for e in payload["joined"])
    await second.close()
    await mon.close()


async def test_abrupt_close_ends_after_grace_with_disconnect(node_factory):
    node = await node_factory(grace_period_ms=1000)
    alice = await user(node)
    sid = (await alice.hello("lobby"))["sessionId"]
    alice.ws.transport.abort()
    assert await wait_for(lambda: node.presence.sessions[sid].client is None, timeout=0.8)
    assert await wait_for(lambda: sid not in node.presence.sessions, timeout=3)
    assert node.metrics.sessions_ended.labels(reason="disconnect")._value.get() == 1


async def test_resume_by_other_user_gets_new_session(node_factory):
    node = await node_factory(grace_period_ms=2000)
    alice = await user(node, "alice")
    sid = (await alice.hello("lobby"))["sessionId"]
    alice.ws.transport.abort()
    mallory = await user(node, "mallory")
    welcome = await mallory.hello("lobby", resumeSessionId=sid)
    assert welcome["sessionId"] != sid and welcome["resumed"] is False
    await mallory.close()


async def test_disconnect_ends_sessions_at_once(node, redis_sync):
    alice = await user(node)
    sid = (await alice.hello("lobby"))["sessionId"]
    await alice.send("DISCONNECT", {"receipt": "bye"})
    assert (await alice.next(command="RECEIPT"))[1]["receipt-id"] == "bye"
    assert await wait_for(lambda: sid not in node.presence.sessions, timeout=1)
    await node.store.flush()
    assert redis_sync.zcard(keys.room_online(room_id_for("default", "lobby"))) == 0


async def test_stomp_heartbeats_negotiated_and_sent(node_factory):
    node = await node_factory(stomp_heartbeat_ms=200)
    client = await Client.open(node.ws_url)
    frame = await client.connect(token_for(node.settings, "a", "spidi:user"), **{"heart-beat": "1000,100"})
    # Server sends every max(200, 100) ms and expects every max(200, 1000) ms.
    assert frame[1]["heart-beat"] == "200,1000"
    assert await wait_for(lambda: client.heartbeats >= 3, timeout=1.5)
    assert not client.closed.is_set()
    # We send nothing: the server closes the silent connection after twice the interval.
    await asyncio.wait_for(client.closed.wait(), 3)
    assert client.ws.close_code == 1002


async def test_client_eol_heartbeats_keep_connection(node_factory):
    node = await node_factory(stomp_heartbeat_ms=200)
    client = await Client.open(node.ws_url)
    await client.connect(token_for(node.settings, "a", "spidi:user"), **{"heart-beat": "200,0"})
    for _ in range(8):
        await client.ws.send("\n")
        await asyncio.sleep(0.1)
    assert not client.closed.is_set()
    assert node.metrics.hot.stomp_heartbeats >= 8
    await client.close()


async def test_liveness_looks_only_at_connections_with_something_due(node_factory):
    node = await node_factory(stomp_heartbeat_ms=200, connect_timeout_s=0.5)
    quiet = await user(node, "quiet")  # heart-beat 0,0: nothing ever due, out of the scan
    silent = await Client.open(node.ws_url)
    await silent.connect(token_for(node.settings, "s", "spidi:user"), **{"heart-beat": "200,0"})
    idle = await Client.open(node.ws_url)  # no CONNECT yet
    assert await wait_for(lambda: len(node.liveness_due) == 2, timeout=2)
    # Out of the scan, still served; the other two are still checked and closed.
    await asyncio.wait_for(silent.closed.wait(), 3)
    assert silent.ws.close_code == 1002
    await asyncio.wait_for(idle.closed.wait(), 3)
    assert idle.ws.close_code == 1008
    assert await wait_for(lambda: not node.liveness_due, timeout=2)
    assert len(node.clients) == 1 and not quiet.closed.is_set()
    sid = (await quiet.hello("lobby"))["sessionId"]
    await quiet.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 9}, receipt="ok")
    assert (await quiet.next(command="RECEIPT"))[1]["receipt-id"] == "ok"
    await quiet.close()


# -- the server under abuse keeps serving ---------------------------------------------------------


async def test_many_bad_clients_do_not_disturb_a_good_one(node_factory):
    node = await node_factory(connect_timeout_s=0.5)
    good = await user(node, "good")
    sid = (await good.hello("lobby"))["sessionId"]
    for payload in [
        "\x00\x00",
        "HELLO\n\n\x00",
        "CONNECT\naccept-version:9.9\n\n\x00",
        "SEND\n\n" + "x" * 70000,
    ]:
        bad = await Client.open(node.ws_url)
        await bad.ws.send(payload)
        await asyncio.wait_for(bad.closed.wait(), 3)
    await good.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 9}, receipt="ok")
    assert (await good.next(command="RECEIPT"))[1]["receipt-id"] == "ok"
    await good.close()


async def test_connection_without_connect_is_closed(node_factory):
    node = await node_factory(connect_timeout_s=0.3)
    idle = await Client.open(node.ws_url)
    await idle.ws.send("CONN")  # a frame that never completes
    await asyncio.wait_for(idle.closed.wait(), 3)
    assert idle.ws.close_code == 1008


async def test_metrics_endpoint_and_health(node):
    import aiohttp

    alice = await user(node)
    sid = (await alice.hello("lobby"))["sessionId"]
    await alice.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 120}, receipt="r")
    await alice.next(command="RECEIPT")
    # The session_started event goes to Redis with the store's next flush, after WELCOME.
    assert await node.store.flush()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.ops.url}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"{node.ops.url}/health") as resp:
            health = await resp.json()
            assert resp.status == 200
    assert "spidi_websocket_connections 1.0" in text
    assert "spidi_sessions_active 1.0" in text
    assert "spidi_node_rooms 1.0" in text
    assert 'spidi_heartbeat_latency_ms_bucket{le="200.0"} 1.0' in text
    assert 'spidi_frames_total{command="SEND"} 2.0' in text
    assert 'spidi_frames_total{command="CONNECT"} 1.0' in text
    assert health["components"]["redis"]["status"] == "ok"
    # History is on but no writer consumes the stream (writer = external, none started): degraded.
    assert health["components"]["writer"]["status"] == "unknown"
    assert health["components"]["writer"]["backlog"] >= 1
    assert health["status"] == "degraded"
    await alice.close()


async def test_redis_matches_what_clients_see_after_a_mixed_scenario(node_factory, redis_sync):
    node = await node_factory(heartbeat_interval_ms=300, heartbeat_timeout_ms=600, grace_period_ms=0)
    room_id = room_id_for("default", "mix")
    clients = [await user(node, f"u{i % 3}") for i in range(6)]
    sids = [(await c.hello("mix", f"c{i}"))["sessionId"] for i, c in enumerate(clients)]
    await clients[0].app("/app/leave", {"sessionId": sids[0]})  # leave
    await clients[1].send("DISCONNECT", {"receipt": "d"})  # clean disconnect
    await clients[1].next(command="RECEIPT")
    clients[2].ws.transport.abort()  # abrupt, no grace configured
    # 3 stays silent and times out; 4 and 5 keep heartbeating.
    for _ in range(6):
        await asyncio.sleep(0.15)
        for i in (4, 5):
            await clients[i].app("/app/heartbeat", {"sessionId": sids[i], "latencyMs": 10 * i})
    assert await wait_for(lambda: set(node.presence.sessions) == {sids[4], sids[5]})
    await node.store.flush()

    mon = await monitor(node)
    await mon.subscribe("/topic/rooms/mix/roster")
    roster = await mon.json("/topic/rooms/mix/roster")
    await mon.subscribe("/topic/rooms/mix/metrics")
    metrics = await mon.json("/topic/rooms/mix/metrics")
    seen = {e["sessionId"] for e in roster["users"]}
    assert seen == {sids[4], sids[5]}
    assert set(redis_sync.zrange(keys.room_online(room_id), 0, -1)) == seen
    assert set(redis_sync.hkeys(keys.room_latency(room_id))) == seen
    assert redis_sync.hgetall(keys.room_users(room_id)) == {"u1": "1", "u2": "1"}
    for sid in sids[:4]:
        assert not redis_sync.exists(keys.session(room_id, sid))
    assert metrics["online"] == 2 and metrics["users"] == 2 and metrics["avgLatencyMs"] == 45.0
    assert metrics["peak"] == 6
    ended = node.metrics.sessions_ended
    assert [ended.labels(reason=r)._value.get() for r in ("leave", "disconnect", "timeout")] == [1, 2, 1]
    for c in (*clients, mon):
        await c.close()


async def test_user_sessions_index_across_rooms(node, redis_sync):
    phone = await user(node, "multi")
    laptop = await user(node, "multi")
    s1 = (await phone.hello("r1", "phone"))["sessionId"]
    s2 = (await laptop.hello("r2", "laptop"))["sessionId"]
    await phone.app("/app/heartbeat", {"sessionId": s1, "latencyMs": 12}, receipt="r")
    await phone.next(command="RECEIPT")
    live = {e["sessionId"]: e for e in await node.store.user_sessions("default", "multi")}
    assert set(live) == {s1, s2}
    assert live[s1]["roomId"] == room_id_for("default", "r1") and live[s1]["clientId"] == "phone"
    assert live[s1]["latencyMs"] == 12 and live[s2]["roomCode"] == "r2"
    assert await node.store.user_sessions("other-tenant", "multi") == []
    await laptop.app("/app/leave", {"sessionId": s2}, receipt="l")
    await laptop.next(command="RECEIPT")
    assert [e["sessionId"] for e in await node.store.user_sessions("default", "multi")] == [s1]
    assert redis_sync.ttl(keys.user_sessions("default", "multi")) > 0
    await phone.close()
    await laptop.close()
