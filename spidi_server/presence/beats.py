"""The heartbeat lane's batches: what Python does with heartbeats, once per Redis flush.

Every heartbeat, whichever path it took (answered in the lane, or checked by the full path and
recorded with ``HeartbeatLane.beat``), lands in the node's lane. Python sees them only here, when
the hot store's flusher drains the lane (``LaneDrain`` is its ``BeatSource``): the beats packed
per room (the ZADD XX and HSET arguments), the sessions whose Redis TTL is due for a refresh, and the beating
sessions of watched rooms as roster updates for the other processes. Room samples and the hot
counters are drained where they are read (``sampling``, ``metrics.HotCounters``).
"""

from __future__ import annotations

from spidi_core import HeartbeatLane
from spidi_core.lane_py import PackedBeats

from ..stores.hot_store import HotStore
from .crossnode import CrossNode
from .liveness import LIVE
from .local import LocalState


class LaneDrain:
    """Hands the lane's heartbeats to the hot store, and their side effects to presence."""

    def __init__(
        self, lane: HeartbeatLane, local: LocalState, store: HotStore, crossnode: CrossNode, ttl_s: int
    ):
        self.lane = lane
        self.local = local
        self.store = store
        self.crossnode = crossnode
        self.ttl_s = ttl_s  # a session's keys' expiry in Redis, renewed while it heartbeats
        self.pending = lane.pending  # the store looks at it every flush interval

    def urgent(self) -> bool:
        """Beats of rooms some process watches are waiting: their roster updates ride on them,
        so they go at the flush interval (the other rooms' at the longer heartbeat interval)."""
        return self.lane.pending_watched() > 0

    def watching(self) -> bool:
        """Some room of this node is watched: its beats can turn urgent at any time."""
        return bool(self.local.watched_here)

    def take_beats(self, urgent_only: bool = False) -> dict[str, PackedBeats]:
        """The beats per room id (the flusher's; with ``urgent_only``, the watched rooms' only),
        after queueing the TTL refreshes that are due and the roster updates of watched rooms."""
        lane, local = self.lane, self.local
        sessions = local.sessions
        for session_id in lane.take_ttl_due():
            session = sessions.get(session_id)
            if session is not None:
                room = session.room
                self.store.update_session(room.room_id, session_id, room.tenant, session.user_id, self.ttl_s)
        rooms = local.rooms
        for room_id in local.watched_here:  # not every room: this runs with each flush
            room = rooms.get(room_id)
            if room is None or not room.sessions:
                continue
            updated = lane.take_updated(room.key)
            if updated:
                out = room.out_updated
                for session_id in updated:
                    session = room.sessions.get(session_id)
                    if session is not None:
                        session.grade = LIVE  # it just beat
                        out[session_id] = session
                if not room.out_scheduled:
                    self.crossnode.out_changed(room)
        room_ids = local.room_ids
        return {room_ids[key]: packed for key, packed in lane.take_beats(urgent_only).items()}
