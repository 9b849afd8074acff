"""Stream entries to typed rows: what the writer stages for PostgreSQL, and what it rejects.

A history event arrives as a flat mapping of strings (see ``stores/events.py``). ``stage_event``
checks it and builds its ``sql.ingest.StageRow`` by column name, with the partitions the row needs
(``Staged``); ``stage_alert`` builds an ``sql.alerts.AlertRow``. A malformed entry raises
``InvalidEvent``: the writer sends it to the dead-letter stream instead of failing the batch.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import orjson

from ..stores import events
from .partitions import ROOM_STATS, SESSIONS, PartitionedTable
from .sql.alerts import AlertRow
from .sql.ingest import StageRow


class InvalidEvent(ValueError):
    """A stream entry that is not a well-formed history event."""


def _text(fields: dict, key: str) -> str | None:
    value = fields.get(key)
    return value if value else None


def _int(fields: dict, key: str, required: bool = False) -> int | None:
    value = fields.get(key)
    if not value:
        if required:
            raise InvalidEvent(f"missing {key}")
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            raise InvalidEvent(f"{key} is not a number: {value!r}") from None


def _float(fields: dict, key: str) -> float | None:
    value = fields.get(key)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidEvent(f"{key} is not a number: {value!r}") from None


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _uuid(fields: dict, key: str, required: bool = True) -> str | None:
    value = fields.get(key)
    if not value:
        if required:
            raise InvalidEvent(f"missing {key}")
        return None
    if _UUID.fullmatch(value):  # the form servers send; PostgreSQL takes it as is
        return value.lower()
    try:
        return str(uuid.UUID(value))  # other spellings uuid.UUID accepts (braces, no dashes)
    except ValueError:
        raise InvalidEvent(f"{key} is not a UUID: {value!r}") from None


def _hist(fields: dict, key: str = "latency_hist", most: int = 64) -> str | None:
    text = fields.get(key)
    if not text:
        return None
    if not text.replace(",", "").isdigit() or text.count(",") >= most:
        raise InvalidEvent(f"{key} is not a list of at most {most} counts: {text!r}")
    return "{" + text + "}"  # an array literal: PostgreSQL parses it, Python need not


_MAX_BREAKDOWN_LABELS = 1024  # per dimension of one sample (a node sends at most its top N + other)
_MAX_LABEL = 128  # the longest HELLO value (protocol.payloads.TEXT_LIMITS)


def _breakdown_hist(value, where: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= len(events.LATENCY_BUCKETS_MS) + 1
        or not all(type(n) is int and n >= 0 for n in value)
    ):
        raise InvalidEvent(
            f"latency_breakdown {where} is not a histogram of at most "
            f"{len(events.LATENCY_BUCKETS_MS) + 1} counts"
        )
    return value


def _breakdown(fields: dict) -> str | None:
    """A room sample's SLO breakdown (events.room_sample) checked, as JSON text for the stage."""
    text = fields.get("latency_breakdown")
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"latency_breakdown: {exc}") from None
    if not isinstance(value, dict) or not set(value) <= set(events.BREAKDOWN_DIMENSIONS):
        raise InvalidEvent(f"latency_breakdown must be an object of {', '.join(events.BREAKDOWN_DIMENSIONS)}")
    for dim, part in value.items():
        if not isinstance(part, dict) or not set(part) <= {"values", "other"}:
            raise InvalidEvent(f"latency_breakdown {dim} must be an object of values and other")
        if "other" in part:
            _breakdown_hist(part["other"], f"{dim} other")
        labels = part.get("values", {})
        if not isinstance(labels, dict) or len(labels) > _MAX_BREAKDOWN_LABELS:
            raise InvalidEvent(
                f"latency_breakdown {dim} values must be an object of at most {_MAX_BREAKDOWN_LABELS} labels"
            )
        for label, hist in labels.items():
            if len(label) > _MAX_LABEL or "\x00" in label:
                raise InvalidEvent(f"latency_breakdown {dim} label {label[:40]!r} is not a client value")
            _breakdown_hist(hist, f"{dim} {label[:40]!r}")
    return text


@dataclass(slots=True)
class Staged:
    """One event ready for the staging table, with the partitions it needs."""

    event_id: str
    row: StageRow
    table: PartitionedTable  # sessions or room stats
    table_ms: int  # the partition key of that table (started_at or bucket)
    event_ms: int  # the ledger's partition key
    stats_ms: int | None = None  # a session event's counted minute: it also writes dat_spd_room_stats
    stream_id: str = ""
    fields: dict | None = None


SECONDS_PER_MINUTE = 60  # a room sample's online_secs has one count per second at most


def _minute(ms: int) -> int:
    return ms - ms % 60_000


def stage_event(fields: dict) -> Staged:
    """Turn a stream entry (see stores/events.py) into a staging row; InvalidEvent if malformed.

    A room sample's ``joins``/``leaves``/``timeouts``/``disconnects`` (sent by nodes before those
    counters came from session events, and possibly still in the stream during an upgrade) are
    ignored: counting them too would count those sessions twice. A session_started, and a
    session_ended, with a room gets the minute it counts in as its ``bucket_ms``.
    """
    kind = fields.get("kind")
    event_id = _uuid(fields, "id")
    tenant = _text(fields, "tenant")
    if tenant is None:
        raise InvalidEvent("missing tenant")
    if kind == events.ROOM_SAMPLE:
        bucket = _int(fields, "bucket", required=True)
        row = StageRow(
            event_id=event_id,
            event_ms=bucket,
            kind=kind,
            room_id=_uuid(fields, "room_id"),
            room_code=_text(fields, "room_code"),
            tenant=tenant,
            node_id=_text(fields, "node_id"),
            latency_sum=_float(fields, "latency_sum") or 0.0,
            latency_count=_int(fields, "latency_count") or 0,
            bucket_ms=bucket,
            online_sum=_int(fields, "online_sum") or 0,
            online_samples=_int(fields, "online_samples") or 0,
            online_max=_int(fields, "online_max") or 0,
            online_secs=_hist(fields, "online_secs", SECONDS_PER_MINUTE),
            latency_hist=_hist(fields),
            latency_breakdown=_breakdown(fields),
        )
        return Staged(event_id, row, ROOM_STATS, bucket, bucket)
    if kind not in (events.SESSION_STARTED, events.SESSION_CHECKPOINT, events.SESSION_ENDED):
        raise InvalidEvent(f"unknown kind {kind!r}")
    started = _int(fields, "started_at", required=True)
    session_id = _uuid(fields, "session_id")
    room_id = _uuid(fields, "room_id", required=False)
    if kind == events.SESSION_STARTED:
        minute = _minute(started) if room_id else None
        row = StageRow(
            event_id=event_id,
            event_ms=started,
            kind=kind,
            session_id=session_id,
            room_id=room_id,
            room_code=_text(fields, "room_code"),
            tenant=tenant,
            user_id=_text(fields, "user_id"),
            client_id=_text(fields, "client_id"),
            app_version=_text(fields, "app_version"),
            device=_text(fields, "device"),
            os=_text(fields, "os"),
            ip=_text(fields, "ip"),
            node_id=_text(fields, "node_id"),
            started_ms=started,
            bucket_ms=minute,
        )
        return Staged(event_id, row, SESSIONS, started, started, minute)
    last_hb = _int(fields, "last_heartbeat_at") or started
    if kind == events.SESSION_ENDED:
        ended = _int(fields, "ended_at", required=True)
        minute = _minute(ended) if room_id else None
        room_code, reason = _text(fields, "room_code"), _text(fields, "reason")
    else:
        ended = minute = room_code = reason = None
    row = StageRow(
        event_id=event_id,
        event_ms=ended or last_hb,
        kind=kind,
        session_id=session_id,
        room_id=room_id,
        room_code=room_code,
        tenant=tenant,
        started_ms=started,
        ended_ms=ended,
        end_reason=reason,
        heartbeats=_int(fields, "heartbeats") or 0,
        last_hb_ms=last_hb,
        latency_sum=_float(fields, "latency_sum") or 0.0,
        latency_count=_int(fields, "latency_count") or 0,
        latency_min=_float(fields, "latency_min"),
        latency_max=_float(fields, "latency_max"),
        bucket_ms=minute,
    )
    return Staged(event_id, row, SESSIONS, started, ended or last_hb, minute)


def stage_alert(fields: dict) -> AlertRow:
    """Turn an ``alert_event`` stream entry into the row the writer stores."""
    tenant = _text(fields, "tenant")
    if tenant is None:
        raise InvalidEvent("missing tenant")
    state = _text(fields, "state")
    if state not in ("pending", "firing", "resolved"):
        raise InvalidEvent(f"bad alert state {state!r}")
    details = _text(fields, "details")
    if details is not None:
        try:
            orjson.loads(details)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"details: {exc}") from None
    return AlertRow(
        id=_uuid(fields, "id"),
        rule_id=_uuid(fields, "rule_id"),
        unidad_negocio_id=tenant,
        room_id=_uuid(fields, "room_id", required=False),
        room_code=_text(fields, "room_code"),
        state=state,
        kind=_text(fields, "alert_kind"),
        severity=_text(fields, "severity"),
        value=_float(fields, "value"),
        at_ms=_int(fields, "at", required=True),
        details=details,
    )
