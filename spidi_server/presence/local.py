"""What this node holds: its view of rooms (by id), its sessions (by id), the watched rooms, and
the heartbeat lane where its sessions' heartbeat figures live.

Shared by the parts of presence: sessions join and leave rooms here, subscriptions create the
rooms they observe, the cross-node fan-out reads which rooms some process watches.
"""

from __future__ import annotations

from spidi_core import HeartbeatLane

from ..metrics import NodeMetrics
from ..rooms import RoomDef
from ..stores.hot_store import HotStore
from .model import Room, Session
from .sampling import Sampling


class LocalState:
    """The rooms and sessions of this node, and the rooms' creation and removal."""

    def __init__(self, store: HotStore, metrics: NodeMetrics, sampling: Sampling, lane: HeartbeatLane):
        self.store = store
        self.lane = lane
        self.metrics = metrics
        self.sampling = sampling
        self.rooms: dict[str, Room] = {}  # by room id
        self.sessions: dict[str, Session] = {}  # by session id
        self.watched: set[str] = set()  # rooms some process watches (crossnode keeps it current)
        # This node's rooms among them: their beating sessions are roster updates, which
        # ``LaneDrain.take_beats`` collects with each flush from these rooms only.
        self.watched_here: set[str] = set()
        # A room's key in the lane, kept for good (a room dropped and used again has the same key,
        # so a beat the lane still holds for it finds its room id): room id <-> key.
        self.room_keys: dict[str, int] = {}
        self.room_ids: dict[int, str] = {}

    def room(self, definition: RoomDef) -> Room:
        """The room of ``definition``, created on first use; a changed capacity is stored."""
        room = self.rooms.get(definition.room_id)
        if room is None:
            key = self.room_keys.get(definition.room_id)
            if key is None:
                key = self.room_keys[definition.room_id] = len(self.room_keys) + 1
                self.room_ids[key] = definition.room_id
            room = self.rooms[definition.room_id] = Room(definition, key)
            self.set_watched(room, room.room_id in self.watched)
        elif definition.capacity and definition.capacity != room.capacity:
            room.capacity = definition.capacity
            self.store.set_capacity(room.room_id, room.capacity)
        return room

    def set_watched(self, room: Room, watched: bool) -> None:
        """Whether some process watches the room: its beating sessions are then roster updates."""
        self.lane.set_watched(room.key, watched)
        room.watched = watched
        if watched:
            self.watched_here.add(room.room_id)
        else:
            self.watched_here.discard(room.room_id)

    def drop_room(self, room: Room) -> None:
        """Forget an idle room, recording its partial minute first."""
        self.sampling.emit(room)
        self.rooms.pop(room.room_id, None)
        self.watched_here.discard(room.room_id)
        self.count_rooms()

    def count_rooms(self) -> None:
        """Update ``spidi_node_rooms``: rooms with at least one session here."""
        self.metrics.node_rooms.set(sum(1 for r in self.rooms.values() if r.sessions))
