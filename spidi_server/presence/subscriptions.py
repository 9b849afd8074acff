"""Subscribers: room metrics and rosters, the tenant's room list, alerts — snapshots, then deltas.

A SUBSCRIBE reads its snapshot from Redis (so it is right whichever process holds the sessions)
after the room is watched, so every later change reaches the subscriber as a delta. Deltas of a
room go out at most once per ``metrics_interval_ms`` per subscriber (``changed``), each message
with the subscription's own gap-free ``seq``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from .. import roles
from ..errors import ForbiddenError, RoomNotFoundError, UnknownDestinationError
from ..protocol import destinations as dest
from ..rooms import RoomCatalog, RoomDef, room_list
from ..stores.hot_store import HotStore
from .crossnode import CrossNode
from .liveness import graded
from .local import LocalState
from .model import Client, Room, Subscription, now_ms, public_metrics, without_ip

log = logging.getLogger("spidi.presence")


class AlertFeed(Protocol):
    """What subscriptions need of /topic/alerts (``alerting.feed.AlertFeed``)."""

    async def subscribe(self, sub: Subscription, tenant: str) -> None: ...

    def remove(self, matches: Callable[[Subscription], bool]) -> None: ...


class Subscriptions:
    """Every subscription of this node's clients, and what is sent to them."""

    def __init__(
        self,
        local: LocalState,
        store: HotStore,
        catalog: RoomCatalog,
        crossnode: CrossNode,
        publish_interval_s: float,
        policy: roles.Policy,
        heartbeat_interval_ms: float,
    ):
        self.heartbeat_interval_ms = heartbeat_interval_ms  # liveness grades of snapshot entries
        self.local = local
        self.store = store
        self.catalog = catalog
        self.crossnode = crossnode
        self.publish_interval_s = publish_interval_s
        self.tenant_subs: dict[str, list[Subscription]] = {}
        self.tenant_last: dict[str, list] = {}
        self.alert_feed: AlertFeed | None = None  # set by the node when alerting runs
        self.policy = policy  # who may subscribe, and who sees IP addresses
        self._publishing: set[asyncio.Task] = set()
        self._loop = asyncio.get_running_loop

    async def subscribe(self, client: Client, sub_id: str, destination: dest.Destination) -> None:
        """SUBSCRIBE: check role and tenant, register, and send the snapshot at once."""
        kind = destination.kind
        if kind in dest.PRIVATE_KINDS:
            return  # (the connection answers these itself; a direct caller may still ask)
        claims = client.stomp.claims
        policy = self.policy
        if not policy.allows(claims.roles, roles.OBSERVE):
            raise ForbiddenError(
                f"subscribing to {destination.raw} needs role {policy.describe(roles.OBSERVE)}"
            )
        sub = Subscription(client, sub_id, sees_ip=policy.allows(claims.roles, roles.VIEW_IP))
        if kind == dest.KIND_ALERTS:
            if self.alert_feed is None:
                raise UnknownDestinationError("alerting is not running on this server")
            await self.alert_feed.subscribe(sub, claims.tenant)
            return
        if kind == dest.KIND_ROOMS:
            self.tenant_subs.setdefault(claims.tenant, []).append(sub)
            rooms = await self._tenant_metrics(claims.tenant)
            sub.send(destination.raw, {"type": "ROOMS", "rooms": rooms, "ts": now_ms()})
            return
        code = destination.room_code
        definition = self.catalog.lookup(claims.tenant, code, create=True)
        if definition is None:
            known = await self.store.tenant_rooms(claims.tenant)
            if code not in known.values():
                raise RoomNotFoundError(f"room {code!r} does not exist")
            definition = RoomDef(next(k for k, v in known.items() if v == code), claims.tenant, code, 0)
        room = self.local.room(definition)
        # Receive every process's changes before reading the snapshot, and keep them while the
        # read is in flight (pending): a change is then in the snapshot, or in a delta after it.
        room.pending_subs += 1
        try:
            await self.crossnode.watch(room)
            if kind == dest.KIND_ROOM_METRICS:
                (metrics,) = await self.store.room_metrics([room.room_id])
            else:
                users = graded(await self.store.roster(room.room_id), self.heartbeat_interval_ms, now_ms())
        finally:
            room.pending_subs -= 1
        if kind == dest.KIND_ROOM_METRICS:
            room.metrics_subs.append(sub)
            sub.send(destination.raw, self._metrics_payload(room, metrics))
        else:
            room.roster_subs.append(sub)
            sub.send(
                destination.raw,
                {
                    "type": "ROOM_ROSTER",
                    "roomId": room.room_id,
                    "roomCode": room.code,
                    "full": True,
                    "users": users if sub.sees_ip else without_ip(users),
                },
            )

    def unsubscribe(self, client: Client, sub_id: str) -> None:
        """UNSUBSCRIBE: forget the subscription wherever it is."""
        self._remove(lambda s: s.client is client and s.sub_id == sub_id)

    def unsubscribe_all(self, client: Client) -> None:
        """The connection is gone: forget all its subscriptions."""
        self._remove(lambda s: s.client is client)

    def _remove(self, matches: Callable[[Subscription], bool]) -> None:
        local = self.local
        for room in list(local.rooms.values()):
            if not (room.metrics_subs or room.roster_subs):
                continue
            room.metrics_subs = [s for s in room.metrics_subs if not matches(s)]
            room.roster_subs = [s for s in room.roster_subs if not matches(s)]
            self.crossnode.unwatch_if_unused(room)
            if room.idle:
                local.drop_room(room)
        for tenant, subs in list(self.tenant_subs.items()):
            self._set_tenant_subs(tenant, [s for s in subs if not matches(s)])
        if self.alert_feed is not None:
            self.alert_feed.remove(matches)

    def _set_tenant_subs(self, tenant: str, subs: list[Subscription]) -> None:
        if subs:
            self.tenant_subs[tenant] = subs
        else:
            self.tenant_subs.pop(tenant, None)
            self.tenant_last.pop(tenant, None)

    # -- publishing ----------------------------------------------------------------------------

    def changed(self, room: Room) -> None:
        """Something subscribers see changed: publish now, or when the room's window reopens.

        Leading and trailing edge: a change in a quiet room goes out at once; in a busy room the
        changes of one window go out together, at most one message per window per subscriber.
        """
        if room.dirty or not (room.metrics_subs or room.roster_subs):
            return
        wait = room.published_at + self.publish_interval_s - time.monotonic()
        if wait <= 0 and not room.metrics_subs:
            # A roster delta needs nothing from Redis: it goes now, not two turns of the event
            # loop later (a timer, then a task), each up to tens of milliseconds on a busy node.
            room.published_at = time.monotonic()
            try:
                self._send_roster(room)
            except Exception:  # a bug: logged like publish_room's, the fan-out goes on
                log.exception("publishing room %s failed", room.code)
            return
        room.dirty = True
        self._loop().call_later(max(0.0, wait), self._publish_soon, room)

    def _publish_soon(self, room: Room) -> None:
        if room.dirty and self.local.rooms.get(room.room_id) is room:
            task = self._loop().create_task(self.publish_room(room))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def publish_room(self, room: Room) -> None:
        """Send a room's roster delta and metrics to its subscribers (one coalescing window)."""
        room.dirty = False
        room.published_at = time.monotonic()
        try:
            self._send_roster(room)
            if room.metrics_subs:
                (metrics,) = await self.store.room_metrics([room.room_id])
                if metrics != room.last_metrics:
                    room.last_metrics = metrics
                    topic = dest.room_metrics(room.code)
                    for sub in list(room.metrics_subs):
                        sub.send(topic, self._metrics_payload(room, metrics))
        except Exception:  # Redis unreachable, say: the next change publishes again
            log.exception("publishing room %s failed", room.code)

    def _send_roster(self, room: Room) -> None:
        """Send the room's pending roster delta to its roster subscribers, if there is one."""
        if room.roster_subs and (room.joined or room.left or room.updated):
            joined = list(room.joined.values())
            updated = list(room.updated.values())
            left = [{"sessionId": sid, "reason": reason} for sid, reason in room.left.items()]
            room.joined, room.updated, room.left = {}, {}, {}
            topic = dest.room_roster(room.code)
            ts = now_ms()
            # Built at most twice per window (with and without IP addresses), whatever the
            # number of subscribers: each takes the one its roles allow.
            shown: dict[bool, tuple[list, list]] = {True: (joined, updated)}
            for sub in list(room.roster_subs):
                sees = sub.sees_ip
                if sees not in shown:
                    shown[sees] = (without_ip(joined), without_ip(updated))
                joined_shown, updated_shown = shown[sees]
                sub.send(
                    topic,
                    {
                        "type": "ROOM_ROSTER",
                        "roomId": room.room_id,
                        "roomCode": room.code,
                        "full": False,
                        "joined": joined_shown,
                        "left": left,
                        "updated": updated_shown,
                        "ts": ts,
                    },
                )

    async def publish_tenants(self) -> None:
        """``/topic/rooms``: every room of each subscribed tenant, when anything changed."""
        for tenant in list(self.tenant_subs):
            rooms = await self._tenant_metrics(tenant)
            if rooms == self.tenant_last.get(tenant):
                continue
            self.tenant_last[tenant] = rooms
            for sub in list(self.tenant_subs.get(tenant, ())):
                sub.send(dest.TOPIC_ROOMS, {"type": "ROOMS", "rooms": rooms, "ts": now_ms()})

    async def _tenant_metrics(self, tenant: str) -> list[dict]:
        """The tenant's rooms as ``rooms.room_list`` lists them (what REST lists too), by code."""
        return [public_metrics(m) for m in await room_list(self.store, tenant, self.catalog.known(tenant))]

    def _metrics_payload(self, room: Room, metrics: dict) -> dict:
        payload = public_metrics(metrics)
        payload["type"] = "ROOM_METRICS"
        payload["roomCode"] = room.code
        # Redis knows the capacity once a session joined; before that, this node's view of it.
        if not payload["capacity"]:
            payload["capacity"] = room.capacity
        payload["ts"] = now_ms()
        return payload
