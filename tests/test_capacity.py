"""Room capacity is one count across processes: Redis admits a session, not the node it hits.

Two nodes share one Redis; HELLOs race on both at once and exactly ``capacity`` are welcomed.
With its Redis stopped, a node still answers HELLO (admitting on its own count) and Redis holds
those sessions once it is back.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from spidi_server.rooms import room_id_for
from spidi_server.stores import keys
from spidi_server.stores.embedded_redis import EmbeddedRedis

from .conftest import token_for
from .stomp_client import connected, encode


async def hello_outcome(client, room: str, client_id: str = "c1") -> dict:
    """Send HELLO and return the WELCOME, or the error, whichever comes."""
    await client.app("/app/hello", {"roomCode": room, "clientId": client_id, "appVersion": "1.0.0"})
    frame = await client.next(timeout=5, command="MESSAGE")
    payload = json.loads(frame[2])
    assert frame[1]["destination"] in ("/user/queue/session", "/user/queue/errors"), frame
    return payload


async def _sample(node, name: str) -> float:
    return node.metrics.registry.get_sample_value(name) or 0.0


async def test_capacity_holds_across_two_nodes(node_factory, redis_sync):
    a = await node_factory(node_id="cap-a", rooms={"cap": 3}, history=False)
    b = await node_factory(node_id="cap-b", rooms={"cap": 3}, history=False)
    room = room_id_for("default", "cap")
    nodes = [a, b, a, b, a, b, b, a]
    clients = [
        await connected(n.ws_url, token_for(n.settings, f"u{i}", "spidi:user")) for i, n in enumerate(nodes)
    ]
    # Every HELLO at once: each node's own count is 0 when they arrive, only Redis can say no.
    outcomes = await asyncio.gather(*(hello_outcome(c, "cap", f"c{i}") for i, c in enumerate(clients)))
    welcomed = [i for i, o in enumerate(outcomes) if o.get("type") == "WELCOME"]
    refused = [i for i, o in enumerate(outcomes) if o.get("code") == "ROOM_FULL"]
    assert len(welcomed) == 3 and len(refused) == 5, outcomes
    assert redis_sync.zcard(keys.room_online(room)) == 3
    assert len(a.presence.sessions) + len(b.presence.sessions) == 3
    # A refused join leaves nothing behind: no user index, no node index entry.
    await asyncio.gather(a.store.flush(), b.store.flush())
    indexed = redis_sync.hlen(keys.node_sessions("cap-a")) + redis_sync.hlen(keys.node_sessions("cap-b"))
    assert indexed == 3
    for i in refused:
        assert redis_sync.hlen(keys.user_sessions("default", f"u{i}")) == 0

    # The 4th gets ROOM_FULL whichever node it hits, until someone leaves.
    for n in (a, b):
        late = await connected(n.ws_url, token_for(n.settings, "late", "spidi:user"))
        assert (await hello_outcome(late, "cap"))["code"] == "ROOM_FULL"
        await late.close()
    leaver = welcomed[0]
    await clients[leaver].app("/app/leave", {"sessionId": outcomes[leaver]["sessionId"]}, receipt="bye")
    await clients[leaver].next(command="RECEIPT")
    other = b if nodes[leaver] is a else a  # the freed place is taken through the other node
    again = await connected(other.ws_url, token_for(other.settings, "again", "spidi:user"))
    assert (await hello_outcome(again, "cap"))["type"] == "WELCOME"
    assert redis_sync.zcard(keys.room_online(room)) == 3

    # A node configured with a lower capacity (2 < 3 online) refuses newcomers and drops nobody.
    c = await node_factory(node_id="cap-c", rooms={"cap": 2}, history=False)
    newcomer = await connected(c.ws_url, token_for(c.settings, "new", "spidi:user"))
    assert (await hello_outcome(newcomer, "cap"))["code"] == "ROOM_FULL"
    for i in welcomed[1:]:
        sid = outcomes[i]["sessionId"]
        await clients[i].app("/app/heartbeat", {"sessionId": sid, "latencyMs": 4}, receipt=f"hb{i}")
        assert (await clients[i].next(command="RECEIPT"))[1]["receipt-id"] == f"hb{i}"
    await asyncio.gather(a.store.flush(), b.store.flush(), c.store.flush())
    assert redis_sync.zcard(keys.room_online(room)) == 3
    assert await _sample(a, "spidi_capacity_checks_degraded_total") == 0
    for client in (*clients, again, newcomer):
        await client.close()


async def test_heartbeat_right_behind_a_resume_hello_finds_its_session(node):
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    sid = (await alice.hello("lobby"))["sessionId"]
    alice.ws.transport.abort()  # abrupt: the session waits for a resume
    await asyncio.sleep(0.2)
    again = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    hello = {"roomCode": "lobby", "clientId": "c1", "appVersion": "1.0.0", "resumeSessionId": sid}
    beat = {"sessionId": sid, "latencyMs": 9}
    sent = {"destination": "/app/hello", "content-type": "application/json", "receipt": "h"}
    # HELLO and HEARTBEAT in one WebSocket message: the heartbeat must wait for the HELLO.
    await again.ws.send(
        (
            encode("SEND", sent, json.dumps(hello))
            + encode("SEND", {**sent, "destination": "/app/heartbeat", "receipt": "b"}, json.dumps(beat))
        ).decode()
    )
    welcome = await again.json("/user/queue/session", type_="WELCOME")
    assert welcome["sessionId"] == sid and welcome["resumed"] is True
    receipts = [(await again.next(command="RECEIPT"))[1]["receipt-id"] for _ in range(2)]
    assert receipts == ["h", "b"]
    assert again.frames.empty() and not [f for f in again.skipped if "errors" in f[1].get("destination", "")]
    assert node.presence.sessions[sid].heartbeats == 1
    await again.close()


async def test_hello_keeps_working_when_redis_is_down(node_factory):
    own = Path(tempfile.mkdtemp(prefix="spidi-degraded-"))
    redis = EmbeddedRedis(own).start()
    try:
        node = await node_factory(
            redis_url=redis.url, history=False, rooms={"small": 2}, redis_join_timeout_ms=500
        )
        room = room_id_for("default", "small")
        users = [
            await connected(node.ws_url, token_for(node.settings, f"d{i}", "spidi:user")) for i in range(3)
        ]
        redis.stop()
        started = time.monotonic()
        first = await hello_outcome(users[0], "small")
        assert first["type"] == "WELCOME", first
        assert time.monotonic() - started < 3  # no answer from Redis: admitted after the timeout
        assert not node.store.healthy
        second = await hello_outcome(users[1], "small")  # Redis known down: admitted at once
        assert second["type"] == "WELCOME", second
        # The local count still holds the line.
        assert (await hello_outcome(users[2], "small"))["code"] == "ROOM_FULL"
        assert await _sample(node, "spidi_capacity_checks_degraded_total") == 2
        await users[0].app("/app/heartbeat", {"sessionId": first["sessionId"], "latencyMs": 5}, receipt="r")
        assert (await users[0].next(command="RECEIPT"))[1]["receipt-id"] == "r"

        # Redis back (empty: no persistence): the buffered joins land, unconditionally.
        redis.start()
        assert await node.store.flush(15)
        online = await node.store.redis.zrange(keys.room_online(room), 0, -1)
        assert sorted(m.decode() for m in online) == sorted([first["sessionId"], second["sessionId"]])
        # And the check is cluster-wide again: the room is full in Redis as well.
        late = await connected(node.ws_url, token_for(node.settings, "late", "spidi:user"))
        await users[1].app("/app/leave", {"sessionId": second["sessionId"]}, receipt="l")
        await users[1].next(command="RECEIPT")
        assert (await hello_outcome(late, "small"))["type"] == "WELCOME"
        assert await _sample(node, "spidi_capacity_checks_degraded_total") == 2
        assert not node.presence.capacity_degraded
        for client in (*users, late):
            await client.close()
        await node.stop()  # while Redis is up: a node stopping without Redis waits out its flush timeouts
    finally:
        redis.stop()


async def test_slow_redis_admits_on_the_local_count_and_redis_then_holds_the_session(
    node_factory, redis_sync
):
    a = await node_factory(node_id="slow-a", rooms={"solo": 1}, history=False)
    b = await node_factory(node_id="slow-b", rooms={"solo": 1}, history=False, redis_join_timeout_ms=300)
    room = room_id_for("default", "solo")
    first = await connected(a.ws_url, token_for(a.settings, "first", "spidi:user"))
    assert (await hello_outcome(first, "solo"))["type"] == "WELCOME"
    second = await connected(b.ws_url, token_for(b.settings, "second", "spidi:user"))
    # Redis holds every write for 1.5 s: B's join gets no answer in time, so B admits on its own
    # count (0 < 1), and Redis, which would refuse it, must take it anyway when it resumes.
    redis_sync.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    started = time.monotonic()
    welcome = await hello_outcome(second, "solo")
    assert welcome["type"] == "WELCOME" and time.monotonic() - started < 1.4, welcome
    assert await _sample(b, "spidi_capacity_checks_degraded_total") == 1
    assert await b.store.flush(5)
    members = {m for m in redis_sync.zrange(keys.room_online(room), 0, -1)}
    assert welcome["sessionId"] in members and len(members) == 2
    for client in (first, second):
        await client.close()


async def test_a_connection_closed_while_its_hello_waits_leaves_no_session(node_factory, redis_sync):
    node = await node_factory(node_id="gone", history=False, redis_join_timeout_ms=5000)
    client = await connected(node.ws_url, token_for(node.settings, "gone", "spidi:user"))
    redis_sync.execute_command("CLIENT", "PAUSE", 700, "WRITE")
    await client.app("/app/hello", {"roomCode": "lobby", "clientId": "c", "appVersion": "1"})
    await asyncio.sleep(0.2)  # the HELLO is waiting for Redis
    client.ws.transport.abort()
    deadline = time.monotonic() + 5
    ended = 'spidi_sessions_ended_total{reason="disconnect"}'
    while node.metrics.registry.get_sample_value("spidi_sessions_ended_total", {"reason": "disconnect"}) != 1:
        assert time.monotonic() < deadline, ended
        await asyncio.sleep(0.05)
    assert not node.presence.sessions and not node.presence.rooms
    assert await node.store.flush(5)
    assert redis_sync.zcard(keys.room_online(room_id_for("default", "lobby"))) == 0
    assert redis_sync.hlen(keys.node_sessions("gone")) == 0
