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
                       online_sum online_samples online_max latency_sum latency_count
                       latency_hist (comma-separated counts per LATENCY_BUCKETS_MS upper bound,
                       plus one overflow count). Older nodes also sent joins leaves timeouts
                       disconnects: the writer ignores them (see below).

    alert_event        id kind rule_id tenant room_id room_code state (pending|firing|resolved)
                       alert_kind severity value at details (JSON: ruleName, expression,
                       threshold, previousState, since, episodeId, metrics): written by the
                       alert evaluator (alerting/evaluator.py), one per transition

Room samples are per node: a node counts only its own sessions, sampling its online count once a
second. Samples of several nodes (or several samples of one node, e.g. around a restart) for one
room and minute merge by addition: the minute's average online is SUM(online_sum) / 60 (a
time-weighted average, exact whatever the split); online_max adds the samples' maxima (an upper
bound when several nodes hold the room); latency sums and histogram counts add. A sample lives in
its node's memory until the minute ends, so a process killed without a word loses its minute's.

A room minute's joins, leaves, timeouts and disconnects are not sampled: the writer counts them
from the session events, which are sent when they happen and survive any process (the reaper
sends session_ended, reason disconnect, for a dead node's sessions). joins = session_started per
minute of started_at; leaves/timeouts/disconnects = session_ended per minute of ended_at by reason
(leave, timeout, anything else: disconnect, shutdown). Both kinds therefore go through the writer's
event ledger like room samples, so a replay does not count twice; checkpoints (cumulative figures)
do not need it.
"""

from __future__ import annotations

from . import keys

STREAM = keys.EVENTS_STREAM
GROUP = "spidi-writers"
STREAM_MAXLEN = 2_000_000  # approximate cap: the backlog is bounded even if no writer runs

SESSION_STARTED = "session_started"
SESSION_CHECKPOINT = "session_checkpoint"
SESSION_ENDED = "session_ended"
ROOM_SAMPLE = "room_sample"
ALERT_EVENT = "alert_event"

# Upper bounds (ms) of the latency histogram a room sample carries; p95 is read off it.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000)


def encode(fields: dict) -> dict:
    """A stream entry: every value a string (None becomes empty)."""
    return {k: "" if v is None else (v if isinstance(v, str) else str(v)) for k, v in fields.items()}


def decode_hist(text: str) -> list[int]:
    return [int(x) for x in text.split(",")] if text else [0] * (len(LATENCY_BUCKETS_MS) + 1)


def encode_hist(counts: list[int]) -> str:
    return ",".join(map(str, counts))
