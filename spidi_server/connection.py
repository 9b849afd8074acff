"""One client connection, whatever the transport: protocol events dispatched to presence.

A transport owns the socket. It feeds each WebSocket message to ``ClientConnection.receive``,
writes what ``write`` is handed, and reports the close with ``closed``. Everything here is
synchronous except a SUBSCRIBE (its snapshot is read from Redis) and a HELLO (Redis admits the
session against the room's capacity across nodes); events that arrive while one is pending wait in
order behind it, so RECEIPTs and replies keep the order of the requests, and a HEARTBEAT right
behind a HELLO finds its session.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from typing import Protocol

from spidi_core import HeartbeatLane

from . import logs
from .errors import AppError, SlowConsumerError
from .metrics import NodeMetrics
from .protocol.destinations import PRIVATE_KINDS, Destination
from .protocol.events import (
    Connected,
    Disconnect,
    Event,
    Heartbeat,
    Hello,
    Leave,
    ReceiptOnly,
    Subscribe,
    Unsubscribe,
)
from .protocol.stomp import STATE_OPEN, StompConnection
from .settings import Settings

log = logging.getLogger("spidi.connection")

# A connection's key in the heartbeat lane: a counter, unique in the process (a lane per node).
_lane_keys = itertools.count(1)


class Writer(Protocol):
    """What a transport gives a connection to write with."""

    def write(self, chunks: list[bytes]) -> None: ...  # one text message per chunk, in order

    def buffered(self) -> int: ...  # bytes written and not yet taken by the kernel

    # Close after what is queued (``discard``: drop it where possible); a close the client does
    # not complete is cut after a grace period.
    def close(self, code: int, reason: str, discard: bool = False) -> None: ...


class PresenceService(Protocol):
    """What a connection asks presence to do (``presence.Presence``); the connection is its client."""

    lane: HeartbeatLane  # the node's heartbeat lane: this connection's rate bucket and fast lane

    async def hello(self, client: ClientConnection, payload: dict) -> None: ...

    # HELLO without a task: AppError at once, None when answered, else a future done once answered.
    def start_hello(self, client: ClientConnection, payload: dict) -> asyncio.Future | None: ...

    def heartbeat(self, client: ClientConnection, session_id: str, latency_ms: float | None) -> None: ...

    def leave(self, client: ClientConnection, session_id: str) -> None: ...

    async def subscribe(self, client: ClientConnection, sub_id: str, destination: Destination) -> None: ...

    def unsubscribe(self, client: ClientConnection, sub_id: str) -> None: ...

    def client_closed(self, client: ClientConnection, clean: bool) -> None: ...


class Host(Protocol):
    """What a connection needs from the process that accepted it (the node)."""

    settings: Settings  # max_send_buffer, max_message_rate, max_message_burst
    metrics: NodeMetrics  # frame counts, errors, refusals
    presence: PresenceService

    def new_stomp_connection(self, conn_id: str, query_token: str | None) -> StompConnection: ...


class ClientConnection:
    """A connected client: its STOMP state, its presence sessions, and the dispatch of its events."""

    __slots__ = (
        "host",
        "stomp",
        "ip",
        "sessions",
        "conn_id",
        "writer",
        "backlog",
        "clean",
        "_presence",
        "_count",
        "_errors",
        "_hot",
        "_send_cap",
        "_closing",
        "lane",
        "lane_key",
        "_ready",
    )

    def __init__(self, host: Host, writer: Writer, conn_id: str, ip: str, query_token: str | None):
        self.host = host
        self.writer = writer
        self.conn_id = conn_id
        self.ip = ip
        self.stomp: StompConnection = host.new_stomp_connection(conn_id, query_token)
        self.sessions: tuple = ()  # presence's Session objects (presence.model.without)
        self.backlog: list[Event] | None = None  # events waiting behind a pending SUBSCRIBE or HELLO
        self.clean = False
        self._presence = host.presence
        self._count = host.metrics.frame_counts
        self._errors = host.metrics.errors
        self._hot = host.metrics.hot
        settings = host.settings
        self._send_cap = settings.max_send_buffer
        self._closing = False  # the writer was told to close: what is queued later is dropped
        # The lane keeps this connection's token bucket and last_received, and answers its
        # heartbeats itself while ``_ready`` (see _update_ready); a transport hooks it to its
        # WebSocket stream with ``lane`` and ``lane_key``.
        self.lane = host.presence.lane
        self.lane_key = next(_lane_keys)
        self._ready = False
        rate = settings.max_message_rate or 0.0
        self.stomp.use_lane(self.lane, self.lane_key, rate, settings.max_message_burst if rate else 0.0)

    # -- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """One WebSocket message from the client."""
        parser = self.stomp.parser
        beats = parser.heartbeats
        events = self.stomp.receive_data(data)
        if parser.heartbeats != beats:
            self._hot.stomp_heartbeats += parser.heartbeats - beats
        if self.backlog is not None:
            self.backlog.extend(events)
            self._update_ready()
            return
        i = self.dispatch(events)
        if i >= 0:
            self.backlog = events[i + 1 :]
            self._wait(events[i])
        self.push()
        self._update_ready()

    def _update_ready(self) -> None:
        """Tell the lane whether it may answer this connection's heartbeats itself: exactly when
        the full path would answer one at once and alone, i.e. STOMP is connected, no HELLO or
        SUBSCRIBE is pending (what follows them waits in order), the parser holds no partial
        frame, and nothing is closing. Called after every change of those; the lane is told only
        when the answer changes."""
        conn = self.stomp
        ready = (
            conn.state == STATE_OPEN
            and self.backlog is None
            and not self._closing
            and conn.close_reason is None
            and not conn.parser.buffered
        )
        if ready is not self._ready:
            self._ready = ready
            self.lane.set_ready(self.lane_key, ready)

    def _wait(self, event: Hello | Subscribe) -> None:
        """Start a HELLO or SUBSCRIBE; what follows waits in ``backlog`` until it is answered. A
        HELLO continues from a callback on its future (no task per connect); a SUBSCRIBE (its
        snapshot is read from Redis) from a task."""
        if type(event) is not Hello:
            asyncio.get_running_loop().create_task(self._subscribe_then_continue(event))
            return
        self._count[0] += 1
        try:
            waiter = self._presence.start_hello(self, event.payload)
        except Exception as exc:  # an AppError (answered on the errors queue) or a bug
            waiter = asyncio.get_running_loop().create_future()
            waiter.set_exception(exc)
        else:
            if waiter is None:
                # Answered at once (a resume): its receipt and what follows still wait for the
                # next turn of the loop, as behind any HELLO.
                waiter = asyncio.get_running_loop().create_future()
                waiter.set_result(None)
        waiter.add_done_callback(functools.partial(self._hello_answered, event.receipt))

    def _hello_answered(self, receipt: str | None, waiter: asyncio.Future) -> None:
        """A HELLO was answered (WELCOME queued, or its error): its receipt, then the backlog.
        Cancelled, or failed with something other than an AppError: nothing more is answered
        (as when its task ended so)."""
        waiting = False
        try:
            if waiter.cancelled():
                return
            exc = waiter.exception()
            if exc is not None:
                if not isinstance(exc, AppError):
                    raise exc
                self._errors.labels(code=exc.name).inc()
                self.stomp.send_app_error(exc, receipt)
            if receipt is not None:
                self.stomp.send_receipt(receipt)
            waiting = self._continue()
        finally:
            if not waiting:
                self.backlog = None
                self.push()
                self._update_ready()

    def _continue(self) -> bool:
        """Handle what waited behind an answered HELLO, up to the next HELLO or SUBSCRIBE (True:
        that one was started and the rest waits behind it)."""
        events, self.backlog = self.backlog, []
        i = self.dispatch(events)
        if i < 0:
            return False
        self.backlog = events[i + 1 :] + self.backlog
        self.push()
        self._wait(events[i])
        return True

    async def _subscribe_then_continue(self, event: Hello | Subscribe) -> None:
        try:
            while True:
                await (self.hello(event) if type(event) is Hello else self.subscribe(event))
                events, self.backlog = self.backlog, []
                i = self.dispatch(events)
                if i < 0:
                    break
                self.backlog = events[i + 1 :] + self.backlog
                event = events[i]
                self.push()
        finally:
            self.backlog = None
            self.push()
            self._update_ready()

    def dispatch(self, events: list[Event]) -> int:
        """Handle events in order; stop at a SUBSCRIBE or HELLO and return its index (it must be
        awaited), else -1."""
        presence = self._presence
        count = self._count
        conn = self.stomp
        for i, event in enumerate(events):
            # By exact type, heartbeats first: the cheapest test on the path every heartbeat takes.
            kind = type(event)
            receipt = None
            try:
                if kind is Heartbeat:
                    count[0] += 1
                    receipt = event.receipt
                    presence.heartbeat(self, event.session_id, event.latency_ms)
                elif kind is Subscribe and event.destination.kind in PRIVATE_KINDS:
                    # The connection's own queues: presence has nothing to do for them, so they
                    # are answered here, without a task per SUBSCRIBE (two per connect).
                    count[1] += 1
                    receipt = event.receipt
                elif kind is Subscribe or kind is Hello:
                    return i  # both wait for Redis: the caller awaits them, the rest queues behind
                elif kind is Leave:
                    count[0] += 1
                    receipt = event.receipt
                    presence.leave(self, event.session_id)
                elif kind is Unsubscribe:
                    count[2] += 1
                    receipt = event.receipt
                    presence.unsubscribe(self, event.sub_id)
                elif kind is Connected:
                    count[3] += 1
                    # Debug only: session_started already says who joined; a line per connect cost
                    # ~8% of connect CPU at 10,000 connections. Checked before its fields are built.
                    if log.isEnabledFor(logging.DEBUG):
                        claims = event.claims
                        logs.event(
                            log,
                            "connected",
                            logging.DEBUG,
                            trace_id=self.conn_id,
                            user_id=claims.user_id,
                            tenant=claims.tenant,
                            client_info={"ip": self.ip},
                        )
                elif kind is Disconnect:
                    count[4] += 1
                    receipt = event.receipt
                    self.clean = True
                elif kind is ReceiptOnly:
                    count[5] += 1
                    receipt = event.receipt
            except AppError as exc:
                self._errors.labels(code=exc.name).inc()
                conn.send_app_error(exc, receipt)
            if receipt is not None:
                conn.send_receipt(receipt)
        return -1

    async def subscribe(self, event: Subscribe) -> None:
        """SUBSCRIBE: the one step that reads Redis (the snapshot) before answering."""
        sub_id, receipt = event.sub_id, event.receipt
        self._count[1] += 1
        try:
            await self._presence.subscribe(self, sub_id, event.destination)
        except AppError as exc:
            self.stomp.remove_subscription(sub_id)
            self._errors.labels(code=exc.name).inc()
            self.stomp.send_app_error(exc, receipt)
        if receipt is not None:
            self.stomp.send_receipt(receipt)

    async def hello(self, event: Hello) -> None:
        """HELLO: WELCOME or an error once Redis has admitted (or refused) the session."""
        receipt = event.receipt
        self._count[0] += 1
        try:
            await self._presence.hello(self, event.payload)
        except AppError as exc:
            self._errors.labels(code=exc.name).inc()
            self.stomp.send_app_error(exc, receipt)
        if receipt is not None:
            self.stomp.send_receipt(receipt)

    # -- output --------------------------------------------------------------------------------

    def push(self) -> None:
        """Write what the protocol queued; close if it asked for a close or the client does not read."""
        conn = self.stomp
        if self._closing:
            conn.data_to_send()
            return
        if conn.outbox:
            writer = self.writer
            writer.write(conn.data_to_send())
            if writer.buffered() > self._send_cap:
                self._slow_consumer()
                return
        if self.clean or conn.close_reason is not None:
            self._closing = True
            if conn.close_reason is not None and not self.clean:
                self._errors.labels(code="PROTOCOL").inc()
                if conn.refused is not None:
                    self.host.metrics.refusals.labels(reason=conn.refused.reason).inc()
                claims = conn.claims
                logs.event(
                    log,
                    "connection_error",
                    logging.WARNING,
                    trace_id=self.conn_id,
                    user_id=claims.user_id if claims else None,
                    reason=conn.close_reason[1],
                    client_info={"ip": self.ip},
                )
            code, reason = conn.close_reason or (1000, "bye")
            conn.close(code, reason)
            self._update_ready()
            self.writer.close(code, reason)

    def _slow_consumer(self) -> None:
        """The client does not read: drop what waits for it, close 1008, count and log it once."""
        exc = SlowConsumerError(f"slow consumer: more than {self._send_cap} bytes waiting to be sent")
        conn = self.stomp
        conn.data_to_send()
        conn.close(exc.close_code, "slow consumer")
        conn.refused = exc
        self._closing = True
        self._update_ready()
        self.host.metrics.refusals.labels(reason=exc.reason).inc()
        claims = conn.claims
        logs.event(
            log,
            "connection_error",
            logging.WARNING,
            trace_id=self.conn_id,
            user_id=claims.user_id if claims else None,
            reason=str(exc),
            client_info={"ip": self.ip},
        )
        self.writer.close(exc.close_code, "slow consumer", discard=True)

    def close(self, code: int, reason: str, ws_reason: str | None = None) -> None:
        """Close from above (the node's liveness checks): nothing more is read or answered, the
        lane included; ``ws_reason`` is the WebSocket close's reason if it differs."""
        self.stomp.close(code, reason)
        self._closing = True
        self._update_ready()
        self.writer.close(code, ws_reason or reason)

    def closed(self) -> None:
        """The transport is gone (whoever closed it)."""
        self._ready = False
        self._presence.client_closed(self, self.clean)
        self.lane.close(self.lane_key)
