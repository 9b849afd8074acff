"""Presence: sessions in rooms, their liveness, and what subscribers are told.

This layer turns protocol events into presence changes. It owns the local sessions of this node,
the heartbeat lane that holds their heartbeat figures (``spidi_core.HeartbeatLane``, one per
node: the connections answer ordinary heartbeats in it without Python) and the heartbeat wheel;
it writes every change to the Redis hot store (buffered, never awaited
on the heartbeat path) and reads metrics and roster snapshots back from Redis, so what
subscribers see is right when several processes share one Redis. It never touches a socket: a
client is anything with a ``stomp`` (StompConnection), ``ip``, ``sessions`` and ``push()``
(``model.Client``).

The parts, each one job:

    model          Session, Room, Subscription, RoomSample: plain objects, no I/O
    local          the rooms and sessions this node holds (shared by the parts below)
    sessions       HELLO, HEARTBEAT, LEAVE, the connection's close, expiry and end
    beats          the lane's heartbeats in batches: to Redis, TTL refreshes, roster updates
    subscriptions  snapshots and deltas to subscribers (rooms, rosters, /topic/rooms, alerts)
    crossnode      watched rooms and this node's changes published to every process
    sampling       room samples and session checkpoints for the history

``Presence`` composes them: it is what the node, the connections and the fan-out talk to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from spidi_core import HeartbeatLane

from .. import roles
from ..metrics import NodeMetrics
from ..protocol.destinations import Destination
from ..rooms import RoomCatalog
from ..settings import Settings
from ..stores import events
from ..stores.hot_store import HotStore, LiveSession
from .beats import LaneDrain
from .crossnode import CrossNode, Fanout
from .liveness import Grader, thresholds_ms
from .local import LocalState
from .model import Client, Room, RoomSample, Session, Subscription
from .sampling import Sampling
from .sessions import SessionLifecycle
from .subscriptions import AlertFeed, Subscriptions

__all__ = ["Client", "Presence", "Room", "RoomSample", "Session", "Subscription"]

# Sessions per slice of the periodic checkpoint pass: about 13 µs each on a busy 2-core machine,
# so a slice holds the loop ~3 ms (one pass over 5,000 sessions held it 67 ms).
CHECKPOINT_CHUNK = 250


class Presence:
    """The presence service of one node."""

    # HEARTBEAT is the parts' own bound method (set in __init__): the hot path takes no extra call.
    heartbeat: Callable[[Client, str, float | None], None]

    def __init__(
        self,
        settings: Settings,
        store: HotStore,
        catalog: RoomCatalog,
        metrics: NodeMetrics,
        node_id: str = "",
        policy: roles.Policy | None = None,
    ):
        # Who may join, subscribe and see IP addresses: the node's policy, else the one its
        # settings make (roles.py decides either way).
        policy = policy or roles.policy(settings)
        self.settings = settings
        self.node_id = node_id
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        # Every session's heartbeat figures, whichever path its heartbeats take; a TTL refresh
        # is due at most every half timeout, as when each heartbeat checked it.
        # The lane refuses what the configured STOMP parser would refuse (the full path answers it).
        self.lane = HeartbeatLane(
            events.LATENCY_BUCKETS_MS,
            settings.heartbeat_timeout_ms // 2,
            max_frame_size=settings.max_frame_size,
            max_headers=settings.max_headers,
            max_header_line=settings.max_header_line,
        )
        self.sampling = Sampling(store, node_id, settings.history, self.lane, settings.slo_breakdown_top_n)
        self.local = LocalState(store, metrics, self.sampling, self.lane)
        self.crossnode = CrossNode(self.local)
        self.subscriptions = Subscriptions(
            self.local,
            store,
            catalog,
            self.crossnode,
            settings.metrics_interval_ms / 1000,
            policy,
            settings.heartbeat_interval_ms,
        )
        self.lifecycle = SessionLifecycle(
            settings, self.local, store, catalog, metrics, self.crossnode, node_id, policy
        )
        self.rooms: dict[str, Room] = self.local.rooms  # by room id
        self.sessions: dict[str, Session] = self.local.sessions  # by session id
        # Room metrics count late and at-risk sessions room-wide from Redis's last heartbeats.
        store.grade_ages_ms = thresholds_ms(settings.heartbeat_interval_ms)
        self.grader = Grader(
            settings.heartbeat_interval_ms,
            self.lane.last_beat,
            lambda session: self.crossnode.session_updated(session.room, session),
        )
        self.heartbeat = self.lifecycle.heartbeat
        # Python sees heartbeats in batches: the flusher drains the lane with each pipeline, the
        # metrics fold its counters in when they are read.
        self.drain = LaneDrain(self.lane, self.local, store, self.crossnode, self.lifecycle.session_ttl_s)
        store.add_beat_source(self.drain)
        metrics.hot.sources.append(self.lane.take_counters)

    # -- wiring, set by the node ---------------------------------------------------------------

    @property
    def fanout(self) -> Fanout | None:
        """The pub/sub fan-out between processes (``fanout.RoomFanout``)."""
        return self.crossnode.fanout

    @fanout.setter
    def fanout(self, fanout: Fanout | None) -> None:
        self.crossnode.fanout = fanout

    @property
    def alert_feed(self) -> AlertFeed | None:
        """/topic/alerts (``alerting.feed.AlertFeed``), when alerting runs."""
        return self.subscriptions.alert_feed

    @alert_feed.setter
    def alert_feed(self, feed: AlertFeed | None) -> None:
        self.subscriptions.alert_feed = feed

    # -- state others read ---------------------------------------------------------------------

    @property
    def watched(self) -> set[str]:
        """The rooms some process watches (as the fan-out last said)."""
        return self.local.watched

    @watched.setter
    def watched(self, watched: set[str]) -> None:
        self.local.watched = watched

    @property
    def capacity_degraded(self) -> bool:
        """Whether HELLO admits on local counts (Redis down or slow)."""
        return self.lifecycle.capacity_degraded

    @property
    def session_ttl_s(self) -> int:
        """The expiry of a session's keys in Redis, renewed while it heartbeats."""
        return self.lifecycle.session_ttl_s

    # -- commands from clients -----------------------------------------------------------------

    async def hello(self, client: Client, payload: dict) -> None:
        """HELLO: create (or resume) a session and answer WELCOME (``SessionLifecycle.hello``)."""
        await self.lifecycle.hello(client, payload)

    def start_hello(self, client: Client, payload: dict) -> asyncio.Future | None:
        """HELLO without a task: an ``AppError`` at once, None when answered, else a future that
        completes once answered (``SessionLifecycle.start_hello``)."""
        return self.lifecycle.start_hello(client, payload)

    def leave(self, client: Client, session_id: str) -> None:
        """LEAVE: end the session at once."""
        self.lifecycle.leave(client, session_id)

    async def subscribe(self, client: Client, sub_id: str, destination: Destination) -> None:
        """SUBSCRIBE: check role and tenant, register, and send the snapshot at once."""
        await self.subscriptions.subscribe(client, sub_id, destination)

    def unsubscribe(self, client: Client, sub_id: str) -> None:
        """UNSUBSCRIBE: forget the subscription wherever it is."""
        self.subscriptions.unsubscribe(client, sub_id)

    def unsubscribe_all(self, client: Client) -> None:
        """Forget all the subscriptions of a client."""
        self.subscriptions.unsubscribe_all(client)

    def client_closed(self, client: Client, clean: bool) -> None:
        """The connection is gone. Clean (DISCONNECT): end its sessions; abrupt: keep them for the
        grace period. Its subscriptions end either way."""
        self.lifecycle.client_closed(client, clean)
        self.subscriptions.unsubscribe_all(client)

    # -- the node's timers ---------------------------------------------------------------------

    def end(self, session: Session, reason: str) -> None:
        """End a session: remove it locally and from Redis, tell subscribers and the client."""
        self.lifecycle.end(session, reason)

    def expire(self, now: float | None = None) -> int:
        """End every session whose deadline passed; how many deadlines passed."""
        return self.lifecycle.expire(now)

    async def publish_room(self, room: Room) -> None:
        """Send a room's roster delta and metrics to its subscribers."""
        await self.subscriptions.publish_room(room)

    async def publish_tenants(self) -> None:
        """``/topic/rooms``: every room of each subscribed tenant, when anything changed."""
        await self.subscriptions.publish_tenants()

    def grade_sessions(self, now: float | None = None) -> dict[str, int]:
        """Once a second: re-grade every local session's liveness (``liveness.Grader``); a
        changed grade is a roster update; the counts go to ``spidi_sessions_liveness``."""
        counts = self.grader.run_lane(self.lane, self.sessions, now)
        gauge = self.metrics.sessions_liveness
        for grade, count in counts.items():
            gauge.labels(grade=grade).set(count)
        return counts

    def sample_rooms(self, now_ms: int | None = None) -> None:
        """Once a second: add each room's online count to its minute sample; emit finished minutes."""
        self.sampling.sample(self.rooms.values(), now_ms)

    def checkpoint_sessions(self) -> int:
        """Emit a checkpoint for every session that heartbeated since its last one."""
        return self.sampling.checkpoint(self.sessions.values())

    async def checkpoint_all(self, chunk: int = CHECKPOINT_CHUNK) -> int:
        """``checkpoint_sessions`` in slices of ``chunk`` sessions, yielding to the loop between
        them; how many checkpoints. A session that ended meanwhile is skipped: its end event
        carries its figures."""
        sessions = list(self.sessions.values())
        held = self.sessions
        count = 0
        for start in range(0, len(sessions), chunk):
            if start:
                await asyncio.sleep(0)
            count += self.sampling.checkpoint(
                s for s in sessions[start : start + chunk] if held.get(s.session_id) is s
            )
        return count

    def flush_history(self) -> None:
        """Emit every room's partial minute (shutdown)."""
        self.sampling.flush(self.rooms.values())

    def end_sessions(self, reason: str = "shutdown") -> None:
        """End every local session (a stop without a grace period, before the sockets close)."""
        self.lifecycle.end_all(reason)

    def end_all(self, reason: str = "shutdown") -> None:
        """End every local session and emit the partial room samples (node shutdown)."""
        self.lifecycle.end_all(reason)
        self.flush_history()

    def hand_over_all(self) -> int:
        """A graceful stop with a grace period: checkpoint every session (its heartbeats so far
        reach history) and hand it to the grace period in Redis, where any node may resume it
        (``handover``); how many sessions this time (sessions handed over before are skipped)."""
        if self.settings.history:
            self.checkpoint_sessions()
        return self.lifecycle.hand_over_all()

    # -- from the fan-out ----------------------------------------------------------------------

    def remote_changes(self, room_id: str, payload: dict) -> None:
        """Roster changes published by some process (this one included) for a room watched here."""
        room = self.crossnode.remote_changes(room_id, payload)
        if room is not None:
            self.subscriptions.changed(room)

    def watched_changed(self, watched: set[str]) -> None:
        """The set of rooms some process watches changed (``CrossNode.watched_changed``)."""
        self.crossnode.watched_changed(watched)

    # -- for the hot store, after Redis lost state ---------------------------------------------

    def live_sessions(self) -> Iterator[LiveSession]:
        """Every session this node holds as Redis should hold it (``SessionLifecycle.live_sessions``)."""
        return self.lifecycle.live_sessions()

    def adopt(self, stored: list[dict]) -> list[str]:
        """Take back this node id's sessions a killed process left (``SessionLifecycle.adopt``)."""
        return self.lifecycle.adopt(stored)

    def holds(self, session_id: str) -> bool:
        """Whether this node holds the session (Redis may still list ones whose LEAVE was lost)."""
        return session_id in self.sessions
