"""Heartbeats alone go to Redis at the heartbeat interval (``beat_interval_s``); other writes, an
urgent source (watched rooms) and ``flush()`` take them at once, as before."""

from __future__ import annotations

import asyncio
import time

from spidi_server.stores import keys
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import HotStore

ROOM = "beat-room"


class Source:
    """A heartbeat source like the presence's ``LaneDrain``: beats packed per room id."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.is_urgent = False
        self.takes = 0

    def beat(self, session_id: str, ms: int) -> None:
        self.lines.append(f"{session_id} {ms} 5")

    def pending(self) -> int:
        return len(self.lines)

    def take_beats(self) -> dict[str, bytes]:
        self.takes += 1
        lines, self.lines = self.lines, []
        return {ROOM: "\n".join(lines).encode()} if lines else {}

    def urgent(self) -> bool:
        return self.is_urgent


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_heartbeats_wait_for_the_interval_unless_carried_or_urgent(redis_url, redis_sync):
    online = keys.room_online(ROOM)
    redis_sync.zadd(online, {"s1": 1, "s2": 1, "s3": 1})  # ZADD XX: the sessions must be there
    store = HotStore(connect(redis_url), node_id="beats", min_interval_s=0.01, beat_interval_s=60.0)
    source = Source()
    store.add_beat_source(source)
    await store.start()
    try:
        await store.flush()  # the flusher's first batch: the 60 s interval runs from here
        takes = source.takes

        # Alone, a heartbeat waits: ten looks of the watcher (10 ms apart) leave it in the source.
        source.beat("s1", 100)
        await asyncio.sleep(0.1)
        assert source.takes == takes and redis_sync.zscore(online, "s1") == 1

        # Another write carries it at the flush interval.
        store.set_capacity(ROOM, 7)
        await until(lambda: redis_sync.hget(keys.room_metrics(ROOM), "capacity") == "7")
        assert redis_sync.zscore(online, "s1") == 100

        # An urgent source (rooms watched) is sent at the flush interval on its own.
        source.is_urgent = True
        source.beat("s2", 200)
        await until(lambda: redis_sync.zscore(online, "s2") == 200)

        # flush() does not wait for the interval either.
        source.is_urgent = False
        source.beat("s3", 300)
        assert await store.flush()
        assert redis_sync.zscore(online, "s3") == 300
    finally:
        await store.close()


async def test_heartbeats_alone_reach_redis_after_the_interval(redis_url, redis_sync):
    online = keys.room_online(ROOM)
    redis_sync.zadd(online, {"s1": 1})
    store = HotStore(connect(redis_url), node_id="beats", min_interval_s=0.01, beat_interval_s=0.05)
    source = Source()
    store.add_beat_source(source)
    await store.start()
    try:
        source.beat("s1", 100)
        await until(lambda: redis_sync.zscore(online, "s1") == 100)
    finally:
        await store.close()
