"""STOMP destinations Spidi understands, and their parsing."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnknownDestinationError

APP_HELLO = "/app/hello"
APP_HEARTBEAT = "/app/heartbeat"
APP_LEAVE = "/app/leave"

USER_SESSION = "/user/queue/session"
USER_ERRORS = "/user/queue/errors"
TOPIC_ROOMS = "/topic/rooms"
TOPIC_ALERTS = "/topic/alerts"
_ROOM_PREFIX = "/topic/rooms/"

KIND_USER_SESSION = "user-session"
KIND_USER_ERRORS = "user-errors"
# The connection's own queues: a SUBSCRIBE to one has nothing to check, register or read.
PRIVATE_KINDS = frozenset({KIND_USER_SESSION, KIND_USER_ERRORS})
KIND_ROOMS = "rooms"
KIND_ALERTS = "alerts"
KIND_ROOM_METRICS = "room-metrics"
KIND_ROOM_ROSTER = "room-roster"


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed subscription destination: its kind and, for room topics, the room code."""

    raw: str
    kind: str
    room_code: str | None = None


def room_metrics(room_code: str) -> str:
    return f"{_ROOM_PREFIX}{room_code}/metrics"


def room_roster(room_code: str) -> str:
    return f"{_ROOM_PREFIX}{room_code}/roster"


# The fixed destinations, parsed once: every connection subscribes to the first two, and a
# shared (frozen) Destination keeps no object nor string per connection.
_FIXED = {
    raw: Destination(raw, kind)
    for raw, kind in (
        (USER_SESSION, KIND_USER_SESSION),
        (USER_ERRORS, KIND_USER_ERRORS),
        (TOPIC_ROOMS, KIND_ROOMS),
        (TOPIC_ALERTS, KIND_ALERTS),
    )
}


def parse_subscription(raw: str) -> Destination:
    """Parse a SUBSCRIBE destination or raise UnknownDestinationError."""
    fixed = _FIXED.get(raw)
    if fixed is not None:
        return fixed
    if raw.startswith(_ROOM_PREFIX):
        rest = raw[len(_ROOM_PREFIX) :]
        code, _, leaf = rest.rpartition("/")
        if code and "/" not in code:
            if leaf == "metrics":
                return Destination(raw, KIND_ROOM_METRICS, code)
            if leaf == "roster":
                return Destination(raw, KIND_ROOM_ROSTER, code)
    raise UnknownDestinationError(
        f"cannot subscribe to {raw!r}: use /user/queue/session, /user/queue/errors, /topic/rooms, /topic/alerts, "
        "/topic/rooms/{roomCode}/metrics or /topic/rooms/{roomCode}/roster"
    )
