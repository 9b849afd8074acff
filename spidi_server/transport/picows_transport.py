"""A second transport on picows (Cython WebSocket framing), behind the same ClientConnection.

picows calls ``on_ws_frame`` synchronously for every frame, so a heartbeat is handled without a
task switch or a future, and a connection costs a few Cython objects instead of a stream stack.
Selected with ``transport = "picows"``; the websockets transport stays the reference.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from ..connection import ClientConnection
from .websocket import client_ip, query_token, select_stomp_subprotocol

if TYPE_CHECKING:
    from ..node import Node

_ids = itertools.count(1)
_TEXT = WSMsgType.TEXT


class PicowsWriter:
    """Writes frames straight into picows' send buffer (no await: picows buffers and flushes)."""

    __slots__ = ("transport", "closed")

    def __init__(self, transport: WSTransport):
        self.transport = transport
        self.closed = False

    def write(self, chunks: list[bytes]) -> None:
        send = self.transport.send
        for chunk in chunks:
            send(_TEXT, chunk)

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.transport.send_close(WSCloseCode(code), reason.encode()[:120])
            self.transport.disconnect()


class StompListener(WSListener):
    """One picows connection: reassembles fragmented messages and feeds ClientConnection."""

    def __init__(self, node: Node, ip: str, token: str | None, max_message: int):
        super().__init__()
        self.node = node
        self.ip = ip
        self.token = token
        self.max_message = max_message
        self.conn: ClientConnection | None = None
        self.fragments: list[bytes] | None = None
        self.fragment_size = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        node = self.node
        if not self.ip:
            self.ip = client_ip(None, transport.underlying_transport.get_extra_info("peername"))
        self.conn = ClientConnection(node, PicowsWriter(transport), f"{node.node_id}-p{next(_ids)}", self.ip,
                                     self.token)  # fmt: skip
        node.connection_opened(self.conn)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == _TEXT or msg_type == WSMsgType.BINARY:
            if frame.fin:
                self.conn.receive(frame.get_payload_as_bytes())
            else:
                self.fragments = [frame.get_payload_as_bytes()]
                self.fragment_size = frame.payload_size
        elif msg_type == WSMsgType.CONTINUATION:
            if self.fragments is None:
                self.conn.writer.close(1002, "continuation frame without a message")
                return
            self.fragments.append(frame.get_payload_as_bytes())
            self.fragment_size += frame.payload_size
            if self.fragment_size > self.max_message:
                self.fragments = None
                self.conn.writer.close(1009, "message too big")
            elif frame.fin:
                data = b"".join(self.fragments)
                self.fragments = None
                self.conn.receive(data)
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.conn is not None:
            self.node.connection_closed(self.conn)


class PicowsTransport:
    """Serves ``/ws`` with picows."""

    name = "picows"

    def __init__(self, node: Node):
        self.node = node
        self.server: asyncio.AbstractServer | None = None

    def _factory(self, request: WSUpgradeRequest):
        if urlsplit(request.path.decode() if isinstance(request.path, bytes) else request.path).path != "/ws":
            return None  # 404
        headers = request.headers
        path = request.path.decode() if isinstance(request.path, bytes) else request.path
        offered = [p.strip() for p in (headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
        chosen = select_stomp_subprotocol(offered)
        listener = StompListener(self.node, client_ip(headers, None) if "X-Forwarded-For" in headers else "",
                                 query_token(path), self.node.settings.max_frame_size * 4)  # fmt: skip
        extra = {"Sec-WebSocket-Protocol": chosen} if chosen else None
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra), listener)

    async def start(self) -> None:
        s = self.node.settings
        self.server = await ws_create_server(
            self._factory,
            s.host,
            s.port,
            websocket_handshake_timeout=10,
            enable_auto_ping=False,  # STOMP heart-beats do this job
            max_frame_size=s.max_frame_size * 4,
            # picows' 16 KiB default read buffer per connection dominated RSS; it grows on demand.
            read_buffer_init_size=1024,
            # The event loop's own (uvloop, C) transport: aiofastnet's Python-level one costs ~6 KiB
            # per connection.
            use_aiofastnet=False,
            # Workers of one `spidi serve --workers N` share the port (SO_REUSEPORT).
            reuse_port=s.reuse_port,
        )

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def close_all(self) -> list:
        for conn in list(self.node.clients):
            conn.writer.close(1001, "server shutting down")
        return []

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
