"""SpidiClient: one device (or one monitor) on a Spidi server, kept connected.

The client runs one task (the runner) that connects, CONNECTs with the JWT, subscribes, HELLOs
and then reads until the connection ends; then it waits a backoff delay (full jitter) and starts
again, resuming its session (``resumeSessionId``) while the grace period lasts. Errors no retry
can mend (errors.FATAL_CODES) stop it: ``join()``/``connect()`` raise them, and the ``error`` then
``ended`` events report them.

Per connection (a ``Link``) a reader task dispatches every frame without awaiting anything, so
one slow handler cannot stall the heartbeats; async handlers run as tasks of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from spidi_core import FrameError

from . import wire
from .backoff import Backoff
from .errors import FATAL_CLOSE_CODES, SpidiError
from .events import EVENTS, Emitter
from .link import DEFAULT_GRACE_MS, Dropped, Link, Retry, Welcome
from .watches import Watch
from .watching import Watching

__all__ = ["EVENTS", "SpidiClient", "Watch", "Welcome"]

log = logging.getLogger("spidi_client")

EWMA_ALPHA = 0.3  # weight of the newest round trip in the smoothed latency (the JS SDK's default too)


class SpidiClient(Watching, Emitter):
    """A Spidi client: ``await join()`` a room, heartbeats, reconnection with resume, and
    ``watch_*`` subscriptions for monitors. Give ``token`` or ``get_token`` (an async callable
    returning a JWT, called before each connection attempt)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        get_token: Callable[[], Awaitable[str]] | None = None,
        room: str | None = None,
        client_id: str | None = None,
        app_version: str = "0",
        device: str | None = None,
        os: str | None = None,
        *,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        max_attempts: int | None = None,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
        rng: random.Random | None = None,
    ):
        if (token is None) == (get_token is None):
            raise ValueError("give exactly one of token and get_token")
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"url must be ws:// or wss://HOST[:PORT]/ws, got {url!r}")
        self.url = url
        self.room = room
        self.client_id = client_id or f"py-{uuid.uuid4().hex[:12]}"
        self.app_version = app_version
        self.device = device
        self.os = os
        self.backoff = Backoff(backoff_base_s, backoff_cap_s)
        self.max_attempts = max_attempts
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.ping_interval_s = ping_interval_s
        self.welcome: Welcome | None = None
        self.latency_ms: float | None = None  # smoothed heartbeat round trip (EWMA)
        self.ended: str | None = None  # why the client stopped, once it has
        self.last_close: tuple[int | None, str] | None = None  # (code, reason) of the last connection
        self._token = token
        self._get_token = get_token
        self._host = parts.hostname
        self._rng = rng or random.Random()
        Emitter.__init__(self)
        self._runner: asyncio.Task | None = None
        self._link: Link | None = None
        self._want_join = False
        self._joined: asyncio.Future | None = None
        self._ready: asyncio.Future | None = None
        self._session: str | None = None
        self._dropped_at: float | None = None
        self._grace_s = DEFAULT_GRACE_MS / 1000
        self._retry_after_s: float | None = None  # a 429/503's Retry-After, for the next delay
        self._watches: list[Watch] = []
        self._closing = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The current session's id (None before WELCOME and after leave)."""
        return self._session

    @property
    def connected(self) -> bool:
        """Whether a connection is up and CONNECTED (and joined, when joining)."""
        return self._link is not None and self._link.ready

    async def connect(self) -> None:
        """Connect (retrying as for reconnections) without joining a room: for monitors."""
        self._check_open()
        if self.connected:
            return
        if self._ready is None or self._ready.done():
            self._ready = asyncio.get_running_loop().create_future()
        self._start()
        await self._ready

    async def join(self) -> Welcome:
        """Join ``room``; returns the WELCOME. Raises SpidiError on an error no retry mends
        (ROOM_FULL, ROOM_NOT_FOUND, UNAUTHORIZED, ...)."""
        self._check_open()
        if not self.room:
            raise ValueError("join() needs the client's room")
        if self._session is not None and self.welcome is not None:
            return self.welcome
        self._want_join = True
        if self._joined is None or self._joined.done():
            self._joined = asyncio.get_running_loop().create_future()
        joined = self._joined
        link = self._link
        if link is not None and link.ready and not link.hello_busy:
            self._spawn(self._hello_in_place(link))
        self._start()
        return await joined

    async def leave(self) -> None:
        """Leave the room (the session ends at once, reason ``leave``); the connection stays for
        watches. Raises SpidiError if the server refuses it."""
        self._want_join = False
        session, self._session, self.welcome = self._session, None, None
        link = self._link
        if link is None or session is None:
            return
        if link.beater is not None:
            link.beater.cancel()
        if not link.ready:
            return
        receipt = link.next_id("leave")
        fut = link.expect_receipt(receipt)
        with contextlib.suppress(Dropped):
            await link.send(wire.send_json(wire.APP_LEAVE, {"sessionId": session}, receipt))
            await asyncio.wait_for(fut, self.request_timeout_s)

    async def close(self) -> None:
        """DISCONNECT (ending the session at once, reason ``disconnect``) and stop for good."""
        if self._closing:
            return
        self._closing = True
        link = self._link
        if link is not None and link.connected.done() and not link.connected.exception():
            receipt = link.next_id("bye")
            fut = link.expect_receipt(receipt)
            with contextlib.suppress(Dropped, TimeoutError):
                await link.send(wire.disconnect(receipt))
                await asyncio.wait_for(fut, min(2.0, self.request_timeout_s))
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._finish(SpidiError("CLOSED", "the client was closed"), "closed")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
            for task in list(self._tasks):
                task.cancel()

    async def __aenter__(self) -> SpidiClient:
        if self.room:
            await self.join()
        else:
            await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- the runner ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self.ended is not None:
            raise SpidiError("CLOSED", f"the client has ended ({self.ended or 'closing'})")

    def _start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        failures = 0  # connection attempts in a row that did not get ready
        try:
            while True:
                if failures:
                    if self.max_attempts is not None and failures >= self.max_attempts:
                        raise SpidiError("GAVE_UP", f"{failures} connection attempts failed in a row")
                    delay = self.backoff.delay(failures, self._rng)
                    if self._retry_after_s is not None:  # the server said when: no sooner (up to the cap)
                        delay = min(max(delay, self._retry_after_s), self.backoff.cap_s)
                        self._retry_after_s = None
                    self._emit("reconnecting", failures, delay)
                    await asyncio.sleep(delay)
                self._emit("connecting", failures)
                ready = await self._connection()
                failures = 1 if ready else failures + 1
        except SpidiError as exc:
            self._finish(exc, exc.code)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: say so rather than retry it forever
            log.exception("spidi client stopped")
            self._finish(SpidiError("INTERNAL", repr(exc)), "INTERNAL")

    async def _open_ws(self):
        """The WebSocket, or None after a failure worth retrying."""
        try:
            token = self._token if self._get_token is None else await self._get_token()
        except Exception as exc:  # the token service may be down for a while: retry
            log.warning("get_token failed: %r", exc)
            return None, None
        try:
            ws = await websockets.connect(
                self.url,
                subprotocols=["v12.stomp"],
                open_timeout=self.connect_timeout_s,
                ping_interval=self.ping_interval_s,
                ping_timeout=self.ping_interval_s,
                close_timeout=2.0,
                max_size=wire.MAX_FRAME,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise SpidiError("HANDSHAKE_REFUSED", f"HTTP {status} on the WebSocket upgrade") from exc
            log.debug("upgrade refused: HTTP %s", status)
            with contextlib.suppress(TypeError, ValueError):  # delta-seconds only; a date is ignored
                self._retry_after_s = float(exc.response.headers.get("Retry-After"))
            return None, None
        except (OSError, TimeoutError, EOFError, WebSocketException) as exc:
            log.debug("connect failed: %r", exc)
            return None, None
        return ws, token

    async def _connection(self) -> bool:
        """One connection, from the handshake until it ends; whether it got ready."""
        ws, token = await self._open_ws()
        if ws is None:
            return False
        link = Link(ws)
        link.reader = asyncio.get_running_loop().create_task(self._read(link))
        self._link = link
        try:
            await link.send(wire.connect(token, self._host))
            await asyncio.wait_for(asyncio.shield(link.connected), self.connect_timeout_s)
            await link.send(wire.subscribe("session", wire.USER_SESSION))
            await link.send(wire.subscribe("errors", wire.USER_ERRORS))
            for watch in self._watches:
                for sub in watch._subs:
                    await self._subscribe(link, sub)
            if self._want_join:
                await self._hello(link)
            link.ready = True
            if self._want_join and self._session is None and not link.hello_busy:
                self._spawn(self._hello_in_place(link))  # join() came while we subscribed
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            await link.reader
        except (Dropped, Retry, TimeoutError):
            pass
        finally:
            if link.beater is not None:
                link.beater.cancel()
            link.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link.reader
            if self._link is link:
                self._link = None
            if self._session is not None and self._dropped_at is None:
                self._dropped_at = time.monotonic()  # the grace period runs from here
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
            self.last_close = (ws.close_code, ws.close_reason or "")
        if link.fatal is not None:
            raise link.fatal
        code, reason = self.last_close
        if code in FATAL_CLOSE_CODES:
            raise SpidiError(
                "CONNECTION_REFUSED", f"connection closed with {code}" + (f": {reason}" if reason else "")
            )
        return link.ready

    async def _read(self, link: Link) -> None:
        try:
            async for message in link.ws:
                for frame in link.parser.feed(message):
                    self._dispatch(link, frame)
        except ConnectionClosed:
            pass
        except FrameError as exc:
            log.warning("malformed frame from the server (%s): reconnecting", exc)
        finally:
            link.dropped()

    # -- HELLO, heartbeats ---------------------------------------------------------------------

    def _resume_id(self) -> str | None:
        """The session to resume, while the grace period (from the drop) lasts."""
        if self._session is None:
            return None
        if self._dropped_at is not None and time.monotonic() - self._dropped_at >= self._grace_s:
            return None
        return self._session

    async def _hello(self, link: Link) -> None:
        """HELLO and its WELCOME; raises SpidiError (fatal) or Retry."""
        receipt = link.next_id("hello")
        link.hello_receipt = receipt
        link.welcome = asyncio.get_running_loop().create_future()
        link.hello_busy = True
        body = wire.hello_body(
            self.room, self.client_id, self.app_version, self.device, self.os, self._resume_id()
        )
        try:
            await link.send(wire.send_json(wire.APP_HELLO, body, receipt))
            message = await asyncio.wait_for(asyncio.shield(link.welcome), self.request_timeout_s)
        except SpidiError as exc:
            if exc.fatal:
                raise
            log.info("HELLO refused (%s): retrying", exc)
            raise Retry() from exc
        finally:
            link.hello_busy = False
        welcome = Welcome.from_message(message)
        resumed = welcome.resumed and welcome.session_id == self._session
        self.welcome = welcome
        self._session = welcome.session_id
        self._grace_s = welcome.grace_period_ms / 1000
        self._dropped_at = None
        if self._joined is not None and not self._joined.done():
            self._joined.set_result(welcome)
        if not self._want_join:  # leave() was called while this HELLO was under way
            self._session, self.welcome = None, None
            await link.send(wire.send_json(wire.APP_LEAVE, {"sessionId": welcome.session_id}))
            return
        link.beater = asyncio.get_running_loop().create_task(self._beat(link, welcome))
        self._emit("resumed" if resumed else "welcome", welcome)

    async def _hello_in_place(self, link: Link) -> None:
        """HELLO on a connection already up (join() after connect(), or a session the server
        ended); a fatal refusal ends the client, any other failure reconnects."""
        try:
            await self._hello(link)
        except SpidiError as exc:
            link.fatal = exc
            await link.ws.close()
        except Retry:
            await link.ws.close()
        except (Dropped, TimeoutError):
            pass

    async def _beat(self, link: Link, welcome: Welcome) -> None:
        """A HEARTBEAT at once, then every heartbeatIntervalMs, each asking for a RECEIPT whose
        round trip feeds ``latency_ms``."""
        interval = max(welcome.heartbeat_interval_ms, 10) / 1000
        with contextlib.suppress(Dropped):
            while True:
                n = next(link._ids)
                link.beats[n] = (time.monotonic(), welcome.session_id)
                body = wire.heartbeat_body(welcome.session_id, self.latency_ms)
                await link.send(wire.send_json(wire.APP_HEARTBEAT, body, f"hb-{n}"))
                await asyncio.sleep(interval)

    def _beat_receipt(self, link: Link, receipt: str) -> None:
        try:
            n = int(receipt[3:])
        except ValueError:
            return
        sent = link.beats.pop(n, None)
        for old in [k for k in link.beats if k < n]:  # their receipts cannot come any more
            del link.beats[old]
        if sent is None:
            return
        rtt = (time.monotonic() - sent[0]) * 1000
        self.latency_ms = (
            rtt if self.latency_ms is None else EWMA_ALPHA * rtt + (1 - EWMA_ALPHA) * self.latency_ms
        )

    # -- what arrives --------------------------------------------------------------------------

    def _dispatch(self, link: Link, frame) -> None:
        command = frame.command
        if command == "MESSAGE":
            message = wire.json_body(frame)
            if message is None:
                return
            sub_id = frame.headers.get("subscription")
            if sub_id == "session":
                self._session_message(link, message)
            elif sub_id == "errors":
                self._error_message(link, message)
            else:
                sub = link.subs.get(sub_id)
                if sub is not None:
                    self._watch_message(link, sub_id, sub, message)
        elif command == "RECEIPT":
            receipt = frame.headers.get("receipt-id", "")
            if receipt.startswith("hb-"):
                self._beat_receipt(link, receipt)
            else:
                fut = link.receipts.pop(receipt, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
        elif command == "CONNECTED":
            if not link.connected.done():
                link.connected.set_result(frame.headers)
        elif command == "ERROR":
            text = frame.headers.get("message") or frame.body.decode("utf-8", "replace")
            if not link.connected.done():
                # The only refusal of a well-formed CONNECT is the token's (then close 1008).
                link.fatal = SpidiError("UNAUTHORIZED", text)
                link.connected.set_exception(Dropped())
                link.connected.exception()
            else:
                log.warning("server closes the connection: %s", text)

    def _session_message(self, link: Link, message: dict) -> None:
        kind = message.get("type")
        if kind == "WELCOME":
            if link.welcome is not None and not link.welcome.done():
                link.welcome.set_result(message)
        elif kind == "SESSION_ENDED" and message.get("sessionId") == self._session:
            self._session_lost(link, message.get("reason", ""))

    def _session_lost(self, link: Link, reason: str) -> None:
        """The server ended our session (timeout, ...): join anew on this connection."""
        self._session, self.welcome = None, None
        if link.beater is not None:
            link.beater.cancel()
        self._emit("session_ended", reason)
        if self._want_join and link.ready:
            self._spawn(self._hello_in_place(link))

    def _error_message(self, link: Link, message: dict) -> None:
        code = message.get("code", "UNKNOWN")
        text = message.get("message", "")
        ref = message.get("ref")
        if (
            ref is not None
            and ref == link.hello_receipt
            and link.welcome is not None
            and not link.welcome.done()
        ):
            link.welcome.set_exception(SpidiError(code, text))
            return
        if ref is not None and ref.startswith("hb-"):
            beat = link.beats.get(int(ref[3:])) if ref[3:].isdigit() else None
            # Only for the current session: a late answer about one already left or replaced
            # must not end its successor.
            if code == "UNKNOWN_SESSION" and beat is not None and beat[1] == self._session:
                self._session_lost(link, "unknown")
            return
        fut = link.receipts.get(ref) if ref is not None else None
        if fut is not None and not fut.done():
            fut.set_exception(SpidiError(code, text))
            fut.exception()
        self._emit("error", code, text)

    # -- events --------------------------------------------------------------------------------

    def _finish(self, exc: SpidiError, reason: str) -> None:
        """Stop for good: fail whoever waits, then ``error`` (unless closed) and ``ended``."""
        if self.ended is not None:
            return
        self.ended = reason
        for fut in (self._joined, self._ready):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
        if exc.code != "CLOSED":
            self._emit("error", exc.code, exc.message)
        self._emit("ended", reason)
