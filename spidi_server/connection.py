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
import logging
from typing import TYPE_CHECKING, Protocol

from . import logs
from .errors import AppError, SlowConsumerError
from .protocol import stomp
from .protocol.stomp import StompConnection

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("spidi.connection")


class Writer(Protocol):
    """What a transport gives a connection to write with."""

    def write(self, chunks: list[bytes]) -> None: ...  # one text message per chunk, in order

    def buffered(self) -> int: ...  # bytes written and not yet taken by the kernel

    # Close after what is queued (``discard``: drop it where possible); a close the client does
    # not complete is cut after a grace period.
    def close(self, code: int, reason: str, discard: bool = False) -> None: ...


class ClientConnection:
    """A connected client: its STOMP state, its presence sessions, and the dispatch of its events."""

    __slots__ = ("node", "stomp", "ip", "sessions", "conn_id", "writer", "backlog", "clean", "_presence",
                 "_count", "_errors", "_hot", "_send_cap", "_closing")  # fmt: skip

    def __init__(self, node: Node, writer: Writer, conn_id: str, ip: str, query_token: str | None):
        self.node = node
        self.writer = writer
        self.conn_id = conn_id
        self.ip = ip
        self.stomp: StompConnection = node.new_stomp_connection(conn_id, query_token)
        self.sessions: set = set()
        self.backlog: list | None = None  # events waiting behind a pending SUBSCRIBE
        self.clean = False
        self._presence = node.presence
        self._count = node.metrics.frame_counts
        self._errors = node.metrics.errors
        self._hot = node.metrics.hot
        settings = node.settings
        self._send_cap = settings.max_send_buffer
        self._closing = False  # the writer was told to close: what is queued later is dropped
        if settings.max_message_rate:
            self.stomp.limit_rate(settings.max_message_rate, settings.max_message_burst)

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
            return
        i = self.dispatch(events)
        if i >= 0:
            self.backlog = events[i + 1 :]
            asyncio.get_running_loop().create_task(self._subscribe_then_continue(events[i]))
        self.push()

    async def _subscribe_then_continue(self, event: tuple) -> None:
        try:
            while True:
                await (self.hello(event) if event[0] == stomp.EV_HELLO else self.subscribe(event))
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

    def dispatch(self, events: list[tuple]) -> int:
        """Handle events in order; stop at a SUBSCRIBE or HELLO and return its index (it must be
        awaited), else -1."""
        presence = self._presence
        count = self._count
        conn = self.stomp
        for i, event in enumerate(events):
            kind = event[0]
            receipt = None
            try:
                if kind == stomp.EV_HEARTBEAT:
                    count[0] += 1
                    receipt = event[3]
                    presence.heartbeat(self, event[1], event[2])
                elif kind == stomp.EV_SUBSCRIBE or kind == stomp.EV_HELLO:
                    return i  # both wait for Redis: the caller awaits them, the rest queues behind
                elif kind == stomp.EV_LEAVE:
                    count[0] += 1
                    receipt = event[2]
                    presence.leave(self, event[1])
                elif kind == stomp.EV_UNSUBSCRIBE:
                    count[2] += 1
                    receipt = event[3]
                    presence.unsubscribe(self, event[1])
                elif kind == stomp.EV_CONNECTED:
                    count[3] += 1
                    claims = event[1]
                    # Debug only: session_started already says who joined; a line per connect cost
                    # ~8% of connect CPU at 10,000 connections.
                    logs.event(log, "connected", logging.DEBUG, trace_id=self.conn_id, user_id=claims.user_id,
                               tenant=claims.tenant, ip=self.ip)  # fmt: skip
                elif kind == stomp.EV_DISCONNECT:
                    count[4] += 1
                    receipt = event[1]
                    self.clean = True
                elif kind == stomp.EV_RECEIPT_ONLY:
                    count[5] += 1
                    receipt = event[1]
            except AppError as exc:
                self._errors.labels(code=exc.name).inc()
                conn.send_app_error(exc, receipt)
            if receipt is not None:
                conn.send_receipt(receipt)
        return -1

    async def subscribe(self, event: tuple) -> None:
        """SUBSCRIBE: the one step that reads Redis (the snapshot) before answering."""
        _, sub_id, destination, receipt = event
        self._count[1] += 1
        try:
            await self._presence.subscribe(self, sub_id, destination)
        except AppError as exc:
            self.stomp.remove_subscription(sub_id)
            self._errors.labels(code=exc.name).inc()
            self.stomp.send_app_error(exc, receipt)
        if receipt is not None:
            self.stomp.send_receipt(receipt)

    async def hello(self, event: tuple) -> None:
        """HELLO: WELCOME or an error once Redis has admitted (or refused) the session."""
        receipt = event[2]
        self._count[0] += 1
        try:
            await self._presence.hello(self, event[1])
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
                    self.node.metrics.refusals.labels(reason=conn.refused.reason).inc()
                claims = conn.claims
                logs.event(log, "connection_error", logging.WARNING, trace_id=self.conn_id,
                           user_id=claims.user_id if claims else None, reason=conn.close_reason[1],
                           client_info={"ip": self.ip})  # fmt: skip
            code, reason = conn.close_reason or (1000, "bye")
            conn.close(code, reason)
            self.writer.close(code, reason)

    def _slow_consumer(self) -> None:
        """The client does not read: drop what waits for it, close 1008, count and log it once."""
        exc = SlowConsumerError(f"slow consumer: more than {self._send_cap} bytes waiting to be sent")
        conn = self.stomp
        conn.data_to_send()
        conn.close(exc.close_code, "slow consumer")
        conn.refused = exc
        self._closing = True
        self.node.metrics.refusals.labels(reason=exc.reason).inc()
        claims = conn.claims
        logs.event(log, "connection_error", logging.WARNING, trace_id=self.conn_id,
                   user_id=claims.user_id if claims else None, reason=str(exc),
                   client_info={"ip": self.ip})  # fmt: skip
        self.writer.close(exc.close_code, "slow consumer", discard=True)

    def closed(self) -> None:
        """The transport is gone (whoever closed it)."""
        self._presence.client_closed(self, self.clean)
