"""The hot store's heartbeats: where they wait for the flusher, and when they wake it.

Heartbeats come from two places. Most come from the node's heartbeat lane (a ``BeatSource``:
already packed per room, newest per session), which is drained with each pipeline; the rest are
kept here: written directly (``HotStore.heartbeat``), re-asserted after a loss, or back from a
failed batch (room id -> session id -> (ms, latency), the newest winning). A heartbeat never wakes
anything by itself: the sources are looked at once per flush interval (``watch``), and the
flusher is woken once its last take of every heartbeat is ``interval_s`` old, or at once for
urgent ones (watched rooms, whose roster updates ride on them).

The flusher (stores/hot_store.py) owns one ``BeatBuffer``; what it sends is heartbeats.lua's
argument per room, b"<sid> <ms> <latency>" lines (stores/commands.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class BeatSource(Protocol):
    """Where heartbeats wait for the flusher (``presence.beats.LaneDrain``, over the node's lane)."""

    def pending(self) -> int: ...  # heartbeats waiting (one per session at most)

    # room id -> heartbeats.lua's argument (b"<sid> <ms> <latency>" lines), newest per session;
    # what it hands out is the flusher's from then on. ``urgent_only``: only the urgent ones (the
    # rest stays in the source for a later take).
    def take_beats(self, urgent_only: bool = False) -> dict[str, bytes]: ...

    # True while it holds heartbeats someone waits for (their side effects: roster updates of
    # watched rooms): those go at the flush interval, the others at the heartbeat interval.
    def urgent(self) -> bool: ...


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
        """Keep a heartbeat; a newer one of the same session replaces it."""
        beats = self.kept.get(room_id)
        if beats is None:
            beats = self.kept[room_id] = {}
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

    def take(self, everything: bool) -> dict[str, bytes]:
        """The heartbeats packed per room (heartbeats.lua's argument): those kept here first, then
        each source's, newer, after them (the script applies them in order, so the newest wins);
        the sources' urgent heartbeats only unless ``everything``."""
        beats: dict[str, bytes] = {}
        if everything:
            self.last_take = time.monotonic()
        if self.kept:
            kept, self.kept = self.kept, {}
            for room_id, room_beats in kept.items():
                beats[room_id] = "\n".join([f"{sid} {b[0]} {b[1]}" for sid, b in room_beats.items()]).encode()
        for source in self.sources:
            for room_id, packed in source.take_beats(not everything).items():
                older = beats.get(room_id)
                beats[room_id] = packed if older is None else older + b"\n" + packed
        return beats

    def requeue(self, beats: dict[str, bytes]) -> None:
        """Keep a failed batch's heartbeats again, behind those kept since (newer: they win; the
        sources' beats, not taken yet, are newer still and go after these)."""
        for room_id, packed in beats.items():
            merged = {}
            for line in packed.decode().split("\n"):
                sid, ms, latency = line.split(" ")
                merged[sid] = (ms, latency)  # a later line of the same session is newer
            merged.update(self.kept.get(room_id, {}))
            self.kept[room_id] = merged

    async def watch(self, wake: asyncio.Event) -> None:
        """Set ``wake`` when a source holds heartbeats: looked at once per flush interval, so a
        heartbeat costs nothing here however many arrive; ``wake`` is set once the last take of
        all heartbeats is ``interval_s`` old, or at once for urgent ones."""
        sources = self.sources
        check, interval = self.check_s, self.interval_s
        while True:
            await asyncio.sleep(check)
            if wake.is_set():
                continue
            due = time.monotonic() - self.last_take >= interval
            for source in sources:
                if source.pending() and (due or source.urgent()):
                    wake.set()
                    break
