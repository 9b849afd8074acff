"""What the client sends and how it reads what comes back, without I/O.

Frames are built and parsed by spidi_core's STOMP codec (the server's own, Cython or the
pure-Python reference): ``serialize_frame`` and ``FrameParser``. Bodies are compact JSON.
"""

from __future__ import annotations

import json

from spidi_core import Frame, FrameParser, serialize_frame

__all__ = [
    "APP_HEARTBEAT",
    "APP_HELLO",
    "APP_LEAVE",
    "USER_ERRORS",
    "USER_SESSION",
    "Frame",
    "Parser",
    "connect",
    "disconnect",
    "heartbeat_body",
    "hello_body",
    "send_json",
    "subscribe",
    "unsubscribe",
]

USER_SESSION = "/user/queue/session"
USER_ERRORS = "/user/queue/errors"
APP_HELLO = "/app/hello"
APP_HEARTBEAT = "/app/heartbeat"
APP_LEAVE = "/app/leave"

# A roster snapshot of a big room is one frame (about 250 bytes per session): far over the
# server's 64 KiB limit on what clients send, which does not apply to what it sends.
MAX_FRAME = 32 * 1024 * 1024


class Parser:
    """STOMP frames out of WebSocket messages (bare EOLs, the server's heart-beats, are skipped)."""

    def __init__(self):
        self._parser = FrameParser(max_frame_size=MAX_FRAME, max_headers=64, max_header_line=65536)

    def feed(self, message: bytes | str) -> list[Frame]:
        """The frames a message completes; raises spidi_core.FrameError on a malformed one."""
        return self._parser.feed(message)


def _text(frame: bytes) -> str:
    return frame.decode("utf-8")


def connect(token: str, host: str) -> str:
    """CONNECT with the JWT as a Bearer token. STOMP heart-beats are off (``0,0``): the client's
    own HEARTBEATs and WebSocket pings keep the connection checked."""
    return _text(
        serialize_frame(
            "CONNECT",
            {"accept-version": "1.2", "host": host, "heart-beat": "0,0", "Authorization": f"Bearer {token}"},
        )
    )


def subscribe(sub_id: str, destination: str) -> str:
    """SUBSCRIBE ``destination`` under ``sub_id``."""
    return _text(serialize_frame("SUBSCRIBE", {"id": sub_id, "destination": destination}))


def unsubscribe(sub_id: str) -> str:
    """UNSUBSCRIBE ``sub_id``."""
    return _text(serialize_frame("UNSUBSCRIBE", {"id": sub_id}))


def disconnect(receipt: str) -> str:
    """DISCONNECT asking for a RECEIPT (the server ends this connection's sessions at once)."""
    return _text(serialize_frame("DISCONNECT", {"receipt": receipt}))


def send_json(destination: str, payload: dict, receipt: str | None = None) -> str:
    """SEND of a JSON body to ``destination`` (a RECEIPT comes back when ``receipt`` is set)."""
    headers = {"destination": destination, "content-type": "application/json"}
    if receipt is not None:
        headers["receipt"] = receipt
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _text(serialize_frame("SEND", headers, body))


def hello_body(
    room: str, client_id: str, app_version: str, device: str | None, os: str | None, resume: str | None
) -> dict:
    """The /app/hello body; ``resumeSessionId`` only when resuming."""
    body = {"roomCode": room, "clientId": client_id, "appVersion": app_version}
    if device is not None:
        body["device"] = device
    if os is not None:
        body["os"] = os
    if resume is not None:
        body["resumeSessionId"] = resume
    return body


def heartbeat_body(session_id: str, latency_ms: float | None) -> dict:
    """The /app/heartbeat body: ``latencyMs`` only once a round trip was measured."""
    body: dict = {"sessionId": session_id}
    if latency_ms is not None:
        body["latencyMs"] = round(max(0.0, latency_ms), 3)
    return body


def json_body(frame: Frame) -> dict | None:
    """A MESSAGE's JSON object body (None when it is not one)."""
    try:
        payload = json.loads(frame.body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None
