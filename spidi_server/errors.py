"""Spidi's exception tree and its wire mapping, in one place.

SpidiError
├── ConfigError            bad configuration at start (never reaches a client)
├── ConnectionFatalError   the STOMP connection must end: ERROR frame, then close
│   ├── AuthError          missing, invalid or expired token
│   └── ProtocolError      frame before CONNECT, unknown command, bad frame (wraps FrameError)
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


class ConnectionFatalError(SpidiError):
    """The connection cannot go on: the client gets an ERROR frame and the socket closes."""


class AuthError(ConnectionFatalError):
    """The token is missing, malformed, badly signed, expired or lacks a required claim."""


class ProtocolError(ConnectionFatalError):
    """The client broke the STOMP protocol."""


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
