"""The reaper on its own, against the test Redis: ``reap_node`` and ``NodeLiveness``.

Sessions are put in Redis by a real ``HotStore`` under the dead node's id (as a node writes them),
so the test does not restate the key layout it reads back.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from spidi_server import reaper
from spidi_server.reaper import NodeLiveness, reap_node
from spidi_server.stores import events, keys
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import HotStore
from spidi_server.tasks import cancel_and_wait

TENANT = "t-reap"
SESSION_TTL_S = 60


async def until(predicate, timeout: float = 5.0, what: str = "condition"):
    """Poll ``predicate`` (sync or async) until it is truthy; its value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def redis(redis_url, redis_sync):
    """An asyncio client on the test Redis (emptied by ``redis_sync``)."""
    client = connect(redis_url)
    yield client
    await client.aclose()


async def hold_sessions(redis_url: str, node_id: str, sessions: list[tuple[str, str, str]]) -> None:
    """Write ``sessions`` (session id, room code, user id) to Redis as node ``node_id`` would."""
    store = HotStore(connect(redis_url), node_id=node_id)
    await store.start()
    try:
        now = int(time.time() * 1000)
        joins = []
        for sid, code, user in sessions:
            room_id = f"room-{code}"
            fields = {
                "userId": user,
                "clientId": f"c-{user}",
                "appVersion": "1.0",
                "device": "phone",
                "os": "linux",
                "ip": "10.0.0.1",
                "connectedAt": now - 1000,
                "roomCode": code,
                "tenant": TENANT,
                "nodeId": node_id,
            }
            joins.append(store.join(room_id, TENANT, code, 0, sid, user, now, SESSION_TTL_S, fields))
        assert await store.flush(5.0)
        results = [await j.result for j in joins]
        assert all(online > 0 for online in results), results  # admitted (capacity 0: no limit)
    finally:
        await store.close()


def stream_ends(redis_sync) -> list[dict]:
    return [e for _, e in redis_sync.xrange(keys.EVENTS_STREAM) if e["kind"] == events.SESSION_ENDED]


async def test_reap_node_ends_every_session_of_a_dead_node(redis, redis_url, redis_sync):
    await hold_sessions(
        redis_url, "dead", [("s1", "lobby", "ann"), ("s2", "lobby", "bob"), ("s3", "hall", "ann")]
    )
    assert redis_sync.hlen(keys.node_sessions("dead")) == 3
    listener = redis.pubsub(ignore_subscribe_messages=True)
    await listener.subscribe(keys.roster_channel("room-lobby"), keys.roster_channel("room-hall"))

    assert await reap_node(redis, "dead", by="n-live") == 3

    # Redis: nothing of the three sessions is left, in the rooms or in any index.
    assert not redis_sync.exists(keys.node_sessions("dead"))
    for room_id in ("room-lobby", "room-hall"):
        assert redis_sync.zcard(keys.room_online(room_id)) == 0
        assert not any(int(n) for n in redis_sync.hvals(keys.room_users(room_id)))
    for sid, room_id in (("s1", "room-lobby"), ("s2", "room-lobby"), ("s3", "room-hall")):
        assert not redis_sync.exists(keys.session(room_id, sid))
    for user in ("ann", "bob"):
        assert not redis_sync.hlen(keys.user_sessions(TENANT, user))

    # History: one session_ended per session, reason node_lost, with who left where, ended at the
    # last heartbeat Redis knew (when the node died, not when it was noticed).
    ends = {e["session_id"]: e for e in stream_ends(redis_sync)}
    assert set(ends) == {"s1", "s2", "s3"}
    assert {e["reason"] for e in ends.values()} == {"node_lost"}
    assert all(e["ended_at"] == e["last_heartbeat_at"] != "" for e in ends.values())
    assert (ends["s3"]["room_id"], ends["s3"]["room_code"], ends["s3"]["user_id"]) == (
        "room-hall",
        "hall",
        "ann",
    )
    assert ends["s2"]["tenant"] == TENANT and ends["s2"]["client_id"] == "c-bob"

    # Roster: one announcement per room, in the fan-out's format, naming the reaper.
    heard = {}
    while len(heard) < 2:
        message = await asyncio.wait_for(listener.get_message(timeout=1.0), 5.0)
        if message is not None:
            heard[keys.room_of_roster_channel(message["channel"].decode())] = message["data"]
    await listener.aclose()
    lobby, hall = orjson.loads(heard["room-lobby"]), orjson.loads(heard["room-hall"])
    assert lobby == {
        "n": "n-live",
        "reaped": True,
        "j": [],
        "l": {"s1": "node_lost", "s2": "node_lost"},
        "u": [],
    }
    assert hall == {"n": "n-live", "reaped": True, "j": [], "l": {"s3": "node_lost"}, "u": []}


async def test_reap_node_skips_sessions_already_gone_and_clears_their_index(redis, redis_url, redis_sync):
    await hold_sessions(redis_url, "dead", [("s1", "lobby", "ann"), ("s2", "lobby", "bob")])
    redis_sync.delete(keys.session("room-lobby", "s2"))  # expired with its TTL, say

    assert await reap_node(redis, "dead", reason="shutdown") == 1
    assert [e["session_id"] for e in stream_ends(redis_sync)] == ["s1"]
    assert stream_ends(redis_sync)[0]["reason"] == "shutdown"
    assert not redis_sync.exists(keys.node_sessions("dead"))
    # Nothing left to do the second time.
    assert await reap_node(redis, "dead") == 0
    assert len(stream_ends(redis_sync)) == 1


async def test_liveness_start_claims_the_id_and_ends_what_a_previous_process_left(
    redis, redis_url, redis_sync
):
    await hold_sessions(redis_url, "n1", [("old", "lobby", "ann")])
    reaped = []
    liveness = NodeLiveness(redis, "n1", on_reaped=reaped.append)
    await liveness.start()
    try:
        assert reaped == [1]
        assert [e["session_id"] for e in stream_ends(redis_sync)] == ["old"]
        assert redis_sync.sismember(keys.NODES, "n1")
        assert 0 < redis_sync.pttl(keys.node_alive("n1")) <= reaper.ALIVE_TTL_MS
    finally:
        await liveness.stop()
    # A clean stop gives the id up: nothing for the others to reap.
    assert not redis_sync.exists(keys.node_alive("n1"))
    assert not redis_sync.sismember(keys.NODES, "n1")


async def test_liveness_start_ends_what_every_dead_node_left_before_it_serves(
    redis, redis_url, redis_sync, monkeypatch
):
    """Every node died; the first one back, under a new id, ends their sessions before start()
    returns (not at its first periodic check): nobody else may be left to do it."""
    monkeypatch.setattr(reaper, "CHECK_S", 3600)  # the periodic check is not what ends them
    await hold_sessions(redis_url, "gone-a", [("ga", "lobby", "ann")])
    await hold_sessions(redis_url, "gone-b", [("gb", "hall", "bob")])
    redis_sync.sadd(keys.NODES, "gone-a", "gone-b")
    reaped = []
    liveness = NodeLiveness(redis, "fresh", on_reaped=reaped.append)
    await liveness.start()
    try:
        assert reaped == [2]
        assert {e["session_id"]: e["reason"] for e in stream_ends(redis_sync)} == {
            "ga": "node_lost",
            "gb": "node_lost",
        }
        assert redis_sync.smembers(keys.NODES) == {"fresh"}
    finally:
        await liveness.stop()


async def test_liveness_renews_its_key_and_it_expires_once_the_node_stops_beating(
    redis, redis_sync, monkeypatch
):
    monkeypatch.setattr(reaper, "RENEW_S", 0.05)
    monkeypatch.setattr(reaper, "ALIVE_TTL_MS", 400)
    monkeypatch.setattr(reaper, "CHECK_S", 3600)  # not under test here
    liveness = NodeLiveness(redis, "n1")
    await liveness.start()
    first = redis_sync.get(keys.node_alive("n1"))
    # Renewed: beats keep coming after the first one's expiry, so the key never lapses.
    alive = keys.node_alive("n1")
    await until(
        lambda: int(redis_sync.get(alive) or 0) > int(first) + reaper.ALIVE_TTL_MS,
        what="a beat written after the first one's expiry",
    )
    # Dies without a word (its tasks stop, no clean stop): the key expires by itself.
    await cancel_and_wait(liveness._tasks)
    await until(lambda: not redis_sync.exists(keys.node_alive("n1")), 3.0, what="the key to expire")
    assert redis_sync.sismember(keys.NODES, "n1")  # still listed: for the others to reap


async def test_check_reaps_only_nodes_whose_key_expired(redis, redis_url, redis_sync):
    await hold_sessions(redis_url, "dead", [("d1", "lobby", "ann"), ("d2", "hall", "bob")])
    await hold_sessions(redis_url, "alive", [("a1", "lobby", "cat")])
    redis_sync.sadd(keys.NODES, "dead", "alive")
    redis_sync.set(keys.node_alive("alive"), 1, px=60_000)
    reaped = []
    me = NodeLiveness(redis, "me", on_reaped=reaped.append)

    assert await me.check() == 2
    assert reaped == [2]
    assert sorted(e["session_id"] for e in stream_ends(redis_sync)) == ["d1", "d2"]
    assert redis_sync.smembers(keys.NODES) == {"alive"}
    assert redis_sync.hkeys(keys.node_sessions("alive")) == ["a1"]
    assert not redis_sync.exists(keys.node_reaping("dead"))  # the lock is released
    assert await me.check() == 0 and reaped == [2]


async def test_check_leaves_a_dead_node_another_reaper_holds(redis, redis_url, redis_sync):
    await hold_sessions(redis_url, "dead", [("d1", "lobby", "ann")])
    redis_sync.sadd(keys.NODES, "dead")
    redis_sync.set(keys.node_reaping("dead"), "other-reaper", px=30_000)

    assert await NodeLiveness(redis, "me").check() == 0
    assert redis_sync.hkeys(keys.node_sessions("dead")) == ["d1"]
    assert not stream_ends(redis_sync)


async def test_a_running_node_reaps_a_node_that_stopped_beating(redis, redis_url, redis_sync, monkeypatch):
    monkeypatch.setattr(reaper, "RENEW_S", 0.05)
    monkeypatch.setattr(reaper, "ALIVE_TTL_MS", 300)
    monkeypatch.setattr(reaper, "CHECK_S", 0.05)
    reaped = []
    dying = NodeLiveness(redis, "dying")
    await dying.start()
    await hold_sessions(redis_url, "dying", [("s1", "lobby", "ann")])
    survivor = NodeLiveness(redis, "survivor", on_reaped=reaped.append)
    await survivor.start()
    try:
        await cancel_and_wait(dying._tasks)  # the process dies: no more beats, no clean stop
        await until(lambda: reaped, 5.0, what="the survivor to reap")
        assert reaped == [1]
        assert [e["session_id"] for e in stream_ends(redis_sync)] == ["s1"]
        await until(
            lambda: not redis_sync.sismember(keys.NODES, "dying"), what="the dead node to be forgotten"
        )
    finally:
        await survivor.stop()
