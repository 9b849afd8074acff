"""Presence history this node alone knows: each room's minute sample and sessions' checkpoints.

Session starts and ends are recorded where they happen (``sessions``); this module records what
accumulates in between: every second each room's online count is added to its minute's
``RoomSample`` (finished minutes become ``room_sample`` events) with the latencies the heartbeat
lane gathered for the room, in all and per client group (the SLO breakdown: ``breakdown``), and
every ``checkpoint_interval_s`` each session that heartbeated gets a ``session_checkpoint``.
"""

from __future__ import annotations

from collections.abc import Iterable

from spidi_core import HeartbeatLane

from ..stores.hot_store import HotStore
from .breakdown import RoomGroups
from .model import Room, RoomSample, Session, minute, now_ms


class Sampling:
    """Builds the sample and checkpoint events and hands them to the hot store's event stream."""

    def __init__(self, store: HotStore, node_id: str, enabled: bool, lane: HeartbeatLane, top_n: int = 0):
        self.store = store
        self.lane = lane  # where the rooms' heartbeat latencies gather
        self.node_id = node_id
        self.enabled = enabled  # settings.history: without it nothing is recorded
        # settings.slo_breakdown_top_n: groups per room and dimension (0: no breakdown)
        self.top_n = top_n if enabled else 0

    def enter(self, session: Session) -> None:
        """Give a session that entered the lane its breakdown groups (app version, OS)."""
        if not self.top_n:
            return
        room = session.room
        if room.groups is None:
            room.groups = RoomGroups(self.top_n)
        session.groups = room.groups.join(session.app_version, session.os)
        self.lane.set_groups(session.session_id, *session.groups)

    def leave(self, session: Session) -> None:
        """A session left the lane: its groups' slots retire (freed after the next take)."""
        if session.groups is not None:
            session.room.groups.leave(session.groups)
            session.groups = None

    def _take(self, room: Room) -> None:
        room.sample.add_latencies(*self.lane.take_room_sample(room.key))
        if room.groups is not None:
            room.sample.add_groups(room.groups.labelled(self.lane.take_room_groups(room.key)))

    def sample(self, rooms: Iterable[Room], now: int | None = None) -> None:
        """Once a second: add each room's online count to its minute sample; emit finished minutes."""
        now = now_ms() if now is None else now
        bucket = minute(now)
        take = self._take
        for room in list(rooms):
            # The latencies of the second past belong to the minute the sample was in, as when
            # each heartbeat added its own.
            take(room)
            if room.sample.bucket != bucket:
                held = room.sample.last_online if room.sample.last_sec is not None else None
                self.emit(room)
                room.sample = RoomSample(bucket, held)
            room.sample.add_online(len(room.sessions), now)

    def emit(self, room: Room) -> None:
        """Record the room's current sample (if anything was sampled) and start it afresh."""
        self._take(room)
        if self.enabled and not room.sample.empty:
            self.store.event(room.sample.event(room, self.node_id))
        room.sample = RoomSample(room.sample.bucket)

    def checkpoint(self, sessions: Iterable[Session]) -> int:
        """Emit a checkpoint for every session that heartbeated since its last one; how many."""
        if not self.enabled:
            return 0
        count = 0
        for session in sessions:
            beats = session.heartbeats  # (the lane's figure: read once)
            if beats != session.checkpointed:
                session.checkpointed = beats
                self.store.event(session.checkpoint_event())
                count += 1
        return count

    def flush(self, rooms: Iterable[Room]) -> None:
        """Emit every room's partial minute (shutdown)."""
        for room in rooms:
            self.emit(room)
