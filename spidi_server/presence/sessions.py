"""Sessions: HELLO (join or resume), HEARTBEAT, LEAVE, the connection's close, expiry and end.

This node's sessions live in ``LocalState.sessions``, their heartbeat figures in the node's
heartbeat lane (``spidi_core.HeartbeatLane``: a heartbeat the lane answered never reaches Python,
one the full path checked is recorded there with ``beat``), and their liveness in a heartbeat
wheel. The wheel is not touched per heartbeat: a deadline is armed at join and resume, and when
it passes, a session that beat since is armed again at its last beat plus the timeout (lazily,
with the same observable timeouts); one that did not ends with ``timeout``, or with
``disconnect`` after the grace period of a closed connection. Every change is written to the hot
store (buffered: the heartbeat path never awaits; the beats themselves go with the flusher's
drain of the lane, ``beats.LaneDrain``), published to the watching processes (``crossnode``) and,
with history on, recorded as ``session_started`` / ``session_ended`` events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterator

from spidi_core import HeartbeatWheel

from .. import logs, roles
from ..deadlines import Deadlines
from ..errors import (
    BadRequestError,
    ForbiddenError,
    RoomDisabledError,
    RoomFullError,
    RoomNotFoundError,
    UnknownSessionError,
)
from ..metrics import NodeMetrics
from ..protocol import destinations as dest
from ..protocol import payloads
from ..rooms import RoomCatalog
from ..settings import Settings
from ..stores import events
from ..stores.hot_store import REFUSED, HotStore, LiveSession, PendingJoin
from . import handover
from .crossnode import CrossNode
from .local import LocalState
from .model import Client, Session, now_ms, without
from .session_ids import new_session_id

log = logging.getLogger("spidi.presence")

MAX_SESSIONS_PER_CONNECTION = 16


def _no_answer(pending: PendingJoin) -> None:
    """A join's deadline passed before Redis answered: it is admitted degraded (``_admitted``)."""
    pending.resolve(None)


class SessionLifecycle:
    """The lifecycle of this node's presence sessions."""

    def __init__(
        self,
        settings: Settings,
        local: LocalState,
        store: HotStore,
        catalog: RoomCatalog,
        metrics: NodeMetrics,
        crossnode: CrossNode,
        node_id: str,
        policy: roles.Policy,
    ):
        self.settings = settings
        self.policy = policy  # who may join
        self.local = local
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.crossnode = crossnode
        self.node_id = node_id
        self.history = settings.history
        self.wheel = HeartbeatWheel(0.1, 4096, time.monotonic())
        self.timeout_s = settings.heartbeat_timeout_ms / 1000
        self.grace_s = settings.grace_period_ms / 1000
        self.session_ttl_s = int((settings.heartbeat_timeout_ms + settings.grace_period_ms) / 1000) + 60
        self.join_timeout_s = settings.redis_join_timeout_ms / 1000
        self.capacity_degraded = False  # admitting on local counts (Redis down or slow): logged once
        self.lane = local.lane
        self._sessions = local.sessions  # the same dict: one lookup less on the heartbeat path
        self._hello_waiting: dict[Client, int] = {}  # clients with a HELLO waiting for Redis
        self._closed_waiting: set = set()  # ... whose connection closed meanwhile
        self.handed_over: set[str] = set()  # sessions handed to the grace period (a graceful stop)
        # Joins waiting for Redis's admission: at the deadline the join answers None itself (the
        # first answer stands). One timer for the oldest instead of one per HELLO.
        self._join_deadlines = Deadlines(self.join_timeout_s, _no_answer)

    # -- HELLO ---------------------------------------------------------------------------------

    async def hello(self, client: Client, payload: dict) -> None:
        """HELLO: create (or resume) a session and answer WELCOME on /user/queue/session.

        A new session takes a place in its room only if Redis admits it: the join script counts
        the sessions of every node, so N processes cannot admit N x capacity. HELLO waits for
        that answer (at most ``redis_join_timeout_ms``); when Redis is down or slow it admits on
        this process's own count instead (degraded mode, logged once, counted in
        ``spidi_capacity_checks_degraded_total``). The local count is also a fast pre-check.
        """
        hello, claims = self._checked(client, payload)
        await self._hello(client, hello, claims)

    def start_hello(self, client: Client, payload: dict) -> asyncio.Future | None:
        """``hello`` without a task of its own for a new session: a refusal known at once raises
        its ``AppError`` here; None when answered already; else a future that completes (or
        raises the ``AppError``) once answered. A new session's (the usual HELLO) is finished
        from a callback on Redis's answer, so a connect makes no task, no coroutine chain and no
        timer for its HELLO; a resume runs ``hello`` in a task."""
        hello, claims = self._checked(client, payload)
        if hello.resume_session_id is not None:
            return asyncio.ensure_future(self._hello(client, hello, claims))
        joining = self._join(client, hello, claims)
        if joining is None:
            return None
        pending, session = joining
        done = pending.result.get_loop().create_future()
        pending.on_answer = functools.partial(self._answered, client, session, hello.room_code, pending, done)
        return done

    def _checked(self, client: Client, payload: dict) -> tuple[payloads.HelloPayload, object]:
        """The HELLO's body, checked, and the client's claims (``AppError`` if it may not join)."""
        claims = client.stomp.claims
        if not self.policy.allows(claims.roles, roles.JOIN):
            raise ForbiddenError(f"HELLO needs role {self.policy.describe(roles.JOIN)}")
        return payloads.hello(payload), claims

    async def _hello(self, client: Client, hello: payloads.HelloPayload, claims) -> None:
        """A checked HELLO: resume (claiming a handed-over session if need be) or join."""
        if hello.resume_session_id is not None:
            session = self.local.sessions.get(hello.resume_session_id)
            if session is None and self.grace_s > 0:
                session = await self._claim(client, hello, claims)
            if self._resumed(client, session, hello, claims):
                return
            # Not resumable (expired, foreign, other room): fall through to a fresh session.
        joining = self._join(client, hello, claims)
        if joining is None:
            return
        pending, session = joining
        try:
            result = await pending.result
        finally:
            gone = self._hello_done(client, session.room, pending)
        self._admit(client, session, hello.room_code, self._admitted(pending, result), gone)

    def _resumed(self, client: Client, session: Session | None, hello: payloads.HelloPayload, claims) -> bool:
        """Resume ``session`` for this HELLO if it is the same user's in the same room (WELCOME)."""
        if session is not None and session.user_id == claims.user_id and session.room.code == hello.room_code:
            self._resume(client, session)
            self._welcome(client, session, resumed=True)
            return True
        return False

    def _join(
        self, client: Client, hello: payloads.HelloPayload, claims
    ) -> tuple[PendingJoin, Session] | None:
        """A fresh session: checked here, then sent to Redis to be admitted. None when answered
        already (Redis is known to be away: admitted on the local count), else the join and its
        session, to admit once Redis answers or the deadline passes."""
        code = hello.room_code
        local = self.local
        if len(client.sessions) >= MAX_SESSIONS_PER_CONNECTION:
            raise BadRequestError(f"at most {MAX_SESSIONS_PER_CONNECTION} sessions per connection")
        definition = self.catalog.lookup(claims.tenant, code, create=True)
        if definition is None:
            raise RoomNotFoundError(f"room {code!r} does not exist")
        if not definition.active:
            raise RoomDisabledError(f"room {code!r} is disabled")
        room = local.room(definition)
        # HELLOs still waiting for Redis count too: in degraded mode they are admitted on this count.
        if len(room.sessions) + room.joining >= room.capacity:
            raise RoomFullError(f"room {code!r} is full ({room.capacity} sessions)")
        started = now_ms()
        session = Session(new_session_id(), room, claims.user_id, hello, client.ip, started, self.lane)
        session.trace_id = client.conn_id
        session.node_id = self.node_id
        pending = self.store.join(
            room.room_id,
            room.tenant,
            room.code,
            room.capacity,
            session.session_id,
            session.user_id,
            started,
            self.session_ttl_s,
            session.static_fields(),
        )
        room.joining += 1
        self._hello_waiting[client] = self._hello_waiting.get(client, 0) + 1
        if self.store.healthy:
            # The deadline answers None itself (the first answer stands, Redis's later one is
            # dropped): no wait_for's and shield's futures and callbacks, and no timer of its own.
            self._join_deadlines.add(pending, pending.result.get_loop())
            return pending, session
        gone = self._hello_done(client, room, pending)
        self._admit(client, session, code, self._admitted(pending, None), gone)
        return None

    def _hello_done(self, client: Client, room, pending: PendingJoin) -> bool:
        """A HELLO's wait for Redis is over: its deadline, room and client stop counting it;
        whether the connection closed meanwhile."""
        self._join_deadlines.discard(pending)
        room.joining -= 1
        return self._stop_waiting(client)

    def _stop_waiting(self, client: Client) -> bool:
        """One wait of ``client``'s (for Redis, for a handed-over session) is over; whether its
        connection closed meanwhile."""
        waiting = self._hello_waiting.pop(client) - 1
        gone = client in self._closed_waiting
        if waiting:
            self._hello_waiting[client] = waiting
        else:
            self._closed_waiting.discard(client)
        return gone

    def _answered(
        self, client: Client, session: Session, code: str, pending: PendingJoin, done: asyncio.Future, answer
    ) -> None:
        """Redis answered a join (or its deadline passed): admit or refuse, then finish ``done``.
        Called by ``PendingJoin.resolve`` as the answer is given."""
        gone = self._hello_done(client, session.room, pending)
        if done.cancelled():
            return
        try:
            self._admit(client, session, code, self._admitted(pending, answer), gone)
        except Exception as exc:  # the RoomFullError of a refusal, or a bug: whoever waits gets it
            done.set_exception(exc)
            return
        done.set_result(None)

    def _admit(self, client: Client, session: Session, code: str, admitted: bool, gone: bool) -> None:
        """Start a session Redis admitted (``RoomFullError`` if it did not)."""
        local = self.local
        room = session.room
        if not admitted:
            if room.idle:
                local.drop_room(room)
            raise RoomFullError(f"room {code!r} is full ({room.capacity} sessions)")
        # The connection may have closed while Redis answered: the session is in Redis, so it
        # is started and ended at once (the client never learnt its id, so it cannot resume it).
        session.client = None if gone else client
        if not gone:
            client.sessions += (session,)
        room.sessions[session.session_id] = session
        local.sessions[session.session_id] = session
        now = time.monotonic()
        self.lane.add_session(session.session_id, client.lane_key, room.key, session.connected_at, now)
        local.sampling.enter(session)  # its SLO breakdown groups
        if gone:
            self.lane.detach(session.session_id)
        self.wheel.add(session.session_id, now + self.timeout_s)
        self.crossnode.session_joined(room, session)
        if self.history:
            self.store.event(session.started_event())
        self.metrics.sessions_active.set(len(local.sessions))
        if len(room.sessions) == 1:  # only a room's first session changes the count (a walk of every room)
            local.count_rooms()
        if log.isEnabledFor(logging.INFO):  # its fields are built only for a line that is written
            logs.event(log, "session_started", tenant=room.tenant, **session.log_fields())
        if gone:
            self.end(session, "disconnect")
            return
        self._welcome(client, session, resumed=False)

    async def _claim(self, client: Client, hello: payloads.HelloPayload, claims) -> Session | None:
        """A session a stopped process handed over (``handover.claim``), or None; None too when
        the connection closed meanwhile (the claimed session then waits here for another HELLO)."""
        self._hello_waiting[client] = self._hello_waiting.get(client, 0) + 1
        try:
            session = await handover.claim(self, client, hello, claims.user_id, claims.tenant)
        finally:
            gone = self._stop_waiting(client)
        return None if gone else session

    def _admitted(self, pending: PendingJoin, result) -> bool:
        """Whether Redis admits the join, from its answer; True without one (None: Redis is down
        or slow, or the script failed)."""
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
            logs.event(
                log,
                "capacity_check_degraded",
                logging.WARNING,
                error=self.store.last_error,
                timeout_ms=self.join_timeout_s * 1000,
            )
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
                "gracePeriodMs": self.settings.grace_period_ms,
                "resumed": resumed,
            },
        )

    def _resume(self, client: Client, session: Session) -> None:
        old = session.client
        if old is not None and old is not client:
            old.sessions = without(old.sessions, session)
        session.client = client
        session.lost = False
        if session not in client.sessions:
            client.sessions += (session,)
        self.lane.attach(session.session_id, client.lane_key)
        self.wheel.touch(session.session_id, time.monotonic() + self.timeout_s)
        room = session.room
        fields = None
        if session.ip != client.ip:
            session.ip = client.ip
            fields = {"ip": client.ip}
            self.crossnode.session_updated(room, session)
        self.store.update_session(
            room.room_id, session.session_id, room.tenant, session.user_id, self.session_ttl_s, fields
        )
        logs.event(
            log,
            "session_resumed",
            trace_id=client.conn_id,
            session_id=session.session_id,
            user_id=session.user_id,
            room_id=room.room_id,
            client_info=session.client_info(),
        )

    # -- HEARTBEAT, LEAVE ----------------------------------------------------------------------

    def heartbeat(self, client: Client, session_id: str, latency_ms: float | None) -> None:
        """HEARTBEAT on the full path (one the lane did not take): checked here, recorded in the
        lane like the lane's own (figures, Redis, TTL, roster updates, samples and counters all
        follow from there in batches). No await, no log line, no Redis round trip. ``latency_ms``
        None: a heartbeat without a latency sample (the lane leaves the latency figures alone)."""
        session = self._sessions.get(session_id)
        if session is None or session.client is not client:
            raise UnknownSessionError(f"no session {session_id!r} on this connection")
        self.lane.beat(session_id, latency_ms, now_ms(), time.monotonic())

    def leave(self, client: Client, session_id: str) -> None:
        """LEAVE: end the session at once."""
        session = self.local.sessions.get(session_id)
        if session is None or session.client is not client:
            raise UnknownSessionError(f"no session {session_id!r} on this connection")
        self.end(session, "leave")

    # -- ends ----------------------------------------------------------------------------------

    def client_closed(self, client: Client, clean: bool) -> None:
        """The connection is gone. Clean (DISCONNECT): end its sessions; abrupt: keep them for
        the grace period (its subscriptions are the caller's to forget)."""
        if client in self._hello_waiting:
            self._closed_waiting.add(client)  # its HELLO ends the session once Redis answered
        sessions = client.sessions
        client.sessions = ()
        for session in sessions:
            if session.client is not client:
                continue
            if clean or self.grace_s <= 0:
                self.end(session, "disconnect")
            else:
                session.client = None
                self.lane.detach(session.session_id)
                self.wheel.touch(session.session_id, time.monotonic() + self.grace_s)

    def end(self, session: Session, reason: str) -> None:
        """End a session: remove it locally and from Redis, tell subscribers and the client."""
        local = self.local
        if local.sessions.pop(session.session_id, None) is None:
            return
        room = session.room
        room.sessions.pop(session.session_id, None)
        self.wheel.remove(session.session_id)
        session.close_figures()  # what the events and logs below read
        self.lane.remove_session(session.session_id)
        local.sampling.leave(session)
        # Its keys expire after the room's empty TTL if it empties: the definition in force now
        # (0 for a room deleted meanwhile: the rooms sweep gives them the default).
        definition = self.catalog.lookup(room.tenant, room.code, create=True)
        empty_ttl_s = definition.empty_ttl_s if definition is not None else 0
        self.store.leave(room.room_id, session.session_id, room.tenant, session.user_id, empty_ttl_s)
        client = session.client
        if client is not None:
            client.sessions = without(client.sessions, session)
            if reason != "leave" and client.stomp.send_json(
                dest.USER_SESSION,
                {"type": "SESSION_ENDED", "sessionId": session.session_id, "reason": reason},
            ):
                client.push()
        self.crossnode.session_left(room, session.session_id, reason)
        if self.history:
            # A lost node's session ended when it last beat, not when the grace period ran out.
            ended_at = session.last_heartbeat_at if reason == events.NODE_LOST else now_ms()
            self.store.event(session.end_event(reason, ended_at))
        self.metrics.sessions_active.set(len(local.sessions))
        local.count_rooms()
        self.metrics.sessions_ended.labels(reason=reason).inc()
        logs.event(
            log,
            "session_ended",
            reason=reason,
            heartbeats=session.heartbeats,
            duration_ms=now_ms() - session.connected_at,
            **session.log_fields(),
        )
        if room.idle:
            local.drop_room(room)

    def expire(self, now: float | None = None) -> int:
        """End every session whose deadline passed: ``timeout``, or ``disconnect`` after the grace
        period (``node_lost`` for a session taken back after a crash whose client never came back).

        A connected session's deadline is its last beat plus the timeout, but the wheel only
        knows the one armed at join or resume (heartbeats do not touch it): when that passes, a
        session that beat since is armed again at its last beat plus the timeout."""
        if now is None:
            now = time.monotonic()
        expired = self.wheel.advance(now)
        sessions, lane, timeout_s = self.local.sessions, self.lane, self.timeout_s
        for session_id in expired:
            session = sessions.get(session_id)
            if session is not None:
                if session.client is not None:
                    last = lane.last_beat(session_id)
                    if last is not None and last + timeout_s > now:
                        self.wheel.add(session_id, last + timeout_s)
                        continue
                    self.end(session, events.TIMEOUT)
                else:
                    self.end(session, events.NODE_LOST if session.lost else events.DISCONNECT)
        return len(expired)

    def end_all(self, reason: str) -> None:
        """End every local session (node shutdown)."""
        for session in list(self.local.sessions.values()):
            self.end(session, reason)

    # -- a restart under the same node id ------------------------------------------------------

    def adopt(self, stored: list[dict]) -> list[str]:
        """Take back this node id's sessions a previous process left in Redis (it was killed or
        crashed): each one still alive (its last heartbeat less than ``heartbeat_timeout_ms``
        ago, so it had not timed out) is held again as if its connection had just closed
        abruptly, so a HELLO with its id within ``grace_period_ms`` resumes it (same id, no
        leave, no join, no history event) and otherwise it ends ``node_lost`` (at its last
        heartbeat) when the grace period runs out. Nothing is published: Redis still lists the
        session, as every roster did. Call before accepting connections, with
        ``HotStore.node_sessions(node_id)``; returns the ids taken back (the rest are the
        reaper's to end). See ``handover``."""
        return handover.adopt(self, stored)

    def hand_over_all(self) -> int:
        """A graceful stop: hand every local session to the grace period in Redis, where any
        node's HELLO may resume it (``handover.hand_over_all``); how many."""
        return handover.hand_over_all(self)

    # -- re-asserting Redis after it lost state -----------------------------------------------

    def live_sessions(self) -> Iterator[LiveSession]:
        """Every session this node holds as Redis should hold it: what the hot store writes again
        after Redis lost it or may have (a restart, FLUSHALL, an outage). The newest heartbeat
        and latency are the session's own, so nothing coalesced during an outage is lost. Each
        session is read when the caller takes it, so the caller may pause between items."""
        ttl_s = self.session_ttl_s
        sessions = self.local.sessions
        # A snapshot: the caller may pause between items while sessions start and end.
        for session in list(sessions.values()):
            if sessions.get(session.session_id) is not session:
                continue  # ended meanwhile: its LEAVE is already queued
            room = session.room
            last_beat, latency, *_ = session.figures()
            yield LiveSession(
                room.room_id,
                room.tenant,
                room.code,
                room.capacity,
                session.session_id,
                session.user_id,
                last_beat,
                latency,
                ttl_s,
                session.static_fields(),
            )

    def holds(self, session_id: str) -> bool:
        """Whether this node holds the session (Redis may still list ones whose LEAVE was lost)."""
        return session_id in self.local.sessions
