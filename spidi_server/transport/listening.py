"""What the native and picows transports share once their server listens: its port, closing
every connection (1001 or 1012), and stopping (the websockets library does these its own way)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .websocket import TransportHost


class ListeningTransport:
    """The lifecycle half of a transport whose ``start`` sets ``server`` (an asyncio server)."""

    host: TransportHost
    server: asyncio.AbstractServer | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (the first socket's: port 0 picks one)."""
        return self.server.sockets[0].getsockname()[1]

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
