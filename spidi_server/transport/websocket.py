"""The reference transport: the websockets library's asyncio server.

It only pumps bytes: each WebSocket message goes to the connection its host opened for it (the
node's ``ClientConnection``), and what that queues is written back. No protocol logic lives here.
Admission (origin, connection caps, per-IP rate) runs on the upgrade, see ``admission.py``. What
a transport needs from its host is ``TransportHost`` (both transports use it).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.http11 import Response
from websockets.protocol import State

from .admission import Admission, refusal_headers, server_ssl_context

if TYPE_CHECKING:
    from ..connection import Writer
    from ..metrics import NodeMetrics
    from ..settings import Settings

SUBPROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"]  # highest first: the first the client offers wins
# A close the client does not complete (it stopped reading, say) is cut this long after it began.
CLOSE_GRACE_S = 2.0
_ids = itertools.count(1)


def select_stomp_subprotocol(offered) -> str | None:
    """The highest STOMP version the client offers; none at all is accepted too (stomp.py offers none)."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None


def query_token(path: str) -> str | None:
    """The ``access_token`` query parameter of the handshake URL, if any."""
    if "?" not in path:  # no query at all (the usual case): nothing to parse
        return None
    values = parse_qs(urlsplit(path).query).get("access_token")
    return values[0] if values else None


class Connection(Protocol):
    """A client connection as a transport sees it: messages in, and the writer it was given."""

    writer: Writer
    # The heartbeat fast lane (spidi_core.HeartbeatLane) and this connection's key in it: the
    # native transport's stream offers it single-frame text messages first. None: no lane.
    lane: object | None
    lane_key: int

    def receive(self, data: bytes) -> None: ...  # one WebSocket message from the client


@runtime_checkable
class TransportHost(Protocol):
    """What a transport needs from the process that runs it (the node); both transports use it."""

    settings: Settings  # listen address, TLS, limits
    metrics: NodeMetrics  # admission counts its refusals here
    node_id: str  # the prefix of connection ids

    @property
    def clients(
        self,
    ) -> Collection[Connection]: ...  # the open connections: closed with 1001/1012 on shutdown

    # A WebSocket was accepted: the connection to feed its messages to, counted by the host.
    def connection_opened(
        self, writer: Writer, conn_id: str, ip: str, query_token: str | None
    ) -> Connection: ...

    def connection_closed(self, conn: Connection) -> None: ...  # the WebSocket is gone


_BAD_REQUEST_BODY = b"Failed to open a WebSocket connection: did not receive a valid HTTP request.\n"
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_BAD_REQUEST_BODY) + _BAD_REQUEST_BODY
)


class SpidiServerConnection(ServerConnection):
    """websockets' connection, plus the admission slot it holds until the TCP connection ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.client_ip = ""
        self.admission: Admission | None = None  # set once admitted: released exactly once
        self.answered_bad_request = False

    def send_data(self) -> None:
        # websockets half-closes without a word on bytes that are not an HTTP request at all
        # (garbage, TLS on the plain port, POST): answer 400 first, so the client learns why.
        if (
            self.request is None
            and not self.answered_bad_request
            and isinstance(self.protocol.handshake_exc, InvalidMessage)
        ):
            self.answered_bad_request = True
            self.transport.write(BAD_REQUEST)
        super().send_data()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            admission, self.admission = self.admission, None
            if admission is not None:
                admission.closed(self.client_ip)


class WebSocketWriter:
    """Queues frames for one websockets connection; a single coroutine writes them in order."""

    __slots__ = ("ws", "pending", "pending_bytes", "task", "in_pump", "close_with")

    def __init__(self, ws: ServerConnection):
        self.ws = ws
        self.pending: list[bytes] = []
        self.pending_bytes = 0  # bytes in ``pending`` and in the batch being sent
        self.task: asyncio.Task | None = None
        self.in_pump = False  # the pump drains itself after each message: no task needed then
        self.close_with: tuple[int, str] | None = None

    def write(self, chunks: list[bytes]) -> None:
        if self.close_with is not None:
            return  # closing: nothing more goes out
        self.pending.extend(chunks)
        self.pending_bytes += sum(map(len, chunks))
        if not self.in_pump and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain_task())

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel: our queue plus the transport's buffer."""
        return self.pending_bytes + self.ws.transport.get_write_buffer_size()

    def close(self, code: int, reason: str, discard: bool = False) -> None:
        """Close after what is queued (``discard``: drop it); cut the connection if that stalls."""
        if self.close_with is None:
            self.close_with = (code, reason)
            if discard:
                self.pending = []
                self.pending_bytes = 0
            loop = asyncio.get_running_loop()
            loop.call_later(CLOSE_GRACE_S, self._abort)
            if not self.in_pump:
                loop.create_task(self._close())

    def _abort(self) -> None:
        if self.ws.state is not State.CLOSED:
            self.ws.transport.abort()

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
                    self.pending_bytes -= len(chunk)
                    await self.ws.send(chunk, text=True)
        except ConnectionClosed:
            self.pending = []
            self.pending_bytes = 0

    async def _close(self) -> None:
        await self.drain()
        await self.ws.close(*self.close_with)


class WebSocketTransport:
    """Serves ``/ws`` with the websockets library and hands each connection's messages to its host."""

    name = "websockets"

    def __init__(self, host: TransportHost):
        self.host = host
        self.server = None
        self.admission = Admission(host.settings, host.metrics.refusals)

    async def start(self) -> None:
        settings = self.host.settings
        self.server = await serve(
            self.handle,
            settings.host,
            settings.port,
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=lambda ws, offered: select_stomp_subprotocol(offered),
            process_request=self._check_path,
            process_response=self._admit,
            create_connection=SpidiServerConnection,
            ssl=server_ssl_context(settings),
            compression="deflate" if settings.websocket_compression else None,
            # STOMP heart-beats keep connections alive; the library's pings would double that work.
            ping_interval=None,
            ping_timeout=None,
            # Room for a frame at the STOMP limit plus slack, so the codec (not the library) answers
            # an oversized frame with an ERROR; anything larger the library refuses with 1009.
            max_size=settings.max_frame_size * 4,
            max_queue=8,
            write_limit=16384,
            # The whole opening handshake (TLS included), so a client trickling bytes or sending
            # nothing at all is cut after it (slowloris).
            open_timeout=settings.handshake_timeout_s,
            close_timeout=CLOSE_GRACE_S,
            server_header=None,
            # Workers of one `spidi serve --workers N` all listen on this port; the kernel spreads
            # new connections between them.
            reuse_port=settings.reuse_port,
            # asyncio's default backlog (100) resets a reconnect storm after a restart.
            backlog=settings.listen_backlog,
        )

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def _check_path(self, ws: ServerConnection, request) -> Response | None:
        if urlsplit(request.path).path != "/ws":
            return ws.respond(404, "Spidi serves STOMP over WebSocket at /ws\n")
        return None

    def _admit(self, ws: SpidiServerConnection, request, response: Response) -> Response | None:
        """Once the upgrade is valid (101): admission, checked and counted in one synchronous step."""
        if response.status_code != 101:
            return None
        headers = request.headers
        peer = ws.remote_address
        # Every line of a repeated header, in order (one would raise MultipleValuesError: a 500).
        forwarded = ",".join(headers.get_all("X-Forwarded-For"))
        ip = self.admission.proxies.client_ip(str(peer[0]) if peer else "unknown", forwarded)
        refused = self.admission.check(ip, headers.get("Origin"))  # websockets 400s a repeated one
        if refused is not None:
            refusal = ws.respond(refused.status, refused.message)
            refusal.headers.update(refusal_headers(refused))
            return refusal
        ws.client_ip = ip
        ws.admission = self.admission
        self.admission.opened(ip)
        return None

    def close_all(self, code: int = 1001, reason: str = "server shutting down") -> list:
        """Close every connection with ``code``; return what to await."""
        return [c.writer.ws.close(code, reason) for c in list(self.host.clients)]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=False)
            await self.server.wait_closed()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=False)

    async def handle(self, ws: ServerConnection) -> None:
        host = self.host
        writer = WebSocketWriter(ws)
        token = query_token(ws.request.path) if ws.request else None
        conn = host.connection_opened(writer, f"{host.node_id}-{next(_ids)}", ws.client_ip, token)
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
            host.connection_closed(conn)
            if writer.task is not None:
                writer.task.cancel()
