"""Presence's side of the fan-out between processes: which rooms are watched, what is published.

A process publishes the changes of its own sessions only for rooms some process watches
(``fanout.RoomFanout`` keeps that set and calls ``watched_changed``), at most once per
``OUT_WINDOW_S`` per room. A process watches a room while it has a subscriber on it; the changes
every process published come back through ``Room.merge_remote`` (see ``Presence.remote_changes``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from .local import LocalState
from .model import Room, Session

OUT_WINDOW_S = 0.05  # a process publishes its changes of a room at most this often


class Fanout(Protocol):
    """What presence needs of the pub/sub fan-out (``fanout.RoomFanout``)."""

    def publish(self, room_id: str, joined: list, left: dict, updated: list) -> None: ...

    async def watch(self, room_id: str) -> None: ...

    async def unwatch(self, room_id: str) -> None: ...


class CrossNode:
    """Publishes this node's session changes of watched rooms; watches the rooms observed here."""

    def __init__(self, local: LocalState):
        self.local = local
        self.fanout: Fanout | None = None  # set by the node once the fan-out exists
        self._loop = asyncio.get_running_loop

    # -- this node's changes, out --------------------------------------------------------------

    def session_joined(self, room: Room, session: Session) -> None:
        """A local session joined (or is re-announced in) ``room``."""
        if room.watched:
            room.out_left.pop(session.session_id, None)
            room.out_joined[session.session_id] = session
            self.out_changed(room, at_once=True)

    def session_updated(self, room: Room, session: Session) -> None:
        """A local session's roster entry changed (heartbeats: ``beats.LaneDrain``, in batches)."""
        if room.watched:
            room.out_updated[session.session_id] = session
            self.out_changed(room)

    def session_left(self, room: Room, session_id: str, reason: str) -> None:
        """A local session ended."""
        if room.watched:
            room.out_joined.pop(session_id, None)
            room.out_updated.pop(session_id, None)
            room.out_left[session_id] = reason
            self.out_changed(room, at_once=True)

    def out_changed(self, room: Room, at_once: bool = False) -> None:
        """A local session of a watched room changed: publish this process's changes soon.

        ``at_once`` (a join or a leave, whose write is queued already): if the room's window is
        open, now rather than from a timer a turn of the event loop later. Not for latency
        updates, which the heartbeats' drain reports while the store takes its next batch.
        """
        if room.out_scheduled:
            return
        wait = room.out_published_at + OUT_WINDOW_S - time.monotonic()
        if at_once and wait <= 0:
            self._publish_out(room)
            return
        room.out_scheduled = True
        self._loop().call_later(max(0.0, wait), self._publish_out, room)

    def _publish_out(self, room: Room) -> None:
        room.out_scheduled = False
        room.out_published_at = time.monotonic()
        if not (room.out_joined or room.out_left or room.out_updated) or self.fanout is None:
            return
        joined = [s.entry() for s in room.out_joined.values()]
        updated = [s.entry() for s in room.out_updated.values()]
        left = room.out_left
        room.out_joined, room.out_left, room.out_updated = {}, {}, {}
        self.fanout.publish(room.room_id, joined, left, updated)

    def watched_changed(self, watched: set[str]) -> None:
        """The set of rooms some process watches changed: publish changes of exactly those.

        A room that becomes watched has its local sessions published as joined: the watcher may
        have read its snapshot before a join this process made while it had not yet heard of the
        watcher (the announcement crosses the network; on a Redis Cluster, the cluster bus too,
        which can hold it back tens of milliseconds). Subscribers apply joined entries
        idempotently, so one they already have costs nothing.
        """
        self.local.watched = watched
        for room in self.local.rooms.values():
            now_watched = room.room_id in watched
            if now_watched and not room.watched and room.sessions:
                for session_id, session in room.sessions.items():
                    room.out_left.pop(session_id, None)
                    room.out_joined[session_id] = session
                self.out_changed(room)
            if now_watched != room.watched:
                self.local.set_watched(room, now_watched)

    # -- every process's changes, in -----------------------------------------------------------

    def remote_changes(self, room_id: str, payload: dict) -> Room | None:
        """Roster changes some process published for a room watched here: merged into the room's
        pending delta; returns the room if its subscribers must be told, else None."""
        room = self.local.rooms.get(room_id)
        if room is None or not room.observed:
            return None
        if room.roster_subs or room.pending_subs:
            room.merge_remote(payload)
        return room

    async def watch(self, room: Room) -> None:
        """A subscriber observes ``room``: receive every process's changes of it."""
        self.local.set_watched(room, True)
        if self.fanout is not None:
            await self.fanout.watch(room.room_id)

    def unwatch_if_unused(self, room: Room) -> None:
        """Stop receiving the room's changes when no subscriber here observes it any more."""
        if not room.observed and self.fanout is not None:
            self._loop().create_task(self.fanout.unwatch(room.room_id))
