"""The room fan-out on its own, against the test Redis: claims, announcements and delivery.

Each ``RoomFanout`` stands for one process. Its presence is a small recorder of the three calls the
fan-out makes (``watched_changed``, ``remote_changes``, ``store.publish``), with a real
``HotStore`` as its store, so what is published goes through Redis as a node's would.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from spidi_server import fanout
from spidi_server.fanout import RoomFanout
from spidi_server.stores import keys
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import HotStore


async def until(predicate, timeout: float = 5.0, what: str = "condition"):
    """Poll ``predicate`` until it is truthy; its value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class RecordingPresence:
    """What RoomFanout asks of presence, recorded: the watched sets and the remote changes."""

    def __init__(self, store: HotStore):
        self.store = store
        self.watched: set[str] = set()
        self.watched_calls = 0
        self.changes: list[tuple[str, dict]] = []

    def watched_changed(self, watched: set[str]) -> None:
        self.watched = set(watched)
        self.watched_calls += 1

    def remote_changes(self, room_id: str, payload: dict) -> None:
        self.changes.append((room_id, payload))

    def changes_of(self, room_id: str) -> list[dict]:
        return [payload for room, payload in self.changes if room == room_id]


@pytest.fixture
async def processes(redis_url, redis_sync):
    """``start(node_id)`` -> a started RoomFanout with its RecordingPresence; all stopped after."""
    started = []

    async def start(node_id: str) -> RoomFanout:
        store = HotStore(connect(redis_url), node_id=node_id)
        await store.start()
        room_fanout = RoomFanout(connect(redis_url), RecordingPresence(store), node_id)
        await room_fanout.start()
        started.append(room_fanout)
        return room_fanout

    yield start
    for room_fanout in started:
        await room_fanout.stop()
        await room_fanout.presence.store.close()
        await room_fanout.redis.aclose()


async def test_start_learns_the_rooms_other_processes_watch_and_drops_lapsed_claims(processes, redis_sync):
    now = time.time()
    redis_sync.zadd(keys.WATCHED, {"room-live": now + 60, "room-lapsed": now - 1})
    a = await processes("a")
    assert a.watched == {"room-live"}
    assert a.presence.watched == {"room-live"}
    assert redis_sync.zrange(keys.WATCHED, 0, -1) == ["room-live"]


async def test_watch_claims_the_room_and_announces_it(processes, redis_sync):
    a, b = await processes("a"), await processes("b")
    assert "room-1" not in b.watched
    await a.watch("room-1")
    assert a.local == {"room-1"} and "room-1" in a.watched
    expires = redis_sync.zscore(keys.WATCHED, "room-1")
    assert time.time() < expires <= time.time() + fanout.WATCH_TTL_S
    # The other process hears the announcement and starts publishing that room's changes.
    await until(lambda: "room-1" in b.presence.watched, what="b to hear the watch")
    assert "room-1" in b.watched
    await a.watch("room-1")  # again: nothing more to do
    assert redis_sync.zcard(keys.WATCHED) == 1


async def test_changes_reach_every_process_watching_the_room_the_publisher_at_once_and_once(processes):
    a, b = await processes("a"), await processes("b")
    await a.watch("room-1")
    await b.watch("room-1")
    joined = [{"sessionId": "s1", "userId": "ann"}]
    b.publish("room-1", joined, {"s0": "leave"}, [{"sessionId": "s2", "latencyMs": 12.5}])
    expected = {"n": "b", "j": joined, "l": {"s0": "leave"}, "u": [{"sessionId": "s2", "latencyMs": 12.5}]}
    # The publisher's own subscribers have it as it is queued, before Redis has even seen it.
    assert b.presence.changes_of("room-1") == [expected]
    await until(lambda: a.presence.changes_of("room-1"), what="a to receive b's changes")
    assert a.presence.changes_of("room-1") == [expected]
    # Redis echoed b's message to b before it delivered a's next one on the same channel: b skipped it.
    a.publish("room-1", [], {"s1": "leave"}, [])
    later = {"n": "a", "j": [], "l": {"s1": "leave"}, "u": []}
    await until(lambda: len(b.presence.changes_of("room-1")) == 2, what="b to receive a's changes")
    assert b.presence.changes_of("room-1") == [expected, later]
    assert a.presence.changes_of("room-1") == [expected, later]


async def test_a_failing_local_delivery_is_logged_and_the_change_still_goes_out(processes, caplog):
    a, b = await processes("a"), await processes("b")
    await a.watch("room-1")
    await b.watch("room-1")

    def broken(room_id: str, payload: dict) -> None:
        raise KeyError("sessionId")

    b.presence.remote_changes = broken
    b.publish("room-1", [{"sessionId": "s1"}], {}, [])  # the caller (a HELLO's admission) is not failed
    assert "delivering this process's changes of room room-1 failed" in caplog.text
    await until(lambda: a.presence.changes_of("room-1"), what="a to receive b's changes")
    assert a.presence.changes_of("room-1")[0]["j"] == [{"sessionId": "s1"}]


async def test_a_node_id_that_extends_another_is_not_taken_for_it(processes):
    a, a1 = await processes("a"), await processes("a1")
    await a.watch("room-1")
    a1.publish("room-1", [{"sessionId": "s1"}], {}, [])
    await until(lambda: a.presence.changes_of("room-1"), what="a to receive a1's changes")
    assert a.presence.changes_of("room-1")[0]["n"] == "a1"


async def test_unwatch_stops_delivery_here_and_the_claim_lapses_elsewhere(processes, redis_sync, monkeypatch):
    monkeypatch.setattr(fanout, "RENEW_S", 0.05)
    monkeypatch.setattr(fanout, "WATCH_TTL_S", 0.3)
    a, b = await processes("a"), await processes("b")
    await a.watch("room-1")
    await a.watch("room-2")
    first_expiry = redis_sync.zscore(keys.WATCHED, "room-2")
    await until(lambda: {"room-1", "room-2"} <= b.presence.watched, what="b to hear both watches")

    await a.unwatch("room-1")
    assert a.local == {"room-2"}
    # Still watched here: its claim is renewed past the first one's expiry...
    await until(
        lambda: redis_sync.zscore(keys.WATCHED, "room-2") > first_expiry + fanout.WATCH_TTL_S,
        what="room-2's claim to be renewed",
    )
    # ...while room-1's is not: it lapses and b stops publishing that room.
    await until(lambda: "room-1" not in b.presence.watched, what="room-1's claim to lapse")
    assert "room-2" in b.presence.watched

    # Delivery in order on one connection: once room-2's change is here, room-1's would be too.
    b.presence.store.publish(
        keys.roster_channel("room-1"), orjson.dumps({"n": "b", "j": [], "l": {}, "u": []})
    )
    b.publish("room-2", [], {"s9": "timeout"}, [])
    await until(lambda: a.presence.changes_of("room-2"), what="room-2's change")
    assert a.presence.changes_of("room-1") == []


async def test_room_definition_changes_and_alerts_are_handed_on(processes, redis_sync):
    a = await processes("a")
    refreshed = asyncio.Event()
    alerts: list[dict] = []

    async def rooms_changed() -> None:
        refreshed.set()

    a.on_rooms_changed = rooms_changed
    a.on_alert = alerts.append
    redis_sync.publish(keys.ROOMS_CHANGED, "t1/lobby")
    redis_sync.publish(keys.ALERTS_CHANNEL, orjson.dumps({"type": "ALERT", "tenant": "t1"}))
    await asyncio.wait_for(refreshed.wait(), 5.0)
    await until(lambda: alerts, what="the alert")
    assert alerts == [{"type": "ALERT", "tenant": "t1"}]
