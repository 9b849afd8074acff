"""The ops HTTP server (aiohttp, same event loop): Prometheus ``/metrics`` (behind ``metrics_token``
when set), ``/health/live`` (liveness: the process answers), ``/health/ready`` and
``/actuator/health/spidi`` (readiness: the dependencies answer), ``/health`` (an overview of every
component, for people), plus the REST API and the dashboard."""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Sized
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import spidi_core

from .api import register_api
from .api.service import ApiHost
from .dashboard import DashboardHost, own_origin, register_dashboard
from .stores import keys
from .transport.admission import server_ssl_context

if TYPE_CHECKING:
    from .metrics import NodeMetrics
    from .presence import Presence

# Which STOMP codec and heartbeat wheel this process runs (/health says): the Cython builds, or the
# pure-Python references (extensions not built, or SPIDI_NO_EXTENSIONS=1).
CODEC = "cython" if spidi_core.USE_EXTENSIONS else "python"


class ServingTransport(Protocol):
    """The WebSocket transport as /health reports it."""

    name: str  # "native", "websockets" or "picows"

    @property
    def port(self) -> int: ...

    @property
    def accept_queue(self) -> tuple[int, int] | None: ...  # (waiting, limit); None: unknown


class LagMeter(Protocol):
    """The event loop's lateness as /health judges it (``loop_monitor.LoopMonitor``)."""

    def recent(self) -> float: ...  # the longest lag of the last health_loop_lag_window_s, s


@runtime_checkable
class OpsHost(ApiHost, DashboardHost, Protocol):
    """What the ops server needs from the node: what the API and the dashboard it serves need, and
    the figures and state its endpoints report."""

    node_id: str
    metrics: NodeMetrics  # the registry /metrics renders; the writer gauges it refreshes
    presence: Presence | None  # this worker's rooms (node-wide room count in worker mode)
    transport: ServingTransport
    loop_monitor: LagMeter

    @property
    def clients(self) -> Sized: ...  # the open WebSocket connections (counted)


def _postgres_answers(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except (psycopg.Error, OSError):
        return False


READY_MAX_BACKLOG = 100_000  # events waiting for the writer beyond which the node is not ready


def _json(data: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


SIBLING_TIMEOUT_S = 1.0  # a sibling worker slower than this to give its figures counts as unreachable

# How the figures of a node's workers combine into the node's: by default they add up (counters,
# connection and session gauges, histogram buckets, sums and counts). These do not:
_MERGE_MAX = frozenset({"spidi_event_loop_lag_max_seconds"})  # the worst worker is the node's
# Node-wide values every worker reads from Redis; the answering worker refreshed its copy just now.
_MERGE_FIRST = frozenset(
    {
        "spidi_writer_backlog_events",
        "spidi_writer_batch_duration_seconds",
        "spidi_redis_used_memory_bytes",
        "spidi_redis_maxmemory_bytes",
        "spidi_rooms_total",
    }
)
# Distinct rooms across workers, not a sum: one room usually has sessions on every worker.
_ROOMS_TOTAL = "spidi_node_rooms"


class _Families:
    """A fixed list of metric families as a prometheus_client collector, to render them."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self):
        return iter(self.families)


def merge_exposition(texts: list[str], rooms_total: int | None = None, extra: dict | None = None) -> bytes:
    """Add up the Prometheus text of several workers into one exposition of the whole node.

    ``texts[0]`` is the answering worker's own. Samples match by name and labels; counters, gauges
    and histogram parts add, ``*_created`` timestamps keep the earliest, the gauges in
    ``_MERGE_MAX``/``_MERGE_FIRST`` keep the largest/first. ``rooms_total`` (distinct rooms across
    workers) replaces the sum of ``spidi_node_rooms``; ``extra`` adds gauges (name -> (help, value)).
    """
    families: dict[str, Metric] = {}  # insertion order = order of first appearance
    merged: dict[str, dict[tuple, list]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = {}
            samples = merged[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = samples.get(key)
                if seen is None:
                    samples[key] = [sample.name, sample.labels, sample.value]
                elif family.name.endswith("_created"):
                    seen[2] = min(seen[2], sample.value)
                elif family.name in _MERGE_MAX:
                    seen[2] = max(seen[2], sample.value)
                elif family.name not in _MERGE_FIRST:
                    seen[2] += sample.value
    if rooms_total is not None and _ROOMS_TOTAL in merged:
        for seen in merged[_ROOMS_TOTAL].values():
            seen[2] = float(rooms_total)
    for name, family in families.items():
        for sample_name, labels, value in merged[name].values():
            family.add_sample(sample_name, labels, value)
    for name, (documentation, value) in (extra or {}).items():
        gauge = families[name] = Metric(name, documentation, "gauge")
        gauge.add_sample(name, {}, float(value))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match, traceparent"
CORS_EXPOSE = "ETag, Location, Link, Retry-After, traceresponse"
CORS_MAX_AGE_S = "600"


class Cors:
    """CORS on the ops port from ``allowed_origins``: the origins listed (``*`` for all), and the ops
    port's own. An empty list allows every origin in development mode (``dev``) only; otherwise it
    means same origin only, so a page elsewhere cannot read the API's answers.

    Preflights (OPTIONS with Access-Control-Request-Method) are answered here: 204 for an allowed
    origin, 403 otherwise. Other responses get Access-Control-Allow-Origin (the request's origin,
    never ``*``) only for an allowed origin. No credentials: the API takes bearer tokens, not cookies.
    """

    def __init__(self, allowed_origins: list[str], dev: bool = False):
        self.origins = frozenset(allowed_origins)
        self.any = "*" in self.origins or (dev and not self.origins)

    def allowed(self, origin: str, request: web.Request) -> bool:
        """Whether a page of ``origin`` may read the answer to ``request``."""
        return self.any or origin in self.origins or origin == own_origin(request)

    @web.middleware
    async def preflight(self, request: web.Request, handler):
        origin = request.headers.get("Origin")
        if (
            request.method != "OPTIONS"
            or origin is None
            or "Access-Control-Request-Method" not in request.headers
        ):
            return await handler(request)
        if not self.allowed(origin, request):
            return web.Response(status=403, text="origin not allowed\n")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE_S,
                "Vary": "Origin",
            },
        )

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every response (handlers, errors, streams): the allow-origin header when allowed."""
        origin = request.headers.get("Origin")
        if origin is None or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers.add("Vary", "Origin")
        if self.allowed(origin, request):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE


class MetricsGuard:
    """``metrics_token``: the bearer token /metrics (and the workers' private figures) require."""

    def __init__(self, token: str):
        self.token = token.encode()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}  # what a sibling presents

    def allows(self, request: web.Request) -> bool:
        """No token configured, or ``Authorization: Bearer <token>`` (compared in constant time)."""
        if not self.token:
            return True
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    @staticmethod
    def refusal() -> web.Response:
        return web.Response(
            status=401,
            text="metrics need Authorization: Bearer <metrics_token>\n",
            headers={"WWW-Authenticate": 'Bearer realm="spidi-metrics"'},
        )


class OpsServer:
    """Serves the operator endpoints of a node on the ops port."""

    def __init__(self, host: OpsHost):
        self.host = host
        cors = Cors(host.settings.allowed_origins, host.settings.dev)
        self.guard = MetricsGuard(host.settings.metrics_token)
        self.started = time.monotonic()
        self.app = web.Application(middlewares=[cors.preflight])
        self.app.on_response_prepare.append(cors.on_prepare)
        self.ssl = server_ssl_context(host.settings)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/health/live", self.live)
        self.app.router.add_get("/health/ready", self.ready)
        self.app.router.add_get("/actuator/health/spidi", self.ready)
        self.api = register_api(self.app, host)
        register_dashboard(self.app, host)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        # Worker mode (``spidi serve --workers N``): this worker's own figures on a loopback port
        # of its own, and the private ports of its siblings, whose figures /metrics adds up.
        s = host.settings
        own = f"127.0.0.1:{s.ops_private_port}"
        self.siblings = [a for a in s.worker_metrics if a != own] if s.ops_private_port else []
        self.worker_mode = bool(s.ops_private_port)
        self.private_app: web.Application | None = None
        self.private_runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        if self.worker_mode:
            self.private_app = web.Application()
            self.private_app.router.add_get("/metrics/local", self.metrics_local)
            self.private_app.router.add_get("/worker/state", self.worker_state)
            self.private_app.router.add_get("/health/local", self.health_local)

    async def start(self) -> None:
        """Listen on the ops host and port."""
        s = self.host.settings
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        # With reuse_port every worker binds the same ops port and the kernel picks who answers a
        # scrape; None (not False) keeps the single-process bind exactly as it was.
        self.site = web.TCPSite(
            self.runner,
            s.ops_host,
            s.ops_port,
            reuse_port=True if s.reuse_port else None,
            ssl_context=self.ssl,
        )
        await self.site.start()
        if self.private_app is not None:
            self.private_runner = web.AppRunner(self.private_app, access_log=None)
            await self.private_runner.setup()
            await web.TCPSite(self.private_runner, "127.0.0.1", s.ops_private_port).start()
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S))

    @property
    def port(self) -> int:
        return self.site._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host.settings.ops_host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving (the REST API closes its database pool on cleanup)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.private_runner is not None:
            await self.private_runner.cleanup()
            self.private_runner = None
        if self.http is not None:
            await self.http.close()
            self.http = None

    async def _refresh_writer_gauges(self) -> None:
        host = self.host
        if host.settings.history and host.store is not None:
            try:
                status = await self._writer_status()
                host.metrics.writer_backlog.set(status["backlog"])
                host.metrics.writer_batch_seconds.set(status.get("lastBatchMs", 0) / 1000)
            except Exception:  # Redis down: the gauges keep their last values; /health says why
                pass

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text of the node: in worker mode, every worker's figures added up."""
        if not self.guard.allows(request):
            return self.guard.refusal()
        await self._refresh_writer_gauges()
        own = generate_latest(self.host.metrics.registry)
        if self.worker_mode:
            own = await self._node_wide(own)
        return web.Response(body=own, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _node_wide(self, own: bytes) -> bytes:
        states = await self._sibling_states("/worker/state")
        texts = [own.decode()]
        rooms = set(self._local_rooms())
        answering = 1
        for state in states:
            if state is not None:
                answering += 1
                texts.append(state["metrics"])
                rooms.update(state["rooms"])
        extra = {
            "spidi_workers": ("Worker processes of this node answering (this one included)", answering),
            "spidi_workers_unreachable": (
                "Sibling workers that did not answer this scrape",
                len(states) + 1 - answering,
            ),
        }
        # Parsing and rendering a few hundred lines: well under a millisecond per worker.
        return merge_exposition(texts, rooms_total=len(rooms), extra=extra)

    async def _sibling_states(self, path: str) -> list[dict | None]:
        """Every sibling's answer at ``path`` on its private port, None for one that did not answer."""

        async def fetch(address: str) -> dict | None:
            try:
                async with self.http.get(f"http://{address}{path}", headers=self.guard.headers) as resp:
                    if resp.status != 200:
                        return None
                    return orjson.loads(await resp.read())
            except (TimeoutError, aiohttp.ClientError, ValueError):
                return None  # dead, restarting or stuck: counted as unreachable

        if not self.siblings or self.http is None:
            return [None] * len(self.siblings)
        return list(await asyncio.gather(*(fetch(a) for a in self.siblings)))

    def _local_rooms(self) -> list[str]:
        """Ids of the rooms with a session on this worker (for the node's distinct room count)."""
        presence = self.host.presence
        if presence is None:
            return []
        return [room_id for room_id, room in presence.rooms.items() if room.sessions]

    async def metrics_local(self, request: web.Request) -> web.Response:
        """This worker's own figures (private loopback port; ``metrics_token`` applies here too:
        any local user can reach a loopback port)."""
        if not self.guard.allows(request):
            return self.guard.refusal()
        await self._refresh_writer_gauges()
        body = generate_latest(self.host.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def worker_state(self, request: web.Request) -> web.Response:
        """What a sibling needs for node-wide /metrics: this worker's text and its rooms."""
        if not self.guard.allows(request):
            return self.guard.refusal()
        text = generate_latest(self.host.metrics.registry).decode()
        return _json(
            {"node": self.host.node_id, "pid": os.getpid(), "metrics": text, "rooms": self._local_rooms()}
        )

    async def health_local(self, request: web.Request) -> web.Response:
        """This worker is up (private loopback port): the supervisor and siblings ask."""
        return _json({"node": self.host.node_id, "pid": os.getpid(), "connections": len(self.host.clients)})

    async def _workers_component(self) -> tuple[bool, dict]:
        """(all answer, component) for /health and /health/ready in worker mode."""
        states = await self._sibling_states("/health/local")
        answering = 1 + sum(1 for state in states if state is not None)
        expected = len(states) + 1
        component = {
            "answering": answering,
            "expected": expected,
            "unreachable": [a for a, state in zip(self.siblings, states, strict=True) if state is None],
        }
        return answering == expected, component

    def _websocket_component(self) -> dict:
        """The WebSocket side: connections, the event loop's recent lag and the accept queue;
        ``degraded`` while the loop's longest lag of the last ``health_loop_lag_window_s`` is above
        ``health_loop_lag_ms`` (every client's heartbeats and frames wait that long)."""
        host = self.host
        s = host.settings
        lag_ms = host.loop_monitor.recent() * 1000
        queue = host.transport.accept_queue
        return {
            "status": "degraded" if lag_ms > s.health_loop_lag_ms else "ok",
            "transport": host.transport.name,
            "connections": len(host.clients),
            "loopLagMs": round(lag_ms, 1),
            "loopLagLimitMs": s.health_loop_lag_ms,
            "loopLagWindowS": s.health_loop_lag_window_s,
            "acceptBacklog": queue[0] if queue else None,
            "acceptBacklogLimit": queue[1] if queue else None,
        }

    async def live(self, request: web.Request) -> web.Response:
        """Liveness: this process and its event loop answer. Nothing else is asked, so an outage of
        Redis or PostgreSQL (which the node rides out, buffering) never gets the process restarted."""
        uptime = round(time.monotonic() - self.started, 1)
        return _json({"status": "UP", "node": self.host.node_id, "uptimeS": uptime})

    async def health(self, request: web.Request) -> web.Response:
        """An overview for people: each component's state and the codec running; 503 when Redis
        does not answer. Not a probe: /health/live and /health/ready are."""
        host = self.host
        store = host.store
        redis_ok = store is not None and await store.ping()
        components = {
            "redis": {
                "status": "ok" if redis_ok else "down",
                "pending": store.pending if store else 0,
                "lastError": store.last_error if store else None,
            },
            "websocket": self._websocket_component(),
        }
        if host.dsn:
            pg_ok = await asyncio.to_thread(_postgres_answers, host.dsn)
            components["postgres"] = {"status": "ok" if pg_ok else "down"}
        if host.settings.history and redis_ok:
            components["writer"] = await self._writer_status()
        if self.worker_mode:
            all_up, workers = await self._workers_component()
            components["workers"] = {"status": "ok" if all_up else "degraded", **workers}
        degraded = not redis_ok or any(c.get("status") not in ("ok", "running") for c in components.values())
        body = {
            "status": "degraded" if degraded else "ok",
            "node": host.node_id,
            "codec": CODEC,
            "components": components,
        }
        return _json(body, 503 if not redis_ok else 200)

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 200 only when Redis, PostgreSQL (if used) and the writer (backlog bounded) are
        fine. A lagging event loop makes the websocket component (and the whole) ``DEGRADED``, still
        200: the node serves, slowly; taking it out of rotation would move its load elsewhere."""
        host = self.host
        store = host.store
        checks: dict[str, dict] = {}
        redis_ok = store is not None and await store.ping()
        checks["redis"] = {"status": "UP" if redis_ok else "DOWN", "pending": store.pending if store else 0}
        if store is not None:
            # While Redis is away the node keeps serving and buffers its writes: how many, where.
            checks["redis"].update(
                mode=store.mode,
                buffered=store.buffered,
                spilled=store.spilled,
                dropped=store.dropped,
                lastError=store.last_error,
            )
        if host.dsn:
            pg_ok = await asyncio.to_thread(_postgres_answers, host.dsn)
            checks["postgres"] = {"status": "UP" if pg_ok else "DOWN"}
        if host.settings.history and redis_ok:
            writer = await self._writer_status()
            bounded = writer["backlog"] <= READY_MAX_BACKLOG
            writer_ok = writer["status"] == "running" and bounded
            checks["writer"] = {
                "status": "UP" if writer_ok else "DOWN",
                "state": writer["status"],
                "backlog": writer["backlog"],
                "maxBacklog": READY_MAX_BACKLOG,
            }
        if self.worker_mode:
            all_up, workers = await self._workers_component()
            checks["workers"] = {"status": "UP" if all_up else "DOWN", **workers}
        websocket = self._websocket_component()
        checks["websocket"] = {**websocket, "status": "UP" if websocket["status"] == "ok" else "DEGRADED"}
        statuses = {c["status"] for c in checks.values()}
        overall = "DOWN" if "DOWN" in statuses else "DEGRADED" if "DEGRADED" in statuses else "UP"
        body = {"status": overall, "node": host.node_id, "components": checks}
        return _json(body, 503 if overall == "DOWN" else 200)

    async def _writer_status(self) -> dict:
        redis = self.host.store.redis
        raw = await redis.hgetall(keys.WRITER_STATUS)
        status = {k.decode(): v.decode() for k, v in raw.items()}
        backlog = await redis.xlen(keys.EVENTS_STREAM)
        if not status:
            return {"status": "unknown", "backlog": backlog, "detail": "no writer has reported yet"}
        stale = time.time() - float(status.get("updated_at") or 0) > 30  # it reports every 5 s
        state = "stale" if stale else status.get("state", "unknown")
        return {
            "status": state,
            "backlog": backlog,
            "eventsWritten": int(status.get("events_written") or 0),
            "lastBatchMs": float(status.get("last_batch_ms") or 0),
            "lastError": status.get("last_error") or None,
        }
