"""A Spidi node: wires settings, Redis, presence, the WebSocket transport and the ops server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid

from . import logs, roles
from .alerting.evaluator import AlertEvaluator
from .alerting.feed import AlertFeed
from .auth import TokenVerifier
from .connection import ClientConnection, Writer
from .fanout import RoomFanout
from .gc_policy import GcPolicy
from .loop_monitor import GcTimer, IoPhaseBound, LoopMonitor, StallReporter
from .metrics import NodeMetrics
from .ops import OpsServer
from .preflight import bind_error, check_port, check_postgres, check_redis
from .presence import Presence
from .protocol.stomp import StompConnection
from .reaper import NodeLiveness
from .room_index import RoomIndex
from .rooms import RoomCatalog, RoomDef
from .services import BackingServices
from .settings import Settings
from .stores import keys, reads
from .stores.client import REDIS_FAILURES, connect
from .stores.hot_store import HotStore
from .stores.spill import SpillFile
from .tasks import cancel_and_wait, run_every, warn
from .transport.native import NativeTransport
from .transport.websocket import WebSocketTransport


def make_transport(node: Node):
    """The transport the settings name: native (the default), websockets (the reference) or picows."""
    kind = node.settings.transport
    if kind == "picows":
        from .transport.picows_transport import PicowsTransport

        return PicowsTransport(node)
    if kind == "websockets":
        return WebSocketTransport(node)
    return NativeTransport(node)


log = logging.getLogger("spidi.node")

# Test-only (read in dev mode only): start a task that refuses cancellation, so the tests can check
# that shutdown names it and the process still ends within shutdown_timeout_s.
STUBBORN_TASK_ENV = "SPIDI_DEV_STUBBORN_TASK"

ROOM_REFRESH_S = 5.0
WRITER_WATCH_S = 0.5  # how soon a dead writer child is noticed
REDIS_MEMORY_S = 5.0  # how often spidi_redis_used_memory_bytes is read (INFO memory: microseconds)


class RoomLoader:
    """Reads every room stored in PostgreSQL on one connection kept open between the node's
    refreshes (every ``ROOM_REFRESH_S``): a connection each time cost PostgreSQL a backend
    process, and the node a connect, every few seconds. A connection that fails (PostgreSQL
    restarted) is closed and the read tried once more on a new one, so a refresh fails only
    when a new connection would. Blocking: run in a thread; one read at a time."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn = None
        self._lock = threading.Lock()

    def load(self, catalog: RoomCatalog) -> list[RoomDef]:
        """Every room stored in PostgreSQL, as ``catalog`` holds them."""
        import psycopg

        from .history.sql import rooms

        with self._lock:
            while True:
                fresh = self._conn is None or self._conn.closed
                if fresh:
                    self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                try:
                    return [catalog.stored_room(r) for r in rooms.list_all(self._conn)]
                except Exception:
                    self._close()
                    if fresh:
                        raise

    def close(self) -> None:
        """Close the connection (the node stops)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class Node:
    """Everything one ``spidi serve`` process runs. ``start`` then ``stop``; both idempotent."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # Which roles may do what under these settings: decided once, handed to the API and presence.
        self.policy = roles.policy(settings)
        self.node_id = settings.node_id or uuid.uuid4().hex[:12]
        self.metrics = NodeMetrics()
        self.verifier = TokenVerifier(settings)
        self.catalog = RoomCatalog(settings)
        self.clients: set[ClientConnection] = set()
        # The clients the liveness check looks at: CONNECT not received yet, or STOMP heart-beats
        # negotiated. The others have nothing due ever (the load's usual case: heart-beat 0,0), so
        # the once-a-second scan costs in proportion to these, not to every connection.
        self.liveness_due: set[ClientConnection] = set()
        self.services = BackingServices(settings)
        self.store: HotStore | None = None
        self.presence: Presence | None = None
        self.fanout: RoomFanout | None = None
        self.liveness: NodeLiveness | None = None
        self.room_index: RoomIndex | None = None
        self.alert_feed: AlertFeed | None = None
        self.alerts: AlertEvaluator | None = None
        self.transport = make_transport(self)
        self.ops = OpsServer(self)
        self._tasks: list[asyncio.Task] = []
        self._room_loader: RoomLoader | None = None  # created with the first refresh (the DSN known)
        self.loop_monitor = LoopMonitor(
            self.metrics.event_loop_lag.observe,
            on_stall=self._stalled,
            stall_s=settings.loop_stall_ms / 1000,
            recent_s=settings.health_loop_lag_window_s,
        )
        self.metrics.event_loop_lag_max.set_function(lambda: self.loop_monitor.longest)
        self.io_phase_bound = IoPhaseBound(settings.loop_io_budget_ms)
        self.metrics.event_loop_io_phase_cuts.set_function(IoPhaseBound.cuts)
        pauses = {g: self.metrics.gc_pause.labels(generation=str(g)) for g in (1, 2)}
        self.gc_timer = GcTimer(lambda generation, seconds: pauses[generation].observe(seconds))
        self.stall_reporter = (
            StallReporter(self.loop_monitor, settings.loop_stall_ms / 1000)
            if settings.loop_stall_log
            else None
        )
        self.gc_policy = GcPolicy()
        self.metrics.gc_frozen.set_function(lambda: self.gc_policy.frozen)
        self._stopped = asyncio.Event()
        self._stopping = False
        self.started = False

    def new_stomp_connection(self, conn_id: str, query_token: str | None) -> StompConnection:
        """A sans-I/O STOMP connection with this node's limits and verifier."""
        s = self.settings
        return StompConnection(
            self.verifier,
            conn_id,
            query_token=query_token,
            max_frame_size=s.max_frame_size,
            max_headers=s.max_headers,
            max_header_line=s.max_header_line,
            max_subscriptions=s.max_subscriptions,
            stomp_heartbeat_ms=s.stomp_heartbeat_ms,
        )

    async def preflight(self) -> None:
        """StartupError if a port is taken or a configured Redis or PostgreSQL does not answer:
        checked before anything costly starts, so a second node on the same ports costs nothing."""
        s = self.settings
        if not s.reuse_port:  # workers share the ports their supervisor already claimed
            check_port(s.host, s.port)
            check_port(s.ops_host, s.ops_port)
        if s.redis_url:
            await check_redis(s.redis_url)
        if s.postgres_dsn:
            await asyncio.to_thread(check_postgres, s.postgres_dsn)

    async def start(self) -> None:
        """Start Redis (embedded unless configured), presence, the WebSocket and ops servers.

        Raises StartupError when the node cannot start (a port in use, Redis or PostgreSQL not
        answering). If it raises or is cancelled, call ``stop``: it stops whatever had started.
        """
        s = self.settings
        await self.preflight()
        await self.services.start()
        await self.refresh_rooms()
        spill = (
            SpillFile(s.spill_path(self.node_id), s.redis_spill_max_bytes)
            if s.redis_spill_max_bytes
            else None
        )
        self.store = HotStore(
            connect(self.redis_url, s.redis_timeout_ms / 1000),
            on_flush=self.metrics.record_flush,
            min_interval_s=s.redis_flush_interval_ms / 1000,
            beat_interval_s=s.redis_heartbeat_interval_ms / 1000,
            node_id=self.node_id,
            buffer_max_ops=s.redis_buffer_max_ops,
            spill=spill,
            timeout_s=s.redis_timeout_ms / 1000,
        )
        await self.store.start()
        self.metrics.fault_source = self.store
        self.room_index = RoomIndex(
            self.store, self.catalog, self.metrics, self.node_id, s.room_sweep_interval_s
        )
        self.presence = Presence(s, self.store, self.catalog, self.metrics, self.node_id, self.policy)
        # What the store writes again when Redis lost (or may have lost) this node's state.
        self.store.live_sessions = self.presence.live_sessions
        self.store.is_live = self.presence.holds
        self.fanout = RoomFanout(self.store.redis, self.presence, self.node_id)
        self.fanout.on_rooms_changed = self.refresh_rooms
        self.presence.fanout = self.fanout
        self.alert_feed = AlertFeed(self.store.redis)
        self.fanout.on_alert = self.alert_feed.deliver
        self.presence.alert_feed = self.alert_feed
        await self.fanout.start()
        # Before accepting anyone: take back what a killed process under this id left that its
        # clients may still resume; the liveness start ends the rest, and what dead nodes left
        # (node_lost); then keep alive.
        self.presence.adopt(await self.store.node_sessions(self.node_id))
        self.liveness = NodeLiveness(
            self.store.redis,
            self.node_id,
            on_reaped=self.metrics.sessions_reaped.inc,
            keep=self.presence.holds,
        )
        await self.liveness.start()
        try:  # spidi_rooms_total from the start, not one sweep interval later
            await self.room_index.tick()
        except Exception as exc:  # Redis errors alike: the periodic sweep tries again
            logs.event(log, "rooms_sweep_failed", logging.WARNING, error=str(exc))
        self.store.watch_marker(keys.node_marker(self.node_id))
        if s.alerting and self.dsn:
            self.alerts = AlertEvaluator(s, self.store, self.dsn, self.metrics, self.node_id)
            await self.alerts.start()
        try:
            await self.transport.start()
        except OSError as exc:  # taken between the preflight check and now
            raise bind_error(s.host, s.port, exc) from exc
        try:
            await self.ops.start()
        except OSError as exc:
            raise bind_error(s.ops_host, s.ops_port, exc) from exc
        await self._sample_redis_memory()  # the gauges hold a value from the first scrape on
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                run_every(s.rooms_topic_interval_ms / 1000, self.presence.publish_tenants, "rooms")
            ),
            loop.create_task(run_every(0.1, self._expire, "expire")),
            loop.create_task(run_every(1.0, self._sample, "sample")),
            loop.create_task(run_every(s.checkpoint_interval_s, self._checkpoint, "checkpoint")),
            loop.create_task(run_every(ROOM_REFRESH_S, self.refresh_rooms, "rooms-refresh")),
            loop.create_task(
                run_every(
                    s.room_sweep_interval_s,
                    self.room_index.tick,
                    "rooms-sweep",
                    warn(log, "rooms_sweep_failed"),  # Redis down: the next tick sweeps again
                )
            ),
            loop.create_task(run_every(self._liveness_period(), self._stomp_liveness, "liveness")),
            loop.create_task(run_every(REDIS_MEMORY_S, self._sample_redis_memory, "redis-memory")),
        ]
        if s.tenant_defaults and self.dsn:
            # A tenant whose first use is a client's HELLO, not an API call, gets its defaults too.
            self._tasks.append(
                loop.create_task(run_every(ROOM_REFRESH_S, self._seed_tenants, "tenant-defaults"))
            )
        if self.services.writer_proc is not None:
            # A writer child killed (OOM, SIGKILL) is started again; it re-reads what it had read.
            self._tasks.append(
                loop.create_task(run_every(WRITER_WATCH_S, self._watch_writer, "writer-watch"))
            )
        self.gc_timer.install()  # first: the policy's start-up collection is measured too
        if s.gc_full_interval_s > 0:
            self.gc_policy.start()
            self._tasks.append(loop.create_task(run_every(s.gc_full_interval_s, self._gc_step, "gc")))
        self.loop_monitor.start(loop)
        self.io_phase_bound.install(loop)
        if self.stall_reporter is not None:
            self.stall_reporter.start()
        if s.dev and os.environ.get(STUBBORN_TASK_ENV):
            loop.create_task(_refuse_cancellation(), name="dev-stubborn-task")
        self.started = True
        logs.event(
            log,
            "node_started",
            node_id=self.node_id,
            ws_port=self.transport.port,
            ops_port=self.ops.port,
            redis="embedded" if self.embedded_redis else "external",
        )

    def _liveness_period(self) -> float:
        s = self.settings
        return max(0.02, min(1.0, (s.stomp_heartbeat_ms or 4000) / 4000, s.connect_timeout_s / 4))

    # The services, as the banner, ops and API read them.
    @property
    def redis_url(self) -> str:
        return self.services.redis_url

    @property
    def dsn(self) -> str | None:
        return self.services.dsn

    @property
    def embedded_redis(self):
        return self.services.embedded_redis

    @property
    def embedded_pg(self):
        return self.services.embedded_pg

    @property
    def writer_proc(self):
        return self.services.writer_proc

    async def refresh_rooms(self) -> None:
        """Reload the rooms stored in PostgreSQL; on failure keep the cached ones."""
        if not self.dsn:
            return
        if self._room_loader is None or self._room_loader.dsn != self.dsn:
            if self._room_loader is not None:
                await asyncio.to_thread(self._room_loader.close)
            self._room_loader = RoomLoader(self.dsn)
        try:
            rooms = await asyncio.to_thread(self._room_loader.load, self.catalog)
        except Exception as exc:  # psycopg errors and OSError alike: the cache stays in force
            logs.event(log, "rooms_refresh_failed", logging.WARNING, error=str(exc))
            return
        self.catalog.replace_stored(rooms)

    async def _seed_tenants(self) -> None:
        """Give the tenants of this node's rooms their defaults, once each (``tenant_defaults``)."""
        await self.ops.api.seed_tenants({room.tenant for room in self.presence.rooms.values()})

    async def rooms_changed(self, tenant: str, code: str) -> None:
        """A room definition changed (REST API): refresh here, and tell every other process."""
        await self.refresh_rooms()
        await self.store.redis.publish(keys.ROOMS_CHANGED, f"{tenant}/{code}")

    def connection_opened(
        self, writer: Writer, conn_id: str, ip: str, query_token: str | None
    ) -> ClientConnection:
        """A transport accepted a WebSocket: its connection, counted and kept for liveness checks."""
        conn = ClientConnection(self, writer, conn_id, ip, query_token)
        self.clients.add(conn)
        self.liveness_due.add(conn)
        self.metrics.websocket_connections.inc()
        return conn

    def connection_closed(self, conn) -> None:
        """A WebSocket is gone: hand its sessions to presence (ended or kept for the grace period)."""
        if conn in self.clients:
            self.clients.discard(conn)
            self.liveness_due.discard(conn)
            self.metrics.websocket_connections.dec()
            self.gc_policy.closed += 1
            conn.closed()

    def _stalled(self, lag: float) -> None:
        self.metrics.event_loop_stalls.inc()

    async def _gc_step(self) -> None:
        started = time.perf_counter()
        full = self.gc_policy.step(len(self.clients))
        logs.event(
            log,
            "gc_full" if full else "gc_step",
            logging.INFO if full else logging.DEBUG,
            seconds=round(time.perf_counter() - started, 4),
            frozen=self.gc_policy.frozen,
        )

    async def _expire(self) -> None:
        self.presence.expire()

    async def _sample(self) -> None:
        self.presence.sample_rooms()
        self.presence.grade_sessions()

    async def _sample_redis_memory(self) -> None:
        try:
            used, limit = await reads.memory(self.store.redis)
        except REDIS_FAILURES:
            return  # Redis away: the gauges keep their last values; /health says why
        self.metrics.redis_used_memory.set(used)
        self.metrics.redis_maxmemory.set(limit)

    async def _checkpoint(self) -> None:
        await self.presence.checkpoint_all()

    async def _watch_writer(self) -> None:
        self.services.watch_writer(time.monotonic())

    async def _stomp_liveness(self) -> None:
        """Send STOMP heart-beat EOLs as negotiated; close connections silent for too long."""
        now = time.monotonic()
        due = self.liveness_due
        for client in list(due):
            conn = client.stomp
            if conn.close_reason is not None:
                continue
            if conn.claims is None:
                if now - conn.created > self.settings.connect_timeout_s:
                    client.close(1008, "no CONNECT frame in time", "CONNECT timeout")
                continue
            if not (conn.expect_every_ms or conn.send_every_ms):
                # CONNECTED without heart-beats (negotiated once per connection): never due again.
                due.discard(client)
                continue
            if conn.expect_every_ms and (now - conn.last_received) * 1000 > 2 * conn.expect_every_ms:
                # (last_received is the lane's: heartbeats it answered count as received)
                client.close(1002, "STOMP heart-beat timeout: nothing received", "heart-beat timeout")
                continue
            if conn.send_every_ms and (now - conn.last_sent) * 1000 >= conn.send_every_ms * 0.9:
                conn.send_heartbeat()
                client.push()

    def holds_session(self, session_id: str) -> bool:
        """Whether this process holds the session (the reconciliation report asks)."""
        return self.presence is not None and self.presence.holds(session_id)

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint clients use."""
        scheme = "wss" if self.settings.tls_cert_file else "ws"
        return f"{scheme}://{self.settings.host}:{self.transport.port}/ws"

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, close the clients, hand their sessions to the
        grace period in Redis (any node resumes them; ``presence.handover``), flush Redis, stop
        children. With ``grace_period_ms`` 0 the sessions end (``shutdown``) instead.

        Closing code: 1012 (service restart: come back and resume) when sessions are handed over,
        1001 (going away) when they end.

        Also after a ``start`` that failed or was cancelled half-way: what started is stopped.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.started = False
        if self.transport.server is not None:
            await self._close_clients()
        await cancel_and_wait(self._tasks)
        self.loop_monitor.stop()
        self.io_phase_bound.uninstall()
        self.gc_timer.uninstall()
        self.gc_policy.stop()
        if self.stall_reporter is not None:
            self.stall_reporter.stop()
        if self.presence is not None:
            if self._hands_over:
                self.presence.hand_over_all()  # those a HELLO started after the first handoff
                self.presence.flush_history()
            else:
                self.presence.end_all("shutdown")
        if self.alerts is not None:
            await self.alerts.stop()
        if self.fanout is not None:
            await self.fanout.stop()
        if self.store is not None:
            await self.store.flush(self.settings.shutdown_timeout_s)
            self.store.unwatch_marker()  # the node gives its id up: no re-assert from here on
        if self.liveness is not None:
            await self.liveness.stop()
        if self.store is not None:
            await self.store.close(self.settings.shutdown_timeout_s)
        await self.ops.stop()
        if self._room_loader is not None:
            await asyncio.to_thread(self._room_loader.close)
        await self.services.stop()
        logs.event(log, "node_stopped", node_id=self.node_id)
        self._stopped.set()

    @property
    def _hands_over(self) -> bool:
        """Whether a graceful stop hands the sessions over (a grace period to resume them in)."""
        return self.settings.grace_period_ms > 0

    async def _close_clients(self) -> None:
        # Half of shutdown_timeout_s at most, closing included: the whole stop must fit in it
        # (past it the process is ended, see shutdown.py), and flushing comes after the clients.
        grace = self.settings.shutdown_timeout_s / 2
        deadline = time.monotonic() + grace
        self.transport.stop_accepting()
        if self._hands_over and self.presence is not None:
            # In Redis before any client hears 1012 and comes back to another node for it.
            self.presence.hand_over_all()
            await self.store.flush(min(1.0, grace / 2))
            closing = self.transport.close_all(1012, "service restart")
        else:
            if self.presence is not None:
                # Ended before the close, or the close would end them as disconnects.
                self.presence.end_sessions("shutdown")
            closing = self.transport.close_all(1001, "server shutting down")
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=grace)
        else:
            while self.clients and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        try:
            # websockets' wait_closed waits for every handler; one stuck must not hang the shutdown.
            await asyncio.wait_for(self.transport.stop(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            logs.event(log, "shutdown_transport_timeout", logging.WARNING, connections=len(self.clients))


async def _refuse_cancellation() -> None:
    """The task ``STUBBORN_TASK_ENV`` starts: it swallows every cancellation (tests only)."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue
