"""A second transport on picows (Cython WebSocket framing), behind the same ClientConnection.

picows calls ``on_ws_frame`` synchronously for every frame, so a heartbeat is handled without a
task switch or a future, and a connection costs a few Cython objects instead of a stream stack.
Selected with ``transport = "picows"``; the websockets transport stays the reference.

One difference in admission: picows' upgrade hook does not see the peer address, so the per-IP
limits (count and rate) are applied right after the upgrade, as a close with 1013 (try again
later) and the reason, instead of an HTTP 429. Origin and the node-wide cap are HTTP 403/503 as
on the reference transport.
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

from .admission import Admission, refusal_headers, server_ssl_context
from .listening import ListeningTransport
from .websocket import CLOSE_GRACE_S, query_token, select_stomp_subprotocol

if TYPE_CHECKING:
    from .websocket import Connection, TransportHost

_ids = itertools.count(1)
_TEXT = WSMsgType.TEXT


class PicowsWriter:
    """Writes frames straight into picows' send buffer (no await: picows buffers and flushes)."""

    __slots__ = ("transport", "closed", "buffered")

    def __init__(self, transport: WSTransport):
        self.transport = transport
        self.closed = False
        # Bytes written but not yet taken by the kernel (the event loop transport's buffer).
        self.buffered = transport.underlying_transport.get_write_buffer_size

    def write(self, chunks: list[bytes]) -> None:
        if self.closed:
            return
        send = self.transport.send
        for chunk in chunks:
            send(_TEXT, chunk)

    def close(self, code: int, reason: str, discard: bool = False) -> None:
        """Close frame after what is queued (picows cannot ``discard`` it); cut if that stalls."""
        if not self.closed:
            self.closed = True
            transport = self.transport
            transport.send_close(WSCloseCode(code), reason.encode()[:120])
            transport.disconnect()  # graceful: once the buffer is flushed...
            # ...which a client that does not read never lets happen.
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, _cut, transport)


def _cut(transport: WSTransport) -> None:
    """Abort a connection whose graceful close did not finish in time."""
    if not transport.is_disconnected:
        transport.disconnect(False)


class StompListener(WSListener):
    """One picows connection: reassembles fragmented messages and feeds its host's connection."""

    def __init__(
        self,
        host: TransportHost,
        admission: Admission,
        forwarded: str | None,
        token: str | None,
        max_message: int,
    ):
        super().__init__()
        self.host = host
        self.admission = admission
        self.forwarded = forwarded
        self.ip = ""
        self.token = token
        self.max_message = max_message
        self.conn: Connection | None = None
        self.admitted = False
        self.fragments: list[bytes] | None = None
        self.fragment_size = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        host = self.host
        admission = self.admission
        peer = transport.underlying_transport.get_extra_info("peername")
        self.ip = ip = admission.proxies.client_ip(str(peer[0]) if peer else "unknown", self.forwarded)
        # Origin and node cap were checked on the upgrade; the per-IP limits need the peer.
        refused = admission.check_ip(ip)
        if refused is not None:
            transport.send_close(WSCloseCode.TRY_AGAIN_LATER, refused.message.strip().encode()[:120])
            transport.disconnect()
            return
        admission.opened(ip)
        self.admitted = True
        conn_id = f"{host.node_id}-p{next(_ids)}"
        self.conn = host.connection_opened(PicowsWriter(transport), conn_id, ip, self.token)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.conn is None:
            return  # refused on connect: closing, whatever the client still sends
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
            self.host.connection_closed(self.conn)
        if self.admitted:
            self.admitted = False
            self.admission.closed(self.ip)


class PicowsTransport(ListeningTransport):
    """Serves ``/ws`` with picows."""

    name = "picows"

    def __init__(self, host: TransportHost):
        self.host = host
        self.server: asyncio.AbstractServer | None = None
        self.admission = Admission(host.settings, host.metrics.refusals)

    def _factory(self, request: WSUpgradeRequest):
        path = request.path.decode() if isinstance(request.path, bytes) else request.path
        if urlsplit(path).path != "/ws":
            return None  # 404
        headers = request.headers
        version = headers.get("Sec-WebSocket-Version")
        if version is not None and version.strip() != "13":
            # picows does not check the version; RFC 6455 asks for 426 naming the one we speak.
            response = WSUpgradeResponse.create_error_response(
                426,
                b"unsupported WebSocket version: this server speaks 13\n",
                {"Sec-WebSocket-Version": "13"},
            )
            return WSUpgradeResponseWithListener(response, None)
        # Origin and the node-wide cap: an HTTP refusal. The per-IP limits wait for on_ws_connected.
        refused = self.admission.check_upgrade(", ".join(headers.getall("Origin", ())) or None)
        if refused is not None:
            response = WSUpgradeResponse.create_error_response(
                refused.status, refused.message.encode(), refusal_headers(refused) or None
            )
            return WSUpgradeResponseWithListener(response, None)
        offered = [p.strip() for p in (headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
        chosen = select_stomp_subprotocol(offered)
        listener = StompListener(
            self.host,
            self.admission,
            ",".join(headers.getall("X-Forwarded-For", ())),  # every line of a repeated header
            query_token(path),
            self.host.settings.max_frame_size * 4,
        )
        extra = {"Sec-WebSocket-Protocol": chosen} if chosen else None
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra), listener)

    async def start(self) -> None:
        s = self.host.settings
        self.server = await ws_create_server(
            self._factory,
            s.host,
            s.port,
            # From TCP accept (after TLS) to a complete upgrade request: cuts slowloris clients.
            websocket_handshake_timeout=s.handshake_timeout_s,
            ssl=server_ssl_context(s),
            ssl_handshake_timeout=s.handshake_timeout_s if s.tls_cert_file else None,
            enable_auto_ping=False,  # STOMP heart-beats do this job
            max_frame_size=s.max_frame_size * 4,
            # picows' 16 KiB default read buffer per connection dominated RSS; it grows on demand.
            read_buffer_init_size=1024,
            # The event loop's own (uvloop, C) transport: aiofastnet's Python-level one costs ~6 KiB
            # per connection.
            use_aiofastnet=False,
            # Workers of one `spidi serve --workers N` share the port (SO_REUSEPORT).
            reuse_port=s.reuse_port,
            # asyncio's default backlog (100) resets a reconnect storm after a restart.
            backlog=s.listen_backlog,
        )
