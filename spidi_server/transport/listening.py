"""What the native and picows transports share once their server listens: its port, closing
every connection (1001 or 1012), and stopping (the websockets library does these its own way);
and what every transport's listening sockets say about their accept queue."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .websocket import TransportHost


# Linux struct tcp_info: eight u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked.
# For a socket in LISTEN state (tcpi_state 10) the kernel puts the accept queue's length (connections
# the handshake completed that accept() has not taken yet: ss -ltn's Recv-Q) in tcpi_unacked, and
# the queue's limit (listen backlog, capped by net.core.somaxconn) in tcpi_sacked.
_TCP_INFO_LEN = 32
_TCP_LISTEN = 10


def accept_queue(server) -> tuple[int, int] | None:
    """(connections waiting to be accepted, the queue's limit) summed over ``server``'s listening
    TCP sockets; None where the kernel does not tell (not Linux, no server, not TCP)."""
    if server is None or not hasattr(socket, "TCP_INFO"):
        return None
    waiting = limit = 0
    found = False
    for sock in server.sockets or ():
        try:
            raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        except (OSError, AttributeError):
            continue
        if len(raw) < _TCP_INFO_LEN or raw[0] != _TCP_LISTEN:
            continue
        queued, cap = struct.unpack_from("=II", raw, 24)
        waiting, limit, found = waiting + queued, limit + cap, True
    return (waiting, limit) if found else None


class ListeningTransport:
    """The lifecycle half of a transport whose ``start`` sets ``server`` (an asyncio server)."""

    host: TransportHost
    server: asyncio.AbstractServer | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (the first socket's: port 0 picks one)."""
        return self.server.sockets[0].getsockname()[1]

    @property
    def accept_queue(self) -> tuple[int, int] | None:
        """The listening sockets' accept queue: (waiting, limit), None where unknown."""
        return accept_queue(self.server)

    def close_all(self, code: int = 1001, reason: str = "server shutting down") -> list:
        """Close every connection with ``code``; the host waits for them to go (nothing to await)."""
        for conn in list(self.host.clients):
            conn.writer.close(code, reason)
        return []

    def stop_accepting(self) -> None:
        """Stop accepting new connections; the open ones stay."""
        if self.server is not None:
            self.server.close()

    async def stop(self) -> None:
        """Stop accepting and wait until the server has closed."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
