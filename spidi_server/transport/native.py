"""Spidi's own transport (the default): an event-loop Protocol, the HTTP upgrade, then a WsStream.

One ``NativeConnection`` per accepted TCP connection: a small slotted Protocol object that is also
the connection's ``Writer``. It reads the upgrade request (``handshake.py`` checks it to RFC 6455),
runs admission on it (origin, node cap, per-IP count and rate: HTTP 403/503/429 as on the
websockets reference), answers 101 and from then on feeds every chunk the socket delivers to its
``WsStream`` (``spidi_core``: framing, unmasking, UTF-8, control frames, caps, all in Cython).
Complete messages go straight to the host's connection; what the stream queues itself (pongs,
close frames, fast-lane receipts) is written first, so replies keep their order.

No task and no timer of its own while a connection is open, nor during its handshake: the
slowloris guard (``handshake_timeout_s``) is one table per listener of the connections still in
their handshake with one timer for the oldest (``deadlines.Deadlines``), instead of a timer
made and cancelled per connection.
A connection's own timer runs only while closing (the peer gets ``CLOSE_GRACE_S`` to answer our
close frame, then the socket is cut). Outgoing messages are framed in one call and handed to the event loop's transport in one
write; ``buffered`` is that transport's buffer, which the connection compares with
``max_send_buffer`` (slow consumers).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from spidi_core import WsStream, encode_frames

from ..deadlines import Deadlines
from ..errors import InvalidTextError
from .admission import Admission, refusal_headers, server_ssl_context
from .handshake import (
    Refusal,
    accept_response,
    check_upgrade,
    error_response,
    head_end,
    offered_subprotocols,
    parse_request,
)
from .listening import ListeningTransport
from .websocket import CLOSE_GRACE_S, query_token, select_stomp_subprotocol

if TYPE_CHECKING:
    from .websocket import Connection, TransportHost

_ids = itertools.count(1)
_CLOSED = 2  # WsStream.state once both close frames were seen or we failed the connection
_NOT_FOUND = "Spidi serves STOMP over WebSocket at /ws\n"


class NativeConnection(asyncio.Protocol):
    """One TCP connection: the upgrade handshake, then WebSocket messages to its host's connection.

    It is also the ``connection.Writer`` of that connection (one object per connection, not two).
    """

    __slots__ = ("owner", "transport", "head", "timer", "stream", "conn", "ip", "closing")

    def __init__(self, owner: NativeTransport):
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.head = b""  # the request head read so far (handshake only)
        self.timer: asyncio.TimerHandle | None = None  # the close grace period
        self.stream: WsStream | None = None  # set once upgraded
        self.conn: Connection | None = None  # the host's connection, until reported closed
        self.ip: str | None = None  # the client address once admitted (its admission slot)
        self.closing = False  # nothing more is written from the host: refused, closing or gone

    # -- event loop callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        owner = self.owner
        owner.handshakes.add(self, owner.loop)

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if stream is None:
            self._handshake_data(data)
            return
        messages = stream.feed(data)
        output = stream.take_output()  # pongs, close frames, fast-lane receipts: before replies
        if output:
            self.transport.write(output)
        if stream.state == _CLOSED:
            # Our last frame (the close) is out: the messages before it still reach the host (a
            # DISCONNECT is a clean leave), but nothing they answer may follow the close.
            self.closing = True
            for message in messages:
                self.conn.receive(message)
            self._stream_closed()
        elif messages:
            receive = self.conn.receive
            for message in messages:
                receive(message)

    def eof_received(self) -> None:
        # The client shut its side: nothing more can come, so the transport closes (return None).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.owner.handshakes.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._report_closed()
        ip, self.ip = self.ip, None
        if ip is not None:
            self.owner.admission.closed(ip)

    # -- Writer (connection.Writer) ----------------------------------------------------------

    def write(self, chunks: list[bytes]) -> None:
        """Each chunk one text message, framed together and handed over in one transport write."""
        if not self.closing:
            self.transport.write(encode_frames(chunks))

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel (the event loop transport's buffer)."""
        return self.transport.get_write_buffer_size()

    def close(self, code: int, reason: str, discard: bool = False) -> None:
        """Our close frame after what is written; the socket is cut if the peer has not answered
        within ``CLOSE_GRACE_S``. (``discard`` has nothing to drop: writes go straight to the
        transport, whose buffer is not ours to trim.)"""
        if self.closing:
            return
        self.closing = True
        stream = self.stream
        if len(reason) > 40:  # a close frame's reason fits in 123 bytes: cut on a character
            reason = reason.encode()[:123].decode(errors="ignore")
        stream.close(code, reason)
        output = stream.take_output()
        if output:
            self.transport.write(output)
        self.timer = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._cut)

    # -- handshake ---------------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        if self.closing:
            return  # refused: what the client still sends is read and dropped until it hangs up
        head = self.head + data if self.head else data
        try:
            end = head_end(head)
            if end < 0:
                self.head = head
                return
            self._upgrade(head[:end], head[end:])
        except Refusal as refusal:
            self.head = b""
            self.closing = True
            self.transport.write(error_response(refusal.status, refusal.text, refusal.headers))
            self._linger()

    def _upgrade(self, head: bytes, rest: bytes) -> None:
        """Check the request and admission, answer 101 and open the host's connection."""
        request = parse_request(head)
        if urlsplit(request.target).path != "/ws":
            raise Refusal(404, _NOT_FOUND)
        accept = check_upgrade(request)
        owner = self.owner
        admission = owner.admission
        peer = self.transport.get_extra_info("peername")
        # Every X-Forwarded-For line in order; believed only from trusted proxies.
        ip = admission.proxies.client_ip(
            str(peer[0]) if peer else "unknown", request.joined("x-forwarded-for")
        )
        refused = admission.check(ip, request.get("origin"))
        if refused is not None:
            raise Refusal(refused.status, refused.message, refusal_headers(refused))
        admission.opened(ip)
        self.ip = ip
        self.head = b""
        owner.handshakes.discard(self)  # upgraded: no deadline any more
        subprotocol = select_stomp_subprotocol(offered_subprotocols(request))
        self.transport.write(accept_response(accept, subprotocol))
        self.stream = WsStream(owner.max_message)
        host = owner.host
        self.conn = conn = host.connection_opened(
            self, f"{host.node_id}-{next(_ids)}", ip, query_token(request.target)
        )
        # The heartbeat fast lane: the stream offers it each single-frame text message first and
        # writes its receipts itself.
        if conn.lane is not None:
            self.stream.set_lane(conn.lane, conn.lane_key)
        if rest:  # frames sent right behind the request
            self.data_received(rest)

    def handshake_timeout(self) -> None:
        """The upgrade did not complete in time (slowloris): drop the connection (nothing to do
        once it upgraded, was refused or went away)."""
        if self.stream is None and not self.closing:
            self.closing = True
            self.transport.close()

    # -- closing -----------------------------------------------------------------------------

    def _stream_closed(self) -> None:
        """Both close frames were exchanged, or the stream failed the connection: end the TCP side."""
        if self.conn is None:
            return  # done already
        self._report_closed()
        error = self.stream.error
        if error is not None:
            if error[0] == 1007:
                # Invalid UTF-8 in a text message fails the connection here (RFC 6455 8.1), before
                # the STOMP codec sees it: counted under the codec's reason all the same.
                self.owner.host.metrics.refusals.labels(reason=InvalidTextError.reason).inc()
            self._linger()  # the client may still be sending: read until it hangs up
        else:
            # The close handshake is complete: the server closes TCP first (RFC 6455 7.1.1).
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.transport.close()

    def _linger(self) -> None:
        """Half-close after what was written, keep reading (and dropping) until the client hangs up,
        so its unread bytes cannot turn our close into a reset that loses our answer; cut after
        ``CLOSE_GRACE_S``. Without half-close (TLS) the transport simply closes after the write."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.owner.handshakes.discard(self)  # a refused handshake has no deadline any more
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self.timer = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._cut)
        else:
            transport.close()

    def _cut(self) -> None:
        """The peer did not finish the close in time: abort the socket."""
        self.timer = None
        self.transport.abort()

    def _report_closed(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.owner.host.connection_closed(conn)


class NativeTransport(ListeningTransport):
    """Serves ``/ws`` with ``NativeConnection`` Protocols on the running event loop (uvloop in production)."""

    name = "native"

    def __init__(self, host: TransportHost):
        self.host = host
        self.server: asyncio.AbstractServer | None = None
        self.admission = Admission(host.settings, host.metrics.refusals)
        settings = host.settings
        self.handshake_timeout = settings.handshake_timeout_s
        # Room for a frame at the STOMP limit plus slack, so the codec (not the framing) answers an
        # oversized frame with an ERROR; a larger message fails the connection with 1009.
        self.max_message = settings.max_frame_size * 4
        # Connections in their handshake, each given handshake_timeout_s to upgrade (one timer).
        self.handshakes = Deadlines(self.handshake_timeout, NativeConnection.handshake_timeout)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        s = self.host.settings
        ssl_context = server_ssl_context(s)
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(
            functools.partial(NativeConnection, self),
            s.host,
            s.port,
            ssl=ssl_context,
            ssl_handshake_timeout=s.handshake_timeout_s if ssl_context is not None else None,
            # Workers of one `spidi serve --workers N` share the port (SO_REUSEPORT).
            reuse_port=s.reuse_port or None,
            # asyncio's default backlog (100) resets a reconnect storm after a restart.
            backlog=s.listen_backlog,
        )
