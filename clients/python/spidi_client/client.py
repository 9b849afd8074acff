"""SpidiClient: one device (or one monitor) on a Spidi server, kept connected.

The client runs one task (the runner) that connects, CONNECTs with the JWT, subscribes, HELLOs
and then reads until the connection ends; then it waits a backoff delay (full jitter) and starts
again, resuming its session (``resumeSessionId``) while the grace period lasts. Errors no retry
can mend (errors.FATAL_CODES) stop it: ``join()``/``connect()`` raise them, and the ``error`` then
``ended`` events report them.

Per connection (a ``_Link``) a reader task dispatches every frame without awaiting anything, so
one slow handler cannot stall the heartbeats; async handlers run as tasks of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from spidi_core import FrameError

from . import wire
from .backoff import Backoff
from .errors import SpidiError
from .watches import AlertsState, RosterState

__all__ = ["EVENTS", "SpidiClient", "Watch", "Welcome"]

log = logging.getLogger("spidi_client")

# welcome(Welcome), resumed(Welcome), reconnecting(attempt, delay_s), connecting(attempt),
# session_ended(reason), error(code, message), ended(reason).
EVENTS = frozenset({"welcome", "resumed", "reconnecting", "connecting", "session_ended", "error", "ended"})

DEFAULT_GRACE_MS = 15_000  # until the server's WELCOME says gracePeriodMs
EWMA_ALPHA = 0.2  # weight of the newest round trip in the smoothed latency


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


class _Dropped(Exception):
    """The connection ended under a request."""


class _Retry(Exception):
    """Give this connection up and reconnect after a backoff delay."""


class _Sub:
    """One subscription of a watch: destination, state (or None) and what to call."""

    def __init__(self, destination: str, state, deliver: Callable[[dict], None]):
        self.destination = destination
        self.state = state
        self.deliver = deliver


class Watch:
    """The subscriptions of one ``watch_*`` call. ``roster`` (watch_room) maps sessionId to its
    roster entry; ``alerts`` (watch_alerts) maps (ruleId, roomId) to the open alert."""

    def __init__(self, client: SpidiClient, subs: list[_Sub]):
        self._client = client
        self._subs = subs
        self.roster: dict[str, dict] = {}
        self.alerts: dict = {}
        self.resubscribed = 0  # times a seq gap made it ask for a new snapshot

    async def close(self) -> None:
        """Unsubscribe (now if connected) and stop calling the handlers."""
        await self._client._unwatch(self)


class _Link:
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
        self.subs: dict[str, _Sub] = {}
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
                fut.set_exception(_Dropped())
                fut.exception()  # retrieved: nobody may be waiting any more
        self.receipts.clear()

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise _Dropped() from exc


Handler = Callable[..., object | Awaitable[object]]


class SpidiClient:
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
        self._handlers: dict[str, list[Handler]] = {name: [] for name in EVENTS}
        self._runner: asyncio.Task | None = None
        self._link: _Link | None = None
        self._want_join = False
        self._joined: asyncio.Future | None = None
        self._ready: asyncio.Future | None = None
        self._session: str | None = None
        self._dropped_at: float | None = None
        self._grace_s = DEFAULT_GRACE_MS / 1000
        self._retry_after_s: float | None = None  # a 429/503's Retry-After, for the next delay
        self._watches: list[Watch] = []
        self._tasks: set[asyncio.Task] = set()
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

    def on(self, name: str, handler: Handler | None = None):
        """Call ``handler`` (sync or async) on event ``name``; usable as a decorator."""
        if name not in EVENTS:
            raise ValueError(f"unknown event {name!r}; events: {', '.join(sorted(EVENTS))}")
        if handler is None:
            return lambda fn: self.on(name, fn)
        self._handlers[name].append(handler)
        return handler

    def off(self, name: str, handler: Handler) -> None:
        """Stop calling ``handler`` on ``name``."""
        with contextlib.suppress(ValueError):
            self._handlers[name].remove(handler)

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
        with contextlib.suppress(_Dropped):
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
            with contextlib.suppress(_Dropped, TimeoutError):
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

    def watch_room(
        self,
        room_code: str,
        on_roster: Callable[[dict[str, dict], dict], object] | None = None,
        on_metrics: Callable[[dict], object] | None = None,
    ) -> Watch:
        """Keep ``room_code``'s roster (``watch.roster``: sessionId -> entry) from the snapshot
        and the deltas, subscribing again on a ``seq`` gap; ``on_roster(roster, message)`` after
        each message, ``on_metrics(message)`` for each ROOM_METRICS. Needs a monitor or admin
        token; a refusal (FORBIDDEN) reaches the ``error`` event."""
        roster = RosterState()
        watch: Watch

        def roster_message(message: dict) -> None:
            watch.roster = roster.users
            if on_roster is not None:
                self._call(on_roster, roster.users, message)

        subs = [_Sub(f"/topic/rooms/{room_code}/roster", roster, roster_message)]
        if on_metrics is not None:
            subs.append(_Sub(f"/topic/rooms/{room_code}/metrics", None, lambda m: self._call(on_metrics, m)))
        watch = Watch(self, subs)
        self._add_watch(watch)
        return watch

    def watch_rooms(self, on_rooms: Callable[[dict], object]) -> Watch:
        """``on_rooms(message)`` for each ROOMS message (every room of the tenant)."""
        watch = Watch(self, [_Sub("/topic/rooms", None, lambda m: self._call(on_rooms, m))])
        self._add_watch(watch)
        return watch

    def watch_alerts(self, on_alerts: Callable[[dict, dict], object]) -> Watch:
        """Keep the tenant's open alerts (``watch.alerts``: (ruleId, roomId) -> alert) from
        ALERTS, ALERT and ALERT_ACK; ``on_alerts(alerts, message)`` after each."""
        state = AlertsState()
        watch: Watch

        def alerts_message(message: dict) -> None:
            watch.alerts = state.alerts
            self._call(on_alerts, state.alerts, message)

        watch = Watch(self, [_Sub("/topic/alerts", state, alerts_message)])
        self._add_watch(watch)
        return watch

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
        link = _Link(ws)
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
        except (_Dropped, _Retry, TimeoutError):
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
        return link.ready

    async def _read(self, link: _Link) -> None:
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

    async def _hello(self, link: _Link) -> None:
        """HELLO and its WELCOME; raises SpidiError (fatal) or _Retry."""
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
            raise _Retry() from exc
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

    async def _hello_in_place(self, link: _Link) -> None:
        """HELLO on a connection already up (join() after connect(), or a session the server
        ended); a fatal refusal ends the client, any other failure reconnects."""
        try:
            await self._hello(link)
        except SpidiError as exc:
            link.fatal = exc
            await link.ws.close()
        except _Retry:
            await link.ws.close()
        except (_Dropped, TimeoutError):
            pass

    async def _beat(self, link: _Link, welcome: Welcome) -> None:
        """A HEARTBEAT at once, then every heartbeatIntervalMs, each asking for a RECEIPT whose
        round trip feeds ``latency_ms``."""
        interval = max(welcome.heartbeat_interval_ms, 10) / 1000
        with contextlib.suppress(_Dropped):
            while True:
                n = next(link._ids)
                link.beats[n] = (time.monotonic(), welcome.session_id)
                body = wire.heartbeat_body(welcome.session_id, self.latency_ms)
                await link.send(wire.send_json(wire.APP_HEARTBEAT, body, f"hb-{n}"))
                await asyncio.sleep(interval)

    def _beat_receipt(self, link: _Link, receipt: str) -> None:
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

    def _dispatch(self, link: _Link, frame) -> None:
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
                link.connected.set_exception(_Dropped())
                link.connected.exception()
            else:
                log.warning("server closes the connection: %s", text)

    def _session_message(self, link: _Link, message: dict) -> None:
        kind = message.get("type")
        if kind == "WELCOME":
            if link.welcome is not None and not link.welcome.done():
                link.welcome.set_result(message)
        elif kind == "SESSION_ENDED" and message.get("sessionId") == self._session:
            self._session_lost(link, message.get("reason", ""))

    def _session_lost(self, link: _Link, reason: str) -> None:
        """The server ended our session (timeout, ...): join anew on this connection."""
        self._session, self.welcome = None, None
        if link.beater is not None:
            link.beater.cancel()
        self._emit("session_ended", reason)
        if self._want_join and link.ready:
            self._spawn(self._hello_in_place(link))

    def _error_message(self, link: _Link, message: dict) -> None:
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

    # -- watches -------------------------------------------------------------------------------

    def _add_watch(self, watch: Watch) -> None:
        self._check_open()
        self._watches.append(watch)
        link = self._link
        if link is not None and link.ready:
            for sub in watch._subs:
                self._spawn(self._subscribe(link, sub))

    async def _unwatch(self, watch: Watch) -> None:
        if watch in self._watches:
            self._watches.remove(watch)
        link = self._link
        for sub_id, sub in list((link.subs if link else {}).items()):
            if sub in watch._subs:
                del link.subs[sub_id]
                with contextlib.suppress(_Dropped):
                    await link.send(wire.unsubscribe(sub_id))

    async def _subscribe(self, link: _Link, sub: _Sub) -> None:
        sub_id = link.next_id("w")
        if sub.state is not None and hasattr(sub.state, "reset"):
            sub.state.reset()
        link.subs[sub_id] = sub
        with contextlib.suppress(_Dropped):
            await link.send(wire.subscribe(sub_id, sub.destination))

    def _watch_message(self, link: _Link, sub_id: str, sub: _Sub, message: dict) -> None:
        if sub.state is not None and not sub.state.apply(message):
            # A seq gap: a message was missed. A new subscription brings a new snapshot.
            del link.subs[sub_id]
            for watch in self._watches:
                if sub in watch._subs:
                    watch.resubscribed += 1
            log.info("seq gap on %s: subscribing again", sub.destination)
            self._spawn(self._resubscribe(link, sub_id, sub))
            return
        sub.deliver(message)

    async def _resubscribe(self, link: _Link, old_id: str, sub: _Sub) -> None:
        with contextlib.suppress(_Dropped):
            await link.send(wire.unsubscribe(old_id))
        await self._subscribe(link, sub)

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

    def _emit(self, name: str, *args) -> None:
        for handler in list(self._handlers[name]):
            self._call(handler, *args)

    def _call(self, handler: Handler, *args) -> None:
        try:
            result = handler(*args)
        except Exception:
            log.exception("spidi client handler %r failed", handler)
            return
        if inspect.isawaitable(result):
            self._spawn(result)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("spidi client task failed", exc_info=task.exception())
