"""The one exception of the SDK, and which error codes end a client for good.

Codes are the server's (docs/protocol.md section 5: ``ROOM_FULL``, ``ROOM_NOT_FOUND``, ...) plus
a few the client names itself:

* ``UNAUTHORIZED``: the server refused the token (an ERROR frame in answer to CONNECT, then a
  close 1008: missing, invalid or expired token, no Spidi role);
* ``CONNECTION_REFUSED``: the server closed the connection with 1007 (a message that is not valid
  UTF-8) or 1009 (a message or frame over its size limit): it refuses what this client sends, and
  would again (the JavaScript SDK stops on the same closes, with the same code);
* ``HANDSHAKE_REFUSED``: the WebSocket upgrade was answered with an HTTP 4xx other than 429
  (wrong URL, Origin not allowed): retrying cannot help;
* ``CLOSED``: ``close()`` was called while ``join()`` or ``connect()`` waited;
* ``GAVE_UP``: ``max_attempts`` connection attempts in a row failed.
"""

from __future__ import annotations

__all__ = ["FATAL_CLOSE_CODES", "FATAL_CODES", "SpidiError"]

# Errors no retry can mend: the client stops, raises from join()/connect() or emits ``error``
# then ``ended``. Anything else (UNAVAILABLE, a dropped connection, 429/503) is retried.
FATAL_CODES = frozenset(
    {
        "UNAUTHORIZED",
        "CONNECTION_REFUSED",
        "FORBIDDEN",
        "ROOM_FULL",
        "ROOM_NOT_FOUND",
        "ROOM_DISABLED",
        "BAD_REQUEST",
        "BAD_JSON",
        "HANDSHAKE_REFUSED",
        "CLOSED",
        "GAVE_UP",
    }
)

# WebSocket closes after which reconnecting would only repeat the failure: the server refused what
# this client sends (1007 invalid UTF-8, 1009 too large). Every other close is retried.
FATAL_CLOSE_CODES = frozenset({1007, 1009})


class SpidiError(Exception):
    """An error of the Spidi server or of the client: ``code`` (a string such as ``ROOM_FULL``),
    ``message`` (human text) and ``fatal`` (whether the client stopped because of it)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def fatal(self) -> bool:
        """Whether this error stops the client's retries."""
        return self.code in FATAL_CODES
