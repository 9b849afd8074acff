"""The history writer's loop: drains the ``spidi:events`` Redis Stream into PostgreSQL.

The writer (a child of ``spidi serve``, or run alone with ``spidi writer``; see ``writer.py``) reads
the stream as a member of the ``spidi-writers`` consumer group, batches up to
``writer_batch_size`` events or ``writer_flush_interval_s`` seconds, writes each batch in one
transaction (COPY into a staging table, then set-based upserts: ``sql/ingest.py``) and only then
XACKs it. Once it has read all there is, it waits ``READ_PAUSE_S`` before reading again (never
past the open batch's deadline), so a trickle of events is read many per XREADGROUP. Delivery
is at-least-once and the effect exactly-once: every event id goes into the ledger in the same
transaction as its effect, so an event read twice (a writer killed between COMMIT and XACK,
entries reclaimed from a dead writer) changes nothing the second time.

On start the writer first re-reads its own pending entries (XREADGROUP from id 0; its consumer
name is stable across restarts) and claims those of dead writers (XAUTOCLAIM past a minimum idle
time), so a writer killed with SIGKILL mid-batch loses nothing. PostgreSQL unavailable: the batch
is kept and retried with capped exponential backoff (Redis unavailable: each call is retried the
same way). Asked to stop: what the stream holds already is read (up to one batch more) and the
open batch flushed, then ``run`` returns. Partitions are created ahead of time and retention
applied now and then (``_maintenance``). Progress is published in the Redis hash
``spidi:writer:status``.

The reconciliation sweep (``_sweep``: once caught up after start, then every
``writer_sweep_interval_s``) ends the sessions history holds as open whose last heartbeat is older
than ``writer_sweep_after_s`` and that no live node holds (no session key in Redis, not in a live
node's index: ``_forgotten``): reason ``node_lost``, at their last heartbeat known to PostgreSQL.
Whatever Redis lost (a restart without persistence, FLUSHALL, every node dead), history keeps no
session open for ever; an end event arriving for one later is a replay (``sql/sessions.end_lost``).

This module is the loop and its state; ``stream.py`` speaks to Redis, ``batch.py`` collects a
batch (``staging.py`` turns each entry into a row) and writes it (``sql/ingest.py``,
``sql/alerts.py``); ``writer.py`` is the process around the loop (command line, signals, child).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import redis

from .. import logs
from ..settings import Settings
from ..stores import events, keys
from ..stores.client import connect_sync
from .batch import Batch, write_to_postgres
from .migrate import migrate
from .partitions import LEDGER, ROOM_STATS, PartitionManager, period_start
from .retention import apply_retention
from .sql import sessions as session_sql
from .stream import EventStream

log = logging.getLogger("spidi.history.writer")

STATUS_KEY = keys.WRITER_STATUS
BACKLOG_THRESHOLDS = (10_000, 100_000, 1_000_000)  # a warning each time the backlog crosses one upward
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
PARENT_CHECK_S = 1.0  # how often a writer waiting to retry looks whether its server is still there
RETENTION_EVERY_S = 86_400.0
PARTITIONS_AHEAD_EVERY_S = 3_600.0
RECLAIM_EVERY_S = 60.0
STATUS_EVERY_S = 5.0  # status refresh while idle, so readers can tell a live writer from a dead one
READ_BLOCK_MS = 250  # longest XREADGROUP block: keeps shutdown and parent checks responsive
# Once the stream is drained and a batch is open, the next read waits this long (never past the
# batch's deadline): read at once, it would fetch the few entries each node flush appends, one
# round trip per flush (500-700 XREADGROUPs for a ramp of 10,000 joins, against ~20 now): the
# writer's CPU per join was about halved by it, Redis's down ~15%
# (benchmarks/results/*-connect-backend-ab.md).
# The batch is written no later for it: its deadline and its size, checked before every read, decide.
READ_PAUSE_S = 0.2
SWEEP_PAGE = 1000  # open sessions judged per query of the sweep
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def default_consumer_name() -> str:
    """A consumer name stable across restarts on this host, so a restarted writer finds its own
    pending entries."""
    return f"writer-{socket.gethostname()}"


@dataclass
class WriterStats:
    """The writer's counters, published in the ``spidi:writer:status`` hash."""

    events_written: int = 0  # applied for the first time
    events_duplicate: int = 0  # already in the ledger (replays)
    events_expired: int = 0  # for periods retention had already archived
    events_invalid: int = 0  # malformed or rejected: sent to the dead-letter stream
    rows_upserted: int = 0  # session and room-statistics rows inserted or updated
    sessions_swept: int = 0  # open sessions of dead nodes ended by the reconciliation sweep
    batches: int = 0
    last_batch_size: int = 0
    last_batch_ms: float = 0.0
    last_batch_at: float = 0.0
    backlog: int = 0
    pending: int = 0
    pg_ok: bool = False
    last_error: str = ""
    extra: dict = field(default_factory=dict)


class HistoryWriter:
    """The writer loop; ``run`` until ``stop_event`` is set (``writer.main`` sets it on SIGTERM/SIGINT)."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str | None = None,
        dsn: str | None = None,
        consumer: str | None = None,
        stop_event: threading.Event | None = None,
        parent_pid: int | None = None,
        reclaim_idle_s: float | None = None,
    ):
        self.settings = settings
        self.redis_url = redis_url or settings.redis_url
        self.dsn = dsn or settings.postgres_dsn
        if not self.redis_url or not self.dsn:
            raise ValueError("the writer needs a Redis URL and a PostgreSQL DSN")
        self.consumer = consumer or default_consumer_name()
        self.batch_size = settings.writer_batch_size
        self.flush_interval = settings.writer_flush_interval_s
        self.stop_event = stop_event or threading.Event()
        self.parent_pid = parent_pid
        self.stats = WriterStats()
        self.partitions = PartitionManager()
        # A plain client, or a cluster client for redis+cluster:// URLs: the writer touches one key
        # per command (the stream, the dead letters, its status hash), so it runs on either.
        self.redis = connect_sync(self.redis_url, decode_responses=True, socket_timeout=30)
        self.stream = EventStream(self.redis, self.consumer)
        self.conn: psycopg.Connection | None = None
        self._migrated = False
        self._backlog_level = 0
        self._next_retention = 0.0
        self._next_partitions = 0.0
        self._next_reclaim = 0.0
        self._next_status = 0.0
        self._next_sweep = 0.0  # the first sweep once the stream is caught up after start
        self.sweep_every = settings.writer_sweep_interval_s
        self.sweep_after = settings.writer_sweep_after_s
        # Entries idle this long in another consumer's pending list belong to a dead writer (a
        # live one acknowledges within a flush interval, or keeps retrying a PostgreSQL outage:
        # taking those over too is harmless, the ledger makes the second write a no-op).
        if reclaim_idle_s is None:
            reclaim_idle_s = max(300.0, 10 * self.flush_interval)
        self.reclaim_idle_ms = int(reclaim_idle_s * 1000)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether to wind down: asked to stop, or the parent process (``spidi serve``) is gone."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.stop_event.set()  # the server that started us is gone: finish up, exit
        return self.stop_event.is_set()

    def run(self) -> WriterStats:
        """Drain the stream until stopped; flush the open batch on the way out."""
        logs.event(
            log,
            "writer_started",
            consumer=self.consumer,
            batch_size=self.batch_size,
            flush_interval_s=self.flush_interval,
            pid=os.getpid(),
        )
        self._redis_call(self.stream.ensure_group)
        batch = Batch(self.settings.slo_breakdown_top_n)
        try:
            # 1. Entries this consumer read before it died, then those of other dead writers.
            cursor = "0"
            while not self.stopping:
                entries = self._redis_call(self.stream.read, cursor, self.batch_size - len(batch), None)
                if not entries:
                    break
                for stream_id, fields in entries:
                    batch.add(stream_id, fields)
                cursor = entries[-1][0]
                if len(batch) >= self.batch_size:
                    batch = self._flush(batch)
            batch = self._reclaim(batch)
            if batch and not self.stopping:
                batch = self._flush(batch)
            self._next_reclaim = time.monotonic() + RECLAIM_EVERY_S
            # 2. New entries (and, now and then, entries of writers that died meanwhile).
            drained = False  # the last read found no more entries than it took
            while not self.stopping:
                self._maintenance()
                if time.monotonic() >= self._next_status:
                    self._redis_call(self._publish_status)
                if time.monotonic() >= self._next_reclaim:
                    batch = self._reclaim(batch)
                    self._next_reclaim = time.monotonic() + RECLAIM_EVERY_S
                if batch:
                    remaining = batch.started + self.flush_interval - time.monotonic()
                    if remaining <= 0 or len(batch) >= self.batch_size:
                        batch = self._flush(batch)
                        continue
                    if drained:
                        if self.stop_event.wait(min(READ_PAUSE_S, remaining)):
                            continue  # asked to stop: the open batch is flushed on the way out
                        remaining = batch.started + self.flush_interval - time.monotonic()
                    # At the deadline, one read without waiting: what came during the pause
                    # joins this batch, as when every arrival was read at once.
                    block = max(1, min(READ_BLOCK_MS, int(remaining * 1000))) if remaining > 0 else None
                else:
                    block = READ_BLOCK_MS
                wanted = self.batch_size - len(batch)
                entries = self._redis_call(self.stream.read, ">", wanted, block)
                for stream_id, fields in entries or ():
                    batch.add(stream_id, fields)
                # Only once caught up, the batch written first: an end still in the stream or in
                # the batch is better than the sweep's guess.
                caught_up = len(entries or ()) < wanted
                drained = caught_up
                if self.sweep_every and caught_up and time.monotonic() >= self._next_sweep:
                    if batch:
                        batch = self._flush(batch)
                    self._sweep()
            batch = self._read_rest(batch)
            if batch:
                batch = self._flush(batch, final=True)
        finally:
            if batch:
                logs.event(log, "writer_batch_left_pending", logging.WARNING, events=len(batch))
            with contextlib.suppress(redis.RedisError):
                self._publish_status(final=True)
            self._close_pg()
            self.redis.close()
            logs.event(
                log,
                "writer_stopped",
                consumer=self.consumer,
                events_written=self.stats.events_written,
                batches=self.stats.batches,
            )
        return self.stats

    def _maintenance(self) -> None:
        """Partitions ahead of time (hourly) and retention (daily, first right after start-up)."""
        now = time.monotonic()
        if now >= self._next_partitions or now >= self._next_retention:
            conn = self._pg()
            if conn is None:
                return
            try:
                if now >= self._next_partitions:
                    self.partitions.ensure_ahead(conn)
                    self._next_partitions = now + PARTITIONS_AHEAD_EVERY_S
                if now >= self._next_retention:
                    apply_retention(conn, self.settings.retention_hot_days, self.settings.retention_drop_days)
                    self.partitions.forget()
                    self._next_retention = now + RETENTION_EVERY_S
            except psycopg.OperationalError as exc:
                self._pg_failed(exc)
            except psycopg.Error as exc:
                # Not worth dying for (a partition a DBA made by hand, say): try again next time.
                logs.event(log, "writer_maintenance_failed", logging.WARNING, error=str(exc).strip()[:500])
                self._next_partitions = max(self._next_partitions, now + 60)
                self._next_retention = max(self._next_retention, now + 3600)

    def _sweep(self) -> int:
        """End the sessions history holds as open whose node is gone and that Redis forgot
        (``node_lost``, at their last heartbeat known here); returns how many were ended."""
        self._next_sweep = time.monotonic() + self.sweep_every
        conn = self._pg()
        if conn is None:
            return 0
        before = datetime.now(UTC) - timedelta(seconds=self.sweep_after)
        ended = 0
        after = None
        try:
            while not self.stopping:
                page = session_sql.open_before(conn, before, SWEEP_PAGE, after)
                if not page:
                    break
                after = (page[-1].last_heartbeat_at, page[-1].session_id)
                lost = self._redis_call(self._forgotten, page)
                if lost is None:
                    break  # stopping while Redis was down
                lost = [s for s in lost if self._end_partitions(conn, s.last_heartbeat_at)]
                ended += session_sql.end_lost(
                    conn,
                    lost,
                    [events.end_event_id(s.session_id, _ms(s.started_at)) for s in lost],
                    events.NODE_LOST,
                )
                if len(page) < SWEEP_PAGE:
                    break
        except psycopg.OperationalError as exc:
            self._pg_failed(exc)
        except psycopg.Error as exc:
            logs.event(log, "writer_sweep_failed", logging.WARNING, error=str(exc).strip()[:500])
        if ended:
            self.stats.sessions_swept += ended
            logs.event(log, "writer_sessions_swept", logging.WARNING, sessions=ended, reason=events.NODE_LOST)
            self._redis_call(self._publish_status)
        return ended

    def _forgotten(self, page: list[session_sql.OpenSession]) -> list[session_sql.OpenSession]:
        """The sessions of ``page`` no live node holds: no session key in Redis, and not in the
        index of a live node. A live node keeps both for every session it holds (renewing the
        key, writing both again after Redis lost them), so such a session, silent in history for
        ``writer_sweep_after_s``, lost its node: dead, or restarted under its id. A session whose
        key Redis still holds is the reaper's to end (or the key expires and a later sweep takes
        it); a dead node's index, which never expires, does not keep its sessions open."""
        nodes = sorted({s.node_id for s in page if s.node_id})
        pipe = self.redis.pipeline(transaction=False)
        for node_id in nodes:
            pipe.exists(keys.node_alive(node_id))
        for s in page:
            if s.room_id:
                pipe.exists(keys.session(s.room_id, s.session_id))
            if s.node_id:
                pipe.hexists(keys.node_sessions(s.node_id), s.session_id)
        replies = pipe.execute()
        alive = {n for n, up in zip(nodes, replies[: len(nodes)], strict=True) if up}
        answers = iter(replies[len(nodes) :])
        lost = []
        for s in page:
            in_room = bool(next(answers)) if s.room_id else False
            held = bool(next(answers)) and s.node_id in alive if s.node_id else False
            if not in_room and not held:
                lost.append(s)
        return lost

    def _end_partitions(self, conn: psycopg.Connection, ended_at: datetime) -> bool:
        """Whether the partitions an end at ``ended_at`` writes to exist (created if missing)."""
        day = ended_at.astimezone(UTC).date()
        return self.partitions.ensure(conn, LEDGER, day) and self.partitions.ensure(
            conn, ROOM_STATS, period_start(ROOM_STATS, day)
        )

    def _read_rest(self, batch: Batch) -> Batch:
        """Asked to stop: read what the stream holds already, without waiting, up to one batch
        more. A stopping node flushes its last events (its rooms' partial minutes) just before
        its writer is asked to stop, and a stop that came during the read pause would otherwise
        leave them for the next start."""
        left = self.batch_size
        while left > 0:
            wanted = min(left, self.batch_size - len(batch))
            if wanted <= 0:
                batch = self._flush(batch, final=True)
                if batch:
                    return batch  # not written: kept pending, as any batch a stop leaves
                continue
            entries = self._redis_call(self.stream.read, ">", wanted, None)
            if not entries:
                break
            for stream_id, fields in entries:
                batch.add(stream_id, fields)
            left -= len(entries)
            if len(entries) < wanted:
                break
        return batch

    # -- Redis -------------------------------------------------------------------------------

    def _redis_call(self, fn, *args):
        """Call ``fn``, retrying with backoff while Redis is unreachable (until stopped)."""
        delay = BACKOFF_INITIAL_S
        while True:
            try:
                return fn(*args)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logs.event(log, "writer_redis_unavailable", logging.WARNING, error=str(exc), retry_in_s=delay)
                if self._pause(delay):
                    return None
                delay = min(BACKOFF_MAX_S, delay * 2)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` between two attempts unless stopping; whether stopping. The parent is
        looked at every ``PARENT_CHECK_S`` meanwhile: an orphan waiting for a Redis or PostgreSQL
        that is gone as well (its server killed with them) would otherwise retry forever."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.stop_event.wait(min(left, PARENT_CHECK_S)):
                return True
        return True

    def _reclaim(self, batch: Batch) -> Batch:
        """Take over entries that dead writers read and never acknowledged."""
        cursor = "0-0"
        while not self.stopping:
            reply = self._redis_call(self.stream.claim_idle, cursor, self.reclaim_idle_ms, self.batch_size)
            if not reply:
                break
            cursor, entries = reply
            for stream_id, fields in entries:
                batch.add(stream_id, fields)
                if len(batch) >= self.batch_size:
                    batch = self._flush(batch)
            if cursor in ("0-0", "0"):
                break
        return batch

    def _dead_letter(self, stream_id: str, fields: dict, error: str) -> bool:
        """Move a rejected event to the dead-letter stream; False if it stays pending instead.

        A full Redis (OOM under noeviction) refuses the XADD: the entry is then left unacknowledged
        in the stream, to be read again and dead-lettered by a later reclaim (``reclaim_idle_s``)
        or writer start, once Redis has room: never acknowledged without a copy kept."""
        try:
            kept = self._redis_call(self.stream.dead_letter, stream_id, fields, error)
        except redis.exceptions.OutOfMemoryError as exc:
            logs.event(
                log,
                "writer_dead_letter_deferred",
                logging.WARNING,
                stream_id=stream_id,
                event_id=fields.get("id"),
                error=str(exc)[:200],
            )
            return False
        if kept is None:  # stopped while Redis was unreachable
            return False
        self.stats.events_invalid += 1
        return True

    # -- PostgreSQL --------------------------------------------------------------------------

    def _pg(self) -> psycopg.Connection | None:
        """The connection, (re)opened and migrated on first use; None while PostgreSQL is down.

        Autocommit: every ``conn.transaction()`` of the ``sql`` modules is then a real transaction.
        """
        if self.conn is not None and not self.conn.closed:
            return self.conn
        try:
            conn = psycopg.connect(
                self.dsn, autocommit=True, application_name="spidi-writer", connect_timeout=10
            )
            if not self._migrated:
                migrate(conn)
                self._migrated = True
        except psycopg.OperationalError as exc:
            self._pg_failed(exc)
            return None
        self.conn = conn
        self.partitions.forget()
        if not self.stats.pg_ok:
            logs.event(log, "writer_postgres_connected")
        self.stats.pg_ok = True
        return conn

    def _pg_failed(self, exc: Exception, retry_in: float | None = None) -> None:
        self.stats.pg_ok = False
        self.stats.last_error = str(exc).strip()[:500]
        logs.event(
            log,
            "writer_postgres_unavailable",
            logging.WARNING,
            error=self.stats.last_error,
            retry_in_s=retry_in,
        )
        self._close_pg()
        with contextlib.suppress(redis.RedisError):
            self._publish_status()

    def _close_pg(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                conn.close()

    # -- batches -----------------------------------------------------------------------------

    def _flush(self, batch: Batch, final: bool = False) -> Batch:
        """Write the batch, then acknowledge it; returns a fresh batch.

        While PostgreSQL is down the batch is kept and retried with capped exponential backoff.
        Once stopping, one more attempt is made; if it fails the batch is given up and returned
        as is: its entries stay pending in the group and the next writer start re-reads them.
        """
        started = time.monotonic()
        delay = BACKOFF_INITIAL_S
        while True:
            stopping = self.stopping or final
            conn = self._pg()
            if conn is not None:
                try:
                    result = write_to_postgres(conn, batch, self.partitions)
                    break
                except psycopg.OperationalError as exc:
                    self._pg_failed(exc, retry_in=delay)
            if stopping:
                return batch
            self._pause(delay)  # a stop (or the parent's death) cuts the wait short: one last attempt
            delay = min(BACKOFF_MAX_S, delay * 2)
        pending = {sid for sid, fields, error in batch.invalid if not self._dead_letter(sid, fields, error)}
        self._redis_call(
            self.stream.ack, [i for i in batch.ids if i not in pending] if pending else batch.ids
        )
        elapsed = time.monotonic() - started
        stats = self.stats
        stats.events_written += result.applied
        stats.events_duplicate += result.duplicates + batch.repeats
        stats.rows_upserted += result.session_rows + result.stats_rows
        stats.events_expired += batch.expired
        if batch.expired:
            logs.event(log, "writer_events_expired", logging.WARNING, events=batch.expired)
        stats.batches += 1
        stats.last_batch_size = len(batch)
        stats.last_batch_ms = round(elapsed * 1000, 1)
        stats.last_batch_at = time.time()
        logs.event(
            log,
            "writer_batch",
            logging.DEBUG,
            entries=len(batch),
            applied=result.applied,
            duplicates=result.duplicates,
            ms=stats.last_batch_ms,
        )
        self._redis_call(self._publish_status)
        return Batch(self.settings.slo_breakdown_top_n)

    # -- status ------------------------------------------------------------------------------

    def _publish_status(self, final: bool = False) -> None:
        """Backlog figures, threshold warnings, and the ``spidi:writer:status`` hash."""
        stats = self.stats
        self._next_status = time.monotonic() + STATUS_EVERY_S
        with contextlib.suppress(redis.ResponseError):
            stats.backlog = self.stream.length()
            stats.pending = self.stream.pending()
        level = sum(1 for t in BACKLOG_THRESHOLDS if stats.backlog >= t)
        if level > self._backlog_level:
            logs.event(
                log,
                "writer_backlog_growing",
                logging.WARNING,
                backlog=stats.backlog,
                threshold=BACKLOG_THRESHOLDS[level - 1],
                pending=stats.pending,
            )
        elif level < self._backlog_level:
            logs.event(log, "writer_backlog_shrinking", backlog=stats.backlog, pending=stats.pending)
        self._backlog_level = level
        try:
            self._write_status(final)
            self._status_refused = False
        except redis.exceptions.OutOfMemoryError as exc:
            # Redis is full (maxmemory): the status waits; writing events and trimming the
            # stream, which frees the memory, must not. Logged once per episode.
            if not self._status_refused:
                logs.event(log, "writer_status_refused", logging.WARNING, error=str(exc))
            self._status_refused = True

    _status_refused = False  # the last status write was refused for want of Redis memory

    def _write_status(self, final: bool) -> None:
        stats = self.stats
        self.redis.hset(
            STATUS_KEY,
            mapping={
                "consumer": self.consumer,
                "pid": os.getpid(),
                "state": "stopped" if final else ("running" if stats.pg_ok else "postgres_unavailable"),
                "events_written": stats.events_written,
                "events_duplicate": stats.events_duplicate,
                "events_expired": stats.events_expired,
                "events_invalid": stats.events_invalid,
                "rows_upserted": stats.rows_upserted,
                "sessions_swept": stats.sessions_swept,
                "batches": stats.batches,
                "last_batch_size": stats.last_batch_size,
                "last_batch_ms": stats.last_batch_ms,
                "last_batch_at": round(stats.last_batch_at, 3),
                "backlog": stats.backlog,
                "pending": stats.pending,
                "pg_ok": int(stats.pg_ok),
                "last_error": stats.last_error,
                "updated_at": round(time.time(), 3),
            },
        )


def _ms(at: datetime) -> int:
    """Epoch milliseconds of a timestamp PostgreSQL stored from epoch milliseconds (exact)."""
    return (at - _EPOCH) // timedelta(milliseconds=1)


def run_writer(
    settings: Settings,
    stop_event: threading.Event | None = None,
    *,
    redis_url: str | None = None,
    dsn: str | None = None,
    consumer: str | None = None,
    parent_pid: int | None = None,
    reclaim_idle_s: float | None = None,
) -> WriterStats:
    """Run the writer in this thread until ``stop_event`` is set; returns its counters.

    ``redis_url``/``dsn`` default to the settings'. The DSN must be set here (``main`` starts the
    embedded PostgreSQL when the settings have none).
    """
    writer = HistoryWriter(settings, redis_url, dsn, consumer, stop_event, parent_pid, reclaim_idle_s)
    return writer.run()
