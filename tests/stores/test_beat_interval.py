"""Heartbeats go to Redis at the heartbeat interval (``beat_interval_s``), other writes or not; the
urgent ones (watched rooms) at the flush interval, on their own; ``flush()`` takes them all."""

from __future__ import annotations

import asyncio
import time

from spidi_core.lane_py import PackedBeats, pack_beats
from spidi_server.stores import keys
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import REFUSED, HotStore

ROOM = "beat-room"
WATCHED = "beat-watched"  # a room some process watches: its heartbeats are urgent


class Source:
    """A heartbeat source like the presence's ``LaneDrain``: beats packed per room id, those of
    ``WATCHED`` urgent."""

    def __init__(self) -> None:
        self.lines: dict[str, list[tuple]] = {ROOM: [], WATCHED: []}
        self.takes = 0
        self.looks = 0  # how often the store looked at it (pending)
        self.watched = True  # WATCHED is watched: its heartbeats can turn urgent any time

    def beat(self, session_id: str, ms: int, room: str = ROOM) -> None:
        self.lines[room].append((session_id, ms, 5))

    def take_beats(self, urgent_only: bool = False) -> dict[str, PackedBeats]:
        self.takes += 1
        out = {}
        for room in (WATCHED,) if urgent_only else (ROOM, WATCHED):
            lines, self.lines[room] = self.lines[room], []
            if lines:
                out[room] = pack_beats(lines)
        return out

    def urgent(self) -> bool:
        return bool(self.lines[WATCHED])

    def watching(self) -> bool:
        return self.watched

    def pending(self) -> int:
        self.looks += 1
        return sum(len(lines) for lines in self.lines.values())


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_heartbeats_wait_for_the_interval_unless_urgent(redis_url, redis_sync):
    online, watched = keys.room_online(ROOM), keys.room_online(WATCHED)
    redis_sync.zadd(online, {"s1": 1, "s3": 1})  # ZADD XX: the sessions must be there
    redis_sync.zadd(watched, {"w1": 1, "w2": 1})
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

        # Another write does not take it along: it goes at the flush interval, the heartbeat waits.
        store.set_capacity(ROOM, 7)
        await until(lambda: redis_sync.hget(keys.room_metrics(ROOM), "capacity") == "7")
        assert redis_sync.zscore(online, "s1") == 1 and source.pending() == 1

        # An urgent heartbeat (a watched room) is sent at the flush interval, on its own: the
        # others still wait (a watched room does not speed up every room's heartbeats).
        source.beat("w1", 200, WATCHED)
        await until(lambda: redis_sync.zscore(watched, "w1") == 200)
        assert redis_sync.zscore(online, "s1") == 1 and source.pending() == 1

        # ... and a write carries the urgent ones waiting by then, not the others.
        source.beat("w2", 250, WATCHED)
        store.set_capacity(ROOM, 8)
        await until(lambda: redis_sync.zscore(watched, "w2") == 250)
        assert redis_sync.zscore(online, "s1") == 1 and source.pending() == 1

        # flush() does not wait for the interval: everything goes.
        source.beat("s3", 300)
        assert await store.flush()
        assert redis_sync.zscore(online, "s1") == 100 and redis_sync.zscore(online, "s3") == 300
        assert source.pending() == 0
    finally:
        await store.close()


async def test_heartbeats_alone_reach_redis_after_the_interval(redis_url, redis_sync):
    online, watched = keys.room_online(ROOM), keys.room_online(WATCHED)
    redis_sync.zadd(online, {"s1": 1, "s2": 1})
    redis_sync.zadd(watched, {"w1": 1})
    store = HotStore(connect(redis_url), node_id="beats", min_interval_s=0.01, beat_interval_s=0.05)
    source = Source()
    store.add_beat_source(source)
    await store.start()
    try:
        source.beat("s1", 100)
        await until(lambda: redis_sync.zscore(online, "s1") == 100)
        # Urgent heartbeats flowing all along do not hold the others back past the interval.
        source.beat("s2", 200)
        for ms in range(300, 320):
            source.beat("w1", ms, WATCHED)
            await asyncio.sleep(0.01)
            if redis_sync.zscore(online, "s2") == 200:
                break
        await until(lambda: redis_sync.zscore(online, "s2") == 200)
    finally:
        await store.close()


class RecordingSource(Source):
    """A ``Source`` that records, per take, whether only the urgent heartbeats were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[bool] = []

    def take_beats(self, urgent_only: bool = False) -> dict[str, PackedBeats]:
        self.asked.append(urgent_only)
        return super().take_beats(urgent_only)


async def test_a_join_goes_ahead_of_due_heartbeats_which_follow_at_once(redis_url, redis_sync):
    online = keys.room_online(ROOM)
    redis_sync.zadd(online, {"s1": 1})
    # No heartbeat interval: every batch would carry every heartbeat.
    store = HotStore(connect(redis_url), node_id="beats", min_interval_s=0.01, beat_interval_s=0.0)
    source = RecordingSource()
    store.add_beat_source(source)
    await store.start()
    try:
        await store.flush()
        source.asked.clear()
        # A due heartbeat and a HELLO's join arrive together: the join's batch leaves the
        # heartbeat for the next one (a batch of every room's heartbeats makes a HELLO wait).
        source.beat("s1", 100)
        fields = {"userId": "u1", "clientId": "c1", "ip": None, "roomCode": "code"}
        pending = store.join("join-room", "t1", "code", 10, "j1", "u1", 1_767_000_000_000, 120, fields)
        assert await pending.result not in (None, REFUSED)
        # The join's batch took the urgent heartbeats only; the next one takes them all (the
        # urgent ones, then the rest), without waiting for the flush interval.
        await until(lambda: redis_sync.zscore(online, "s1") == 100, timeout=1.0)
        assert source.asked[:3] == [True, True, False]

        # Once in a row only: joins arriving at every batch (a connect ramp) do not starve them.
        source.asked.clear()
        source.beat("s1", 200)
        for n in range(5):
            store.join("join-room", "t1", "code", 10, f"k{n}", "u1", 1_767_000_000_000, 120, fields)
            await asyncio.sleep(0.012)
        await until(lambda: redis_sync.zscore(online, "s1") == 200, timeout=1.0)
        assert False in source.asked[:3]  # the batch after the first join's: [True], [True, False]
    finally:
        await store.close()


async def test_with_no_room_watched_the_store_looks_only_when_heartbeats_fall_due(redis_url, redis_sync):
    online = keys.room_online(ROOM)
    redis_sync.zadd(online, {"s1": 1})
    store = HotStore(connect(redis_url), node_id="beats", min_interval_s=0.01, beat_interval_s=0.1)
    source = Source()
    source.watched = False
    store.add_beat_source(source)
    await store.start()
    try:
        await store.flush()
        looks = source.looks
        await asyncio.sleep(0.5)
        # Every 100 ms (the heartbeat interval) instead of every 10 ms (the flush interval).
        assert source.looks - looks <= 8
        source.beat("s1", 100)
        await until(lambda: redis_sync.zscore(online, "s1") == 100, timeout=1.0)
        # A room watched from now on: looked at every flush interval again.
        source.watched = True
        await asyncio.sleep(0.15)  # (the look in progress may last up to one heartbeat interval)
        looks = source.looks
        await asyncio.sleep(0.2)
        assert source.looks - looks >= 10
    finally:
        await store.close()


class ManyRoomsSource:
    """A source with the heartbeats of ``rooms`` unwatched rooms of ``sessions`` each."""

    def __init__(self, rooms: int, sessions: int) -> None:
        self.rooms = {f"part-room-{r}": [f"s{r}-{n}" for n in range(sessions)] for r in range(rooms)}
        self.ms = 0
        self.full = False
        self.takes: list[bool] = []

    def beat_all(self, ms: int) -> None:
        self.ms, self.full = ms, True

    def pending(self) -> int:
        return sum(map(len, self.rooms.values())) if self.full else 0

    def urgent(self) -> bool:
        return False

    def watching(self) -> bool:
        return True  # looked at every flush interval, as with a watched room elsewhere

    def take_beats(self, urgent_only: bool = False) -> dict[str, PackedBeats]:
        self.takes.append(urgent_only)
        if urgent_only or not self.full:
            return {}
        self.full = False
        return {room: pack_beats([(sid, self.ms, 3) for sid in sids]) for room, sids in self.rooms.items()}


async def test_a_large_load_of_heartbeats_goes_in_parts_with_a_join_between(redis_url, redis_sync):
    # 8 rooms of 2,000 heartbeats: ~1 MB, about four parts of at most 256 KiB.
    source = ManyRoomsSource(8, 2000)
    for room, sids in source.rooms.items():
        redis_sync.zadd(keys.room_online(room), dict.fromkeys(sids, 1))
    store = HotStore(connect(redis_url), node_id="parts", min_interval_s=0.01, beat_interval_s=0.0)
    store.add_beat_source(source)
    batches: list[int] = []
    joins: list = []
    fields = {"userId": "u1", "clientId": "c1", "ip": None, "roomCode": "code"}

    def on_flush(commands: int, seconds: float, ok: bool) -> None:
        batches.append(commands)
        if source.ms == 500 and not joins:  # a HELLO arriving as the first part is answered
            joins.append(
                store.join("join-room", "t1", "code", 10, "j1", "u1", 1_767_000_000_000, 120, fields)
            )

    store.on_flush = on_flush
    await store.start()
    try:
        await store.flush()
        batches.clear()
        source.beat_all(500)
        # The first part goes; the join that arrives meanwhile is answered before the last part.
        await until(lambda: joins)
        assert await joins[0].result not in (None, REFUSED)
        last_room = keys.room_online("part-room-7")
        assert redis_sync.zscore(last_room, "s7-1999") == 1  # not written yet
        await until(lambda: redis_sync.zscore(last_room, "s7-1999") == 500)
        for room, sids in source.rooms.items():
            assert redis_sync.zscore(keys.room_online(room), sids[0]) == 500
            assert redis_sync.hget(keys.room_latency(room), sids[-1]) == "3"
        # Heartbeat batches of 2 commands per room: more than one batch carried them.
        assert len([b for b in batches if b >= 2]) >= 3
        # flush() returns once all of it is written (in parts too).
        source.beat_all(600)
        assert await store.flush()
        assert all(
            redis_sync.zscore(keys.room_online(room), sids[0]) == 600 for room, sids in source.rooms.items()
        )
    finally:
        await store.close()
