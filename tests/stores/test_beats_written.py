"""Heartbeats reach Redis as a plain ``ZADD <online> XX`` and ``HSET <latency>`` per room, their
arguments packed by the lane (stores/beat_buffer.py): raw on a packing client, as ordinary
commands on any other (a cluster's); the same Redis state either way."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from spidi_core.lane_py import PackedBeats, pack_beats
from spidi_server.stores import commands, keys
from spidi_server.stores.beat_buffer import BeatBuffer, unpack_beats
from spidi_server.stores.client import connect, takes_raw
from spidi_server.stores.hot_store import HotStore
from spidi_server.stores.scripts import Scripts

from .test_packed import Target

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


async def test_announcements_go_ahead_of_the_late_heartbeats(redis_url, redis_sync):
    """In a batch with every room's heartbeats, those of rooms nobody watches (``late``) go after
    the announcements: Redis delivers a PUBLISH as it runs it, so a roster change does not wait
    for a whole node's heartbeats. The writes land all the same."""
    watched, quiet = "beats-watched", "beats-quiet"
    redis_sync.zadd(keys.room_online(watched), {"w1": 1})
    redis_sync.zadd(keys.room_online(quiet), {f"q{n}": 1 for n in range(2000)})
    client = connect(redis_url)
    pubsub = client.pubsub()
    channel = keys.roster_channel(watched)
    await pubsub.subscribe(channel)
    try:
        pipe = client.pipeline(transaction=False)
        ops = [("publish", channel, b'{"updated":["w1"]}')]
        beats = {watched: pack_beats([("w1", 100, 7)])}
        late = {quiet: pack_beats([(f"q{n}", 200, 9) for n in range(2000)])}
        count, _, _ = commands.build(pipe, ops, beats, [], False, Target(Scripts(client)), late)
        names = [str(args[0]).upper() for args, _ in pipe.command_stack]
        assert names == ["ZADD", "HSET", "PUBLISH", "ZADD", "HSET"] and count == 5
        replies = await pipe.execute()
        assert replies[2] == 1  # one subscriber heard it
        message = None
        while message is None or message["type"] != "message":
            message = await pubsub.get_message(timeout=5.0)
        assert message["data"] == b'{"updated":["w1"]}'
        assert redis_sync.zscore(keys.room_online(watched), "w1") == 100
        assert redis_sync.zscore(keys.room_online(quiet), "q1999") == 200
        assert redis_sync.hget(keys.room_latency(quiet), "q0") == "9"
    finally:
        await pubsub.aclose()
        await client.aclose()
