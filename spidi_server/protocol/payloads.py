"""The JSON bodies clients send to /app/hello, /app/heartbeat and /app/leave, checked in one place.

HEARTBEAT and LEAVE are checked as their frame arrives (``StompConnection``); HELLO is checked by
presence, after its role check, so a client without the role is told FORBIDDEN whatever it sent.
Errors are ``BadJsonError`` and ``BadRequestError``; their texts are part of the wire contract.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import orjson

from ..errors import BadJsonError, BadRequestError
from ..rooms import ROOM_CODE
from .events import Heartbeat, Leave

JSON_MAX_DEPTH = 16
MAX_LATENCY_MS = 3_600_000
# HELLO's text fields and their length limits; the first two are required.
TEXT_LIMITS = {"clientId": 128, "appVersion": 64, "device": 128, "os": 128}
_REQUIRED = ("clientId", "appVersion")


class HelloPayload(NamedTuple):
    """A checked HELLO body."""

    room_code: str
    client_id: str
    app_version: str
    device: str | None
    os: str | None
    resume_session_id: str | None


def _depth(value: Any, depth: int = 0) -> int:
    if depth > JSON_MAX_DEPTH:
        return depth
    if isinstance(value, dict):
        values = value.values()
    elif isinstance(value, list):
        values = value
    else:
        return depth
    # A scalar inside adds nothing to depth + 1: only containers are walked (no generator and
    # no call per field of a flat HELLO body).
    deepest = depth + 1
    for v in values:
        if isinstance(v, (dict, list)):
            found = _depth(v, depth + 1)
            if found > deepest:
                deepest = found
    return deepest


def _not_json(exc: orjson.JSONDecodeError) -> BadJsonError:
    return BadJsonError(f"body is not valid JSON: {exc}")


_NOT_AN_OBJECT = "body must be a JSON object"


def json_object(body: bytes, check_depth: bool = True) -> dict:
    """A frame body as a JSON object; ``BadJsonError`` if it is not one (or nests too deeply)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from exc
    if not isinstance(payload, dict):
        raise BadJsonError(_NOT_AN_OBJECT)
    if check_depth and _depth(payload) > JSON_MAX_DEPTH:
        raise BadJsonError("JSON nested too deeply")
    return payload


def heartbeat(body: bytes, receipt: str | None) -> Heartbeat:
    """A /app/heartbeat body as its event: ``{"sessionId": str, "latencyMs": number}``.

    ``latencyMs`` is optional: absent (or null) the heartbeat carries no latency sample
    (``latency_ms`` None), it keeps the session alive and counts as a heartbeat without touching
    any latency figure (a 0 would pull every average down).

    The hot path: the JSON is parsed here rather than through ``json_object`` (one call less per
    heartbeat), and the depth walk is skipped: two scalar fields are read, and orjson itself caps
    nesting at 1024.
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from exc
    if not isinstance(payload, dict):
        raise BadJsonError(_NOT_AN_OBJECT)
    session_id = payload.get("sessionId")
    latency = payload.get("latencyMs")
    if not isinstance(session_id, str) or not session_id:
        raise BadRequestError("heartbeat needs sessionId (string)")
    if latency is not None and (type(latency) not in (int, float) or not 0 <= latency < MAX_LATENCY_MS):
        raise BadRequestError("heartbeat latencyMs must be a number from 0 to 3600000")
    return Heartbeat(session_id, latency, receipt)


def leave(body: bytes, receipt: str | None) -> Leave:
    """A /app/leave body as its event: ``{"sessionId": str}``."""
    session_id = json_object(body).get("sessionId")
    if not isinstance(session_id, str) or not session_id:
        raise BadRequestError("leave needs sessionId (string)")
    return Leave(session_id, receipt)


def hello(payload: dict) -> HelloPayload:
    """Check a HELLO body (already a JSON object): room code, client texts, resume id."""
    code = payload.get("roomCode")
    if not isinstance(code, str) or not ROOM_CODE.match(code):
        raise BadRequestError("roomCode must be 1-64 characters of letters, digits, _ . : -")
    for name, limit in TEXT_LIMITS.items():
        value = payload.get(name)
        if value is None and name not in _REQUIRED:
            continue
        if not isinstance(value, str) or not value or len(value) > limit:
            raise BadRequestError(f"{name} must be a non-empty string of at most {limit} characters")
    resume = payload.get("resumeSessionId")
    if resume is not None and not isinstance(resume, str):
        raise BadRequestError("resumeSessionId must be a string")
    # A session keeps these for its lifetime, and their values repeat across clients (a few app
    # versions, devices, systems): one shared string each instead of one per session.
    device, os_name = payload.get("device"), payload.get("os")
    return HelloPayload(
        code,
        payload["clientId"],
        sys.intern(payload["appVersion"]),
        None if device is None else sys.intern(device),
        None if os_name is None else sys.intern(os_name),
        resume,
    )
