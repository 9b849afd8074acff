"""History for the SLO tests (tests/api/test_slos.py, tests/alerting/test_slo_burn.py): room
samples with chosen fast and slow heartbeats, over 28 days, as the nodes send them to the writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from spidi_server.rooms import room_id_for
from spidi_server.stores import events

AT = datetime(2026, 5, 29, 12, 0, tzinfo=UTC)
HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)
FAST, SLOW = events.LATENCY_BUCKETS_MS.index(100), events.LATENCY_BUCKETS_MS.index(300)


def sample(room: str, at: datetime, fast: int, slow: int, tenant: str = "default") -> dict:
    """A room_sample of the minute at ``at``: ``fast`` heartbeats at <= 100 ms, ``slow`` at <= 300 ms."""
    hist = [0] * (len(events.LATENCY_BUCKETS_MS) + 1)
    hist[FAST], hist[SLOW] = fast, slow
    return events.room_sample(
        room_id=room_id_for(tenant, room),
        room_code=room,
        tenant=tenant,
        node_id="node-a",
        bucket=int(at.timestamp() * 1000),
        online_sum=60,
        online_samples=60,
        online_max=1,
        online_secs=[1] * 60,
        latency_sum=100.0 * fast + 300.0 * slow,
        latency_count=fast + slow,
        latency_hist=hist,
    )


def degraded_month(room: str) -> list[dict]:
    """28 days before AT: one minute an hour with 1000 heartbeats, 99.5 % of them fast (<= 150 ms),
    up to AT - 1 h; then a bad last hour, every minute 100 heartbeats of which 20 slow."""
    evs = [sample(room, AT - 28 * 24 * HOUR + k * HOUR, 995, 5) for k in range(28 * 24 - 1)]
    evs += [sample(room, AT - HOUR + m * MINUTE, 80, 20) for m in range(60)]
    return evs


def with_breakdown(event: dict, dimension: str, groups: dict) -> dict:
    """``event`` (a ``sample``) with an SLO breakdown in one more dimension: ``groups`` maps a value
    (None: other) to its (fast, slow) heartbeats, as a node's sample carries them."""
    breakdown = orjson.loads(event["latency_breakdown"]) if event["latency_breakdown"] else {}
    part: dict = {"values": {}}
    for value, (fast, slow) in groups.items():
        hist = [0] * (len(events.LATENCY_BUCKETS_MS) + 1)
        hist[FAST], hist[SLOW] = fast, slow
        if value is None:
            part["other"] = hist
        else:
            part["values"][value] = hist
    breakdown[dimension] = part
    event["latency_breakdown"] = orjson.dumps(breakdown).decode()
    return event
