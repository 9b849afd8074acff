"""What this node holds: its view of rooms (by id), its sessions (by id), the watched rooms.

Shared by the parts of presence: sessions join and leave rooms here, subscriptions create the
rooms they observe, the cross-node fan-out reads which rooms some process watches.
"""

from __future__ import annotations

from ..metrics import NodeMetrics
from ..rooms import RoomDef
from ..stores.hot_store import HotStore
from .model import Room, Session
from .sampling import Sampling


class LocalState:
    """The rooms and sessions of this node, and the rooms' creation and removal."""

    def __init__(self, store: HotStore, metrics: NodeMetrics, sampling: Sampling):
        self.store = store
        self.metrics = metrics
        self.sampling = sampling
        self.rooms: dict[str, Room] = {}  # by room id
        self.sessions: dict[str, Session] = {}  # by session id
        self.watched: set[str] = set()  # rooms some process watches (crossnode keeps it current)

    def room(self, definition: RoomDef) -> Room:
        """The room of ``definition``, created on first use; a changed capacity is stored."""
        room = self.rooms.get(definition.room_id)
        if room is None:
            room = self.rooms[definition.room_id] = Room(definition)
            room.watched = room.room_id in self.watched
        elif definition.capacity and definition.capacity != room.capacity:
            room.capacity = definition.capacity
            self.store.set_capacity(room.room_id, room.capacity)
        return room

    def drop_room(self, room: Room) -> None:
        """Forget an idle room, recording its partial minute first."""
        self.sampling.emit(room)
        self.rooms.pop(room.room_id, None)
        self.count_rooms()

    def count_rooms(self) -> None:
        """Update ``spidi_rooms_total``: rooms with at least one session here."""
        self.metrics.rooms_total.set(sum(1 for r in self.rooms.values() if r.sessions))
