"""Build history events exactly as the server does (spidi_server.stores.events), push them into
the stream, and run the writer in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime

import redis

from spidi_server.history.writer_loop import run_writer
from spidi_server.rooms import room_id_for
from spidi_server.stores import events


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO UTC time, e.g. '2026-01-31T23:59'."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class FakeSession:
    """A session's cumulative figures, producing the three session event kinds."""

    def __init__(self, tenant: str, room: str, user: str, started_at: int, node: str = "node-a", **info):
        self.session_id = str(uuid.uuid4())
        self.tenant, self.room_code, self.user = tenant, room, user
        self.room_id = room_id_for(tenant, room)
        self.started_at = started_at
        self.node = node
        self.info = {
            "client_id": "web",
            "app_version": "1.2.3",
            "device": "Pixel",
            "os": "Android",
            "ip": "10.0.0.7",
        } | info
        self.heartbeats = 0
        self.latency_sum = 0.0
        self.latency_min: float | None = None
        self.latency_max: float | None = None
        self.last_heartbeat_at = started_at

    def started(self) -> dict:
        return events.session_started(
            session_id=self.session_id,
            room_id=self.room_id,
            room_code=self.room_code,
            tenant=self.tenant,
            user_id=self.user,
            node_id=self.node,
            started_at=self.started_at,
            **self.info,
        )

    def beat(self, at: int, latency: float) -> None:
        self.heartbeats += 1
        self.latency_sum += latency
        self.latency_min = latency if self.latency_min is None else min(self.latency_min, latency)
        self.latency_max = latency if self.latency_max is None else max(self.latency_max, latency)
        self.last_heartbeat_at = at

    def _figures(self) -> dict:
        return {
            "session_id": self.session_id,
            "room_id": self.room_id,
            "tenant": self.tenant,
            "started_at": self.started_at,
            "heartbeats": self.heartbeats,
            "last_heartbeat_at": self.last_heartbeat_at,
            "latency_sum": self.latency_sum,
            "latency_count": self.heartbeats,
            "latency_min": self.latency_min,
            "latency_max": self.latency_max,
        }

    def checkpoint(self) -> dict:
        return events.session_checkpoint(**self._figures())

    def ended(self, at: int, reason: str = "leave", room_code: str | None = None) -> dict:
        """The session's end; ``room_code`` None, as a reaper's end may have it."""
        info = self.info
        return events.session_ended(
            **self._figures(),
            ended_at=at,
            reason=reason,
            user_id=self.user,
            room_code=room_code,
            client_id=info["client_id"],
            device=info["device"],
            os=info["os"],
            app_version=info["app_version"],
        )


def hist_of(latencies) -> list[int]:
    """The histogram the server builds: one count per LATENCY_BUCKETS_MS upper bound, then overflow."""
    hist = [0] * (len(events.LATENCY_BUCKETS_MS) + 1)
    for latency in latencies:
        for i, bound in enumerate(events.LATENCY_BUCKETS_MS):
            if latency <= bound:
                hist[i] += 1
                break
        else:
            hist[-1] += 1
    return hist


def room_sample(
    tenant: str,
    room: str,
    bucket: int,
    node: str = "node-a",
    *,
    online: list[int] = (1,),
    joins: int = 0,
    leaves: int = 0,
    timeouts: int = 0,
    disconnects: int = 0,
    latencies: list[float] = (),
) -> dict:
    """A room_sample event: ``online`` is the list of per-tick online counts of the minute, one a
    second from its start.

    ``joins``/``leaves``/``timeouts``/``disconnects``, when given, are added as older nodes sent
    them (the writer must ignore them).
    """
    event = events.room_sample(
        room_id=room_id_for(tenant, room),
        room_code=room,
        tenant=tenant,
        node_id=node,
        bucket=bucket,
        online_sum=sum(online),
        online_samples=len(online),
        online_max=max(online, default=0),
        online_secs=list(online),
        latency_sum=float(sum(latencies)),
        latency_count=len(latencies),
        latency_hist=hist_of(latencies),
    )
    if joins or leaves or timeouts or disconnects:
        event.update(joins=joins, leaves=leaves, timeouts=timeouts, disconnects=disconnects)
    return event


def push(redis_client, evs) -> None:
    """XADD events the way the server's store does."""
    pipe = redis_client.pipeline(transaction=False)
    for ev in evs:
        pipe.xadd(events.STREAM, events.encode(ev), maxlen=events.STREAM_MAXLEN, approximate=True)
    pipe.execute()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def pending(redis_client) -> int:
    """Entries read by some writer and not yet acknowledged (-1 before the group exists)."""
    try:
        return redis_client.xpending(events.STREAM, events.GROUP)["pending"]
    except redis.ResponseError:
        return -1


def writer_status(redis_client) -> dict:
    return redis_client.hgetall("spidi:writer:status")


def written(redis_client) -> int:
    return int(writer_status(redis_client).get("events_written", 0))


@contextlib.contextmanager
def running_writer(settings, consumer: str = "test-writer"):
    """The writer in a thread for the duration of the block; stopped (flushing) on exit."""
    stop = threading.Event()
    result = {}

    def target():
        result["stats"] = run_writer(settings, stop, consumer=consumer)

    thread = threading.Thread(target=target, name="spidi-writer", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "writer thread did not stop"


def quantile(hist: list[int], q: float) -> float | None:
    """Python twin of spd_hist_quantile (linear interpolation inside the bucket)."""
    bounds = events.LATENCY_BUCKETS_MS
    total = sum(hist)
    if not total:
        return None
    target, cum, lower = q * total, 0, 0.0
    for i, count in enumerate(hist):
        below, cum = cum, cum + count
        if cum >= target and count > 0:
            if i >= len(bounds):
                return float(bounds[-1])
            return lower + (bounds[i] - lower) * (target - below) / count
        if i < len(bounds):
            lower = float(bounds[i])
    return float(bounds[-1])
