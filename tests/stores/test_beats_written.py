"""Heartbeats reach Redis as a plain ``ZADD <online> XX`` and ``HSET <latency>`` per room, their
arguments packed by the lane (stores/beat_buffer.py): raw on a packing client, as ordinary
commands on any other (a cluster's); the same Redis state either way."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from spidi_core.lane_py import PackedBeats, pack_beats
from spidi_server.stores import keys
from spidi_server.stores.beat_buffer import BeatBuffer, unpack_beats
from spidi_server.stores.client import connect, takes_raw
from spidi_server.stores.hot_store import HotStore

ROOM = "beats-room"


class Source:
    """A lane's stand-in: one take of packed beats per room id."""

    def __init__(self) -> None:
        self.beats: dict[str, PackedBeats] = {}

    def pending(self) -> int:
        return sum(p.count for p in self.beats.values())

    def take_beats(self, urgent_only: bool = False) -> dict[str, PackedBeats]:
        out, self.beats = self.beats, {}
        return out

    def urgent(self) -> bool:
        return False

    def watching(self) -> bool:
        return False


@pytest.mark.parametrize("client_kind", ["packing", "stock"])
async def test_heartbeats_are_zadd_xx_and_hset(redis_url, redis_sync, client_kind):
    online, latency = keys.room_online(ROOM), keys.room_latency(ROOM)
    redis_sync.zadd(online, {"s1": 1, "s3": 1, "s4": 1})  # s2 left: not in the room
    redis_sync.hset(latency, mapping={"s3": "30", "s4": "40"})
    client = connect(redis_url) if client_kind == "packing" else aioredis.Redis.from_url(redis_url)
    assert takes_raw(client.pipeline()) == (client_kind == "packing")
    store = HotStore(client, node_id="beats")
    source = Source()
    store.add_beat_source(source)
    await store.start()
    try:
        redis_sync.config_resetstat()
        store.heartbeat(ROOM, "s4", 400, 41)  # kept by the store; the lane's newer beat wins
        source.beats = {
            ROOM: pack_beats([("s1", 100, 12.5), ("s2", 200, 20), ("s3", 300, None), ("s4", 401, None)])
        }
        assert await store.flush()
    finally:
        await store.close()
        await client.aclose()
    # ZADD XX: s2, removed, stays removed; s3's beat carried no latency: its last one stays.
    assert redis_sync.zrange(online, 0, -1, withscores=True) == [("s1", 100.0), ("s3", 300.0), ("s4", 401.0)]
    assert redis_sync.hmget(latency, ["s1", "s3", "s4"]) == ["12.5", "30", "41"]
    stats = redis_sync.info("commandstats")
    assert stats["cmdstat_zadd"]["calls"] == 1 and stats["cmdstat_hset"]["calls"] == 1
    assert "cmdstat_evalsha" not in stats and "cmdstat_eval" not in stats  # no script on the way


def test_a_failed_batch_is_kept_again_newest_winning():
    buffer = BeatBuffer()
    failed = {ROOM: pack_beats([("a", 100, 1), ("b", 100, 2), ("c", 100, None), ("a", 150, None)])}
    assert unpack_beats(failed[ROOM]) == {"a": (b"150", b"1"), "b": (b"100", b"2"), "c": (b"100", None)}
    buffer.put(ROOM, "b", 200, None)  # newer, without a latency: b's unsent 2 still goes
    buffer.put(ROOM, "c", 200, 7)
    buffer.requeue(failed)
    (again,) = buffer.take(True).values()
    assert unpack_beats(again) == {"a": (b"150", b"1"), "b": (b"200", b"2"), "c": (b"200", b"7")}
