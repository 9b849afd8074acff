"""The reference transport: the websockets library's asyncio server.

It only pumps bytes: each WebSocket message goes to the connection's ``ClientConnection``, and
what that queues is written back. No protocol logic lives here.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from ..connection import ClientConnection

if TYPE_CHECKING:
    from ..node import Node

SUBPROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"]  # highest first: the first the client offers wins
_ids = itertools.count(1)


def select_stomp_subprotocol(offered) -> str | None:
    """The highest STOMP version the client offers; none at all is accepted too (stomp.py offers none)."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None


def query_token(path: str) -> str | None:
    """The ``access_token`` query parameter of the handshake URL, if any."""
    values = parse_qs(urlsplit(path).query).get("access_token")
    return values[0] if values else None


def client_ip(headers, peer) -> str:
    forwarded = headers.get("X-Forwarded-For") if headers is not None else None
    if forwarded:
        # Only meaningful behind a trusted proxy; the hardening issue adds a trusted-proxy setting.
        return forwarded.split(",")[0].strip()
    return str(peer[0]) if peer else "unknown"


class WebSocketWriter:
    """Queues frames for one websockets connection; a single coroutine writes them in order."""

    __slots__ = ("ws", "pending", "task", "in_pump", "close_with")

    def __init__(self, ws: ServerConnection):
        self.ws = ws
        self.pending: list[bytes] = []
        self.task: asyncio.Task | None = None
        self.in_pump = False  # the pump drains itself after each message: no task needed then
        self.close_with: tuple[int, str] | None = None

    def write(self, chunks: list[bytes]) -> None:
        self.pending.extend(chunks)
        if not self.in_pump and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain_task())

    def close(self, code: int, reason: str) -> None:
        if self.close_with is None:
            self.close_with = (code, reason)
            if not self.in_pump:
                asyncio.get_running_loop().create_task(self._close())

    async def _drain_task(self) -> None:
        try:
            await self.drain()
        finally:
            self.task = None

    async def drain(self) -> None:
        try:
            while self.pending:
                chunks, self.pending = self.pending, []
                for chunk in chunks:
                    await self.ws.send(chunk, text=True)
        except ConnectionClosed:
            self.pending = []

    async def _close(self) -> None:
        await self.drain()
        await self.ws.close(*self.close_with)


class WebSocketTransport:
    """Serves ``/ws`` with the websockets library and hands each connection to a ClientConnection."""

    name = "websockets"

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
            select_subprotocol=lambda ws, offered: select_stomp_subprotocol(offered),
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
            # Workers of one `spidi serve --workers N` all listen on this port; the kernel spreads
            # new connections between them.
            reuse_port=settings.reuse_port,
        )

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def _check_path(self, ws: ServerConnection, request) -> Response | None:
        if urlsplit(request.path).path != "/ws":
            return ws.respond(404, "Spidi serves STOMP over WebSocket at /ws\n")
        return None

    def close_all(self) -> list:
        """Close every connection with 1001; return what to await."""
        return [c.writer.ws.close(1001, "server shutting down") for c in list(self.node.clients)]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=False)
            await self.server.wait_closed()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=False)

    async def handle(self, ws: ServerConnection) -> None:
        node = self.node
        writer = WebSocketWriter(ws)
        ip = client_ip(ws.request.headers if ws.request else None, ws.remote_address)
        conn = ClientConnection(node, writer, f"{node.node_id}-{next(_ids)}", ip,
                                query_token(ws.request.path) if ws.request else None)  # fmt: skip
        node.connection_opened(conn)
        try:
            while True:
                try:
                    data = await ws.recv(decode=False)
                except ConnectionClosed:
                    break
                writer.in_pump = True
                try:
                    conn.receive(data)
                finally:
                    writer.in_pump = False
                if writer.pending and writer.task is None:
                    await writer.drain()
                if writer.close_with is not None:
                    await ws.close(*writer.close_with)
                    break
        finally:
            node.connection_closed(conn)
            if writer.task is not None:
                writer.task.cancel()
