"""The hot store's heartbeats: where they wait for the flusher, and when they wake it.

Heartbeats come from two places. Most come from the node's heartbeat lane (a ``BeatSource``:
already packed per room, newest per session), which is drained with each pipeline; the rest are
kept here: written directly (``HotStore.heartbeat``), re-asserted after a loss, or back from a
failed batch (room id -> session id -> (ms, latency), the newest winning). A heartbeat never wakes
anything by itself: the sources are looked at once per flush interval (``watch``), and the
flusher is woken once its last take of every heartbeat is ``interval_s`` old, or at once for
urgent ones (watched rooms, whose roster updates ride on them).

The flusher (stores/hot_store.py) owns one ``BeatBuffer``. A room's heartbeats travel as a
``PackedBeats`` (``spidi_core.lane_py.pack_beats``): the arguments of a ``ZADD <online> XX`` and an
``HSET <latency>``, already in RESP, so that per heartbeat nothing but C touches them on their way to
Redis. ``queue_beats`` puts each command's head in front and queues the two plain commands.

Why not a script: heartbeats.lua split one "<sid> <ms> <latency>" argument with ``gmatch`` and
called ZADD and HSET from Lua; the splitting, Lua's strings and its garbage collector were about
half of Redis's time on heartbeats: the same two commands sent plainly cost Redis ~45 % less
(benchmarks/redis_heartbeat_script.py), ~30 % of Redis's CPU per heartbeat in the load benchmark
(benchmarks/results/20261205T0230-issue15-flush-ab.md). ZADD XX alone keeps what the script
promised: a heartbeat never resurrects a session that some other path removed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from spidi_core.lane_py import PackedBeats, pack_beats

from ..tasks import GRID_S, next_run
from . import keys
from .client import RawCommand


class BeatSource(Protocol):
    """Where heartbeats wait for the flusher (``presence.beats.LaneDrain``, over the node's lane)."""

    def pending(self) -> int: ...  # heartbeats waiting (one per session at most)

    # room id -> its heartbeats packed (``PackedBeats``), newest per session; what it hands out
    # is the flusher's from then on. ``urgent_only``: only the urgent ones (the
    # rest stays in the source for a later take).
    def take_beats(self, urgent_only: bool = False) -> dict[str, PackedBeats]: ...

    # True while it holds heartbeats someone waits for (their side effects: roster updates of
    # watched rooms): those go at the flush interval, the others at the heartbeat interval.
    def urgent(self) -> bool: ...

    # True while it may come to hold urgent heartbeats (some room of its is watched): only then
    # is it looked at every flush interval; otherwise when its heartbeats fall due.
    def watching(self) -> bool: ...


class BeatBuffer:
    """The heartbeats waiting for the next pipeline, kept here or in the sources."""

    def __init__(self, min_interval_s: float = 0.0, beat_interval_s: float = 0.0):
        # Heartbeats not in a source: room id -> session id -> (ms, latency), the newest winning.
        self.kept: dict[str, dict[str, tuple]] = {}
        self.sources: list[BeatSource] = []  # drained with every pipeline (add_source)
        self.check_s = max(min_interval_s, 0.005)  # how often the sources are looked at
        # Heartbeats alone wake the flusher at most this often after its last batch: Redis's cost
        # per heartbeat falls with bigger batches (fewer script calls, each on a warmer cache:
        # 4.2 -> 2.8 us at 20,000/s), the node's with fewer pipelines. Other writes still go at
        # ``min_interval_s`` and carry the heartbeats waiting by then. An interval not above the
        # look's own period: every look that finds heartbeats wakes the flusher, as before.
        self.interval_s = beat_interval_s if beat_interval_s > self.check_s else 0.0
        self.last_take = 0.0  # monotonic time the flusher last took all the sources' heartbeats

    def add_source(self, source: BeatSource) -> None:
        """Drain ``source``'s heartbeats with every pipeline (a presence's lane)."""
        self.sources.append(source)

    def put(self, room_id: str, session_id: str, ms, latency) -> None:
        """Keep a heartbeat; a newer one of the same session replaces it (one without a latency
        keeps the latency of the one it replaces: Redis has not seen that one yet)."""
        beats = self.kept.get(room_id)
        if beats is None:
            beats = self.kept[room_id] = {}
        if latency is None:
            older = beats.get(session_id)
            if older is not None:
                latency = older[1]
        beats[session_id] = (ms, latency)

    def put_unless_newer(self, room_id: str, session_id: str, ms, latency) -> None:
        """Keep a heartbeat unless one of the same session is already kept (it is newer)."""
        beats = self.kept.get(room_id)
        if beats is None:
            beats = self.kept[room_id] = {}
        beats.setdefault(session_id, (ms, latency))

    def drop(self, room_id: str, session_id: str) -> None:
        """Forget a session's kept heartbeat (it left)."""
        beats = self.kept.get(room_id)
        if beats is not None:
            beats.pop(session_id, None)

    def sources_pending(self) -> int:
        """Heartbeats waiting in the sources."""
        return sum(source.pending() for source in self.sources)

    def count(self) -> int:
        """Heartbeats waiting, kept here or in the sources."""
        return sum(len(b) for b in self.kept.values()) + self.sources_pending()

    def due(self, now: float) -> bool:
        """Whether every heartbeat should go now: the last take of them all is ``interval_s`` old."""
        return now - self.last_take >= self.interval_s

    def take(self, everything: bool) -> dict[str, PackedBeats]:
        """The heartbeats packed per room: those kept here first, then each source's, newer, after
        them (ZADD and HSET apply their pairs in order, so the newest wins); the sources' urgent
        heartbeats only unless ``everything``."""
        beats: dict[str, PackedBeats] = {}
        if everything:
            self.last_take = time.monotonic()
        if self.kept:
            kept, self.kept = self.kept, {}
            for room_id, room_beats in kept.items():
                if room_beats:
                    beats[room_id] = pack_beats([(sid, b[0], b[1]) for sid, b in room_beats.items()])
        for source in self.sources:
            for room_id, packed in source.take_beats(not everything).items():
                older = beats.get(room_id)
                beats[room_id] = packed if older is None else _joined(older, packed)
        return beats

    def requeue(self, beats: dict[str, PackedBeats]) -> None:
        """Keep a failed batch's heartbeats again, behind those kept since (newer: they win, yet a
        newer one without a latency keeps the older one's; the sources' beats, not taken yet, are
        newer still and go after these)."""
        for room_id, packed in beats.items():
            merged = unpack_beats(packed)
            for sid, (ms, latency) in self.kept.get(room_id, {}).items():
                if latency is None and sid in merged:
                    latency = merged[sid][1]
                merged[sid] = (ms, latency)
            self.kept[room_id] = merged

    async def watch(self, wake: asyncio.Event) -> None:
        """Set ``wake`` when a source holds heartbeats: looked at once per flush interval, so a
        heartbeat costs nothing here however many arrive; ``wake`` is set once the last take of
        all heartbeats is ``interval_s`` old, or at once for urgent ones."""
        sources = self.sources
        check, interval = self.check_s, self.interval_s
        loop = asyncio.get_running_loop()
        while True:
            if interval and not any(source.watching() for source in sources):
                # Nothing can be urgent: look when the heartbeats fall due, at a point of the
                # node's wake-up grid (tasks.GRID_S), not every flush interval: an idle node's
                # loop woke 100 times a second for this alone (~6 ms/s of CPU at 10,000 sessions,
                # benchmarks/results/20261205T0440-issue15-background-ab.md).
                due = loop.time() + max(check, self.last_take + interval - time.monotonic())
                await asyncio.sleep(next_run(due, GRID_S) - loop.time())
            else:
                await asyncio.sleep(check)
            if wake.is_set():
                continue
            due = time.monotonic() - self.last_take >= interval
            for source in sources:
                if source.pending() and (due or source.urgent()):
                    wake.set()
                    break


def _joined(older: PackedBeats, newer: PackedBeats) -> PackedBeats:
    """One room's heartbeats of two takes as one (``newer``'s pairs after ``older``'s: they win)."""
    return PackedBeats(
        older.count + newer.count,
        older.members + newer.members,
        older.latencies_count + newer.latencies_count,
        older.latencies + newer.latencies,
    )


def _bulks(data: bytes) -> list[bytes]:
    """The RESP bulk strings written one after another in ``data`` (``$<n>\\r\\n<n bytes>\\r\\n``...)."""
    out = []
    i, end = 0, len(data)
    while i < end:
        if data[i : i + 1] != b"$":
            raise ValueError(f"not a RESP bulk string at byte {i}")
        eol = data.index(b"\r\n", i)
        n = int(data[i + 1 : eol])
        out.append(data[eol + 2 : eol + 2 + n])
        i = eol + 4 + n
    return out


def unpack_beats(packed: PackedBeats) -> dict[str, tuple]:
    """The inverse of ``pack_beats``: session id -> (ms, latency or None) as bytes, the later pair
    of a session winning (a failed batch's heartbeats, kept again; rare, so plain Python)."""
    beats: dict[str, tuple] = {}
    members = _bulks(packed.members)
    for i in range(0, len(members), 2):
        beats[members[i + 1].decode()] = (members[i], None)
    latencies = _bulks(packed.latencies)
    for i in range(0, len(latencies), 2):
        sid = latencies[i].decode()
        beats[sid] = (beats[sid][0], latencies[i + 1])
    return beats


_ZADD_HEAD = b"$4\r\nZADD\r\n"
_XX = b"$2\r\nXX\r\n"
_HSET_HEAD = b"$4\r\nHSET\r\n"


def queue_beats(pipe, room_id: str, packed: PackedBeats, raw: bool) -> int:
    """Queue a room's heartbeats on ``pipe``: ``ZADD <online> XX`` of their times and, if any
    carried a latency, ``HSET <latency>`` of those; returns the number of commands (1 or 2).

    ``raw`` (``client.takes_raw(pipe)``): the commands go as bytes, their head written here and
    their arguments as the lane packed them. Otherwise (a cluster pipeline, a client of another
    encoding) the arguments are read back and queued as ordinary commands: the same commands.
    """
    online, latency = keys.room_online(room_id), keys.room_latency(room_id)
    if raw:
        key = online.encode()
        pipe.execute_command(
            "ZADD",
            RawCommand(
                b"*%d\r\n%s$%d\r\n%s\r\n%s%s"
                % (3 + 2 * packed.count, _ZADD_HEAD, len(key), key, _XX, packed.members)
            ),
        )
        if not packed.latencies_count:
            return 1
        key = latency.encode()
        pipe.execute_command(
            "HSET",
            RawCommand(
                b"*%d\r\n%s$%d\r\n%s\r\n%s"
                % (2 + 2 * packed.latencies_count, _HSET_HEAD, len(key), key, packed.latencies)
            ),
        )
        return 2
    pipe.execute_command("ZADD", online, "XX", *_bulks(packed.members))
    if not packed.latencies_count:
        return 1
    pipe.execute_command("HSET", latency, *_bulks(packed.latencies))
    return 2
