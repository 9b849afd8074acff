"""The server side of one STOMP 1.2 connection, sans I/O.

Bytes go in through ``receive_data``; it returns presence events (the typed records of
``protocol.events``) for the layer above to act on, and queues the frames to send, which
``data_to_send`` hands out. Nothing here awaits or touches a socket, so every protocol rule is
testable without one. The bodies of /app/* SENDs are checked in ``protocol.payloads``.
"""

from __future__ import annotations

import time

import orjson

from spidi_core import FrameError, FrameParser, HeartbeatLane, serialize_frame

from ..auth import Claims, TokenVerifier
from ..errors import (
    AppError,
    AuthError,
    BadRequestError,
    ConnectionFatalError,
    InvalidTextError,
    ProtocolError,
    RateLimitError,
    SubscriptionLimitError,
    UnknownDestinationError,
    app_error_payload,
)
from . import destinations as dest
from . import payloads
from .events import Connected, Disconnect, Event, Hello, ReceiptOnly, Subscribe, Unsubscribe

SERVER_NAME = "spidi/0.1.0"
VERSIONS = ("1.2", "1.1", "1.0")

_NOTHING = ()  # the outbox when nothing waits

STATE_AWAIT_CONNECT = 0
STATE_OPEN = 1
STATE_CLOSED = 2


def negotiate_heartbeat(client: str | None, server_send_ms: int, server_expect_ms: int) -> tuple[int, int]:
    """STOMP heart-beat negotiation: (server sends every, server expects every) in ms; 0 is off."""
    if not client:
        return 0, 0
    try:
        cx_text, cy_text = client.split(",")
        cx, cy = int(cx_text), int(cy_text)
    except ValueError as exc:
        raise ProtocolError(f"bad heart-beat header {client!r}: expected 'cx,cy'") from exc
    if cx < 0 or cy < 0:
        raise ProtocolError(f"bad heart-beat header {client!r}: negative value")
    send = max(server_send_ms, cy) if server_send_ms and cy else 0
    expect = max(server_expect_ms, cx) if server_expect_ms and cx else 0
    return send, expect


class StompConnection:
    """One client's STOMP state: negotiation, auth, subscriptions, and the outbound queue."""

    __slots__ = (
        "parser",
        "verifier",
        "session_id",
        "query_token",
        "state",
        "claims",
        "version",
        "send_every_ms",
        "expect_every_ms",
        "subscriptions",
        "max_subscriptions",
        "outbox",
        "_last_received",
        "last_sent",
        "message_seq",
        "stomp_heartbeat_ms",
        "close_reason",
        "created",
        "rate",
        "burst",
        "lane",
        "lane_key",
        "refused",
    )

    def __init__(
        self,
        verifier: TokenVerifier,
        session_id: str,
        *,
        query_token: str | None = None,
        max_frame_size: int = 65536,
        max_headers: int = 64,
        max_header_line: int = 8192,
        max_subscriptions: int = 64,
        stomp_heartbeat_ms: int = 10_000,
    ):
        self.parser = FrameParser(max_frame_size, max_headers, max_header_line)
        self.verifier = verifier
        self.session_id = session_id
        self.query_token = query_token
        self.state = STATE_AWAIT_CONNECT
        self.claims: Claims | None = None
        self.version = "1.2"
        self.send_every_ms = 0
        self.expect_every_ms = 0
        # By id, in the order they were made (MESSAGEs to a destination go to its ids in that order).
        self.subscriptions: dict[str, dest.Destination] = {}
        self.max_subscriptions = max_subscriptions
        # Frames to send: a list while some wait, else the shared empty tuple (an idle connection
        # keeps no empty list).
        self.outbox: list[bytes] | tuple = _NOTHING
        self.created = self._last_received = time.monotonic()
        self.last_sent = self.created
        self.message_seq = 0
        self.stomp_heartbeat_ms = stomp_heartbeat_ms
        self.close_reason: tuple[int, str] | None = None
        self.rate = 0.0  # frames per second allowed, sustained; 0 = no limit (see use_lane)
        self.burst = 0.0
        # The heartbeat lane that keeps this connection's token bucket and last_received (one
        # bucket for the frames seen here and the heartbeats the lane answers without them).
        self.lane: HeartbeatLane | None = None
        self.lane_key = 0
        self.refused: ConnectionFatalError | None = None  # the hardening limit that ended it, if any

    def use_lane(self, lane: HeartbeatLane, key: int, per_second: float = 0.0, burst: float = 0.0) -> None:
        """Keep the token bucket (``burst`` frames at once, refilled at ``per_second``; 0: no
        limit) and ``last_received`` in ``lane`` under ``key`` (opened here, closed by the owner)."""
        # Kept as given (the settings' own objects, shared by every connection): float() of the
        # int burst would be a new float per connection.
        self.rate = per_second
        self.burst = burst
        self.lane = lane
        self.lane_key = key
        lane.open(key, self.rate, self.burst, time.monotonic())

    def limit_rate(self, per_second: float, burst: int) -> None:
        """Token bucket on incoming frames, for a connection without a node's lane: a lane of its own."""
        self.use_lane(self.lane or HeartbeatLane((1.0,), 0), self.lane_key or 1, per_second, burst)

    @property
    def last_received(self) -> float:
        """Monotonic seconds of the last message from the client (the lane's answered ones too)."""
        lane = self.lane
        return self._last_received if lane is None else lane.last_received(self.lane_key)

    # -- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes | str) -> list[Event]:
        """Feed one WebSocket message; return the events it produced, in order.

        A connection-fatal problem queues an ERROR frame, sets ``close_reason`` and stops
        processing; the caller then sends what is queued and closes.
        """
        if self.state == STATE_CLOSED:
            return []
        now = time.monotonic()
        events: list[Event] = []
        # All of Spidi's STOMP is UTF-8 text (headers by the spec, bodies are JSON): anything else
        # ends the connection, as RFC 6455 asks for a text message. ASCII needs no decoding.
        if not data.isascii() and not isinstance(data, str):
            try:
                bytes(data).decode()
            except UnicodeDecodeError as exc:
                self._fail(InvalidTextError(f"message is not valid UTF-8 ({exc.reason} at byte {exc.start})"))
                return events
        try:
            frames = self.parser.feed(data)
        except FrameError as exc:
            code = 1009 if exc.reason == "frame-too-large" else 1002
            self._fail(ProtocolError(f"malformed frame ({exc.reason}): {exc}", code))
            return events
        lane = self.lane
        if lane is None:
            self._last_received = now
        elif not lane.charge(self.lane_key, now, len(frames)):
            # Token bucket: each frame costs one token (a message of bare heart-beat EOLs, one),
            # refilled at ``rate`` per second up to ``burst``; the lane spends them for the
            # heartbeats it answers too.
            self._fail(
                RateLimitError(
                    f"message rate limit exceeded: at most {self.rate:g} frames/s (bursts of {self.burst:g})"
                )
            )
            return events
        for frame in frames:
            try:
                event = self._handle(frame)
            except ConnectionFatalError as exc:
                self._fail(exc)
                break
            except AppError as exc:
                self.send_app_error(exc, frame.headers.get("receipt") or frame.headers.get("destination"))
                receipt = frame.headers.get("receipt")
                if receipt is not None:
                    self.send_receipt(receipt)
                continue
            if event is not None:
                events.append(event)
            if self.state == STATE_CLOSED:
                break
        return events

    def _handle(self, frame) -> Event | None:
        command = frame.command
        headers = frame.headers
        if self.state == STATE_AWAIT_CONNECT:
            if command in ("CONNECT", "STOMP"):
                return self._connect(headers)
            raise ProtocolError(f"{command} before CONNECT: the first frame must be CONNECT or STOMP")
        receipt = headers.get("receipt")
        if command == "SEND":
            return self._send(headers, frame.body, receipt)
        if command == "SUBSCRIBE":
            return self._subscribe(headers, receipt)
        if command == "UNSUBSCRIBE":
            sub_id = headers.get("id")
            if sub_id is None:
                raise BadRequestError("UNSUBSCRIBE needs an id header")
            destination = self.remove_subscription(sub_id)
            return Unsubscribe(sub_id, destination, receipt)
        if command == "DISCONNECT":
            return Disconnect(receipt)
        if command in ("ACK", "NACK", "BEGIN", "COMMIT", "ABORT"):
            # Spidi has no client-acked subscriptions nor transactions; accept them harmlessly.
            return ReceiptOnly(receipt) if receipt is not None else None
        if command in ("CONNECT", "STOMP"):
            raise ProtocolError("already connected")
        raise ProtocolError(f"unknown command {command!r}")

    def _connect(self, headers: dict) -> Connected:
        accepted = headers.get("accept-version", "1.0").split(",")
        for version in VERSIONS:
            if version in accepted:
                self.version = version
                break
        else:
            raise ProtocolError(
                f"no common STOMP version: client accepts {accepted}, server speaks {VERSIONS}"
            )
        token = None
        auth = headers.get("Authorization") or headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError("Authorization header must be 'Bearer <jwt>'")
            token = value.strip()
        token = token or headers.get("passcode") or self.query_token
        self.query_token = None  # read once: the connection does not keep the token text
        self.claims = self.verifier.verify(token)
        self.send_every_ms, self.expect_every_ms = negotiate_heartbeat(
            headers.get("heart-beat"), self.stomp_heartbeat_ms, self.stomp_heartbeat_ms
        )
        self.state = STATE_OPEN
        self._queue(
            serialize_frame(
                "CONNECTED",
                {
                    "version": self.version,
                    "heart-beat": f"{self.send_every_ms},{self.expect_every_ms}",
                    "session": self.session_id,
                    "server": SERVER_NAME,
                    "user-name": self.claims.user_id,
                },
            )
        )
        return Connected(self.claims)

    def _send(self, headers: dict, body: bytes, receipt: str | None) -> Event:
        destination = headers.get("destination")
        if destination is None:
            raise BadRequestError("SEND needs a destination header")
        if destination == dest.APP_HEARTBEAT:
            return payloads.heartbeat(body, receipt)
        if destination == dest.APP_HELLO:
            return Hello(payloads.json_object(body), receipt)
        if destination == dest.APP_LEAVE:
            return payloads.leave(body, receipt)
        raise UnknownDestinationError(
            f"no such destination {destination!r}: send to /app/hello, /app/heartbeat or /app/leave"
        )

    def _subscribe(self, headers: dict, receipt: str | None) -> Subscribe:
        sub_id = headers.get("id")
        destination = headers.get("destination")
        if sub_id is None or destination is None:
            raise BadRequestError("SUBSCRIBE needs id and destination headers")
        if sub_id in self.subscriptions:
            raise BadRequestError(f"subscription id {sub_id!r} is already in use")
        if len(self.subscriptions) >= self.max_subscriptions:
            raise SubscriptionLimitError(f"at most {self.max_subscriptions} subscriptions per connection")
        parsed = dest.parse_subscription(destination)
        self.subscriptions[sub_id] = parsed
        return Subscribe(sub_id, parsed, receipt)

    def remove_subscription(self, sub_id: str) -> dest.Destination | None:
        """Forget a subscription (UNSUBSCRIBE, or a subscribe the application refused)."""
        return self.subscriptions.pop(sub_id, None)

    # -- output --------------------------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        out = self.outbox
        if out:
            out.append(data)
        else:
            self.outbox = [data]

    def data_to_send(self) -> list[bytes]:
        """Everything queued so far (one STOMP frame, or one EOL, per item; empty: nothing);
        empties the queue."""
        out = self.outbox
        if out:
            self.outbox = _NOTHING
            self.last_sent = time.monotonic()
        return out

    def send_message(self, destination: str, body: bytes, sub_id: str | None = None) -> bool:
        """Queue a MESSAGE to the subscription(s) on ``destination``; False if nobody subscribed."""
        if sub_id is not None:
            ids = (sub_id,)
        else:
            # A scan, not an index by destination: a connection has a few subscriptions (two,
            # mostly), and this path is for its own queues (session news, errors), not fan-out.
            ids = [one for one, parsed in self.subscriptions.items() if parsed.raw == destination]
            if not ids:
                return False
        for one in ids:
            self.message_seq += 1
            self._queue(
                serialize_frame(
                    "MESSAGE",
                    {
                        "destination": destination,
                        "subscription": one,
                        "message-id": f"{self.session_id}-{self.message_seq}",
                        "content-type": "application/json",
                    },
                    body,
                )
            )
        return True

    def send_json(self, destination: str, payload: dict, sub_id: str | None = None) -> bool:
        """Queue a JSON MESSAGE (see send_message)."""
        return self.send_message(destination, orjson.dumps(payload), sub_id)

    def send_receipt(self, receipt_id: str) -> None:
        """Queue a RECEIPT for a frame that asked for one."""
        self._queue(serialize_frame("RECEIPT", {"receipt-id": receipt_id}))

    def send_app_error(self, exc: AppError, ref: str | None) -> None:
        """Answer a failed request on /user/queue/errors; the connection stays open."""
        self.send_message(dest.USER_ERRORS, orjson.dumps(app_error_payload(exc, ref)))

    def send_heartbeat(self) -> None:
        """Queue a STOMP heart-beat (one EOL)."""
        self._queue(b"\n")

    def _fail(self, exc: ConnectionFatalError) -> None:
        """Queue the ERROR frame of a connection-fatal error and close with its ``close_code``."""
        message = str(exc)
        self._queue(
            serialize_frame(
                "ERROR",
                {"message": message[:200], "code": exc.wire_code, "content-type": "text/plain"},
                message.encode(),
            )
        )
        self.state = STATE_CLOSED
        self.close_reason = (exc.close_code, message[:120])
        if exc.reason:
            self.refused = exc

    def close(self, code: int, reason: str) -> None:
        """Mark the connection closed from above (shutdown, slow consumer, liveness)."""
        self.state = STATE_CLOSED
        self.close_reason = (code, reason)

    @property
    def heartbeats_received(self) -> int:
        """STOMP heart-beat EOLs received so far."""
        return self.parser.heartbeats
