"""Locust load test for Spidi: presence clients and room monitors speaking STOMP 1.2 over WebSocket.

``PresenceUser`` is one device in a room: it opens ``<host>/ws`` (subprotocol ``v12.stomp``),
sends CONNECT with ``Authorization: Bearer <jwt>``, subscribes to ``/user/queue/session`` and
``/user/queue/errors``, HELLOs into a room and then sends a heartbeat every interval with a
``receipt`` header, so the RECEIPT times the round trip. Now and then it LEAVEs and HELLOs again.
``MonitorUser`` subscribes to one room's metrics and roster topics and records how old each
update is when it arrives (now - the payload's ``ts``).

Everything lands in Locust's statistics as request type ``STOMP``: ``connect``, ``hello``,
``heartbeat``, ``leave``, ``subscribe-metrics``, ``subscribe-roster``, ``metrics-update``,
``roster-update``; failures only: ``connection`` (closed under us), ``session-ended`` (the
server ended a session, e.g. timeout) and ``app-error`` (an error nobody asked for).

This file only needs locust, websocket-client and (to mint tokens) pyjwt, so it runs on load
machines without Spidi installed. By hand::

    locust -f loadtests/locustfile.py --host ws://127.0.0.1:8765 --headless -u 200 -r 50 -t 1m

Tokens come from ``SPIDI_TOKEN_USER`` / ``SPIDI_TOKEN_MONITOR``, or are minted per user from
``SPIDI_JWT_SECRET`` (HS256). The other options are ``--spidi-*`` flags or ``SPIDI_LOAD_*``
environment variables; see loadtests/README.md. ``SPIDI_LOAD_STATS_FILE``, if set, receives the
final statistics as JSON when Locust quits.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult
from locust import User, constant, events, task

log = logging.getLogger("spidi.loadtest")

SUBPROTOCOL = "v12.stomp"
USER_SESSION = "/user/queue/session"
USER_ERRORS = "/user/queue/errors"
APP_HELLO = "/app/hello"
APP_HEARTBEAT = "/app/heartbeat"
APP_LEAVE = "/app/leave"
REQUEST_TYPE = "STOMP"

_DEVICES = [
    ("Pixel 8", "Android 15"),
    ("Galaxy S24", "Android 14"),
    ("iPhone 15", "iOS 18"),
    ("iPad Air", "iPadOS 18"),
    ("ThinkPad", "Windows 11"),
    ("MacBook Air", "macOS 15"),
]


# -- options ------------------------------------------------------------------------------------


@dataclass
class Options:
    """Load-test options: ``--spidi-<name>`` on Locust's command line, or ``SPIDI_LOAD_<NAME>``."""

    heartbeat_interval: float = 15.0
    leave_probability: float = 0.01
    rooms: int = 10
    room_prefix: str = "load-"
    tenant: str = "default"
    monitors: int = 2
    path: str = "/ws"
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Options:
        """Defaults overridden by ``SPIDI_LOAD_*`` environment variables."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"SPIDI_LOAD_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _OPTION_TYPES[f.name](raw)
        return cls(**values)

    @classmethod
    def from_environment(cls, environment) -> Options:
        """The options of a Locust run (parsed flags), or the environment's when run as a library."""
        parsed = getattr(environment, "parsed_options", None)
        base = cls.from_env()
        if parsed is None:
            return base
        values = {f.name: getattr(parsed, f"spidi_{f.name}", getattr(base, f.name)) for f in fields(cls)}
        return cls(**values)


_OPTION_TYPES = {
    "heartbeat_interval": float,
    "leave_probability": float,
    "rooms": int,
    "room_prefix": str,
    "tenant": str,
    "monitors": int,
    "path": str,
    "timeout": float,
}
_OPTION_HELP = {
    "heartbeat_interval": "Seconds between two heartbeats of a presence user",
    "leave_probability": "Chance, at each heartbeat tick, of a LEAVE followed by a new HELLO",
    "rooms": "Number of rooms the presence users spread over",
    "room_prefix": "Room codes are <prefix>0 .. <prefix>N-1",
    "tenant": "Tenant claim of tokens minted from SPIDI_JWT_SECRET",
    "monitors": "Number of MonitorUser (fixed count, taken from -u); 0 for none",
    "path": "WebSocket path appended to --host (unless the host already has a path)",
    "timeout": "Seconds to wait for CONNECTED, RECEIPT or a snapshot before counting a failure",
}


@events.init_command_line_parser.add_listener
def _add_arguments(parser, **_kwargs) -> None:
    defaults = Options.from_env()
    group = parser.add_argument_group("Spidi", "Spidi load-test options")
    for f in fields(Options):
        group.add_argument(
            f"--spidi-{f.name.replace('_', '-')}",
            type=_OPTION_TYPES[f.name],
            default=getattr(defaults, f.name),
            env_var=f"SPIDI_LOAD_{f.name.upper()}",
            help=f"{_OPTION_HELP[f.name]} (default {getattr(defaults, f.name)!r})",
        )


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    options = Options.from_environment(environment)
    MonitorUser.fixed_count = max(0, options.monitors)
    if options.monitors <= 0 and environment.user_classes and len(environment.user_classes) > 1:
        environment.user_classes[:] = [c for c in environment.user_classes if c is not MonitorUser]
    if not (os.environ.get("SPIDI_TOKEN_USER") or os.environ.get("SPIDI_JWT_SECRET")):
        log.error("no credentials: set SPIDI_TOKEN_USER / SPIDI_TOKEN_MONITOR or SPIDI_JWT_SECRET")


@events.quitting.add_listener
def _write_stats_file(environment, **_kwargs) -> None:
    """With ``SPIDI_LOAD_STATS_FILE`` set, save the final statistics there as JSON (for loadtests.run)."""
    path = os.environ.get("SPIDI_LOAD_STATS_FILE")
    if not path or type(environment.runner).__name__ == "WorkerRunner":
        return
    stats = environment.stats

    def entry(e) -> dict:
        return {
            "type": e.method,
            "name": e.name,
            "requests": e.num_requests,
            "failures": e.num_failures,
            "avg_ms": round(e.avg_response_time, 2),
            "median_ms": e.median_response_time,
            "p95_ms": e.get_response_time_percentile(0.95) if e.num_requests else 0,
            "max_ms": e.max_response_time,
        }

    report = {
        "requests": [entry(e) for e in sorted(stats.entries.values(), key=lambda e: (e.method, e.name))],
        "total": entry(stats.total),
        "errors": [
            {"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
            for e in stats.errors.values()
        ],
    }
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)


def room_code(options: Options, index: int) -> str:
    """The code of room number ``index`` (modulo the number of rooms)."""
    return f"{options.room_prefix}{index % max(1, options.rooms)}"


def ws_url(host: str | None, options: Options) -> str:
    """The WebSocket URL from Locust's ``--host``: ``ws://h:p`` gets the path appended, ``ws://h:p/x`` is kept."""
    if not host:
        raise ValueError("no --host given: use e.g. --host ws://127.0.0.1:8765")
    if host.startswith("http://") or host.startswith("https://"):
        host = "ws" + host[4:]
    scheme, _, rest = host.partition("://")
    if "/" in rest.rstrip("/"):
        return host
    return host.rstrip("/") + options.path


# -- credentials --------------------------------------------------------------------------------


class NoCredentials(Exception):
    """Neither a token nor a secret to mint one was given."""


def token_for(role: str, sub: str, tenant: str) -> str:
    """``SPIDI_TOKEN_<ROLE>``, or an HS256 token minted from ``SPIDI_JWT_SECRET`` for ``sub``."""
    token = os.environ.get(f"SPIDI_TOKEN_{role.upper()}")
    if token:
        return token
    secret = os.environ.get("SPIDI_JWT_SECRET")
    if not secret:
        raise NoCredentials(f"set SPIDI_TOKEN_{role.upper()} or SPIDI_JWT_SECRET")
    import jwt  # pyjwt, only needed when minting

    now = int(time.time())
    claims = {"sub": sub, "roles": [f"spidi:{role}"], "tenant": tenant, "iat": now, "exp": now + 86400}
    return jwt.encode(claims, secret, algorithm="HS256")


# -- STOMP frames -------------------------------------------------------------------------------


@dataclass(slots=True)
class Frame:
    """A decoded STOMP frame; ``size`` is its length on the wire."""

    command: str
    headers: dict[str, str]
    body: bytes
    size: int


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"}
_UNESCAPES = {"\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\c": ":"}
_UNESCAPE_RE = re.compile(r"\\[\\nrc]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def encode_frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """One STOMP 1.2 frame; header values are escaped except in CONNECT, as the spec says."""
    raw = command == "CONNECT"
    lines = [command]
    for key, value in headers.items():
        lines.append(f"{key}:{value}" if raw else f"{_escape(key)}:{_escape(str(value))}")
    if body:
        lines.append(f"content-length:{len(body)}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


def decode_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """The complete frames in ``data`` (heart-beat EOLs skipped) and what is left of an incomplete one."""
    frames: list[Frame] = []
    pos, end = 0, len(data)
    while pos < end:
        while pos < end and data[pos] in (10, 13):
            pos += 1
        if pos >= end:
            break
        head = _HEAD_END.search(data, pos)
        if head is None:
            return frames, data[pos:]
        lines = data[pos : head.start()].decode("utf-8").split("\n")
        command = lines[0].rstrip("\r")
        raw = command == "CONNECTED"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.rstrip("\r").partition(":")
            if not raw:
                key = _UNESCAPE_RE.sub(lambda m: _UNESCAPES[m.group()], key)
                value = _UNESCAPE_RE.sub(lambda m: _UNESCAPES[m.group()], value)
            headers.setdefault(key, value)
        start = head.end()
        if "content-length" in headers:
            stop = start + int(headers["content-length"])
            if stop >= end:
                return frames, data[pos:]
            body, after = data[start:stop], stop + 1
        else:
            nul = data.find(b"\x00", start)
            if nul < 0:
                return frames, data[pos:]
            body, after = data[start:nul], nul + 1
        frames.append(Frame(command, headers, body, after - pos))
        pos = after
    return frames, b""


# -- a STOMP client on websocket-client (cooperative under Locust's gevent) ---------------------


class StompFailure(Exception):
    """Base of the failures a STOMP exchange can end in."""


class StompError(StompFailure):
    """The server sent an ERROR frame (connection-fatal)."""


class ConnectionLost(StompFailure):
    """The WebSocket closed or broke while we were using it."""


class RequestTimeout(StompFailure):
    """No answer in time."""


class AppError(StompFailure):
    """An application error on /user/queue/errors (the connection stays open)."""

    def __init__(self, payload: dict):
        self.code = payload.get("code", "ERROR")
        super().__init__(f"{self.code}: {payload.get('message', '')}")


class StompClient:
    """One STOMP-over-WebSocket connection with a reader greenlet that routes what arrives.

    RECEIPTs resolve the request that asked for them (failing it if an error naming the same
    receipt came first); every other MESSAGE goes to ``on_message(frame)``; an unexpected close
    calls ``on_lost(exc)``.
    """

    def __init__(self, url: str, token: str, timeout: float, on_message=None, on_lost=None):
        self.url = url
        self.token = token
        self.timeout = timeout
        self.on_message = on_message
        self.on_lost = on_lost
        self.ws: websocket.WebSocket | None = None
        self.connected = False
        self.closing = False  # we are tearing down: a close is no longer "lost"
        self._closed = False
        self._connected: AsyncResult = AsyncResult()
        self._pending: dict[str, AsyncResult] = {}
        self._errors: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._reader: gevent.Greenlet | None = None
        self._buffer = b""

    @property
    def alive(self) -> bool:
        """Connected and neither closing nor closed."""
        return self.connected and not self.closing

    def connect(self) -> int:
        """Open the WebSocket and complete CONNECT; return the size of the CONNECTED frame."""
        self.ws = websocket.create_connection(
            self.url, timeout=self.timeout, subprotocols=[SUBPROTOCOL], enable_multithread=True
        )
        self.ws.settimeout(None)
        self._reader = gevent.spawn(self._read)
        headers = {
            "accept-version": "1.2",
            "host": "spidi",
            "heart-beat": "0,0",
            "Authorization": f"Bearer {self.token}",
        }
        self.send("CONNECT", headers)
        frame = self._wait(self._connected, "CONNECTED")
        self.connected = True
        return frame.size

    def send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        """Send one frame, as a text WebSocket message."""
        if self.ws is None or self._closed:
            raise ConnectionLost("not connected")
        try:
            self.ws.send(encode_frame(command, headers, body).decode("utf-8"))
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionLost(f"send failed: {exc}") from exc

    def request(self, command: str, headers: dict[str, str], body: bytes = b"") -> Frame:
        """Send a frame with a ``receipt`` header and wait for its RECEIPT; raise on error or timeout."""
        receipt = f"r{next(self._ids)}"
        result: AsyncResult = AsyncResult()
        self._pending[receipt] = result
        try:
            self.send(command, {**headers, "receipt": receipt}, body)
            return self._wait(result, f"RECEIPT of {command}")
        finally:
            self._pending.pop(receipt, None)
            self._errors.pop(receipt, None)

    def send_json(self, destination: str, payload: dict) -> Frame:
        """SEND a JSON body to an /app destination and wait for the RECEIPT."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self.request("SEND", {"destination": destination, "content-type": "application/json"}, body)

    def _wait(self, result: AsyncResult, what: str) -> Frame:
        try:
            return result.get(timeout=self.timeout)
        except gevent.Timeout:
            raise RequestTimeout(f"no {what} within {self.timeout:g} s") from None

    def close(self, disconnect: bool = True, wait: float = 2.0) -> None:
        """DISCONNECT (waiting at most ``wait`` s for its receipt), close the socket, stop the reader."""
        if self._closed:
            return
        was_alive = self.alive
        self.closing = True
        if disconnect and was_alive:
            self.timeout = min(self.timeout, wait)
            with contextlib.suppress(StompFailure):
                self.request("DISCONNECT", {})
        self._closed = True
        self.connected = False
        if self.ws is not None:
            with contextlib.suppress(Exception):  # closing a broken socket may fail in many ways
                self.ws.close(timeout=1)
        if self._reader is not None and self._reader is not gevent.getcurrent():
            self._reader.kill(block=False)
        self._fail_all(ConnectionLost("connection closed by the client"))

    def _read(self) -> None:
        exc: Exception = ConnectionLost("connection closed by the server")
        try:
            while True:
                message = self.ws.recv()
                if not message:
                    if not self.ws.connected:
                        break
                    continue
                data = message.encode("utf-8") if isinstance(message, str) else message
                frames, self._buffer = decode_frames(self._buffer + data)
                for frame in frames:
                    self._dispatch(frame)
        except websocket.WebSocketConnectionClosedException:
            pass
        except (OSError, websocket.WebSocketException, ValueError, StompFailure) as err:
            exc = err if isinstance(err, StompFailure) else ConnectionLost(f"connection broken: {err!r}")
        was_connected, self.connected = self.connected, False
        self._fail_all(exc)
        if not self.closing:
            self.closing = True
            # A failed CONNECT is reported by connect() itself; this is for an established connection.
            if was_connected and self.on_lost is not None:
                self.on_lost(exc)

    def _dispatch(self, frame: Frame) -> None:
        command = frame.command
        if command == "RECEIPT":
            receipt = frame.headers.get("receipt-id", "")
            result = self._pending.get(receipt)
            if result is not None:
                error = self._errors.pop(receipt, None)
                if error is not None:
                    result.set_exception(AppError(error))
                else:
                    result.set(frame)
        elif command == "MESSAGE":
            if frame.headers.get("destination") == USER_ERRORS:
                payload = _json_or_empty(frame.body)
                ref = payload.get("ref")
                if ref in self._pending:
                    self._errors[ref] = payload
                    return
            if self.on_message is not None:
                self.on_message(frame)
        elif command == "CONNECTED":
            self._connected.set(frame)
        elif command == "ERROR":
            message = frame.headers.get("message") or frame.body.decode("utf-8", "replace")
            raise StompError(f"ERROR frame: {message}")

    def _fail_all(self, exc: Exception) -> None:
        if not self._connected.ready():
            self._connected.set_exception(exc)
        for result in list(self._pending.values()):
            if not result.ready():
                result.set_exception(exc)


def _json_or_empty(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


# -- statistics ---------------------------------------------------------------------------------


def fire(
    environment,
    name: str,
    started: float | None,
    length: int = 0,
    exception: Exception | None = None,
    response_time: float | None = None,
) -> None:
    """Record one request in Locust's statistics; time is ms since ``started`` unless given."""
    if response_time is None:
        response_time = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    environment.events.request.fire(
        request_type=REQUEST_TYPE,
        name=name,
        response_time=response_time,
        response_length=length,
        exception=exception,
        context={},
    )


def _now_ms() -> float:
    return time.time() * 1000


# -- users --------------------------------------------------------------------------------------


class PresenceUser(User):
    """A device in a room: CONNECT, SUBSCRIBE, HELLO, a heartbeat every interval, sometimes LEAVE + HELLO."""

    weight = 1
    _room_counter = itertools.count()

    def __init__(self, environment):
        super().__init__(environment)
        self.options = Options.from_environment(environment)
        self.room = room_code(self.options, next(PresenceUser._room_counter))
        self.user_id = f"load-{uuid.uuid4().hex[:12]}"
        self.client_id = f"locust-{uuid.uuid4().hex[:8]}"
        self.device, self.os = random.choice(_DEVICES)
        self.stomp: StompClient | None = None
        self.session_id: str | None = None
        self.welcome: dict | None = None
        self.latency_ms = 0.0
        self._next_beat: float | None = None

    def wait_time(self) -> float:
        """Constant pacing at the heartbeat interval; the first wait is random to spread the users."""
        interval = self.options.heartbeat_interval
        now = time.monotonic()
        if self._next_beat is None:
            self._next_beat = now + random.uniform(0, interval)
        else:
            self._next_beat = max(self._next_beat + interval, now)
        return self._next_beat - now

    def on_start(self) -> None:
        """Connect and HELLO before the first heartbeat."""
        self.ensure_session()

    def on_stop(self) -> None:
        """DISCONNECT, which ends the session at once on the server."""
        client, self.stomp, self.session_id = self.stomp, None, None
        if client is not None:
            client.close()

    @task
    def tick(self) -> None:
        """One heartbeat tick: reconnect or re-HELLO if needed, else maybe LEAVE + HELLO, else heartbeat."""
        if not self.ensure_session():
            return
        if self.options.leave_probability > 0 and random.random() < self.options.leave_probability:
            if self.leave():
                self.hello()
            return
        self.heartbeat()

    def ensure_session(self) -> bool:
        """Make sure there is a live connection and a session; True when there is."""
        if self.stomp is None or not self.stomp.alive:
            self.session_id = None
            if not self.connect():
                return False
        if self.session_id is None:
            return self.hello()
        return True

    def connect(self) -> bool:
        """WebSocket handshake, CONNECT, and SUBSCRIBE to the session and error queues (one request)."""
        started = time.perf_counter()
        client = None
        try:
            token = token_for("user", self.user_id, self.options.tenant)
            client = StompClient(
                ws_url(self.host or self.environment.host, self.options),
                token,
                self.options.timeout,
                self._on_message,
                self._on_lost,
            )
            size = client.connect()
            client.send("SUBSCRIBE", {"id": "session", "destination": USER_SESSION})
            size += client.request("SUBSCRIBE", {"id": "errors", "destination": USER_ERRORS}).size
        except Exception as exc:  # every failure is a failed request
            if client is not None:
                client.close(disconnect=False)
            fire(self.environment, "connect", started, exception=exc)
            return False
        self.stomp = client
        fire(self.environment, "connect", started, size)
        return True

    def hello(self) -> bool:
        """HELLO into this user's room; the RECEIPT comes right after the WELCOME."""
        client = self.stomp
        payload = {
            "roomCode": self.room,
            "clientId": self.client_id,
            "appVersion": "load-1.0",
            "device": self.device,
            "os": self.os,
        }
        started = time.perf_counter()
        self.welcome = None
        try:
            if client is None:
                raise ConnectionLost("not connected")
            receipt = client.send_json(APP_HELLO, payload)
            welcome = self.welcome
            if not welcome or not welcome.get("sessionId"):
                raise StompFailure("RECEIPT of HELLO without a WELCOME before it")
        except StompFailure as exc:
            fire(self.environment, "hello", started, exception=exc)
            return False
        self.session_id = welcome["sessionId"]
        fire(self.environment, "hello", started, receipt.size + len(json.dumps(welcome)))
        return True

    def heartbeat(self) -> bool:
        """One heartbeat, reporting the last measured round trip as ``latencyMs``."""
        client = self.stomp
        started = time.perf_counter()
        try:
            if client is None or self.session_id is None:
                raise ConnectionLost("no session")
            receipt = client.send_json(
                APP_HEARTBEAT, {"sessionId": self.session_id, "latencyMs": round(self.latency_ms, 1)}
            )
        except StompFailure as exc:
            fire(self.environment, "heartbeat", started, exception=exc)
            if isinstance(exc, AppError) and exc.code == "UNKNOWN_SESSION":
                self.session_id = None
            return False
        self.latency_ms = (time.perf_counter() - started) * 1000
        fire(self.environment, "heartbeat", None, receipt.size, response_time=self.latency_ms)
        return True

    def leave(self) -> bool:
        """LEAVE the current session."""
        client = self.stomp
        started = time.perf_counter()
        session_id, self.session_id = self.session_id, None
        try:
            if client is None or session_id is None:
                raise ConnectionLost("no session")
            receipt = client.send_json(APP_LEAVE, {"sessionId": session_id})
        except StompFailure as exc:
            fire(self.environment, "leave", started, exception=exc)
            return False
        fire(self.environment, "leave", started, receipt.size)
        return True

    def _on_message(self, frame: Frame) -> None:
        destination = frame.headers.get("destination")
        payload = _json_or_empty(frame.body)
        if destination == USER_SESSION:
            kind = payload.get("type")
            if kind == "WELCOME":
                self.welcome = payload
            elif kind == "SESSION_ENDED" and payload.get("sessionId") == self.session_id:
                self.session_id = None
                reason = payload.get("reason")
                fire(
                    self.environment,
                    "session-ended",
                    None,
                    exception=StompFailure(f"server ended the session: {reason}"),
                )
        elif destination == USER_ERRORS:
            fire(self.environment, "app-error", None, len(frame.body), exception=AppError(payload))

    def _on_lost(self, exc: Exception) -> None:
        self.session_id = None
        fire(self.environment, "connection", None, exception=exc)


class MonitorUser(User):
    """A dashboard watching one room's metrics and roster; records how old each update is on arrival."""

    weight = 0
    fixed_count = max(0, Options.from_env().monitors)
    wait_time = constant(1)
    _room_counter = itertools.count()

    def __init__(self, environment):
        super().__init__(environment)
        self.options = Options.from_environment(environment)
        self.room = room_code(self.options, next(MonitorUser._room_counter))
        self.user_id = f"load-monitor-{uuid.uuid4().hex[:8]}"
        self.topics = {
            f"/topic/rooms/{self.room}/metrics": "metrics",
            f"/topic/rooms/{self.room}/roster": "roster",
        }
        self.stomp: StompClient | None = None
        self.last_seq: dict[str, int] = {}
        self.snapshot_size: dict[str, int] = {}

    def on_start(self) -> None:
        """Connect and subscribe to the room's topics."""
        self.connect()

    def on_stop(self) -> None:
        """DISCONNECT."""
        client, self.stomp = self.stomp, None
        if client is not None:
            client.close()

    @task
    def watch(self) -> None:
        """Updates arrive on the reader greenlet; this only reconnects when the connection is gone."""
        if self.stomp is None or not self.stomp.alive:
            self.connect()

    def connect(self) -> bool:
        """CONNECT and subscribe to errors (``connect``), then to the room's topics (``subscribe-*``).

        A topic's snapshot is sent before the SUBSCRIBE's RECEIPT, so the receipt times the snapshot.
        """
        started = time.perf_counter()
        client = None
        try:
            token = token_for("monitor", self.user_id, self.options.tenant)
            client = StompClient(
                ws_url(self.host or self.environment.host, self.options),
                token,
                self.options.timeout,
                self._on_message,
                self._on_lost,
            )
            size = client.connect()
            size += client.request("SUBSCRIBE", {"id": "errors", "destination": USER_ERRORS}).size
        except Exception as exc:  # every failure is a failed request
            if client is not None:
                client.close(disconnect=False)
            fire(self.environment, "connect", started, exception=exc)
            return False
        fire(self.environment, "connect", started, size)
        self.last_seq.clear()
        self.snapshot_size.clear()
        ok = True
        for destination, kind in self.topics.items():
            started = time.perf_counter()
            try:
                client.request("SUBSCRIBE", {"id": kind, "destination": destination})
                if destination not in self.snapshot_size:
                    raise StompFailure(f"RECEIPT of SUBSCRIBE {destination} without a snapshot before it")
            except StompFailure as exc:
                fire(self.environment, f"subscribe-{kind}", started, exception=exc)
                ok = False
                continue
            fire(self.environment, f"subscribe-{kind}", started, self.snapshot_size[destination])
        if not ok:  # try again from scratch at the next tick
            client.close()
            return False
        self.stomp = client
        return True

    def _on_message(self, frame: Frame) -> None:
        destination = frame.headers.get("destination", "")
        kind = self.topics.get(destination)
        payload = _json_or_empty(frame.body)
        if kind is None:
            if destination == USER_ERRORS:
                fire(self.environment, "app-error", None, len(frame.body), exception=AppError(payload))
            return
        seq = payload.get("seq")
        last = self.last_seq.get(destination)
        if isinstance(seq, int):
            self.last_seq[destination] = seq
        if destination not in self.snapshot_size:  # the first message of a subscription is its snapshot
            self.snapshot_size[destination] = len(frame.body)
            return
        name = f"{kind}-update"
        size = len(frame.body)
        if last is not None and isinstance(seq, int) and seq != last + 1:
            fire(
                self.environment,
                name,
                None,
                size,
                exception=StompFailure(f"seq gap on {kind}: {seq} after {last}"),
            )
            return
        ts = payload.get("ts")
        if not isinstance(ts, int | float):
            fire(self.environment, name, None, size, exception=StompFailure(f"{kind} update without ts"))
            return
        # Server and load-generator clocks may differ a little; a negative age is clamped to 0.
        fire(self.environment, name, None, size, response_time=max(0.0, _now_ms() - ts))

    def _on_lost(self, exc: Exception) -> None:
        fire(self.environment, "connection", None, exception=exc)
