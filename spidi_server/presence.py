"""Presence: sessions in rooms, their liveness, and what subscribers are told.

This layer turns protocol events into presence changes. It owns the local sessions of this node
and the heartbeat wheel; it writes every change to the Redis hot store (buffered, never awaited
on the heartbeat path) and reads metrics and roster snapshots back from Redis, so what
subscribers see is right when several processes share one Redis. It never touches a socket: a
client is anything with a ``stomp`` (StompConnection), ``ip``, ``sessions`` and ``push()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from bisect import bisect_left
from typing import Protocol

from spidi_core import HeartbeatWheel

from . import logs, roles
from .errors import (
    BadRequestError,
    ForbiddenError,
    RoomDisabledError,
    RoomFullError,
    RoomNotFoundError,
    UnknownDestinationError,
    UnknownSessionError,
)
from .metrics import NodeMetrics
from .protocol import destinations as dest
from .protocol.stomp import StompConnection
from .rooms import ROOM_CODE, RoomCatalog, RoomDef
from .settings import Settings
from .stores import events
from .stores.hot_store import REFUSED, HotStore, LiveSession, PendingJoin

log = logging.getLogger("spidi.presence")

MAX_SESSIONS_PER_CONNECTION = 16
OUT_WINDOW_S = 0.05  # a process publishes its changes of a room at most this often
_BUCKETS = events.LATENCY_BUCKETS_MS
_TEXT_LIMITS = {"clientId": 128, "appVersion": 64, "device": 128, "os": 128}


class Client(Protocol):
    stomp: StompConnection
    ip: str
    sessions: set
    conn_id: str

    def push(self) -> None: ...


class Subscription:
    """One client's subscription to a room or tenant topic, with its own gap-free ``seq``."""

    __slots__ = ("client", "sub_id", "seq")

    def __init__(self, client: Client, sub_id: str):
        self.client = client
        self.sub_id = sub_id
        self.seq = 0

    def send(self, destination: str, payload: dict) -> None:
        self.seq += 1
        payload["seq"] = self.seq
        if self.client.stomp.send_json(destination, payload, self.sub_id):
            self.client.push()


class Session:
    """A presence session held by this node."""

    __slots__ = (
        "session_id",
        "room",
        "user_id",
        "client_id",
        "app_version",
        "device",
        "os",
        "ip",
        "latency_ms",
        "connected_at",
        "last_heartbeat_at",
        "client",
        "ttl_refreshed",
        "heartbeats",
        "latency_sum",
        "latency_min",
        "latency_max",
        "checkpointed",
        "trace_id",
        "node_id",
    )

    def __init__(self, session_id: str, room: Room, user_id: str, payload: dict, ip: str, now_ms: int):
        self.session_id = session_id
        self.room = room
        self.user_id = user_id
        self.client_id = payload["clientId"]
        self.app_version = payload["appVersion"]
        self.device = payload.get("device")
        self.os = payload.get("os")
        self.ip = ip
        self.latency_ms: float | None = None
        self.connected_at = now_ms
        self.last_heartbeat_at = now_ms
        self.client: Client | None = None
        self.ttl_refreshed = now_ms
        self.heartbeats = 0
        self.latency_sum = 0.0
        self.latency_min: float | None = None
        self.latency_max: float | None = None
        self.checkpointed = 0  # heartbeat count at the last checkpoint event
        self.trace_id = ""  # the connection that started it: every log line of the session carries it
        self.node_id = ""

    def static_fields(self) -> dict:
        """What the session hash in Redis holds."""
        return {
            "userId": self.user_id,
            "clientId": self.client_id,
            "appVersion": self.app_version,
            "device": self.device,
            "os": self.os,
            "ip": self.ip,
            "connectedAt": self.connected_at,
            "roomCode": self.room.code,
            "tenant": self.room.tenant,
            "nodeId": self.node_id,
        }

    def client_info(self) -> dict:
        return {"clientId": self.client_id, "device": self.device, "os": self.os, "appVersion": self.app_version,
                "ip": self.ip}  # fmt: skip

    def checkpoint_event(self) -> dict:
        """A ``session_checkpoint``: the cumulative heartbeat and latency figures."""
        return events.session_checkpoint(
            session_id=self.session_id,
            room_id=self.room.room_id,
            tenant=self.room.tenant,
            started_at=self.connected_at,
            heartbeats=self.heartbeats,
            last_heartbeat_at=self.last_heartbeat_at,
            latency_sum=self.latency_sum,
            latency_count=self.heartbeats,
            latency_min=self.latency_min,
            latency_max=self.latency_max,
        )

    def end_event(self, reason: str, ended_at: int) -> dict:
        """A ``session_ended``: the final figures, and who left (the room hooks read the end alone)."""
        room = self.room
        return events.session_ended(
            session_id=self.session_id,
            room_id=room.room_id,
            tenant=room.tenant,
            started_at=self.connected_at,
            ended_at=ended_at,
            reason=reason,
            user_id=self.user_id,
            room_code=room.code,
            client_id=self.client_id,
            device=self.device,
            os=self.os,
            app_version=self.app_version,
            last_heartbeat_at=self.last_heartbeat_at,
            heartbeats=self.heartbeats,
            latency_sum=self.latency_sum,
            latency_count=self.heartbeats,
            latency_min=self.latency_min,
            latency_max=self.latency_max,
        )

    def started_event(self) -> dict:
        """A ``session_started`` with the session's static fields."""
        room = self.room
        return events.session_started(
            session_id=self.session_id,
            room_id=room.room_id,
            room_code=room.code,
            tenant=room.tenant,
            user_id=self.user_id,
            client_id=self.client_id,
            app_version=self.app_version,
            device=self.device,
            os=self.os,
            ip=self.ip,
            node_id=self.node_id,
            started_at=self.connected_at,
        )

    def entry(self) -> dict:
        """The roster entry subscribers see."""
        return {
            "sessionId": self.session_id,
            "userId": self.user_id,
            "clientId": self.client_id,
            "device": self.device,
            "os": self.os,
            "appVersion": self.app_version,
            "ip": self.ip,
            "latencyMs": self.latency_ms,
            "connectedAt": self.connected_at,
            "lastHeartbeatAt": self.last_heartbeat_at,
        }


class RoomSample:
    """What only this node knows of one room in the current minute (a ``room_sample`` event): its
    online count, sampled once a second, and its sessions' heartbeat latencies. Joins, leaves,
    timeouts and disconnects are not here: the writer counts them from the session events, which
    survive this process (a SIGKILL loses the minute's sample, never a session event)."""

    __slots__ = ("bucket", "online_sum", "online_samples", "online_max", "latency_sum", "latency_count",
                 "hist")  # fmt: skip

    def __init__(self, bucket: int):
        self.bucket = bucket
        self.online_sum = self.online_samples = self.online_max = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self.hist = [0] * (len(events.LATENCY_BUCKETS_MS) + 1)

    @property
    def empty(self) -> bool:
        return not (self.online_sum or self.latency_count)

    def event(self, room: Room, node_id: str) -> dict:
        """The minute's ``room_sample``."""
        return events.room_sample(
            room_id=room.room_id,
            room_code=room.code,
            tenant=room.tenant,
            node_id=node_id,
            bucket=self.bucket,
            online_sum=self.online_sum,
            online_samples=self.online_samples,
            online_max=self.online_max,
            latency_sum=self.latency_sum,
            latency_count=self.latency_count,
            latency_hist=self.hist,
        )


class Room:
    """A room as this node sees it: its local sessions, subscribers and pending roster delta."""

    __slots__ = (
        "room_id",
        "tenant",
        "code",
        "capacity",
        "sessions",
        "metrics_subs",
        "roster_subs",
        "dirty",
        "joined",
        "left",
        "updated",
        "last_metrics",
        "sample",
        "published_at",
        "watched",
        "out_joined",
        "out_left",
        "out_updated",
        "out_scheduled",
        "out_published_at",
        "pending_subs",
        "joining",
    )

    def __init__(self, definition: RoomDef):
        self.room_id = definition.room_id
        self.tenant = definition.tenant
        self.code = definition.code
        self.capacity = definition.capacity
        self.sessions: dict[str, Session] = {}
        self.metrics_subs: list[Subscription] = []
        self.roster_subs: list[Subscription] = []
        self.dirty = False
        # Changes received from every process (this one included), for the local subscribers.
        self.joined: dict[str, dict] = {}
        self.left: dict[str, str] = {}
        self.updated: dict[str, dict] = {}
        self.last_metrics: dict | None = None
        self.sample = RoomSample(_minute(_now_ms()))
        self.published_at = 0.0
        # Changes of this process's sessions, to publish for every process's subscribers.
        self.watched = False
        self.out_joined: dict[str, Session] = {}
        self.out_left: dict[str, str] = {}
        self.out_updated: dict[str, Session] = {}
        self.out_scheduled = False
        self.out_published_at = 0.0
        self.pending_subs = 0  # subscriptions waiting for their snapshot
        self.joining = 0  # HELLOs waiting for Redis to admit them

    @property
    def idle(self) -> bool:
        return not (
            self.sessions or self.metrics_subs or self.roster_subs or self.pending_subs or self.joining
        )


class Presence:
    """The presence service of one node."""

    def __init__(
        self,
        settings: Settings,
        store: HotStore,
        catalog: RoomCatalog,
        metrics: NodeMetrics,
        node_id: str = "",
    ):
        self.settings = settings
        self.node_id = node_id
        self.history = settings.history
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.rooms: dict[str, Room] = {}  # by room id
        self.sessions: dict[str, Session] = {}
        self.wheel = HeartbeatWheel(0.1, 4096, time.monotonic())
        self.tenant_subs: dict[str, list[Subscription]] = {}
        self.tenant_last: dict[str, list] = {}
        self.tenant_dirty: set[str] = set()
        self.timeout_s = settings.heartbeat_timeout_ms / 1000
        self.grace_s = settings.grace_period_ms / 1000
        self.session_ttl_s = int((settings.heartbeat_timeout_ms + settings.grace_period_ms) / 1000) + 60
        self._ttl_refresh_ms = settings.heartbeat_timeout_ms // 2
        self._hot = metrics.hot
        self.publish_interval_s = settings.metrics_interval_ms / 1000
        self._publishing: set[asyncio.Task] = set()
        self.fanout = None  # RoomFanout, set by the node
        self.alert_feed = None  # alerting.feed.AlertFeed, set by the node
        self.watched: set[str] = set()
        self.join_timeout_s = settings.redis_join_timeout_ms / 1000
        self.capacity_degraded = False  # admitting on local counts (Redis down or slow): logged once
        self._hello_waiting: dict[Client, int] = {}  # clients with a HELLO waiting for Redis
        self._closed_waiting: set = set()  # ... whose connection closed meanwhile
        self._loop = asyncio.get_running_loop

    # -- commands from clients -----------------------------------------------------------------

    async def hello(self, client: Client, payload: dict) -> None:
        """HELLO: create (or resume) a session and answer WELCOME on /user/queue/session.

        A new session takes a place in its room only if Redis admits it: the join script counts
        the sessions of every node, so N processes cannot admit N x capacity. HELLO waits for
        that answer (at most ``redis_join_timeout_ms``); when Redis is down or slow it admits on
        this process's own count instead (degraded mode, logged once, counted in
        ``spidi_capacity_checks_degraded_total``). The local count is also a fast pre-check.
        """
        claims = client.stomp.claims
        if not claims.has_any(*roles.allowed(roles.JOIN)):
            raise ForbiddenError(f"HELLO needs role {roles.describe(roles.JOIN)}")
        code = payload.get("roomCode")
        if not isinstance(code, str) or not ROOM_CODE.match(code):
            raise BadRequestError("roomCode must be 1-64 characters of letters, digits, _ . : -")
        for name, limit in _TEXT_LIMITS.items():
            value = payload.get(name)
            required = name in ("clientId", "appVersion")
            if value is None and not required:
                continue
            if not isinstance(value, str) or not value or len(value) > limit:
                raise BadRequestError(f"{name} must be a non-empty string of at most {limit} characters")
        resume = payload.get("resumeSessionId")
        if resume is not None:
            if not isinstance(resume, str):
                raise BadRequestError("resumeSessionId must be a string")
            session = self.sessions.get(resume)
            if session is not None and session.user_id == claims.user_id and session.room.code == code:
                self._resume(client, session)
                self._welcome(client, session, resumed=True)
                return
            # Not resumable (expired, foreign, other room): fall through to a fresh session.
        if len(client.sessions) >= MAX_SESSIONS_PER_CONNECTION:
            raise BadRequestError(f"at most {MAX_SESSIONS_PER_CONNECTION} sessions per connection")
        definition = self.catalog.lookup(claims.tenant, code, create=True)
        if definition is None:
            raise RoomNotFoundError(f"room {code!r} does not exist")
        if not definition.active:
            raise RoomDisabledError(f"room {code!r} is disabled")
        room = self._room(definition)
        # HELLOs still waiting for Redis count too: in degraded mode they are admitted on this count.
        if len(room.sessions) + room.joining >= room.capacity:
            raise RoomFullError(f"room {code!r} is full ({room.capacity} sessions)")
        now_ms = _now_ms()
        session = Session(str(uuid.uuid4()), room, claims.user_id, payload, client.ip, now_ms)
        session.trace_id = client.conn_id
        session.node_id = self.node_id
        pending = self.store.join(
            room.room_id,
            room.tenant,
            room.code,
            room.capacity,
            session.session_id,
            session.user_id,
            now_ms,
            self.session_ttl_s,
            session.static_fields(),
        )
        room.joining += 1
        self._hello_waiting[client] = self._hello_waiting.get(client, 0) + 1
        try:
            admitted = await self._admitted(pending)
        finally:
            room.joining -= 1
            waiting = self._hello_waiting.pop(client) - 1
            gone = client in self._closed_waiting
            if waiting:
                self._hello_waiting[client] = waiting
            else:
                self._closed_waiting.discard(client)
        if not admitted:
            if room.idle:
                self._drop_room(room)
            raise RoomFullError(f"room {code!r} is full ({room.capacity} sessions)")
        # The connection may have closed while Redis answered: the session is in Redis, so it
        # is started and ended at once (the client never learnt its id, so it cannot resume it).
        session.client = None if gone else client
        if not gone:
            client.sessions.add(session)
        room.sessions[session.session_id] = session
        self.sessions[session.session_id] = session
        self.wheel.add(session.session_id, time.monotonic() + self.timeout_s)
        if room.watched:
            room.out_left.pop(session.session_id, None)
            room.out_joined[session.session_id] = session
            self._out_changed(room)
        if self.history:
            self.store.event(session.started_event())
        self.metrics.sessions_active.set(len(self.sessions))
        self._count_rooms()
        logs.event(
            log,
            "session_started",
            trace_id=session.trace_id,
            session_id=session.session_id,
            user_id=session.user_id,
            room_id=room.room_id,
            room_code=room.code,
            tenant=room.tenant,
            client_info=session.client_info(),
        )
        if gone:
            self.end(session, "disconnect")
            return
        self._welcome(client, session, resumed=False)

    async def _admitted(self, pending: PendingJoin) -> bool:
        """Whether Redis admits the join; True without its answer when Redis is down or slow."""
        if self.store.healthy:
            try:
                result = await asyncio.wait_for(asyncio.shield(pending.result), self.join_timeout_s)
            except TimeoutError:
                result = None
            if result is not None:
                if self.capacity_degraded:
                    self.capacity_degraded = False
                    logs.event(log, "capacity_check_restored")
                return result != REFUSED
        # Redis did not answer (or the script failed): admit on the local count, which the caller
        # checked, and make Redis hold the session whatever its count says when it gets the join.
        pending.force()
        self.metrics.capacity_degraded.inc()
        if not self.capacity_degraded:
            self.capacity_degraded = True
            logs.event(log, "capacity_check_degraded", logging.WARNING, error=self.store.last_error,
                       timeout_ms=self.join_timeout_s * 1000)  # fmt: skip
        return True

    def _welcome(self, client: Client, session: Session, resumed: bool) -> None:
        client.stomp.send_json(
            dest.USER_SESSION,
            {
                "type": "WELCOME",
                "sessionId": session.session_id,
                "roomId": session.room.room_id,
                "roomCode": session.room.code,
                "heartbeatIntervalMs": self.settings.heartbeat_interval_ms,
                "timeoutMs": self.settings.heartbeat_timeout_ms,
                "resumed": resumed,
            },
        )

    def _resume(self, client: Client, session: Session) -> None:
        old = session.client
        if old is not None and old is not client:
            old.sessions.discard(session)
        session.client = client
        client.sessions.add(session)
        self.wheel.touch(session.session_id, time.monotonic() + self.timeout_s)
        fields = None
        if session.ip != client.ip:
            session.ip = client.ip
            fields = {"ip": client.ip}
            if session.room.watched:
                session.room.out_updated[session.session_id] = session
                self._out_changed(session.room)
        self.store.update_session(session.room.room_id, session.session_id, session.room.tenant, session.user_id,
                                  self.session_ttl_s, fields)  # fmt: skip
        logs.event(log, "session_resumed", trace_id=client.conn_id, session_id=session.session_id,
                   user_id=session.user_id, room_id=session.room.room_id, client_info=session.client_info())  # fmt: skip

    def heartbeat(self, client: Client, session_id: str, latency_ms: float) -> None:
        """HEARTBEAT: the hot path. No await, no log line, no Redis round trip."""
        session = self.sessions.get(session_id)
        if session is None or session.client is not client:
            raise UnknownSessionError(f"no session {session_id!r} on this connection")
        now_ms = _now_ms()
        session.last_heartbeat_at = now_ms
        session.latency_ms = latency_ms
        session.heartbeats += 1
        session.latency_sum += latency_ms
        if session.latency_min is None or latency_ms < session.latency_min:
            session.latency_min = latency_ms
        if session.latency_max is None or latency_ms > session.latency_max:
            session.latency_max = latency_ms
        self.wheel.touch(session_id, time.monotonic() + self.timeout_s)
        room = session.room
        self.store.heartbeat(room.room_id, session_id, now_ms, latency_ms)
        if now_ms - session.ttl_refreshed > self._ttl_refresh_ms:
            session.ttl_refreshed = now_ms
            self.store.update_session(
                room.room_id, session_id, room.tenant, session.user_id, self.session_ttl_s
            )
        if room.watched:
            room.out_updated[session_id] = session
            if not room.out_scheduled:
                self._out_changed(room)
        bucket = bisect_left(_BUCKETS, latency_ms)
        sample = room.sample
        sample.latency_sum += latency_ms
        sample.latency_count += 1
        sample.hist[bucket] += 1
        hot = self._hot
        hot.heartbeats += 1
        hot.latency_sum += latency_ms
        hot.latency_hist[bucket] += 1

    def leave(self, client: Client, session_id: str) -> None:
        """LEAVE: end the session at once."""
        session = self.sessions.get(session_id)
        if session is None or session.client is not client:
            raise UnknownSessionError(f"no session {session_id!r} on this connection")
        self.end(session, "leave")

    def client_closed(self, client: Client, clean: bool) -> None:
        """The connection is gone. Clean (DISCONNECT): end its sessions; abrupt: keep them for the grace period."""
        if client in self._hello_waiting:
            self._closed_waiting.add(client)  # its HELLO ends the session once Redis answered
        sessions = list(client.sessions)
        client.sessions.clear()
        for session in sessions:
            if session.client is not client:
                continue
            if clean or self.grace_s <= 0:
                self.end(session, "disconnect")
            else:
                session.client = None
                self.wheel.touch(session.session_id, time.monotonic() + self.grace_s)
        self.unsubscribe_all(client)

    def end(self, session: Session, reason: str) -> None:
        """End a session: remove it locally and from Redis, tell subscribers and the client."""
        if self.sessions.pop(session.session_id, None) is None:
            return
        room = session.room
        room.sessions.pop(session.session_id, None)
        self.wheel.remove(session.session_id)
        self.store.leave(room.room_id, session.session_id, room.tenant, session.user_id)
        client = session.client
        if client is not None:
            client.sessions.discard(session)
            if reason != "leave" and client.stomp.send_json(
                dest.USER_SESSION,
                {"type": "SESSION_ENDED", "sessionId": session.session_id, "reason": reason},
            ):
                client.push()
        if room.watched:
            room.out_joined.pop(session.session_id, None)
            room.out_updated.pop(session.session_id, None)
            room.out_left[session.session_id] = reason
            self._out_changed(room)
        if self.history:
            self.store.event(session.end_event(reason, _now_ms()))
        self.metrics.sessions_active.set(len(self.sessions))
        self._count_rooms()
        self.metrics.sessions_ended.labels(reason=reason).inc()
        logs.event(
            log,
            "session_ended",
            trace_id=session.trace_id,
            session_id=session.session_id,
            user_id=session.user_id,
            room_id=room.room_id,
            room_code=room.code,
            reason=reason,
            heartbeats=session.heartbeats,
            duration_ms=_now_ms() - session.connected_at,
            client_info=session.client_info(),
        )
        if room.idle:
            self._drop_room(room)

    def expire(self, now: float | None = None) -> int:
        """End every session whose deadline passed: ``timeout``, or ``disconnect`` after the grace period."""
        expired = self.wheel.advance(time.monotonic() if now is None else now)
        for session_id in expired:
            session = self.sessions.get(session_id)
            if session is not None:
                self.end(session, "timeout" if session.client is not None else "disconnect")
        return len(expired)

    # -- subscriptions -------------------------------------------------------------------------

    async def subscribe(self, client: Client, sub_id: str, destination: dest.Destination) -> None:
        """SUBSCRIBE: check role and tenant, register, and send the snapshot at once."""
        kind = destination.kind
        if kind in (dest.KIND_USER_SESSION, dest.KIND_USER_ERRORS):
            return
        claims = client.stomp.claims
        if not claims.has_any(*roles.allowed(roles.OBSERVE)):
            raise ForbiddenError(
                f"subscribing to {destination.raw} needs role {roles.describe(roles.OBSERVE)}"
            )
        sub = Subscription(client, sub_id)
        if kind == dest.KIND_ALERTS:
            if self.alert_feed is None:
                raise UnknownDestinationError("alerting is not running on this server")
            await self.alert_feed.subscribe(sub, claims.tenant)
            return
        if kind == dest.KIND_ROOMS:
            self.tenant_subs.setdefault(claims.tenant, []).append(sub)
            rooms = await self._tenant_metrics(claims.tenant)
            sub.send(destination.raw, {"type": "ROOMS", "rooms": rooms, "ts": _now_ms()})
            return
        code = destination.room_code
        definition = self.catalog.lookup(claims.tenant, code, create=True)
        if definition is None:
            known = await self.store.tenant_rooms(claims.tenant)
            if code not in known.values():
                raise RoomNotFoundError(f"room {code!r} does not exist")
            definition = RoomDef(next(k for k, v in known.items() if v == code), claims.tenant, code, 0)
        room = self._room(definition)
        # Receive every process's changes before reading the snapshot, and keep them while the
        # read is in flight (pending): a change is then in the snapshot, or in a delta after it.
        room.pending_subs += 1
        try:
            await self._watch(room)
            if kind == dest.KIND_ROOM_METRICS:
                (metrics,) = await self.store.room_metrics([room.room_id])
            else:
                users = await self.store.roster(room.room_id)
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
                    "users": users,
                },
            )

    def unsubscribe(self, client: Client, sub_id: str) -> None:
        """UNSUBSCRIBE: forget the subscription wherever it is."""
        self._remove_subs(lambda s: s.client is client and s.sub_id == sub_id)

    def unsubscribe_all(self, client: Client) -> None:
        """The connection is gone: forget all its subscriptions."""
        self._remove_subs(lambda s: s.client is client)

    def _remove_subs(self, matches) -> None:
        for room in list(self.rooms.values()):
            if not (room.metrics_subs or room.roster_subs):
                continue
            room.metrics_subs = [s for s in room.metrics_subs if not matches(s)]
            room.roster_subs = [s for s in room.roster_subs if not matches(s)]
            self._unwatch_if_unused(room)
            if room.idle:
                self._drop_room(room)
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

    def _publish_soon(self, room: Room) -> None:
        if room.dirty and self.rooms.get(room.room_id) is room:
            task = asyncio.get_running_loop().create_task(self.publish_room(room))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def publish_room(self, room: Room) -> None:
        """Send a room's roster delta and metrics to its subscribers (one coalescing window)."""
        room.dirty = False
        room.published_at = time.monotonic()
        try:
            if room.roster_subs and (room.joined or room.left or room.updated):
                joined = list(room.joined.values())
                updated = list(room.updated.values())
                left = [{"sessionId": sid, "reason": reason} for sid, reason in room.left.items()]
                room.joined, room.updated, room.left = {}, {}, {}
                topic = dest.room_roster(room.code)
                for sub in list(room.roster_subs):
                    sub.send(
                        topic,
                        {"type": "ROOM_ROSTER", "roomId": room.room_id, "roomCode": room.code, "full": False,
                         "joined": joined, "left": left, "updated": updated, "ts": _now_ms()},
                    )  # fmt: skip
            if room.metrics_subs:
                (metrics,) = await self.store.room_metrics([room.room_id])
                if metrics != room.last_metrics:
                    room.last_metrics = metrics
                    topic = dest.room_metrics(room.code)
                    for sub in list(room.metrics_subs):
                        sub.send(topic, self._metrics_payload(room, metrics))
        except Exception:  # Redis unreachable, say: the next change publishes again
            log.exception("publishing room %s failed", room.code)

    async def publish_tenants(self) -> None:
        """``/topic/rooms``: every room of each subscribed tenant, when anything changed."""
        for tenant in list(self.tenant_subs):
            rooms = await self._tenant_metrics(tenant)
            if rooms == self.tenant_last.get(tenant):
                continue
            self.tenant_last[tenant] = rooms
            for sub in list(self.tenant_subs.get(tenant, ())):
                sub.send(dest.TOPIC_ROOMS, {"type": "ROOMS", "rooms": rooms, "ts": _now_ms()})

    async def _tenant_metrics(self, tenant: str) -> list[dict]:
        known = await self.store.tenant_rooms(tenant)
        metrics = await self.store.room_metrics(sorted(known))
        return [_public_metrics(m) for m in metrics]

    def _metrics_payload(self, room: Room, metrics: dict) -> dict:
        payload = _public_metrics(metrics)
        payload["type"] = "ROOM_METRICS"
        payload["roomCode"] = room.code
        if not payload["capacity"]:
            payload["capacity"] = room.capacity
        payload["ts"] = _now_ms()
        return payload

    # -- history -------------------------------------------------------------------------------

    def sample_rooms(self, now_ms: int | None = None) -> None:
        """Once a second: add each room's online count to its minute sample; emit finished minutes."""
        now_ms = _now_ms() if now_ms is None else now_ms
        bucket = _minute(now_ms)
        for room in list(self.rooms.values()):
            if room.sample.bucket != bucket:
                self._emit_sample(room)
                room.sample = RoomSample(bucket)
            online = len(room.sessions)
            sample = room.sample
            sample.online_sum += online
            sample.online_samples += 1
            if online > sample.online_max:
                sample.online_max = online

    def _emit_sample(self, room: Room) -> None:
        if self.history and not room.sample.empty:
            self.store.event(room.sample.event(room, self.node_id))
        room.sample = RoomSample(room.sample.bucket)

    def checkpoint_sessions(self) -> int:
        """Emit a checkpoint for every session that heartbeated since its last one."""
        if not self.history:
            return 0
        count = 0
        for session in self.sessions.values():
            if session.heartbeats != session.checkpointed:
                session.checkpointed = session.heartbeats
                self.store.event(session.checkpoint_event())
                count += 1
        return count

    def flush_history(self) -> None:
        """Emit every room's partial minute (shutdown)."""
        for room in self.rooms.values():
            self._emit_sample(room)

    # -- rooms ---------------------------------------------------------------------------------

    def _room(self, definition: RoomDef) -> Room:
        room = self.rooms.get(definition.room_id)
        if room is None:
            room = self.rooms[definition.room_id] = Room(definition)
            room.watched = room.room_id in self.watched
        elif definition.capacity and definition.capacity != room.capacity:
            room.capacity = definition.capacity
            self.store.set_capacity(room.room_id, room.capacity)
        return room

    def _drop_room(self, room: Room) -> None:
        self._emit_sample(room)
        self.rooms.pop(room.room_id, None)
        self._count_rooms()

    # -- fan-out between processes -------------------------------------------------------------

    def _out_changed(self, room: Room) -> None:
        """A local session of a watched room changed: publish this process's changes soon."""
        if room.out_scheduled:
            return
        room.out_scheduled = True
        wait = room.out_published_at + OUT_WINDOW_S - time.monotonic()
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

    def remote_changes(self, room_id: str, payload: dict) -> None:
        """Roster changes published by some process (this one included) for a room watched here."""
        room = self.rooms.get(room_id)
        if room is None or not (room.roster_subs or room.metrics_subs or room.pending_subs):
            return
        if room.roster_subs or room.pending_subs:
            joined, left, updated = room.joined, room.left, room.updated
            for entry in payload.get("j", ()):
                sid = entry["sessionId"]
                left.pop(sid, None)
                updated.pop(sid, None)
                joined[sid] = entry
            for sid, reason in payload.get("l", {}).items():
                # Passed on even when its join waits in this window: that join may repeat a session
                # the subscribers' snapshot showed (see watched_changed), and subscribers ignore a
                # left for a session they do not have.
                joined.pop(sid, None)
                left[sid] = reason
                updated.pop(sid, None)
            for entry in payload.get("u", ()):
                sid = entry["sessionId"]
                if sid in joined:
                    joined[sid] = entry
                elif sid not in left:
                    updated[sid] = entry
        self._changed(room)

    def watched_changed(self, watched: set[str]) -> None:
        """The set of rooms some process watches changed: publish changes of exactly those.

        A room that becomes watched has its local sessions published as joined: the watcher may
        have read its snapshot before a join this process made while it had not yet heard of the
        watcher (the announcement crosses the network; on a Redis Cluster, the cluster bus too,
        which can hold it back tens of milliseconds). Subscribers apply joined entries
        idempotently, so one they already have costs nothing.
        """
        self.watched = watched
        for room in self.rooms.values():
            now_watched = room.room_id in watched
            if now_watched and not room.watched and room.sessions:
                for session_id, session in room.sessions.items():
                    room.out_left.pop(session_id, None)
                    room.out_joined[session_id] = session
                self._out_changed(room)
            room.watched = now_watched

    async def _watch(self, room: Room) -> None:
        room.watched = True
        if self.fanout is not None:
            await self.fanout.watch(room.room_id)

    def _unwatch_if_unused(self, room: Room) -> None:
        if not (room.metrics_subs or room.roster_subs or room.pending_subs) and self.fanout is not None:
            self._loop().create_task(self.fanout.unwatch(room.room_id))

    def _changed(self, room: Room) -> None:
        """Something subscribers see changed: publish now, or when the room's window reopens.

        Leading and trailing edge: a change in a quiet room goes out at once; in a busy room the
        changes of one window go out together, at most one message per window per subscriber.
        """
        if room.dirty or not (room.metrics_subs or room.roster_subs):
            return
        room.dirty = True
        wait = room.published_at + self.publish_interval_s - time.monotonic()
        self._loop().call_later(max(0.0, wait), self._publish_soon, room)

    def _count_rooms(self) -> None:
        self.metrics.rooms_total.set(sum(1 for r in self.rooms.values() if r.sessions))

    # -- re-asserting Redis after it lost state -----------------------------------------------

    def live_sessions(self):
        """Every session this node holds as Redis should hold it: what the hot store writes again
        after Redis lost it or may have (a restart, FLUSHALL, an outage). The newest heartbeat
        and latency are the session's own, so nothing coalesced during an outage is lost. Each
        session is read when the caller takes it, so the caller may pause between items."""
        ttl_s = self.session_ttl_s
        # A snapshot: the caller may pause between items while sessions start and end.
        for session in list(self.sessions.values()):
            if self.sessions.get(session.session_id) is not session:
                continue  # ended meanwhile: its LEAVE is already queued
            room = session.room
            yield LiveSession(room.room_id, room.tenant, room.code, room.capacity, session.session_id,
                              session.user_id, session.last_heartbeat_at, session.latency_ms, ttl_s,
                              session.static_fields())  # fmt: skip

    def holds(self, session_id: str) -> bool:
        """Whether this node holds the session (Redis may still list ones whose LEAVE was lost)."""
        return session_id in self.sessions

    def end_all(self, reason: str = "shutdown") -> None:
        """End every local session and emit the partial room samples (node shutdown)."""
        for session in list(self.sessions.values()):
            self.end(session, reason)
        self.flush_history()


def _public_metrics(metrics: dict) -> dict:
    out = dict(metrics)
    out.pop("tenant", None)
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


def _minute(ms: int) -> int:
    return ms - ms % 60_000


async def run_every(interval_s: float, job, name: str) -> None:
    """Run ``job`` (a coroutine function) every ``interval_s``, logging and surviving its failures."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", name)
