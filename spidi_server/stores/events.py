"""History events: what server processes hand to the writer through a Redis Stream.

Every event is a flat mapping of strings (a stream entry) with an ``id`` (UUID, for idempotent
writes: a replayed event changes nothing) and a ``kind``. Timestamps are epoch milliseconds.
Heartbeats never become events one by one: a session's heartbeats are summarised in its
checkpoints and its end event; a room's activity in one sample per room, node and minute.

    session_started    id kind session_id room_id room_code tenant user_id client_id app_version
                       device os ip node_id started_at
    session_checkpoint id kind session_id room_id tenant started_at heartbeats last_heartbeat_at
                       latency_sum latency_count latency_min latency_max
    session_ended      the checkpoint fields + ended_at reason, and who left (user_id room_code
                       client_id device os app_version: room hooks read the end alone)
    room_sample        id kind room_id room_code tenant node_id bucket (minute start, ms)
                       online_sum online_samples online_max online_secs (comma-separated online
                       count at each second of the minute, trailing zeros left out)
                       latency_sum latency_count
                       latency_hist (comma-separated counts per LATENCY_BUCKETS_MS upper bound,
                       plus one overflow count)
                       latency_breakdown (JSON, empty when nothing was counted: the SLO breakdown,
                       a histogram per client group, {"appVersion": {"values": {"<version>": hist},
                       "other": hist}, "os": {...}}; "other" holds the sessions beyond the node's
                       top N of the room, the os "" those that sent none). Older nodes also sent
                       joins leaves timeouts disconnects: the writer ignores them (see below).

    alert_event        id kind rule_id tenant room_id room_code state (pending|firing|resolved)
                       alert_kind severity value at details (JSON: ruleName, expression,
                       threshold, previousState, since, episodeId, metrics): written by the
                       alert evaluator (alerting/evaluator.py), one per transition

Room samples are per node: a node counts only its own sessions, sampling its online count once a
second. Samples of several nodes (or several samples of one node, e.g. around a restart) for one
room and minute merge by addition: the room's average online is the sum of the samples' averages;
online_secs add second by second, so the room's online_max is the largest of those sums (the room's
count across nodes at one instant), never merely the largest node's; latency sums and histogram
counts add. (Samples from nodes older than online_secs only bring their own maximum.) A sample lives in
its node's memory until the minute ends, so a process killed without a word loses its minute's.

A room minute's joins, leaves, timeouts and disconnects are not sampled: the writer counts them
from the session events, which are sent when they happen and survive any process (the reaper
sends session_ended, reason node_lost, for a dead node's sessions). joins = session_started per
minute of started_at; leaves/timeouts/disconnects = session_ended per minute of ended_at by reason
(leave, timeout, anything else: disconnect, shutdown, node_lost). Both kinds therefore go through
the writer's event ledger like room samples, so a replay does not count twice; checkpoints
(cumulative figures) do not need it.

A session ends once in history whoever ends it: its session_ended id is derived from the session
(``end_event_id``), so a second end (the node that was cut off ends sessions the others already
reaped; the writer's sweep ended it first) is a replay for the ledger. The first end applied wins.

End reasons: ``leave`` (LEAVE), ``timeout`` (no heartbeat within the timeout), ``disconnect`` (the
client's connection closed and the grace period passed), ``shutdown`` (its node stopped cleanly),
``node_lost`` (its node died: ended by another node, by the node restarting under its id, or by the
writer's reconciliation sweep; ``ended_at`` is the last heartbeat known).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Sequence

import orjson

from ..ids import format_uuid4
from . import keys

STREAM = keys.EVENTS_STREAM
GROUP = "spidi-writers"
STREAM_MAXLEN = 2_000_000  # approximate cap: the backlog is bounded even if no writer runs

SESSION_STARTED = "session_started"
SESSION_CHECKPOINT = "session_checkpoint"
SESSION_ENDED = "session_ended"
ROOM_SAMPLE = "room_sample"
ALERT_EVENT = "alert_event"

# Why a session ended (SESSION_ENDED, roster ``left``, dat_spd_session.end_reason).
LEAVE = "leave"
TIMEOUT = "timeout"
DISCONNECT = "disconnect"
SHUTDOWN = "shutdown"
NODE_LOST = "node_lost"
END_REASONS = (LEAVE, TIMEOUT, DISCONNECT, SHUTDOWN, NODE_LOST)

# The namespace of session_ended ids: uuid5(namespace, "<session_id>:<started_at>").
_END_NAMESPACE = uuid.UUID("6f1d3c2e-5b7a-4e0f-9a41-2c8d7e5b0a13")

# Upper bounds (ms) of the latency histogram a room sample carries; p95 is read off it.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000)
# The SLO breakdown's dimensions, in the heartbeat lane's group order (presence/breakdown.py): a
# room sample's latency histograms per client app version and per OS.
BREAKDOWN_DIMENSIONS = ("appVersion", "os")


class _EventIds:
    """Event ids: unique, not secret, so a counter instead of uuid4 (no random read per event).

    A UUID (version 4, RFC 4122 variant, as the history's ``uuid`` columns take): its first 80
    bits (74 of them random) drawn once per process, the last 48 a counter. Two processes collide
    only if their draws do. Drawn again in a forked child, which would otherwise count on from its
    parent's ids, and after 2**48 ids.
    """

    __slots__ = ("prefix", "counter")

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        # 80 random bits with the version and variant set; the counter writes the last 12 digits.
        self.prefix = format_uuid4(os.urandom(10).hex() + "0" * 12)[:-12]
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        n = next(self.counter)
        if n >> 48:
            self.reseed()
            n = next(self.counter)
        return f"{self.prefix}{n:012x}"


new_event_id = _EventIds()


def _event(kind: str, event_id: str | None = None, **fields) -> dict:
    return {"id": event_id or new_event_id(), "kind": kind, **fields}


def end_event_id(session_id: str, started_at: int) -> str:
    """The id of a session's ``session_ended``: the same whoever ends it, so history counts one end."""
    return str(uuid.uuid5(_END_NAMESPACE, f"{session_id}:{int(started_at)}"))


def session_started(
    *,
    session_id: str,
    room_id: str,
    room_code: str,
    tenant: str,
    user_id: str,
    client_id: str,
    app_version: str,
    device: str | None,
    os: str | None,
    ip: str,
    node_id: str,
    started_at: int,
) -> dict:
    """A session began on ``node_id`` (its static fields: what history keeps of the client)."""
    return _event(
        SESSION_STARTED,
        session_id=session_id,
        room_id=room_id,
        room_code=room_code,
        tenant=tenant,
        user_id=user_id,
        client_id=client_id,
        app_version=app_version,
        device=device,
        os=os,
        ip=ip,
        node_id=node_id,
        started_at=started_at,
    )


def session_checkpoint(
    *,
    session_id: str,
    room_id: str,
    tenant: str,
    started_at: int,
    heartbeats: int,
    last_heartbeat_at: int | None,
    latency_sum: float,
    latency_count: int,
    latency_min: float | None,
    latency_max: float | None,
) -> dict:
    """A live session's cumulative heartbeat and latency figures (only ever moving forward)."""
    return _event(
        SESSION_CHECKPOINT,
        session_id=session_id,
        room_id=room_id,
        tenant=tenant,
        started_at=started_at,
        heartbeats=heartbeats,
        last_heartbeat_at=last_heartbeat_at,
        latency_sum=latency_sum,
        latency_count=latency_count,
        latency_min=latency_min,
        latency_max=latency_max,
    )


def session_ended(
    *,
    session_id: str,
    room_id: str,
    tenant: str,
    started_at: int,
    ended_at: int,
    reason: str,
    user_id: str,
    room_code: str | None,
    client_id: str | None,
    device: str | None,
    os: str | None,
    app_version: str | None,
    last_heartbeat_at: int | None,
    heartbeats: int | None = None,
    latency_sum: float | None = None,
    latency_count: int | None = None,
    latency_min: float | None = None,
    latency_max: float | None = None,
) -> dict:
    """A session's end: its final figures where the ender knows them (a reaper does not), and who
    left, so that the room hooks can read the end alone."""
    event = _event(
        SESSION_ENDED,
        end_event_id(session_id, started_at),
        session_id=session_id,
        room_id=room_id,
        tenant=tenant,
        started_at=started_at,
        last_heartbeat_at=last_heartbeat_at,
        ended_at=ended_at,
        reason=reason,
        user_id=user_id,
        room_code=room_code,
        client_id=client_id,
        device=device,
        os=os,
        app_version=app_version,
    )
    if heartbeats is not None:
        event.update(
            heartbeats=heartbeats,
            latency_sum=latency_sum,
            latency_count=latency_count,
            latency_min=latency_min,
            latency_max=latency_max,
        )
    return event


def room_sample(
    *,
    room_id: str,
    room_code: str,
    tenant: str,
    node_id: str,
    bucket: int,
    online_sum: int,
    online_samples: int,
    online_max: int,
    online_secs: Sequence[int],
    latency_sum: float,
    latency_count: int,
    latency_hist: list[int],
    latency_breakdown: dict | None = None,
) -> dict:
    """What one node saw of one room in the minute starting at ``bucket`` (epoch ms);
    ``online_secs``: its online count at each second of the minute; ``latency_breakdown``: the
    histograms per app version and OS (the module's docstring)."""
    return _event(
        ROOM_SAMPLE,
        room_id=room_id,
        room_code=room_code,
        tenant=tenant,
        node_id=node_id,
        bucket=bucket,
        online_sum=online_sum,
        online_samples=online_samples,
        online_max=online_max,
        online_secs=encode_counts(online_secs),
        latency_sum=latency_sum,
        latency_count=latency_count,
        latency_hist=encode_hist(latency_hist),
        latency_breakdown=orjson.dumps(latency_breakdown).decode() if latency_breakdown else "",
    )


def alert_event(
    *,
    alert_id: str,
    rule_id: str,
    tenant: str,
    room_id: str,
    room_code: str,
    state: str,
    alert_kind: str,
    severity: str,
    value: float | None,
    at: int,
    details: str,
) -> dict:
    """One alert transition (``details`` is JSON text); its id is the transition's, so a replay
    is recognised."""
    return _event(
        ALERT_EVENT,
        alert_id,
        rule_id=rule_id,
        tenant=tenant,
        room_id=room_id,
        room_code=room_code,
        state=state,
        alert_kind=alert_kind,
        severity=severity,
        value=value,
        at=at,
        details=details,
    )


def encode(fields: dict) -> dict:
    """A stream entry: every value a string (None becomes empty)."""
    return {k: "" if v is None else (v if isinstance(v, str) else str(v)) for k, v in fields.items()}


def decode_hist(text: str) -> list[int]:
    """Histogram counts from their stream text."""
    return [int(x) for x in text.split(",")] if text else [0] * (len(LATENCY_BUCKETS_MS) + 1)


def encode_hist(counts: list[int]) -> str:
    """Histogram counts as stream text."""
    return ",".join(map(str, counts))


def encode_counts(counts: Sequence[int]) -> str:
    """Per-second counts as stream text, trailing zeros left out (they add nothing)."""
    end = len(counts)
    while end and not counts[end - 1]:
        end -= 1
    return ",".join(map(str, counts[:end]))
