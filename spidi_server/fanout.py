"""Roster changes between processes, through Redis pub/sub.

A process publishes the changes of its own sessions (joins, leaves, latency updates) to
``spidi:roster:{roomId}``, but only for rooms some process watches: a process watching a room
(it has a subscriber to the room's roster or metrics) keeps it in the sorted set
``spidi:watched`` (score: when the claim lapses, renewed every second) and announces a new watch on
``spidi:watch`` so publishers start at once. Every other watching process receives the changes from
Redis and hands them to its local subscribers, so a subscriber on any worker or node sees the whole
room. The publisher hands its own changes to its local subscribers as it queues them, and skips
them when Redis brings them back: on a busy node each read of a Redis reply waits for a pass over
every ready client socket (tens of milliseconds at 100,000 heartbeats/s), and the echo would add
one such pass to every change a subscriber on the same process sees.

On a Redis Cluster the channels are classic (not sharded) pub/sub: a PUBLISH reaches the
subscribers of every node, so the process subscribes through one plain connection to one node, and
moves to the next node (resubscribing) when that connection fails for good. A roster change is
published on the channel ``spidi:roster:{roomId}``, whose slot is the room's: the PUBLISH goes to
the room's master after the room's writes, so whoever hears it and reads the room sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import orjson

from . import logs
from .stores import keys
from .stores.client import is_cluster, pubsub_client
from .tasks import cancel_and_wait, run_every, warn

if TYPE_CHECKING:
    from .presence import Presence

log = logging.getLogger("spidi.fanout")

WATCH_TTL_S = 5.0
RENEW_S = 1.0


class RoomFanout:
    """Watched rooms, their pub/sub channels, and the delivery of remote changes to presence."""

    def __init__(self, redis, presence: Presence, node_id: str):
        self.redis = redis
        self.presence = presence
        self.node_id = node_id
        self.watched: set[str] = set()  # rooms any process watches: publish their changes
        self._heard: set[str] = set()  # rooms announced while a refresh read the zset
        self.local: set[str] = set()  # rooms this process watches: receive their changes
        self.pubsub = None
        self._pubsub_redis = None  # the client the pub/sub connection comes from
        self._node_attempt = 0  # on a cluster: which node the pub/sub connection goes to
        self._tasks: list[asyncio.Task] = []
        self.on_rooms_changed = None  # async callable: a room definition changed somewhere
        self.on_alert = None  # callable(dict): an alert message for /topic/alerts (alerting/feed.py)

    async def start(self) -> None:
        """Subscribe to the announcement channels, learn the watched rooms, start listening."""
        await self._open_pubsub()
        await self._refresh()
        loop = asyncio.get_running_loop()
        # Redis down: the renewal fails, the last set stays in force; the hot store reports it.
        renew = run_every(RENEW_S, self._refresh, "watch-refresh", warn(log, "watch_refresh_failed"))
        self._tasks = [loop.create_task(self._listen()), loop.create_task(renew)]

    async def stop(self) -> None:
        """Stop listening and release the pub/sub connection."""
        await cancel_and_wait(self._tasks)
        await self._close_pubsub()

    async def _open_pubsub(self) -> None:
        """Subscribe to the announcements and to the roster of every room watched here."""
        self._pubsub_redis = await pubsub_client(self.redis, self._node_attempt)
        self.pubsub = self._pubsub_redis.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(
            keys.WATCH, keys.ROOMS_CHANGED, keys.ALERTS_CHANNEL, *map(keys.roster_channel, self.local)
        )

    async def _close_pubsub(self) -> None:
        with contextlib.suppress(Exception):  # Redis already gone at shutdown: nothing to release
            if self.pubsub is not None:
                await self.pubsub.aclose()
            if self._pubsub_redis is not None and self._pubsub_redis is not self.redis:
                await self._pubsub_redis.aclose()

    # -- watching ------------------------------------------------------------------------------

    async def watch(self, room_id: str) -> None:
        """This process has a subscriber on the room: receive its changes from every process."""
        if room_id in self.local:
            return
        self.local.add(room_id)
        self.watched.add(room_id)
        await self.pubsub.subscribe(keys.roster_channel(room_id))
        # The claim first, then its announcement, in two round trips: on a cluster the zset and
        # the channel live on different nodes, and one pipeline would run both at once. A process
        # that hears the announcement and then reads the zset must find the claim there.
        # Bounded like the store's pipelines: a hung Redis fails the subscriber's request (the
        # claim is renewed every second anyway) instead of holding it for the socket timeout.
        async with asyncio.timeout(self.presence.store.timeout_s):
            await self.redis.zadd(keys.WATCHED, {room_id: time.time() + WATCH_TTL_S})
            # Through the pub/sub node: every process subscribes on the same first node of a
            # cluster, so the announcement reaches them without a hop over the cluster bus.
            await self._pubsub_redis.publish(keys.WATCH, room_id)

    async def unwatch(self, room_id: str) -> None:
        """No local subscriber left; the claim lapses by itself (other processes may still watch)."""
        if room_id in self.local:
            self.local.discard(room_id)
            await self.pubsub.unsubscribe(keys.roster_channel(room_id))

    def publish(self, room_id: str, joined: list, left: dict, updated: list) -> None:
        """Queue this process's changes of a room (in the next Redis pipeline, after its writes),
        and hand them to this process's subscribers of the room now.

        Now is safe for them: a join is published once Redis admitted it; a leave or an update whose
        write is still queued reaches a subscriber whose snapshot read is in flight as a delta
        after that snapshot (every read flushes the queued writes first), and subscribers ignore a
        left for a session they do not have.
        """
        changes = {"n": self.node_id, "j": joined, "l": left, "u": updated}
        self.presence.store.publish(keys.roster_channel(room_id), orjson.dumps(changes))
        if room_id in self.local:
            try:
                self.presence.remote_changes(room_id, changes)
            except Exception:  # a bug: logged; the change that called us (a HELLO, say) goes on
                log.exception("delivering this process's changes of room %s failed", room_id)

    # -- background ----------------------------------------------------------------------------

    async def _refresh(self) -> None:
        now = time.time()
        self._heard = set()
        pipe = self.redis.pipeline(transaction=False)
        if self.local:
            pipe.zadd(keys.WATCHED, {room_id: now + WATCH_TTL_S for room_id in self.local})
        pipe.zremrangebyscore(keys.WATCHED, "-inf", now)
        pipe.zrangebyscore(keys.WATCHED, now, "+inf")
        members = (await pipe.execute())[-1]
        # An announcement heard while the read was in flight may be newer than what it read.
        self.watched = {m.decode() if isinstance(m, bytes) else m for m in members} | self.local | self._heard
        self.presence.watched_changed(self.watched)

    async def _listen(self) -> None:
        backoff = 0.2
        failures = 0
        while True:
            try:
                async for message in self.pubsub.listen():
                    backoff, failures = 0.2, 0
                    if message["type"] != "message":
                        continue
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    data = message["data"]
                    if channel == keys.WATCH:
                        room_id = data.decode() if isinstance(data, bytes) else data
                        self._heard.add(room_id)
                        if room_id not in self.watched:
                            self.watched.add(room_id)
                            self.presence.watched_changed(self.watched)
                    elif channel == keys.ROOMS_CHANGED:
                        if self.on_rooms_changed is not None:
                            await self.on_rooms_changed()
                    elif channel == keys.ALERTS_CHANNEL:
                        if self.on_alert is not None:
                            self.on_alert(orjson.loads(data))
                    else:
                        changes = orjson.loads(data)
                        if changes.get("n") != self.node_id or changes.get("reaped"):
                            self.presence.remote_changes(keys.room_of_roster_channel(channel), changes)
                        # else: this process's own changes, its subscribers had them at publish
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: redis-py resubscribes on the next listen
                logs.event(log, "fanout_listen_failed", logging.WARNING, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                failures += 1
                if failures >= 3 and is_cluster(self.redis):
                    # That cluster node stays unreachable (failed over, removed): any other one
                    # hears the same channels.
                    await self._move_to_next_node()

    async def _move_to_next_node(self) -> None:
        await self._close_pubsub()
        self._node_attempt += 1
        try:
            await self._open_pubsub()
            logs.event(log, "fanout_moved", node_attempt=self._node_attempt)
        except Exception as exc:  # that one is down too: the listen loop fails again, we move on
            logs.event(log, "fanout_move_failed", logging.WARNING, error=str(exc))
