"""The reference transport: the websockets library's asyncio server.

It only pumps bytes: each WebSocket message goes into the connection's sans-I/O StompConnection,
the events that come out are dispatched to presence, and queued frames are written back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from .. import logs
from ..errors import AppError
from ..protocol import stomp
from ..protocol.stomp import StompConnection

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("spidi.ws")

SUBPROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"]  # highest first: the first the client offers wins
MAX_OUTBOX_BYTES = 4 * 1024 * 1024
_ids = itertools.count(1)


class WebSocketClient:
    """One WebSocket connection: the protocol object, its sessions and the write side."""

    __slots__ = ("ws", "stomp", "ip", "sessions", "sending", "writer", "node", "conn_id")

    def __init__(self, node: Node, ws: ServerConnection, stomp_conn: StompConnection, conn_id: str):
        self.node = node
        self.ws = ws
        self.stomp = stomp_conn
        self.ip = _peer_ip(ws)
        self.sessions: set = set()
        self.sending = False
        self.writer: asyncio.Task | None = None
        self.conn_id = conn_id

    def push(self) -> None:
        """Frames were queued from outside the pump (publisher, expiry): write them soon."""
        if self.stomp.outbox_bytes > MAX_OUTBOX_BYTES:
            # A consumer that does not read cannot make the server hold unbounded memory.
            self.stomp.data_to_send()
            self.stomp.close(1008, "slow consumer: send buffer over limit")
            self.writer = asyncio.get_running_loop().create_task(self._close())
            return
        if not self.sending:
            self.sending = True
            self.writer = asyncio.get_running_loop().create_task(self.drain())

    async def drain(self) -> None:
        """Write everything queued; several writers never interleave (``sending`` guards it)."""
        self.sending = True
        try:
            while True:
                chunks = self.stomp.data_to_send()
                if not chunks:
                    break
                for chunk in chunks:
                    await self.ws.send(chunk, text=True)
        except ConnectionClosed:
            pass
        finally:
            self.sending = False
            self.writer = None

    async def _close(self) -> None:
        code, reason = self.stomp.close_reason or (1000, "")
        await self.ws.close(code, reason)


def _peer_ip(ws: ServerConnection) -> str:
    headers = ws.request.headers if ws.request is not None else {}
    forwarded = headers.get("X-Forwarded-For")
    if forwarded:
        # Only meaningful behind a trusted proxy; the hardening issue adds a trusted-proxy setting.
        return forwarded.split(",")[0].strip()
    peer = ws.remote_address
    return str(peer[0]) if peer else "unknown"


def _query_token(ws: ServerConnection) -> str | None:
    if ws.request is None:
        return None
    values = parse_qs(urlsplit(ws.request.path).query).get("access_token")
    return values[0] if values else None


def select_subprotocol(ws: ServerConnection, offered) -> str | None:
    """The highest STOMP version the client offers; none at all is accepted too (stomp.py offers none)."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None


class WebSocketTransport:
    """Serves ``/ws`` and hands each connection to the node."""

    def __init__(self, node: Node):
        self.node = node
        self.server = None

    async def start(self) -> None:
        settings = self.node.settings
        self.server = await serve(
            self.handle,
            settings.host,
            settings.port,
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=select_subprotocol,
            process_request=self._check_path,
            compression="deflate" if settings.websocket_compression else None,
            # STOMP heart-beats keep connections alive; the library's pings would double that work.
            ping_interval=None,
            ping_timeout=None,
            # Room for a frame at the STOMP limit plus slack, so the codec (not the library) answers
            # an oversized frame with an ERROR; anything larger the library refuses with 1009.
            max_size=settings.max_frame_size * 4,
            max_queue=8,
            write_limit=16384,
            open_timeout=10,
            close_timeout=2,
            server_header=None,
        )

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def _check_path(self, ws: ServerConnection, request) -> Response | None:
        if urlsplit(request.path).path != "/ws":
            return ws.respond(404, "Spidi serves STOMP over WebSocket at /ws\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        node = self.node
        conn_id = f"{node.node_id}-{next(_ids)}"
        stomp_conn = node.new_stomp_connection(conn_id, _query_token(ws))
        client = WebSocketClient(node, ws, stomp_conn, conn_id)
        node.clients.add(client)
        node.metrics.websocket_connections.inc()
        presence = node.presence
        count_frame = node.metrics.count_frame
        clean = False
        try:
            while True:
                try:
                    data = await ws.recv(decode=False)
                except ConnectionClosed:
                    break
                before = stomp_conn.heartbeats_received
                events = stomp_conn.receive_data(data)
                if stomp_conn.heartbeats_received != before:
                    node.metrics.stomp_heartbeats.inc(stomp_conn.heartbeats_received - before)
                for event in events:
                    kind = event[0]
                    receipt = None
                    try:
                        if kind == stomp.EV_HEARTBEAT:
                            count_frame("SEND")
                            receipt = event[3]
                            presence.heartbeat(client, event[1], event[2])
                        elif kind == stomp.EV_HELLO:
                            count_frame("SEND")
                            receipt = event[2]
                            presence.hello(client, event[1])
                        elif kind == stomp.EV_LEAVE:
                            count_frame("SEND")
                            receipt = event[2]
                            presence.leave(client, event[1])
                        elif kind == stomp.EV_SUBSCRIBE:
                            count_frame("SUBSCRIBE")
                            receipt = event[3]
                            try:
                                await presence.subscribe(client, event[1], event[2])
                            except AppError:
                                stomp_conn.remove_subscription(event[1])
                                raise
                        elif kind == stomp.EV_UNSUBSCRIBE:
                            count_frame("UNSUBSCRIBE")
                            receipt = event[3]
                            presence.unsubscribe(client, event[1])
                        elif kind == stomp.EV_CONNECTED:
                            count_frame("CONNECT")
                            logs.event(log, "connected", conn_id=conn_id, user_id=event[1].user_id,
                                       tenant=event[1].tenant, ip=client.ip)  # fmt: skip
                        elif kind == stomp.EV_DISCONNECT:
                            count_frame("DISCONNECT")
                            receipt = event[1]
                            clean = True
                        elif kind == stomp.EV_RECEIPT_ONLY:
                            receipt = event[1]
                    except AppError as exc:
                        node.metrics.errors.labels(code=exc.name).inc()
                        stomp_conn.send_app_error(exc, receipt)
                    if receipt is not None:
                        stomp_conn.send_receipt(receipt)
                if stomp_conn.outbox and not client.sending:
                    await client.drain()
                if clean or stomp_conn.close_reason is not None:
                    if stomp_conn.close_reason is not None and not clean:
                        node.metrics.errors.labels(code="PROTOCOL").inc()
                        logs.event(log, "connection_error", logging.WARNING, conn_id=conn_id,
                                   reason=stomp_conn.close_reason[1])  # fmt: skip
                    code, reason = stomp_conn.close_reason or (1000, "bye")
                    await ws.close(code, reason)
                    break
        finally:
            node.clients.discard(client)
            node.metrics.websocket_connections.dec()
            presence.client_closed(client, clean)
            if client.writer is not None and not client.writer.done():
                client.writer.cancel()
