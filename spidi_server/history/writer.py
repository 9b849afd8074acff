"""The history writer: drains the ``spidi:events`` Redis Stream into PostgreSQL.

One process (a child of ``spidi serve``, or run alone with ``python -m
spidi_server.history.writer``) reads the stream as a member of the ``spidi-writers`` consumer
group, batches up to ``writer_batch_size`` events or ``writer_flush_interval_s`` seconds, writes
each batch in one transaction (COPY into a staging table, then set-based upserts) and only then
XACKs it. Delivery is at-least-once and the effect exactly-once: every event id goes into the
ledger in the same transaction as its effect, so an event read twice (a writer killed between
COMMIT and XACK, entries reclaimed from a dead writer) changes nothing the second time.

On start the writer first re-reads its own pending entries (XREADGROUP from id 0; its consumer
name is stable across restarts) and claims those of dead writers (XAUTOCLAIM past a minimum idle
time), so a writer killed with SIGKILL mid-batch loses nothing. PostgreSQL unavailable: the batch
is kept and retried with capped exponential backoff. SIGTERM/SIGINT: the open batch is flushed,
then the process exits. Progress is published in the Redis hash ``spidi:writer:status``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import orjson
import psycopg
import redis

from .. import logs
from ..errors import ConfigError
from ..processes import stop_process
from ..settings import Settings, load_settings
from ..stores import events, keys
from ..stores.client import connect_sync
from . import queries
from .migrate import migrate
from .partitions import (
    LEDGER,
    ROOM_STATS,
    SESSIONS,
    PartitionedTable,
    PartitionManager,
    period_start,
    utc_day,
)
from .retention import apply_retention

log = logging.getLogger("spidi.history.writer")

STATUS_KEY = keys.WRITER_STATUS
DEAD_LETTER_STREAM = keys.DEAD_LETTER_STREAM  # events PostgreSQL rejected, with the error (kept ~10k)
DEAD_LETTER_MAXLEN = 10_000
BACKLOG_THRESHOLDS = (10_000, 100_000, 1_000_000)  # a warning each time the backlog crosses one upward
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
RETENTION_EVERY_S = 86_400.0
PARTITIONS_AHEAD_EVERY_S = 3_600.0
RECLAIM_EVERY_S = 60.0
STATUS_EVERY_S = 5.0  # status refresh while idle, so readers can tell a live writer from a dead one
READ_BLOCK_MS = 250  # longest XREADGROUP block: keeps shutdown and parent checks responsive


def default_consumer_name() -> str:
    """A consumer name stable across restarts on this host, so a restarted writer finds its own
    pending entries."""
    return f"writer-{socket.gethostname()}"


class InvalidEvent(ValueError):
    """A stream entry that is not a well-formed history event."""


# -- events to staging rows ----------------------------------------------------------------------


def _text(fields: dict, key: str) -> str | None:
    value = fields.get(key)
    return value if value else None


def _int(fields: dict, key: str, required: bool = False) -> int | None:
    value = fields.get(key)
    if not value:
        if required:
            raise InvalidEvent(f"missing {key}")
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            raise InvalidEvent(f"{key} is not a number: {value!r}") from None


def _float(fields: dict, key: str) -> float | None:
    value = fields.get(key)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidEvent(f"{key} is not a number: {value!r}") from None


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _uuid(fields: dict, key: str, required: bool = True) -> str | None:
    value = fields.get(key)
    if not value:
        if required:
            raise InvalidEvent(f"missing {key}")
        return None
    if _UUID.fullmatch(value):  # the form servers send; PostgreSQL takes it as is
        return value.lower()
    try:
        return str(uuid.UUID(value))  # other spellings uuid.UUID accepts (braces, no dashes)
    except ValueError:
        raise InvalidEvent(f"{key} is not a UUID: {value!r}") from None


def _hist(fields: dict) -> str | None:
    text = fields.get("latency_hist")
    if not text:
        return None
    if not text.replace(",", "").isdigit():
        raise InvalidEvent(f"latency_hist is not a list of counts: {text!r}")
    return "{" + text + "}"  # an array literal: PostgreSQL parses it, Python need not


@dataclass(slots=True)
class Staged:
    """One event ready for the staging table, with the partitions it needs."""

    event_id: str
    row: tuple
    table: PartitionedTable  # sessions or room stats
    table_ms: int  # the partition key of that table (started_at or bucket)
    event_ms: int  # the ledger's partition key
    stats_ms: int | None = None  # a session event's counted minute: it also writes dat_spd_room_stats
    stream_id: str = ""
    fields: dict | None = None


def _minute(ms: int) -> int:
    return ms - ms % 60_000


def stage_event(fields: dict) -> Staged:
    """Turn a stream entry (see stores/events.py) into a staging row; InvalidEvent if malformed.

    A room sample's ``joins``/``leaves``/``timeouts``/``disconnects`` (sent by nodes before those
    counters came from session events, and possibly still in the stream during an upgrade) are
    ignored: counting them too would count those sessions twice. A session_started, and a
    session_ended, with a room gets the minute it counts in as its ``bucket_ms``.
    """
    kind = fields.get("kind")
    event_id = _uuid(fields, "id")
    tenant = _text(fields, "tenant")
    if tenant is None:
        raise InvalidEvent("missing tenant")
    if kind == events.ROOM_SAMPLE:
        bucket = _int(fields, "bucket", required=True)
        row = (
            event_id, bucket, kind, None, _uuid(fields, "room_id"), _text(fields, "room_code"), tenant,
            None, None, None, None, None, None, _text(fields, "node_id"), None, None, None, None, None,
            _float(fields, "latency_sum") or 0.0, _int(fields, "latency_count") or 0, None, None, bucket,
            _int(fields, "online_sum") or 0, _int(fields, "online_samples") or 0,
            _int(fields, "online_max") or 0, _hist(fields),
        )  # fmt: skip
        return Staged(event_id, row, ROOM_STATS, bucket, bucket)
    if kind not in (events.SESSION_STARTED, events.SESSION_CHECKPOINT, events.SESSION_ENDED):
        raise InvalidEvent(f"unknown kind {kind!r}")
    started = _int(fields, "started_at", required=True)
    session_id = _uuid(fields, "session_id")
    room_id = _uuid(fields, "room_id", required=False)
    if kind == events.SESSION_STARTED:
        minute = _minute(started) if room_id else None
        row = (
            event_id, started, kind, session_id, room_id, _text(fields, "room_code"), tenant,
            _text(fields, "user_id"), _text(fields, "client_id"), _text(fields, "app_version"),
            _text(fields, "device"), _text(fields, "os"), _text(fields, "ip"), _text(fields, "node_id"),
            started, None, None, None, None, None, None, None, None,
            minute, None, None, None, None,
        )  # fmt: skip
        return Staged(event_id, row, SESSIONS, started, started, minute)
    last_hb = _int(fields, "last_heartbeat_at") or started
    if kind == events.SESSION_ENDED:
        ended = _int(fields, "ended_at", required=True)
        minute = _minute(ended) if room_id else None
        room_code, reason = _text(fields, "room_code"), _text(fields, "reason")
    else:
        ended = minute = room_code = reason = None
    row = (
        event_id, ended or last_hb, kind, session_id, room_id, room_code, tenant,
        None, None, None, None, None, None, None,
        started, ended, reason, _int(fields, "heartbeats") or 0, last_hb,
        _float(fields, "latency_sum") or 0.0, _int(fields, "latency_count") or 0,
        _float(fields, "latency_min"), _float(fields, "latency_max"),
        minute, None, None, None, None,
    )  # fmt: skip
    return Staged(event_id, row, SESSIONS, started, ended or last_hb, minute)


def stage_alert(fields: dict) -> tuple:
    """Turn an ``alert_event`` stream entry into a ``queries.ALERT_EVENT_COLUMNS`` row."""
    tenant = _text(fields, "tenant")
    if tenant is None:
        raise InvalidEvent("missing tenant")
    state = _text(fields, "state")
    if state not in ("pending", "firing", "resolved"):
        raise InvalidEvent(f"bad alert state {state!r}")
    details = _text(fields, "details")
    if details is not None:
        try:
            orjson.loads(details)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"details: {exc}") from None
    return (
        _uuid(fields, "id"), _uuid(fields, "rule_id"), tenant, _uuid(fields, "room_id", required=False),
        _text(fields, "room_code"), state, _text(fields, "alert_kind"), _text(fields, "severity"),
        _float(fields, "value"), _int(fields, "at", required=True), details,
    )  # fmt: skip


# -- the writer --------------------------------------------------------------------------------


@dataclass
class WriterStats:
    """The writer's counters, published in the ``spidi:writer:status`` hash."""

    events_written: int = 0  # applied for the first time
    events_duplicate: int = 0  # already in the ledger (replays)
    events_expired: int = 0  # for periods retention had already archived
    events_invalid: int = 0  # malformed or rejected: sent to the dead-letter stream
    rows_upserted: int = 0  # session and room-statistics rows inserted or updated
    batches: int = 0
    last_batch_size: int = 0
    last_batch_ms: float = 0.0
    last_batch_at: float = 0.0
    backlog: int = 0
    pending: int = 0
    pg_ok: bool = False
    last_error: str = ""
    extra: dict = field(default_factory=dict)


class _Batch:
    """Stream entries read but not yet written and acknowledged."""

    def __init__(self) -> None:
        self.ids: list[str] = []  # every stream id to XACK once the batch is written
        self._seen: set[str] = set()
        self.staged: dict[str, Staged] = {}  # by event id: an event read twice is written once
        self.alerts: dict[str, tuple[str, dict, tuple]] = {}  # alert events: id -> (stream id, fields, row)
        self.invalid: list[tuple[str, dict, str]] = []  # (stream id, fields, error)
        self.repeats = 0  # entries whose event id is already in this batch
        self.expired = 0  # events for periods retention already archived
        self.started = 0.0

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, stream_id: str, fields: dict | None) -> None:
        """Take one stream entry into the batch (validated and staged now, written at flush)."""
        if stream_id in self._seen:
            return  # re-delivered while still in this batch (own pending entries, then XAUTOCLAIM)
        if not self.ids:
            self.started = time.monotonic()
        self._seen.add(stream_id)
        self.ids.append(stream_id)
        if not fields:
            return  # the entry was trimmed away while pending: nothing left to write
        try:
            if fields.get("kind") == events.ALERT_EVENT:
                row = stage_alert(fields)
                if row[0] in self.alerts:
                    self.repeats += 1
                self.alerts[row[0]] = (stream_id, fields, row)
                return
            staged = stage_event(fields)
        except InvalidEvent as exc:
            self.invalid.append((stream_id, fields, str(exc)))
            return
        staged.stream_id, staged.fields = stream_id, fields
        if staged.event_id in self.staged:
            self.repeats += 1
        self.staged[staged.event_id] = staged


class HistoryWriter:
    """The writer loop; ``run`` until ``stop_event`` is set (or SIGTERM in ``main``)."""

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
        self.conn: psycopg.Connection | None = None
        self._migrated = False
        self._backlog_level = 0
        self._next_retention = 0.0
        self._next_partitions = 0.0
        self._next_reclaim = 0.0
        self._next_status = 0.0
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
        logs.event(log, "writer_started", consumer=self.consumer, batch_size=self.batch_size,
                   flush_interval_s=self.flush_interval, pid=os.getpid())  # fmt: skip
        self._redis_call(self._ensure_group)
        batch = _Batch()
        try:
            # 1. Entries this consumer read before it died, then those of other dead writers.
            cursor = "0"
            while not self.stopping:
                entries = self._redis_call(self._read, cursor, self.batch_size - len(batch), None)
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
                    block = max(1, min(READ_BLOCK_MS, int(remaining * 1000)))
                else:
                    block = READ_BLOCK_MS
                entries = self._redis_call(self._read, ">", self.batch_size - len(batch), block)
                for stream_id, fields in entries or ():
                    batch.add(stream_id, fields)
            if batch:
                batch = self._flush(batch, final=True)
        finally:
            if batch:
                logs.event(log, "writer_batch_left_pending", logging.WARNING, events=len(batch))
            with contextlib.suppress(redis.RedisError):
                self._publish_status(final=True)
            self._close_pg()
            self.redis.close()
            logs.event(log, "writer_stopped", consumer=self.consumer, events_written=self.stats.events_written,
                       batches=self.stats.batches)  # fmt: skip
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

    # -- Redis -------------------------------------------------------------------------------

    def _redis_call(self, fn, *args):
        """Call ``fn``, retrying with backoff while Redis is unreachable (until stopped)."""
        delay = BACKOFF_INITIAL_S
        while True:
            try:
                return fn(*args)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logs.event(log, "writer_redis_unavailable", logging.WARNING, error=str(exc), retry_in_s=delay)
                if self.stop_event.wait(delay):
                    return None
                delay = min(BACKOFF_MAX_S, delay * 2)

    def _ensure_group(self) -> None:
        try:
            # From id 0: events the servers appended before any writer ever ran count too.
            self.redis.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, start: str, count: int, block: int | None) -> list[tuple[str, dict | None]]:
        try:
            reply = self.redis.xreadgroup(
                events.GROUP, self.consumer, {events.STREAM: start}, count=max(1, count), block=block
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or the group was deleted (FLUSHALL, a Redis restart without persistence).
            logs.event(log, "writer_group_recreated", logging.WARNING)
            self._ensure_group()
            return []
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            return list(reply.get(events.STREAM, [[]])[0])
        return list(reply[0][1])

    def _reclaim(self, batch: _Batch) -> _Batch:
        """Take over entries that dead writers read and never acknowledged."""
        cursor = "0-0"
        while not self.stopping:
            reply = self._redis_call(
                self.redis.xautoclaim, events.STREAM, events.GROUP, self.consumer, self.reclaim_idle_ms,
                cursor, self.batch_size,
            )  # fmt: skip
            if not reply:
                break
            cursor, entries = reply[0], reply[1]
            if entries:
                logs.event(log, "writer_reclaimed", entries=len(entries))
            for stream_id, fields in entries:
                if stream_id is None:
                    continue  # Redis 6.2 reports entries deleted while pending as nil
                batch.add(stream_id, fields)
                if len(batch) >= self.batch_size:
                    batch = self._flush(batch)
            if cursor in ("0-0", "0"):
                break
        return batch

    def _ack(self, ids: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for i in range(0, len(ids), 1000):
            pipe.xack(events.STREAM, events.GROUP, *ids[i : i + 1000])
        pipe.execute()
        self._trim()

    def _trim(self) -> None:
        """Drop entries every consumer group is done with, so XLEN is the backlog and Redis memory
        stays small (MAXLEN alone would keep two million written entries)."""
        groups = self.redis.xinfo_groups(events.STREAM)
        if not groups:
            return
        floor = None
        for group in groups:
            candidate = group["last-delivered-id"]
            if group["pending"]:
                oldest = self.redis.xpending(events.STREAM, group["name"])["min"]
                candidate = min(candidate, oldest, key=_id_key)
            floor = candidate if floor is None else min(floor, candidate, key=_id_key)
        if floor and floor != "0-0":
            self.redis.xtrim(events.STREAM, minid=floor, approximate=True)

    def _dead_letter(self, stream_id: str, fields: dict, error: str) -> None:
        entry = {**fields, "_stream_id": stream_id, "_error": error[:500]}
        self.redis.xadd(DEAD_LETTER_STREAM, entry, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        self.stats.events_invalid += 1
        logs.event(log, "writer_event_rejected", logging.WARNING, stream_id=stream_id,
                   event_id=fields.get("id"), error=error[:500])  # fmt: skip

    # -- PostgreSQL --------------------------------------------------------------------------

    def _pg(self) -> psycopg.Connection | None:
        """The connection, (re)opened and migrated on first use; None while PostgreSQL is down.

        Autocommit: every ``conn.transaction()`` of queries.py is then a real transaction.
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
        logs.event(log, "writer_postgres_unavailable", logging.WARNING, error=self.stats.last_error,
                   retry_in_s=retry_in)  # fmt: skip
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

    def _flush(self, batch: _Batch, final: bool = False) -> _Batch:
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
                    result = self._write(conn, batch)
                    break
                except psycopg.OperationalError as exc:
                    self._pg_failed(exc, retry_in=delay)
            if stopping:
                return batch
            self.stop_event.wait(delay)  # a stop request cuts the wait short: one last attempt
            delay = min(BACKOFF_MAX_S, delay * 2)
        for stream_id, fields, error in batch.invalid:
            self._dead_letter(stream_id, fields, error)
        self._redis_call(self._ack, batch.ids)
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
        logs.event(log, "writer_batch", logging.DEBUG, entries=len(batch), applied=result.applied,
                   duplicates=result.duplicates, ms=stats.last_batch_ms)  # fmt: skip
        self._redis_call(self._publish_status)
        return _Batch()

    def _write(self, conn: psycopg.Connection, batch: _Batch) -> queries.BatchResult:
        """Write the batch's presence events, then its alert events."""
        result = self._write_presence(conn, batch)
        if batch.alerts:
            inserted = self._write_alerts(conn, batch, list(batch.alerts.values()))
            result.applied += inserted
            result.duplicates += len(batch.alerts) - inserted
        return result

    def _write_alerts(
        self, conn: psycopg.Connection, batch: _Batch, alerts: list[tuple[str, dict, tuple]]
    ) -> int:
        """Insert alert events (a replayed id changes nothing); one rejected event is dead-lettered
        alone. Returns the events stored for the first time; rejected ones count as stored."""
        try:
            return queries.write_alert_events(conn, [row for _, _, row in alerts])
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            if len(alerts) == 1:
                stream_id, fields, _ = alerts[0]
                batch.invalid.append((stream_id, fields, f"{type(exc).__name__}: {exc}"))
                return 1
        return sum(self._write_alerts(conn, batch, [one]) for one in alerts)

    def _write_presence(self, conn: psycopg.Connection, batch: _Batch) -> queries.BatchResult:
        """Ensure the partitions, then write in one transaction; isolate events PostgreSQL rejects."""
        staged = self._writable(conn, batch)
        if not staged:
            return queries.BatchResult()
        try:
            return queries.write_batch(conn, [s.row for s in staged])
        except psycopg.errors.CheckViolation as exc:
            if "no partition" not in str(exc):
                return self._write_isolating(conn, staged, batch)
            # A partition went away under us (retention by another writer, a DBA): look again.
            self.partitions.forget()
            staged = self._writable(conn, batch)
            return queries.write_batch(conn, [s.row for s in staged])
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            return self._write_isolating(conn, staged, batch)

    def _writable(self, conn: psycopg.Connection, batch: _Batch) -> list[Staged]:
        """The batch's events whose periods are not archived; creates missing partitions."""
        out = []
        days: dict[int, object] = {}
        expired = 0
        for staged in batch.staged.values():
            day_no = staged.table_ms // 86_400_000
            day = days.get(day_no)
            if day is None:
                day = days[day_no] = utc_day(staged.table_ms)
            if not self.partitions.ensure(conn, staged.table, period_start(staged.table, day)):
                expired += 1
                continue
            ledger_day_no = staged.event_ms // 86_400_000
            ledger_day = days.get(ledger_day_no)
            if ledger_day is None:
                ledger_day = days[ledger_day_no] = utc_day(staged.event_ms)
            if not self.partitions.ensure(conn, LEDGER, ledger_day):
                expired += 1
                continue
            # A session event is also counted in its room's minute. That quarter never ends before
            # the session's month, so retention archives it no earlier than the session partition.
            if staged.stats_ms is not None:
                stats_day_no = staged.stats_ms // 86_400_000
                stats_day = days.get(stats_day_no)
                if stats_day is None:
                    stats_day = days[stats_day_no] = utc_day(staged.stats_ms)
                if not self.partitions.ensure(conn, ROOM_STATS, period_start(ROOM_STATS, stats_day)):
                    expired += 1
                    continue
            out.append(staged)
        batch.expired = expired  # counted once the batch is written (this may run again on a retry)
        return out

    def _write_isolating(
        self, conn: psycopg.Connection, staged: list[Staged], batch: _Batch
    ) -> queries.BatchResult:
        """PostgreSQL rejected the batch for its data: split it until the bad events stand alone,
        write the rest, dead-letter those."""
        if len(staged) == 1:
            try:
                return queries.write_batch(conn, [staged[0].row])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                one = staged[0]
                batch.invalid.append(
                    (one.stream_id, one.fields or {"id": one.event_id}, f"{type(exc).__name__}: {exc}")
                )
                return queries.BatchResult()
        half = len(staged) // 2
        total = queries.BatchResult()
        for part in (staged[:half], staged[half:]):
            try:
                result = queries.write_batch(conn, [s.row for s in part])
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                result = self._write_isolating(conn, part, batch)
            total.applied += result.applied
            total.duplicates += result.duplicates
            total.session_rows += result.session_rows
            total.stats_rows += result.stats_rows
        return total

    # -- status ------------------------------------------------------------------------------

    def _publish_status(self, final: bool = False) -> None:
        """Backlog figures, threshold warnings, and the ``spidi:writer:status`` hash."""
        stats = self.stats
        self._next_status = time.monotonic() + STATUS_EVERY_S
        try:
            stats.backlog = self.redis.xlen(events.STREAM)
            summary = self.redis.xpending(events.STREAM, events.GROUP)
            stats.pending = summary["pending"] if summary else 0
        except redis.ResponseError:
            pass
        level = sum(1 for t in BACKLOG_THRESHOLDS if stats.backlog >= t)
        if level > self._backlog_level:
            logs.event(log, "writer_backlog_growing", logging.WARNING, backlog=stats.backlog,
                       threshold=BACKLOG_THRESHOLDS[level - 1], pending=stats.pending)  # fmt: skip
        elif level < self._backlog_level:
            logs.event(log, "writer_backlog_shrinking", backlog=stats.backlog, pending=stats.pending)
        self._backlog_level = level
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


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


# -- entry points ------------------------------------------------------------------------------


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


def start_writer_process(
    settings: Settings,
    redis_url: str,
    dsn: str,
    consumer: str | None = None,
    reclaim_idle_s: float | None = None,
) -> subprocess.Popen:
    """Start the writer as a child process of this one (``spidi serve`` with ``writer = child``).

    The child logs JSON to the same stderr and exits on its own if this process disappears.
    """
    args = [
        sys.executable, "-m", "spidi_server.history.writer",
        "--data-dir", settings.data_dir,
        "--log-level", settings.log_level,
        "--flush-interval", repr(settings.writer_flush_interval_s),
        "--batch-size", str(settings.writer_batch_size),
        "--retention-hot-days", str(settings.retention_hot_days),
        "--retention-drop-days", str(settings.retention_drop_days),
        "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    if consumer:
        args += ["--consumer", consumer]
    if reclaim_idle_s is not None:
        args += ["--reclaim-idle-s", repr(reclaim_idle_s)]
    # URL and DSN through the environment: they may hold passwords, which ps would show.
    env = {**os.environ, "SPIDI_REDIS_URL": redis_url, "SPIDI_POSTGRES_DSN": dsn}
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, env=env)


def stop_writer_process(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM the writer (it flushes its open batch), wait up to ``timeout``, then SIGKILL.

    Killing loses nothing: unacknowledged entries are re-read by the next writer.
    """
    return stop_process(proc, timeout)


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of ``python -m spidi_server.history.writer``."""
    parser = argparse.ArgumentParser(
        prog="python -m spidi_server.history.writer",
        description="Spidi history writer: Redis Stream to PostgreSQL",
    )
    parser.add_argument("--config", help="TOML configuration file (also SPIDI_CONFIG)")
    parser.add_argument("--data-dir", dest="data_dir")
    parser.add_argument("--redis-url", dest="redis_url")
    parser.add_argument("--postgres-dsn", dest="postgres_dsn")
    parser.add_argument("--log-level", dest="log_level")
    parser.add_argument("--flush-interval", dest="writer_flush_interval_s", type=float)
    parser.add_argument("--batch-size", dest="writer_batch_size", type=int)
    parser.add_argument("--retention-hot-days", dest="retention_hot_days", type=int)
    parser.add_argument("--retention-drop-days", dest="retention_drop_days", type=int)
    parser.add_argument("--consumer", help="consumer name in the group (default writer-<hostname>)")
    parser.add_argument(
        "--reclaim-idle-s",
        type=float,
        help="idle time after which another consumer's "
        "pending entries are taken over (default max(300, 10 x flush interval))",
    )
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m spidi_server.history.writer``: run until SIGTERM/SIGINT."""
    args = build_parser().parse_args(argv)
    names = ("data_dir", "redis_url", "postgres_dsn", "log_level", "writer_flush_interval_s",
             "writer_batch_size", "retention_hot_days", "retention_drop_days")  # fmt: skip
    try:
        settings = load_settings(args.config, overrides={n: getattr(args, n) for n in names})
    except ConfigError as exc:  # say it plainly, no traceback
        print(f"spidi writer: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if not settings.redis_url:
        print("spidi writer: --redis-url (or SPIDI_REDIS_URL) is required", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    embedded = None
    dsn = settings.postgres_dsn
    try:
        if not dsn:
            from .embedded_pg import EmbeddedPostgres

            embedded = EmbeddedPostgres(settings.data_path / "postgres")
            dsn = embedded.start()
    except ConfigError as exc:
        print(f"spidi writer: {exc}", file=sys.stderr)
        return 2
    try:
        run_writer(
            settings,
            stop,
            dsn=dsn,
            consumer=args.consumer,
            parent_pid=args.parent_pid,
            reclaim_idle_s=args.reclaim_idle_s,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
