"""One connection's state, and the WELCOME, without the connection logic (client.py)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed

from . import wire
from .errors import SpidiError
from .watches import Sub

__all__ = ["DEFAULT_GRACE_MS", "Dropped", "Link", "Retry", "Welcome"]

DEFAULT_GRACE_MS = 15_000  # until the server's WELCOME says gracePeriodMs


@dataclass(frozen=True)
class Welcome:
    """The server's WELCOME (``raw`` is the whole message)."""

    session_id: str
    room_id: str
    room_code: str
    heartbeat_interval_ms: int
    timeout_ms: int
    grace_period_ms: int
    resumed: bool
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_message(cls, message: dict) -> Welcome:
        return cls(
            session_id=message["sessionId"],
            room_id=message.get("roomId", ""),
            room_code=message.get("roomCode", ""),
            heartbeat_interval_ms=int(message.get("heartbeatIntervalMs", 15_000)),
            timeout_ms=int(message.get("timeoutMs", 45_000)),
            grace_period_ms=int(message.get("gracePeriodMs", DEFAULT_GRACE_MS)),
            resumed=bool(message.get("resumed")),
            raw=message,
        )


class Dropped(Exception):
    """The connection ended under a request (internal: the client reconnects)."""


class Retry(Exception):
    """Give this connection up and reconnect after a backoff delay (internal)."""


class Link:
    """One WebSocket connection and what is pending on it."""

    def __init__(self, ws):
        self.ws = ws
        self.parser = wire.Parser()
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future = loop.create_future()
        self.reader: asyncio.Task | None = None
        self.beater: asyncio.Task | None = None
        self.receipts: dict[str, asyncio.Future] = {}
        self.hello_receipt: str | None = None
        self.hello_busy = False  # a HELLO waits for its WELCOME
        self.welcome: asyncio.Future | None = None
        self.beats: dict[int, tuple[float, str]] = {}  # heartbeat number -> (sent at, session)
        self.subs: dict[str, Sub] = {}
        self.ready = False
        self.fatal: SpidiError | None = None
        self._ids = itertools.count(1)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def expect_receipt(self, receipt: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.receipts[receipt] = fut
        return fut

    def dropped(self) -> None:
        """Fail everything still waiting on this connection."""
        waiting = [self.connected, self.welcome, *self.receipts.values()]
        for fut in waiting:
            if fut is not None and not fut.done():
                fut.set_exception(Dropped())
                fut.exception()  # retrieved: nobody may be waiting any more
        self.receipts.clear()

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise Dropped() from exc
