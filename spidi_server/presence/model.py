"""Presence's model: sessions, rooms, subscriptions and room samples, as plain objects (no I/O).

The services around them (``sessions``, ``subscriptions``, ``crossnode``, ``sampling``) change
them and write to the hot store; these classes only hold state and build what is sent or
recorded (roster entries, history events through ``stores.events``).
"""

from __future__ import annotations

import time
from array import array
from typing import Protocol

from spidi_core import HeartbeatLane

from ..protocol.payloads import HelloPayload
from ..protocol.stomp import StompConnection
from ..rooms import RoomDef
from ..stores import events

SECONDS_PER_MINUTE = 60  # a room sample's per-second online counts (RoomSample.online_secs)


class Client(Protocol):
    """What presence needs of a client connection (``connection.ClientConnection``)."""

    stomp: StompConnection  # claims, send_json
    ip: str
    sessions: tuple  # its Session objects: a tuple (mostly () or one), replaced on change
    conn_id: str
    lane_key: int  # its key in the heartbeat lane (``connection.ClientConnection``)

    def push(self) -> None: ...


def without(sessions: tuple, session: object) -> tuple:
    """``sessions`` without ``session``. A client's sessions are a tuple, not a set: an idle
    connection holds one session or none, and an empty set costs 216 bytes, a tuple of one 48."""
    return tuple(s for s in sessions if s is not session) if session in sessions else sessions


class Subscription:
    """One client's subscription to a room or tenant topic, with its own gap-free ``seq``.

    ``sees_ip``: whether its roster entries keep the clients' IP addresses (``roles.VIEW_IP``),
    decided once when it subscribes, so a publication only picks one of two payloads per subscriber.
    """

    __slots__ = ("client", "sub_id", "seq", "sees_ip")

    def __init__(self, client: Client, sub_id: str, sees_ip: bool = False):
        self.client = client
        self.sub_id = sub_id
        self.seq = 0
        self.sees_ip = sees_ip

    def send(self, destination: str, payload: dict) -> None:
        self.seq += 1
        payload["seq"] = self.seq
        if self.client.stomp.send_json(destination, payload, self.sub_id):
            self.client.push()


class Session:
    """A presence session held by this node.

    Its heartbeat figures (last heartbeat, latency, count, sum, min, max) live in the node's
    heartbeat lane, whichever path the heartbeats took (``spidi_core.HeartbeatLane``): read them
    with ``figures()`` or the properties. Once the session left the lane (``close_figures``) the
    last figures stay here.
    """

    __slots__ = (
        "session_id",
        "room",
        "user_id",
        "client_id",
        "app_version",
        "device",
        "os",
        "ip",
        "connected_at",
        "client",
        "checkpointed",
        "trace_id",
        "node_id",
        "lost",
        "lane",
        "grade",
        "groups",
        "_final",
    )

    def __init__(
        self,
        session_id: str,
        room: Room,
        user_id: str,
        hello: HelloPayload,
        ip: str,
        now_ms: int,
        lane: HeartbeatLane | None = None,
    ):
        self.session_id = session_id
        self.room = room
        self.user_id = user_id
        self.client_id = hello.client_id
        self.app_version = hello.app_version
        self.device = hello.device
        self.os = hello.os
        self.ip = ip
        self.connected_at = now_ms
        self.client: Client | None = None
        self.checkpointed = 0  # heartbeat count at the last checkpoint event
        self.trace_id = ""  # the connection that started it: every log line of the session carries it
        # Taken back from a killed process under this node id and not resumed yet: if its client
        # does not come back within the grace period, its node was lost at its last heartbeat.
        self.lost = False
        self.node_id = ""
        self.lane = lane  # where its figures live (None: a session never entered in one)
        self.grade = "live"  # liveness.py: set by the once-a-second grading and by its heartbeats
        self.groups: tuple[int, ...] | None = None  # its SLO breakdown slots (presence/breakdown.py)
        # (last_heartbeat_ms, latency_ms, heartbeats, latency_sum, latency_min, latency_max,
        # latency_count) once the session left the lane; before it, the lane's.
        self._final: tuple | None = None

    def figures(self) -> tuple:
        """(last_heartbeat_at ms, latency_ms, heartbeats, latency_sum, latency_min, latency_max,
        latency_count): a heartbeat may carry no latency, so latency_count <= heartbeats."""
        final = self._final
        if final is not None:
            return final
        stats = self.lane.stats(self.session_id) if self.lane is not None else None
        return stats if stats is not None else (self.connected_at, None, 0, 0.0, None, None, 0)

    def close_figures(self) -> None:
        """Keep the figures here: the session is about to leave the lane."""
        self._final = self.figures()

    @property
    def last_heartbeat_at(self) -> int:
        """Wall-clock ms of the newest heartbeat (the start until one came)."""
        return self.figures()[0]

    @property
    def latency_ms(self) -> float | None:
        """The newest reported latency (None before the first heartbeat)."""
        return self.figures()[1]

    @property
    def heartbeats(self) -> int:
        return self.figures()[2]

    @property
    def latency_sum(self) -> float:
        return self.figures()[3]

    @property
    def latency_min(self) -> float | None:
        return self.figures()[4]

    @property
    def latency_max(self) -> float | None:
        return self.figures()[5]

    def static_fields(self) -> dict:
        """What the session hash in Redis holds."""
        return {
            "userId": self.user_id,
            "clientId": self.client_id,
            "appVersion": self.app_version,
            "device": self.device,
            "os": self.os,
            "ip": self.ip,
            "connectedAt": self.connected_at,
            "roomCode": self.room.code,
            "tenant": self.room.tenant,
            "nodeId": self.node_id,
        }

    def log_fields(self) -> dict:
        """What every log line about this session carries (session_started, session_ended)."""
        room = self.room
        return {
            "trace_id": self.trace_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "room_id": room.room_id,
            "room_code": room.code,
            "client_info": self.client_info(),
        }

    def client_info(self) -> dict:
        return {
            "clientId": self.client_id,
            "device": self.device,
            "os": self.os,
            "appVersion": self.app_version,
            "ip": self.ip,
        }

    def checkpoint_event(self) -> dict:
        """A ``session_checkpoint``: the cumulative heartbeat and latency figures."""
        last_beat, _, beats, latency_sum, latency_min, latency_max, latency_count = self.figures()
        return events.session_checkpoint(
            session_id=self.session_id,
            room_id=self.room.room_id,
            tenant=self.room.tenant,
            started_at=self.connected_at,
            heartbeats=beats,
            last_heartbeat_at=last_beat,
            latency_sum=latency_sum,
            latency_count=latency_count,
            latency_min=latency_min,
            latency_max=latency_max,
        )

    def end_event(self, reason: str, ended_at: int) -> dict:
        """A ``session_ended``: the final figures, and who left (the room hooks read the end alone)."""
        room = self.room
        last_beat, _, beats, latency_sum, latency_min, latency_max, latency_count = self.figures()
        return events.session_ended(
            session_id=self.session_id,
            room_id=room.room_id,
            tenant=room.tenant,
            started_at=self.connected_at,
            ended_at=ended_at,
            reason=reason,
            user_id=self.user_id,
            room_code=room.code,
            client_id=self.client_id,
            device=self.device,
            os=self.os,
            app_version=self.app_version,
            last_heartbeat_at=last_beat,
            heartbeats=beats,
            latency_sum=latency_sum,
            latency_count=latency_count,
            latency_min=latency_min,
            latency_max=latency_max,
        )

    def started_event(self) -> dict:
        """A ``session_started`` with the session's static fields."""
        room = self.room
        return events.session_started(
            session_id=self.session_id,
            room_id=room.room_id,
            room_code=room.code,
            tenant=room.tenant,
            user_id=self.user_id,
            client_id=self.client_id,
            app_version=self.app_version,
            device=self.device,
            os=self.os,
            ip=self.ip,
            node_id=self.node_id,
            started_at=self.connected_at,
        )

    def entry(self) -> dict:
        """The roster entry subscribers who may see IP addresses see (``without_ip`` for the others)."""
        last_beat, latency, *_ = self.figures()
        return {
            "sessionId": self.session_id,
            "userId": self.user_id,
            "clientId": self.client_id,
            "device": self.device,
            "os": self.os,
            "appVersion": self.app_version,
            "ip": self.ip,
            "latencyMs": latency,
            "connectedAt": self.connected_at,
            "lastHeartbeatAt": last_beat,
            "liveness": self.grade,
        }


def without_ip(entries: list[dict]) -> list[dict]:
    """Roster entries as a subscriber without ``roles.VIEW_IP`` sees them: no ``ip`` key at all
    (absent rather than null, which would read as "unknown")."""
    return [{k: v for k, v in e.items() if k != "ip"} for e in entries]


class RoomSample:
    """What only this node knows of one room in the current minute (a ``room_sample`` event): its
    online count, sampled once a second, and its sessions' heartbeat latencies. Joins, leaves,
    timeouts and disconnects are not here: the writer counts them from the session events, which
    survive this process (a SIGKILL loses the minute's sample, never a session event).

    ``online_secs`` holds this node's count at each second of the minute, so that the writer can
    add up the nodes' counts of the same second and store the room's maximum across nodes (the
    largest of the nodes' own maxima would be one node's figure). A second the timer skipped
    holds the count the second before it had; ``held`` is the count the previous minute ended
    with (the first tick of a minute may come a second in)."""

    __slots__ = (
        "bucket",
        "online_sum",
        "online_samples",
        "online_max",
        "online_secs",
        "last_sec",
        "last_online",
        "latency_sum",
        "latency_count",
        "hist",
        "breakdown",
    )

    def __init__(self, bucket: int, held: int | None = None):
        self.bucket = bucket
        self.online_sum = self.online_samples = self.online_max = 0
        self.online_secs = array("i", bytes(4 * SECONDS_PER_MINUTE))
        self.last_sec = None if held is None else -1  # None: nothing sampled to carry forward
        self.last_online = held or 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self.hist = [0] * (len(events.LATENCY_BUCKETS_MS) + 1)
        # The SLO breakdown: dimension -> {"values": {value: histogram}, "other": histogram}.
        self.breakdown: dict[str, dict] = {}

    def add_online(self, online: int, now: int) -> None:
        """One tick: the room's online count on this node at ``now`` (epoch ms, in this minute)."""
        self.online_sum += online
        self.online_samples += 1
        if online > self.online_max:
            self.online_max = online
        sec = min(SECONDS_PER_MINUTE - 1, max(0, (now - self.bucket) // 1000))
        secs, last = self.online_secs, self.last_sec
        if last is not None:
            for i in range(last + 1, sec):
                secs[i] = self.last_online
        secs[sec] = online  # two ticks in one second: the later one stands
        if last is None or sec > last:
            self.last_sec = sec
        self.last_online = online

    @property
    def empty(self) -> bool:
        return not (self.online_sum or self.latency_count)

    def add_latencies(self, latency_sum: float, count: int, hist: list[int]) -> None:
        """Fold heartbeat latencies in (what the lane gathered for the room: ``take_room_sample``)."""
        self.latency_sum += latency_sum
        self.latency_count += count
        own = self.hist
        for i, n in enumerate(hist):
            own[i] += n

    def add_groups(self, groups: list[tuple[str, str | None, list[int]]]) -> None:
        """Fold group histograms in: (dimension, value or None for other, histogram)."""
        for dim, value, hist in groups:
            part = self.breakdown.get(dim)
            if part is None:
                part = self.breakdown[dim] = {"values": {}}
            if value is None:
                own = part.get("other")
                if own is None:
                    part["other"] = hist
                    continue
            else:
                own = part["values"].get(value)
                if own is None:
                    part["values"][value] = hist
                    continue
            for i, n in enumerate(hist):
                own[i] += n

    def event(self, room: Room, node_id: str) -> dict:
        """The minute's ``room_sample``."""
        return events.room_sample(
            room_id=room.room_id,
            room_code=room.code,
            tenant=room.tenant,
            node_id=node_id,
            bucket=self.bucket,
            online_sum=self.online_sum,
            online_samples=self.online_samples,
            online_max=self.online_max,
            online_secs=self.online_secs,
            latency_sum=self.latency_sum,
            latency_count=self.latency_count,
            latency_hist=self.hist,
            latency_breakdown=self.breakdown,
        )


class Room:
    """A room as this node sees it: its local sessions, subscribers and pending roster delta."""

    __slots__ = (
        "room_id",
        "tenant",
        "code",
        "capacity",
        "sessions",
        "metrics_subs",
        "roster_subs",
        "dirty",
        "joined",
        "left",
        "updated",
        "last_metrics",
        "sample",
        "published_at",
        "watched",
        "out_joined",
        "out_left",
        "out_updated",
        "out_scheduled",
        "out_published_at",
        "pending_subs",
        "joining",
        "key",
        "groups",
    )

    def __init__(self, definition: RoomDef, key: int = 0):
        self.key = key  # the room's key in the heartbeat lane (``LocalState.room_key``)
        self.groups = None  # its SLO breakdown slots (presence/breakdown.RoomGroups), on first use
        self.room_id = definition.room_id
        self.tenant = definition.tenant
        self.code = definition.code
        self.capacity = definition.capacity
        self.sessions: dict[str, Session] = {}
        self.metrics_subs: list[Subscription] = []
        self.roster_subs: list[Subscription] = []
        self.dirty = False
        # Changes received from every process (this one included), for the local subscribers.
        self.joined: dict[str, dict] = {}
        self.left: dict[str, str] = {}
        self.updated: dict[str, dict] = {}
        self.last_metrics: dict | None = None
        self.sample = RoomSample(minute(now_ms()))
        self.published_at = 0.0
        # Changes of this process's sessions, to publish for every process's subscribers.
        self.watched = False
        self.out_joined: dict[str, Session] = {}
        self.out_left: dict[str, str] = {}
        self.out_updated: dict[str, Session] = {}
        self.out_scheduled = False
        self.out_published_at = 0.0
        self.pending_subs = 0  # subscriptions waiting for their snapshot
        self.joining = 0  # HELLOs waiting for Redis to admit them

    @property
    def idle(self) -> bool:
        """Nothing keeps the room here: no session, subscriber, pending snapshot or HELLO."""
        return not (
            self.sessions or self.metrics_subs or self.roster_subs or self.pending_subs or self.joining
        )

    @property
    def observed(self) -> bool:
        """Whether a subscriber here has, or waits for, the room's roster or metrics."""
        return bool(self.roster_subs or self.metrics_subs or self.pending_subs)

    def merge_remote(self, payload: dict) -> None:
        """Fold roster changes some process published (``{"j": [...], "l": {...}, "u": [...]}``)
        into the delta waiting for this node's roster subscribers."""
        joined, left, updated = self.joined, self.left, self.updated
        for entry in payload.get("j", ()):
            sid = entry["sessionId"]
            left.pop(sid, None)
            updated.pop(sid, None)
            joined[sid] = entry
        for sid, reason in payload.get("l", {}).items():
            # Passed on even when its join waits in this window: that join may repeat a session
            # the subscribers' snapshot showed (see CrossNode.watched_changed), and subscribers
            # ignore a left for a session they do not have.
            joined.pop(sid, None)
            left[sid] = reason
            updated.pop(sid, None)
        for entry in payload.get("u", ()):
            sid = entry["sessionId"]
            if sid in joined:
                joined[sid] = entry
            elif sid not in left:
                updated[sid] = entry


def public_metrics(metrics: dict) -> dict:
    """A room's metrics as subscribers see them (without the tenant)."""
    out = dict(metrics)
    out.pop("tenant", None)
    return out


def now_ms() -> int:
    """Wall-clock milliseconds, as sessions and events carry them."""
    return int(time.time() * 1000)


def minute(ms: int) -> int:
    """The start of the minute ``ms`` falls in (a room sample's bucket)."""
    return ms - ms % 60_000
