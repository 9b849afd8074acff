"""Redis loses its data under a running node (FLUSHALL, a restart without persistence): the node
notices through its marker key and writes its live sessions again within one heartbeat interval."""

from __future__ import annotations

import asyncio
import time

import pytest

from spidi_server.rooms import room_id_for

from ..conftest import token_for
from ..stomp_client import connected
from .conftest import Member, expected_view, matches, metric, redis_view, wait_until

HEARTBEAT_MS = 2000  # the interval clients are told; the node must re-assert within it
CLIENTS = 10


def _same_members(url: str, node, room: str) -> bool:
    """Redis lists exactly the node's sessions of the room (scores move while clients beat)."""
    view = redis_view(url, room_id_for("default", room), node.node_id)
    want = expected_view(node, room)
    return (
        set(view["online"]) == set(want["online"])
        and set(view["latency"]) == set(want["latency"])
        and view["users"] == want["users"]
        and view["node"] == want["node"]
        and all(h.get("userId") for h in view["sessions"].values())
        and view["metrics"].get("code") == room
        and node.node_id in view["nodes"]
    )


async def _lose_and_recover(node, url: str, room: str, lose) -> float:
    """Clients heartbeat, ``lose()`` wipes Redis; returns the seconds from the end of ``lose()``
    (Redis answering again, empty) until Redis holds the clients again."""
    members = [await Member.join(node, room, f"{room}-{i}") for i in range(CLIENTS)]
    for m in members:
        m.start(0.25)
    await wait_until(lambda: _same_members(url, node, room), 5, what="Redis before the loss")
    reasserts = await metric(node, "spidi_redis_reasserts_total")
    await lose()
    took = await wait_until(lambda: _same_members(url, node, room), 10, 0.01, "Redis re-asserted")
    assert await metric(node, "spidi_redis_reasserts_total") == reasserts + 1
    # A monitor arriving now sees every client, from Redis.
    monitor = await connected(node.ws_url, token_for(node.settings, "mon", "spidi:monitor"))
    await monitor.subscribe(f"/topic/rooms/{room}/roster")
    snapshot = await monitor.json(f"/topic/rooms/{room}/roster", type_="ROOM_ROSTER")
    assert snapshot["full"] and {u["sessionId"] for u in snapshot["users"]} == {m.sid for m in members}
    assert all(u["userId"] and u["latencyMs"] is not None for u in snapshot["users"])
    await monitor.subscribe(f"/topic/rooms/{room}/metrics")
    metrics = await monitor.json(f"/topic/rooms/{room}/metrics", type_="ROOM_METRICS")
    assert (metrics["online"], metrics["users"]) == (CLIENTS, CLIENTS)
    # Once the clients are quiet, every score and latency is each session's newest.
    for m in members:
        await m.stop()
    room_id = room_id_for("default", room)
    await wait_until(
        lambda: matches(redis_view(url, room_id, node.node_id), expected_view(node, room), node.node_id), 5
    )
    assert all(m.connected and m.sid in node.presence.sessions for m in members)
    for m in members:
        await m.leave()
    await monitor.close()
    return took


@pytest.mark.hardening(
    "fault",
    "FLUSHALL on Redis while 10 clients heartbeat (heartbeat interval 2 s)",
    "Within one heartbeat interval the room's online set, latencies, users, session hashes, node and user "
    "indexes are back in Redis; a monitor subscribing then sees all 10 with metrics online = 10",
)
async def test_flushall_is_reasserted_within_one_heartbeat_interval(node_factory, redis_url, redis_sync):
    node = await node_factory(
        node_id="flushed", heartbeat_interval_ms=HEARTBEAT_MS, heartbeat_timeout_ms=6000
    )

    async def flushall() -> None:
        redis_sync.flushall()

    took = await _lose_and_recover(node, redis_url, "flushed", flushall)
    assert took < HEARTBEAT_MS / 1000, took
    print(f"\nFLUSHALL: Redis matched the clients again {took * 1000:.0f} ms later")


@pytest.mark.hardening(
    "fault",
    "redis-server restarted without persistence (empty) while 10 clients heartbeat (heartbeat interval 2 s)",
    "Scripts reloaded and the live sessions written again within one heartbeat interval of Redis answering; "
    "a monitor subscribing then sees all 10",
)
async def test_redis_restarted_empty_is_reasserted_within_one_heartbeat_interval(own_redis, node_factory):
    server = own_redis(persistent=False)
    node = await node_factory(
        redis_url=server.url,
        node_id="restarted",
        heartbeat_interval_ms=HEARTBEAT_MS,
        heartbeat_timeout_ms=6000,
    )
    down_s = 0.0

    async def restart() -> None:
        nonlocal down_s
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        down_s = time.monotonic() - started

    took = await _lose_and_recover(node, server.url, "restarted", restart)  # from the new server's first PONG
    assert took < HEARTBEAT_MS / 1000, took
    print(
        f"\nredis restart (empty): down {down_s * 1000:.0f} ms, Redis matched the clients again "
        f"{took * 1000:.0f} ms after it answered"
    )
