"""Spidi's exception tree and its wire mapping, in one place.

SpidiError
├── ConfigError            bad configuration at start (never reaches a client)
├── ConnectionFatalError   the STOMP connection must end: ERROR frame (code header: wire_code),
│   │                      then close (close_code)
│   ├── AuthError          1008 missing, invalid or expired token
│   ├── ProtocolError      1002 frame before CONNECT, unknown command, bad frame (wraps FrameError;
│   │   │                       1009 for frame-too-large)
│   │   └── InvalidTextError   1007 a message that is not valid UTF-8
│   ├── RateLimitError     1008 more frames per second than max_message_rate allows
│   └── SlowConsumerError  1008 more bytes queued to the client than max_send_buffer (no ERROR
│                               frame: the client is not reading)
├── HandshakeRefusedError  the WebSocket upgrade is answered with an HTTP error (status)
│   ├── OriginNotAllowedError   403 Origin not in allowed_origins
│   ├── IpRateLimitError        429 new connections from one IP over connection_rate_per_ip
│   ├── IpConnectionLimitError  429 open connections from one IP at max_connections_per_ip
│   └── ServerFullError         503 this process holds max_connections
└── AppError               one request failed; answered on /user/queue/errors, connection stays
    ├── BadRequestError        1001 BAD_REQUEST
    ├── BadJsonError           1002 BAD_JSON
    ├── UnknownDestinationError 1003 UNKNOWN_DESTINATION
    ├── ForbiddenError         1100 FORBIDDEN
    ├── RoomNotFoundError      1200 ROOM_NOT_FOUND
    ├── RoomFullError          1201 ROOM_FULL
    ├── UnknownSessionError    1300 UNKNOWN_SESSION
    ├── SubscriptionLimitError 1400 TOO_MANY_SUBSCRIPTIONS
    └── UnavailableError       1500 UNAVAILABLE
"""


class SpidiError(Exception):
    """Root of every error Spidi raises on purpose."""


class ConfigError(SpidiError):
    """A configuration value is missing or invalid."""


class StartupError(SpidiError):
    """``spidi serve`` cannot start (a port in use, a data directory it cannot write, a Redis or
    PostgreSQL that does not answer): it stops what it started and exits 2 with this message."""


class ConnectionFatalError(SpidiError):
    """The connection cannot go on: the client gets an ERROR frame and the socket closes.

    ``close_code`` is the WebSocket close code; ``reason`` labels ``spidi_refusals_total`` for the
    hardening limits (empty for plain protocol errors).
    """

    close_code = 1002
    reason = ""
    # The ERROR frame's ``code`` header: what a client decides on (stop, fix, retry), beside the
    # close code, which several causes share (1008: a token, a rate limit).
    wire_code = "PROTOCOL_ERROR"

    def __init__(self, message: str, close_code: int | None = None):
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code
            if close_code == 1009:
                self.wire_code = "FRAME_TOO_LARGE"


class AuthError(ConnectionFatalError):
    """The token is missing, malformed, badly signed, expired or lacks a required claim."""

    close_code = 1008
    wire_code = "UNAUTHORIZED"


class ProtocolError(ConnectionFatalError):
    """The client broke the STOMP protocol."""


class InvalidTextError(ProtocolError):
    """A WebSocket message is not valid UTF-8 (RFC 6455: close with 1007)."""

    close_code = 1007
    reason = "invalid_utf8"
    wire_code = "INVALID_UTF8"


class RateLimitError(ConnectionFatalError):
    """The client sends frames faster than ``max_message_rate`` (beyond ``max_message_burst``)."""

    close_code = 1008
    reason = "message_rate"
    wire_code = "RATE_LIMITED"


class SlowConsumerError(ConnectionFatalError):
    """More than ``max_send_buffer`` bytes wait for a client that does not read."""

    close_code = 1008
    reason = "slow_consumer"
    wire_code = "SLOW_CONSUMER"  # (no ERROR frame is sent: the client does not read)


class HandshakeRefusedError(SpidiError):
    """The WebSocket upgrade is refused with an HTTP status, before any STOMP frame.

    ``status`` and the message (the plain-text body) are what the client sees; ``reason`` labels
    ``spidi_refusals_total``; ``retry_after`` (seconds), when set, becomes a Retry-After header.
    """

    status = 400
    reason = "handshake"
    retry_after: int | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OriginNotAllowedError(HandshakeRefusedError):
    status, reason = 403, "origin"


class IpRateLimitError(HandshakeRefusedError):
    status, reason, retry_after = 429, "ip_rate", 1


class IpConnectionLimitError(HandshakeRefusedError):
    status, reason, retry_after = 429, "ip_connections", 5


class ServerFullError(HandshakeRefusedError):
    status, reason, retry_after = 503, "server_full", 5


class AppError(SpidiError):
    """A single request failed; the client hears on /user/queue/errors and stays connected."""

    code = 1000
    name = "ERROR"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequestError(AppError):
    code, name = 1001, "BAD_REQUEST"


class BadJsonError(AppError):
    code, name = 1002, "BAD_JSON"


class UnknownDestinationError(AppError):
    code, name = 1003, "UNKNOWN_DESTINATION"


class ForbiddenError(AppError):
    code, name = 1100, "FORBIDDEN"


class RoomNotFoundError(AppError):
    code, name = 1200, "ROOM_NOT_FOUND"


class RoomFullError(AppError):
    code, name = 1201, "ROOM_FULL"


class RoomDisabledError(AppError):
    code, name = 1202, "ROOM_DISABLED"


class UnknownSessionError(AppError):
    code, name = 1300, "UNKNOWN_SESSION"


class SubscriptionLimitError(AppError):
    code, name = 1400, "TOO_MANY_SUBSCRIPTIONS"


class UnavailableError(AppError):
    code, name = 1500, "UNAVAILABLE"


APP_ERRORS = (
    BadRequestError,
    BadJsonError,
    UnknownDestinationError,
    ForbiddenError,
    RoomNotFoundError,
    RoomFullError,
    RoomDisabledError,
    UnknownSessionError,
    SubscriptionLimitError,
    UnavailableError,
)


def app_error_payload(exc: AppError, ref: str | None) -> dict:
    """The JSON body sent on /user/queue/errors for an AppError."""
    return {"type": "ERROR", "code": exc.name, "codeNumber": exc.code, "message": exc.message, "ref": ref}


# Labels of spidi_refusals_total, one per hardening limit.
REFUSAL_REASONS = tuple(
    cls.reason
    for cls in (
        InvalidTextError,
        RateLimitError,
        SlowConsumerError,
        OriginNotAllowedError,
        IpRateLimitError,
        IpConnectionLimitError,
        ServerFullError,
    )
)
