"""A raw asyncio load generator for Spidi heartbeats: STOMP 1.2 over WebSocket, built by hand.

Each connection is a plain ``asyncio.Protocol`` (uvloop when the caller runs one): it writes the
HTTP Upgrade itself, then CONNECT, SUBSCRIBE and HELLO, and once WELCOME names its session it
pre-builds two *masked* WebSocket frames, a heartbeat and the same heartbeat with a ``receipt``
header. From then on a heartbeat costs one ``transport.write`` of bytes that already exist, a
couple of microseconds, so the server (not the client) is what a run measures.

The pacer sends ``rate`` heartbeats per second for ``duration`` seconds in small time slices,
round-robin over the connections, and keeps the average exact with a credit count: a late slice
sends what the schedule owes. One frame in ``sample_every`` carries a receipt; the RECEIPT's
arrival gives a round-trip time (one outstanding receipt per connection, so the ids are fixed).

Every connect attempt ends in WELCOME (its latency is kept) or in one failure kind
(``classify_failure``: reset, timeout, refused, rejected, closed, other), so a connect phase or a
storm accounts for every client.

Server frames are expected unmasked, one STOMP frame per WebSocket message, as Spidi sends them;
the parser reads just enough of them: CONNECTED, MESSAGE (WELCOME, errors), RECEIPT and ERROR.
The bare servers in ``bare_server.py`` rely on the heartbeat frame starting with
``SEND\\ndestination:/app/heartbeat`` and on the receipt header being named ``receipt``.

Nothing here depends on Spidi's code, so the test in ``tests/test_loadgen.py`` can drive a node
running in the same event loop.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import errno
import hashlib
import json
import os
import resource
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from spidi_core.ws_py import apply_mask

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "v12.stomp"
HEARTBEAT_PREFIX = b"SEND\ndestination:/app/heartbeat\n"

# Connection states.
HANDSHAKE = 0
AWAIT_CONNECTED = 1
AWAIT_WELCOME = 2
READY = 3
CLOSING = 4
CLOSED = 5

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
SEND_CHUNK = 256  # heartbeats written between two yields to the event loop (see LoadGenerator.run)


# Why a connect attempt failed, for the storm's accounting (``classify_failure``).
FAIL_REFUSED = "refused"  # TCP connection refused (the listen queue overflowed, or nothing listening)
FAIL_RESET = "reset"  # connection reset / broken pipe before WELCOME
FAIL_TIMEOUT = "timeout"  # no WELCOME within the connect timeout
FAIL_REJECTED = "rejected"  # the server answered no: HTTP status other than 101, STOMP ERROR, close frame
FAIL_CLOSED = "closed"  # the server closed the socket without a word before WELCOME
FAIL_OTHER = "other"
FAILURE_KINDS = (FAIL_REFUSED, FAIL_RESET, FAIL_TIMEOUT, FAIL_REJECTED, FAIL_CLOSED, FAIL_OTHER)


def classify_failure(exc: BaseException | None) -> str:
    """The failure kind of a connect attempt that ended with ``exc`` (None: closed cleanly)."""
    if exc is None:
        return FAIL_CLOSED
    if isinstance(exc, ConnectionRefusedError):
        return FAIL_REFUSED
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return FAIL_RESET
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return FAIL_TIMEOUT
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return FAIL_RESET
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return FAIL_REFUSED
    return FAIL_OTHER


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def ws_accept(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer for ``key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_frame(payload: bytes, opcode: int = OP_TEXT, mask_key: bytes | None = None) -> bytes:
    """One final WebSocket frame; masked (client to server) when ``mask_key`` is given."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask_key is not None else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if mask_key is None:
        return head + payload
    return head + mask_key + apply_mask(payload, mask_key)


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A masked client frame with a fresh random mask key."""
    return ws_frame(payload, opcode, os.urandom(4))


def stomp_frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """Serialize one STOMP frame (no header escaping: the generator's values never need it)."""
    lines = [command, *(f"{k}:{v}" for k, v in headers.items()), "", ""]
    return "\n".join(lines).encode() + body + b"\x00"


def heartbeat_stomp(session_id: str, latency_ms: int, receipt: str | None = None) -> bytes:
    """The STOMP SEND of one heartbeat; it starts with ``HEARTBEAT_PREFIX`` (the bare servers rely on it)."""
    body = json.dumps({"sessionId": session_id, "latencyMs": latency_ms}, separators=(",", ":")).encode()
    headers = {"destination": "/app/heartbeat", "content-type": "application/json"}
    if receipt is not None:
        headers["receipt"] = receipt
    headers["content-length"] = str(len(body))
    return stomp_frame("SEND", headers, body)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


class LoadConnection(asyncio.Protocol):
    """One generator connection: handshake, STOMP session set-up, then pre-built heartbeats."""

    __slots__ = (
        "gen",
        "index",
        "token",
        "room",
        "path",
        "host_header",
        "key",
        "state",
        "transport",
        "write",
        "buf",
        "fragments",
        "session_id",
        "hb",
        "hb_receipt",
        "receipt_t0",
        "paused",
        "ready",
        "fail_kind",
        "rnd",
    )

    def __init__(self, gen: LoadGenerator, index: int, token: str, room: str, host_header: str, path: str):
        self.gen = gen
        self.index = index
        self.token = token
        self.room = room
        self.path = path
        self.host_header = host_header
        # One getrandom per connection: the handshake key, then the mask keys of its frames.
        self.rnd = os.urandom(32)
        self.key = base64.b64encode(self.rnd[:16]).decode()
        self.state = HANDSHAKE
        self.transport: asyncio.Transport | None = None
        self.write = None
        self.buf = bytearray()
        self.fragments: list[bytes] | None = None
        self.session_id: str | None = None
        self.hb = b""
        self.hb_receipt = b""
        self.receipt_t0 = 0.0
        self.paused = False
        self.ready: asyncio.Future = gen.loop.create_future()
        self.fail_kind: str | None = None  # set when the attempt fails before WELCOME

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.write = transport.write
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host_header}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
            "\r\n"
        )
        transport.write(request.encode())

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != CLOSING:
            self.gen.error("connection lost" + (f": {exc}" if exc else " (closed by server)"))
            if self.fail_kind is None and self.state < READY:
                self.fail_kind = classify_failure(exc)
        self.state = CLOSED
        self._settle(False)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.state == HANDSHAKE and not self._handshake():
            return
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            mask = None
            if b1 & 0x80:  # servers must not mask; tolerate it anyway
                if end - pos < head + 4:
                    break
                mask = bytes(buf[pos + head : pos + head + 4])
                head += 4
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if mask is not None:
                payload = apply_mask(payload, mask)
            self._ws_message(b0 & 0x0F, bool(b0 & 0x80), payload)
            if self.state >= CLOSING:
                break
        if pos:
            del buf[:pos]

    # -- set-up --------------------------------------------------------------------------------

    def _handshake(self) -> bool:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 65536:
                self._fail("handshake: response headers too long", FAIL_OTHER)
            return False
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        status, *lines = head.split("\r\n")
        parts = status.split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            self._fail(f"handshake refused: {status}")
            return False
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != ws_accept(self.key):
            self._fail("handshake: bad Sec-WebSocket-Accept", FAIL_OTHER)
            return False
        if headers.get("sec-websocket-protocol") != SUBPROTOCOL:
            self._fail(
                f"handshake: subprotocol {headers.get('sec-websocket-protocol')!r}, wanted {SUBPROTOCOL}"
            )
            return False
        self.state = AWAIT_CONNECTED
        connect = stomp_frame(
            "CONNECT",
            {
                "accept-version": "1.2",
                "host": "spidi",
                "heart-beat": "0,0",
                "Authorization": f"Bearer {self.token}",
            },
        )
        self.write(ws_frame(connect, OP_TEXT, self.rnd[16:20]))
        return True

    def _ws_message(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == OP_CONT:
            if self.fragments is None:
                self._fail("websocket: continuation without a start", FAIL_OTHER)
                return
            self.fragments.append(payload)
            if fin:
                payload = b"".join(self.fragments)
                self.fragments = None
                self._stomp(payload)
            return
        if opcode in (OP_TEXT, OP_BINARY):
            if fin:
                self._stomp(payload)
            else:
                self.fragments = [payload]
            return
        if opcode == OP_PING:
            self.write(client_frame(payload, OP_PONG))
            return
        if opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            reason = payload[2:].decode(errors="replace")
            self.gen.error(f"closed by server: {code} {reason}".strip())
            if self.fail_kind is None and self.state < READY:
                self.fail_kind = FAIL_REJECTED
            self.state = CLOSING  # connection_lost follows; do not count it twice
            self._settle(False)
            self.transport.close()

    def _stomp(self, frame: bytes) -> None:
        if frame[:7] == b"RECEIPT":
            t0 = self.receipt_t0
            if t0:
                self.gen.rtts.append((t0, time.perf_counter() - t0))
                self.receipt_t0 = 0.0
            else:
                self.gen.late_receipts += 1
            return
        if not frame.strip(b"\r\n"):
            return  # STOMP heart-beat EOL
        if frame[:7] == b"MESSAGE":
            head, _, body = frame.partition(b"\n\n")
            nul = body.find(b"\x00")
            if nul >= 0:
                body = body[:nul]
            if b"\ndestination:/user/queue/errors" in head:
                text = "app error: " + body.decode(errors="replace")[:200]
                if self.state < READY:  # e.g. HELLO refused: a rejected attempt, not a timeout
                    self._fail(text)
                else:
                    self.gen.error(text)
                return
            if b"\ndestination:/user/queue/session" in head:
                self._session_message(body)
            return
        if frame[:9] == b"CONNECTED":
            if self.state == AWAIT_CONNECTED:
                self.state = AWAIT_WELCOME
                hello = json.dumps(
                    {"roomCode": self.room, "clientId": f"load-{self.index}", "appVersion": "bench-1.0"}
                ).encode()
                # The two SUBSCRIBEs are the same for every connection: built once per generator.
                self.write(
                    self.gen.subscribe_frames
                    + ws_frame(
                        stomp_frame(
                            "SEND", {"destination": "/app/hello", "content-type": "application/json"}, hello
                        ),
                        OP_TEXT,
                        self.rnd[20:24],
                    )
                )
            return
        if frame[:5] == b"ERROR":
            head, _, body = frame.partition(b"\n\n")
            self._fail("STOMP ERROR: " + head.decode(errors="replace").replace("\n", " ")[:200])
            return

    def _session_message(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            self.gen.error("bad JSON on /user/queue/session")
            return
        kind = message.get("type")
        if kind == "WELCOME" and self.state == AWAIT_WELCOME:
            self.session_id = sid = message["sessionId"]
            # Built once per connection: the session id differs, the mask key may as well.
            self.hb = ws_frame(heartbeat_stomp(sid, self.gen.latency_ms), OP_TEXT, self.rnd[24:28])
            receipt = heartbeat_stomp(sid, self.gen.latency_ms, f"hb-{self.index}")
            self.hb_receipt = ws_frame(receipt, OP_TEXT, self.rnd[28:32])
            self.state = READY
            self._settle(True)
        elif kind == "SESSION_ENDED":
            self.gen.error(f"session ended: {message.get('reason')}")

    # -- helpers -------------------------------------------------------------------------------

    def _settle(self, ok: bool) -> None:
        if not self.ready.done():
            self.ready.set_result(ok)

    def _fail(self, reason: str, kind: str = FAIL_REJECTED) -> None:
        self.gen.error(reason)
        if self.fail_kind is None and self.state < READY:
            self.fail_kind = kind
        self._settle(False)
        if self.transport is not None and self.state < CLOSING:
            self.state = CLOSING
            self.transport.close()

    def close(self) -> None:
        """Send a WebSocket close (1000) and close the socket."""
        if self.transport is None or self.state >= CLOSING:
            return
        self.state = CLOSING
        try:
            self.write(client_frame((1000).to_bytes(2, "big") + b"bye", OP_CLOSE))
        finally:
            self.transport.close()


@dataclass
class ConnectResult:
    """How the connect phase went."""

    requested: int
    connected: int
    seconds: float  # from the first attempt until the last one settled (every client in, or failed)
    failed: int
    failures: dict[str, int] = field(default_factory=dict)  # FAILURE_KINDS -> attempts that ended so
    latency_ms: list[float] = field(default_factory=list)  # sorted: TCP connect start to WELCOME, clients in

    @property
    def all_in(self) -> bool:
        """Whether every client reached WELCOME."""
        return self.connected == self.requested and not self.failed

    def latency(self, q: float) -> float | None:
        """The ``q``-th percentile of the clients' connect latency in ms."""
        return percentile(self.latency_ms, q)


@dataclass
class WindowResult:
    """One paced heartbeat window, as the generator saw it."""

    rate: float  # offered heartbeats per second
    duration: float  # scheduled seconds
    offered: int  # heartbeats the schedule asked for
    sent: int  # heartbeats written
    skipped: int  # offered but not written: the connection was not ready or its buffer was full
    elapsed: float  # seconds from the first slice to the last write
    sampled: int  # heartbeats that carried a receipt
    rtt_ms: list[float] = field(default_factory=list)  # sorted round trips, ms
    rtt_series: list[tuple[float, float]] = field(default_factory=list)  # (s since start, ms) by send time
    lost_receipts: int = 0  # receipts still missing after the wait
    gen_cpu_s: float = 0.0  # CPU seconds of the generator process during the window
    errors: dict[str, int] = field(default_factory=dict)  # errors seen during the window

    @property
    def achieved_rate(self) -> float:
        """Heartbeats written per second."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def rtt(self, q: float) -> float | None:
        """The ``q``-th percentile round trip in ms."""
        return percentile(self.rtt_ms, q)


class LoadGenerator:
    """Opens ``count`` connections to a Spidi-speaking server and paces heartbeats over them."""

    def __init__(
        self,
        host: str,
        port: int,
        tokens: list[str],
        *,
        path: str = "/ws",
        rooms: int = 10,
        room_prefix: str = "bench",
        latency_ms: int = 5,
        connect_concurrency: int = 100,
        connect_timeout: float = 30.0,
        source_ips: int = 1,
    ):
        if not tokens:
            raise ValueError("need at least one token")
        self.host = host
        self.port = port
        self.tokens = tokens
        self.path = path
        self.rooms = max(1, rooms)
        self.room_prefix = room_prefix
        self.latency_ms = latency_ms
        self.connect_concurrency = max(1, connect_concurrency)
        self.connect_timeout = connect_timeout
        self.source_ips = max(1, source_ips)
        self.loop = asyncio.get_running_loop()
        self.subscribe_frames = client_frame(
            stomp_frame("SUBSCRIBE", {"id": "s", "destination": "/user/queue/session"})
        ) + client_frame(stomp_frame("SUBSCRIBE", {"id": "e", "destination": "/user/queue/errors"}))
        self.conns: list[LoadConnection] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.rtts: list[tuple[float, float]] = []  # (perf_counter at send, seconds)
        self._t0 = 0.0
        self.late_receipts = 0
        self._cursor = 0

    def error(self, reason: str) -> None:
        """Count an error by its (shortened) reason."""
        self.errors[reason[:160]] += 1

    @property
    def ready(self) -> list[LoadConnection]:
        """Connections that have a session and can send heartbeats."""
        return [c for c in self.conns if c.state == READY]

    async def _open(self, index: int) -> tuple[bool, str | None, float]:
        """One connect attempt: (reached WELCOME, failure kind, seconds from TCP connect to WELCOME)."""
        token = self.tokens[index % len(self.tokens)]
        room = f"{self.room_prefix}-{index % self.rooms}"
        host_header = f"{self.host}:{self.port}"
        local = None
        if self.source_ips > 1:
            local = (f"127.0.0.{1 + index % self.source_ips}", 0)
        conn = None
        started = time.perf_counter()
        try:
            # One timeout for the whole attempt, TCP connect included (a timer, no extra task).
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: LoadConnection(self, index, token, room, host_header, self.path),
                    self.host,
                    self.port,
                    local_addr=local,
                )
                self.conns.append(conn)
                ok = await conn.ready
            return ok, None if ok else (conn.fail_kind or FAIL_OTHER), time.perf_counter() - started
        except (TimeoutError, OSError) as exc:
            self.error(f"connect: {type(exc).__name__}: {exc}")
            kind = classify_failure(exc)
            if conn is not None:
                if conn.fail_kind is not None:  # e.g. reset, then the wait timed out
                    kind = conn.fail_kind
                conn.close()
            return False, kind, time.perf_counter() - started

    async def connect_all(self, count: int) -> ConnectResult:
        """Open ``count`` connections, each through CONNECT, SUBSCRIBE and HELLO to WELCOME."""
        # ``connect_concurrency`` workers, each opening the next connection when its last one is
        # done: the same attempts in the same order as a task per connection behind a semaphore,
        # without 10,000 tasks parked on it (the generator's CPU is part of the connect figure).
        results: list = [None] * count
        indexes = iter(range(count))

        async def worker() -> None:
            for i in indexes:
                results[i] = await self._open(i)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(count, max(1, self.connect_concurrency)))))
        seconds = time.perf_counter() - started
        return self.connect_result(count, results, seconds)

    def connect_result(
        self, count: int, results: list[tuple[bool, str | None, float]], seconds: float
    ) -> ConnectResult:
        """Account the attempts of a connect phase (or storm) and order the connections."""
        ok = sum(1 for r in results if r[0])
        failures = collections.Counter(kind for good, kind, _ in results if not good)
        # Keep a stable order so round-robin spreads over rooms evenly.
        self.conns.sort(key=lambda c: c.index)
        return ConnectResult(
            requested=count,
            connected=ok,
            seconds=seconds,
            failed=count - ok,
            failures={k: failures[k] for k in FAILURE_KINDS if failures[k]},
            latency_ms=sorted(t * 1000.0 for good, _, t in results if good),
        )

    async def run(
        self, rate: float, duration: float, *, sample_every: int = 100, tick: float = 0.01
    ) -> WindowResult:
        """Send ``rate`` heartbeats/s for ``duration`` s, round-robin, in slices of ``tick`` s.

        One heartbeat in ``sample_every`` (when its connection has no receipt outstanding)
        carries a receipt for the round-trip time. Returns once the last heartbeat is written;
        call ``wait_receipts`` for the round trips.
        """
        conns = self.ready
        if not conns:
            raise RuntimeError("no connection is ready")
        errors_before = collections.Counter(self.errors)
        self.rtts = []
        n_conn = len(conns)
        total = round(rate * duration)
        # At most SEND_CHUNK writes between two yields to the loop: at 100,000/s a 10 ms slice is
        # 1,000 writes (~7 ms of CPU), and RECEIPTs (RTT samples) arriving meanwhile would wait for
        # the whole slice; in chunks they wait for one chunk (~2 ms). Catching up is unchanged: a
        # slice behind schedule only yields (sleep 0) before the next chunk.
        max_slice = max(1, min(int(rate * tick * 4), SEND_CHUNK))
        perf = time.perf_counter
        sample_every = max(1, sample_every)
        i = self._cursor % n_conn
        scheduled = sent = skipped = sampled = 0
        next_sample = 0
        cpu0 = time.process_time()
        t0 = self._t0 = perf()
        while scheduled < total:
            target = min(total, int(rate * (perf() - t0)))
            n = min(target - scheduled, max_slice)
            for _ in range(n):
                c = conns[i]
                i += 1
                if i == n_conn:
                    i = 0
                if c.paused or c.state != READY:
                    skipped += 1
                    continue
                if sent >= next_sample and not c.receipt_t0:
                    next_sample = sent + sample_every
                    sampled += 1
                    c.receipt_t0 = perf()
                    c.write(c.hb_receipt)
                else:
                    c.write(c.hb)
                sent += 1
            scheduled += n
            if scheduled >= total:
                break
            # Behind schedule (a slow slice): only yield; otherwise wait for the next slice.
            await asyncio.sleep(0 if target - scheduled > 0 else tick)
        elapsed = perf() - t0
        gen_cpu = time.process_time() - cpu0
        self._cursor = i
        errors = collections.Counter(self.errors)
        errors.subtract(errors_before)
        return WindowResult(
            rate=rate,
            duration=duration,
            offered=total,
            sent=sent,
            skipped=skipped,
            elapsed=elapsed,
            sampled=sampled,
            gen_cpu_s=gen_cpu,
            errors={k: v for k, v in errors.items() if v > 0},
        )

    async def wait_receipts(self, result: WindowResult, timeout: float = 5.0) -> WindowResult:
        """Wait (at most ``timeout`` s) for outstanding receipts; fill in the round trips."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(c.receipt_t0 for c in self.conns):
            await asyncio.sleep(0.02)
        lost = 0
        for c in self.conns:
            if c.receipt_t0:
                lost += 1
                c.receipt_t0 = 0.0
        result.lost_receipts = lost
        result.rtt_ms = sorted(rtt * 1000.0 for _, rtt in self.rtts)
        result.rtt_series = [(sent - self._t0, rtt * 1000.0) for sent, rtt in sorted(self.rtts)]
        return result

    async def close(self) -> None:
        """Close every connection (WebSocket close frame, then the socket)."""
        for c in self.conns:
            c.close()
        await asyncio.sleep(0.05)


# -- Prometheus /metrics over plain asyncio (no blocking call in the event loop) -------------------


async def fetch_text(url: str, timeout: float = 10.0) -> str:
    """GET ``url`` (http only) with HTTP/1.0 over asyncio streams; return the body as text."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def get() -> str:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200" not in status:
            raise RuntimeError(f"GET {url}: {status.decode(errors='replace')}")
        return body.decode()

    return await asyncio.wait_for(get(), timeout)


def parse_metric(text: str, name: str) -> float:
    """The sum of every sample of metric ``name`` (any labels) in Prometheus text format."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest[:1] not in (" ", "{"):
            continue
        total += float(line.rsplit(" ", 1)[1])
        found = True
    if not found:
        raise KeyError(f"metric {name} not found")
    return total


async def fetch_metric(url: str, name: str) -> float:
    """Read one metric from a Prometheus endpoint."""
    return parse_metric(await fetch_text(url), name)


async def wait_for_metric(
    url: str, name: str, target: float, *, timeout: float = 30.0, stall: float = 3.0, interval: float = 0.05
) -> tuple[float, float]:
    """Poll ``name`` until it reaches ``target``, stops moving for ``stall`` s, or ``timeout`` s pass.

    Returns (last value, seconds waited).
    """
    started = time.monotonic()
    value = await fetch_metric(url, name)
    last_change = started
    while value < target:
        now = time.monotonic()
        if now - started > timeout or now - last_change > stall:
            break
        await asyncio.sleep(interval)
        new = await fetch_metric(url, name)
        if new != value:
            value, last_change = new, time.monotonic()
    return value, time.monotonic() - started
