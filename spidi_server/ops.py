"""The ops HTTP server (aiohttp, same event loop): Prometheus ``/metrics``, ``/health`` (liveness,
with each component's state), ``/health/ready`` and ``/actuator/health/spidi`` (readiness), plus
the REST API and the dashboard."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .api import register_api
from .dashboard import register_dashboard
from .stores import keys

if TYPE_CHECKING:
    from .node import Node


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


class OpsServer:
    """Serves the operator endpoints of a node on the ops port."""

    def __init__(self, node: Node):
        self.node = node
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/health/ready", self.ready)
        self.app.router.add_get("/actuator/health/spidi", self.ready)
        register_api(self.app, node)
        register_dashboard(self.app, node)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    async def start(self) -> None:
        s = self.node.settings
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, s.ops_host, s.ops_port)
        await self.site.start()

    @property
    def port(self) -> int:
        return self.site._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.node.settings.ops_host}:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def metrics(self, request: web.Request) -> web.Response:
        node = self.node
        if node.settings.history and node.store is not None:
            try:
                status = await self._writer_status()
                node.metrics.writer_backlog.set(status["backlog"])
                node.metrics.writer_batch_seconds.set(status.get("lastBatchMs", 0) / 1000)
            except Exception:  # Redis down: the gauges keep their last values; /health says why
                pass
        body = generate_latest(node.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(self, request: web.Request) -> web.Response:
        """Liveness plus each component's state; 503 when Redis does not answer."""
        node = self.node
        store = node.store
        redis_ok = store is not None and await store.ping()
        components = {
            "redis": {
                "status": "ok" if redis_ok else "down",
                "pending": store.pending if store else 0,
                "lastError": store.last_error if store else None,
            },
            "websocket": {"status": "ok", "connections": len(node.clients), "transport": node.transport.name},
        }
        if node.dsn:
            pg_ok = await asyncio.to_thread(_postgres_answers, node.dsn)
            components["postgres"] = {"status": "ok" if pg_ok else "down"}
        if node.settings.history and redis_ok:
            components["writer"] = await self._writer_status()
        degraded = not redis_ok or any(c.get("status") not in ("ok", "running") for c in components.values())
        body = {"status": "degraded" if degraded else "ok", "node": node.node_id, "components": components}
        return _json(body, 503 if not redis_ok else 200)

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 200 only when Redis, PostgreSQL (if used) and the writer (backlog bounded) are fine."""
        node = self.node
        store = node.store
        checks: dict[str, dict] = {}
        redis_ok = store is not None and await store.ping()
        checks["redis"] = {"status": "UP" if redis_ok else "DOWN", "pending": store.pending if store else 0}
        if node.dsn:
            pg_ok = await asyncio.to_thread(_postgres_answers, node.dsn)
            checks["postgres"] = {"status": "UP" if pg_ok else "DOWN"}
        if node.settings.history and redis_ok:
            writer = await self._writer_status()
            bounded = writer["backlog"] <= READY_MAX_BACKLOG
            writer_ok = writer["status"] == "running" and bounded
            checks["writer"] = {"status": "UP" if writer_ok else "DOWN", "state": writer["status"],
                                "backlog": writer["backlog"], "maxBacklog": READY_MAX_BACKLOG}  # fmt: skip
        up = all(c["status"] == "UP" for c in checks.values())
        body = {"status": "UP" if up else "DOWN", "node": node.node_id, "components": checks}
        return _json(body, 200 if up else 503)

    async def _writer_status(self) -> dict:
        redis = self.node.store.redis
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
