"""The ops HTTP server (aiohttp, same event loop): Prometheus ``/metrics`` and ``/health``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .node import Node


def _json(data: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class OpsServer:
    """Serves the operator endpoints of a node on the ops port."""

    def __init__(self, node: Node):
        self.node = node
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/health", self.health)
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
        body = generate_latest(self.node.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(self, request: web.Request) -> web.Response:
        """Liveness plus each component's state; 503 when Redis does not answer."""
        store = self.node.store
        redis_ok = store is not None and await store.ping()
        body = {
            "status": "ok" if redis_ok else "degraded",
            "node": self.node.node_id,
            "components": {
                "redis": {
                    "status": "ok" if redis_ok else "down",
                    "pending": store.pending if store else 0,
                    "lastError": store.last_error if store else None,
                },
                "websocket": {"status": "ok", "connections": len(self.node.clients)},
            },
        }
        return _json(body, 200 if redis_ok else 503)
