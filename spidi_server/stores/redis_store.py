"""Redis hot state: pipelined writes that nobody awaits, and reads ordered after them.

Writers (the presence layer) call the synchronous ``join`` / ``heartbeat`` / ``leave`` methods;
they only append to in-memory buffers and wake the flusher. One flusher task sends everything
buffered so far as one pipeline, waits for it, then takes the next batch: while a pipeline is in
flight the next one fills, so the batch size grows with load and the round trips do not. Heartbeats
are coalesced per session (only the newest matters) and written per room as one ZADD and one HSET.
Reads go through ``flush()`` first, so they see every write made before them.

A join is the one write whose answer matters: the join script refuses a session when the room
already holds its capacity of sessions of every node, so ``join`` returns a ``PendingJoin`` whose
future the flusher resolves with the script's result. Nothing else is awaited per operation.

Outages: a failed pipeline goes back to the front of the buffer and is retried (backoff up to 1 s).
Past ``buffer_max_ops`` buffered operations the oldest move to a spill file (stores/spill.py) and
come back first, in order, when Redis answers; then the node's live sessions are written again
(``live_sessions``) and sessions Redis lists for the node that it no longer holds are removed
(``is_live``). A marker key, checked once a second, tells a Redis that lost the node's state
without an outage the node saw (FLUSHALL, a quick restart): the sessions are written again too.

``connect`` gives a plain client for ``redis://`` / ``rediss://`` / ``unix://`` URLs and a
``RedisCluster`` for ``redis+cluster://host:port[,host:port...]``. A room's keys share one slot
(``{roomId}`` hash tag) and every script touches one room only, so the same pipelines and scripts
run on both: the cluster pipeline (never transactional) sends each node its own commands, in
order, and SCRIPT LOAD goes to every master.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from typing import NamedTuple
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from .. import logs
from ..errors import ConfigError
from . import events, keys
from .spill import CHUNK_OPS, SpillFile

log = logging.getLogger("spidi.redis")

_MAX_BATCH_OPS = 5_000  # operations per pipeline: a backlog goes out in several (each ≤ ~0.1 s to build)
_BACKOFF_MAX_S = 1.0  # longest wait between two attempts while Redis does not answer
_SPILL_POLL_S = 0.1  # while waiting to retry, the memory buffer is held to its cap this often
_REASSERT_CHUNK = 1_000  # sessions re-asserted between two yields to the event loop
MARKER_CHECK_S = 1.0  # how often the node checks that Redis still holds its marker
MARKER_TTL_MS = 3_600_000  # the marker of a node that died goes away by itself within the hour
# What a failed round trip raises: a RedisError, a socket error, or on a cluster (no node
# reachable, say) a RedisClusterException, which is not a RedisError.
REDIS_FAILURES = (RedisError, OSError, RedisClusterException)

REFUSED = -1  # join.lua's answer when the room is full
_LIMIT_ARG = 8  # index of join.lua's `limit` in the join's ARGV


class LiveSession(NamedTuple):
    """A session the node holds, as re-asserting writes it to Redis (``Presence.live_sessions``)."""

    room_id: str
    tenant: str
    code: str
    capacity: int
    session_id: str
    user_id: str
    beat_ms: int  # the newest heartbeat (the join time if none yet)
    latency_ms: float | None  # the newest reported latency
    ttl_s: int
    fields: dict  # the session hash


class PendingJoin:
    """A join on its way to Redis.

    ``result`` resolves to the room's online count once the join is in Redis, to ``REFUSED``
    when the room was already full (counting every node's sessions), or to None when the script
    failed or the store closed first. ``force`` makes the join unconditional: the caller admitted
    the session without Redis's answer (Redis down or slow) and Redis must then hold it whatever
    its count says.
    """

    __slots__ = ("room_id", "session_id", "tenant", "code", "user_id", "ttl_s", "args", "result", "forced")

    def __init__(self, room_id, session_id, tenant, code, user_id, ttl_s, args, result):
        self.room_id = room_id
        self.session_id = session_id
        self.tenant = tenant
        self.code = code
        self.user_id = user_id
        self.ttl_s = ttl_s
        self.args = args
        self.result: asyncio.Future = result
        self.forced = False

    def force(self) -> None:
        """Admit whatever Redis counts (degraded mode); a refusal already on its way is redone."""
        self.forced = True
        self.args[_LIMIT_ARG] = 0

    def _resolve(self, value) -> None:
        if not self.result.done():
            self.result.set_result(value)


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text()


_SPILLED_KINDS = frozenset({"join", "unindex", "leave", "touch", "event", "publish", "capacity", "marker"})


def _record(op: tuple) -> list:
    """An operation as a JSON-ready list for the spill file (``_op`` is its inverse)."""
    kind = op[0]
    if kind == "join":
        j = op[1]
        return ["join", j.room_id, j.session_id, j.tenant, j.code, j.user_id, j.ttl_s, j.args]
    if kind == "publish":
        payload = op[2]
        return ["publish", op[1], payload.decode() if isinstance(payload, bytes) else payload]
    return list(op)


def _op(record: list, loop: asyncio.AbstractEventLoop) -> tuple:
    """An operation read back from the spill file. A join comes back forced: whoever waited
    for it was answered when it was spilled."""
    if record[0] == "join":
        _, room_id, session_id, tenant, code, user_id, ttl_s, args = record
        j = PendingJoin(room_id, session_id, tenant, code, user_id, ttl_s, args, loop.create_future())
        j.forced = True
        return ("join", j)
    return tuple(record)


def current_hour(now_s: float | None = None) -> str:
    """The hour bucket `peak` is kept for (UTC, ``YYYYMMDDHH``)."""
    return time.strftime("%Y%m%d%H", time.gmtime(now_s if now_s is not None else time.time()))


class HotStore:
    """The presence hot state of every room, in Redis.

    While Redis is unreachable every write stays buffered, in order: in memory up to
    ``buffer_max_ops`` operations, then the oldest in the ``spill`` file (see stores/spill.py);
    heartbeats stay coalesced per session (the newest wins) and are never spilled. Once Redis
    answers again the spill file is replayed first, then the memory buffer, then the node's live
    sessions are written again (re-asserted: Redis may have lost them, or another node may have
    reaped them while this one was cut off) and sessions Redis still lists for this node that it
    no longer holds are removed. A marker key checked every second detects a Redis that lost the
    node's state without the node noticing an outage (FLUSHALL, a quick restart, a failover).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        on_flush=None,
        min_interval_s: float = 0.0,
        node_id: str = "",
        buffer_max_ops: int = 100_000,
        spill: SpillFile | None = None,
    ):
        self.redis = client
        self.node_id = node_id
        self._node_key = keys.node_sessions(node_id)
        self.min_interval_s = min_interval_s
        # Scripts are loaded once and called by sha: redis-py's Script objects would add a
        # SCRIPT EXISTS round trip to every pipeline.
        self._sources = {
            name: _script(f"{name}.lua") for name in ("join", "leave", "room_metrics", "heartbeats")
        }
        self._shas: dict[str, str] = {}
        self._ops: list[tuple] = []
        self._beats: dict[str, dict[str, tuple[int, float]]] = {}
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future] = []
        self._task: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self._closing = False
        self.on_flush = on_flush  # callable(commands, seconds, ok) for metrics
        self.healthy = True
        self.last_error: str | None = None
        # -- outages --
        self.buffer_max_ops = buffer_max_ops
        self.spill = spill
        self.dropped = 0  # operations lost: beyond the memory buffer and not kept on disk
        self.reasserts = 0  # times the live sessions were written to Redis again
        self.live_sessions = None  # callable -> iterable of LiveSession (set by the node)
        self.is_live = None  # callable(session_id) -> bool (set by the node)
        self.marker_key: str | None = None
        self._marker_due = False
        self._reassert_due = False
        self._reassert_reason = ""
        self._outage_since: float | None = None
        self._dropping = False  # inside an episode of dropped operations (logged once)
        self._reconciling: asyncio.Task | None = None
        self._reasserting: asyncio.Task | None = None

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every Lua script (at start, and again if Redis lost them)."""
        for name, source in self._sources.items():
            self._shas[name] = await self.redis.script_load(source)

    def _eval(self, pipe, name: str, script_keys: list[str], args: list) -> None:
        pipeline_evalsha(pipe, self._shas[name], script_keys, args)

    async def start(self) -> None:
        """Check the connection, load the scripts, take over a leftover spill file, start the flusher."""
        await self.redis.ping()
        await self.load_scripts()
        if self.spill is not None:
            found = await asyncio.to_thread(self.spill.recover)
            if found:
                # A process under this node id stopped or died while Redis was away. Its sessions
                # are gone (the liveness reaper ends what Redis lists for it): only its history
                # events are replayed, ahead of everything this process writes.
                logs.event(log, "spill_leftover_found", logging.WARNING, path=str(self.spill.path),
                           records=found)  # fmt: skip
                self._wake.set()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._flusher(), name="spidi-redis-flusher")
        self._ticker = loop.create_task(self._tick(), name="spidi-redis-marker")

    def watch_marker(self, key: str) -> None:
        """Own ``key`` in Redis from now on and check every second that Redis still holds it.

        The key is written with this node's first pipeline and after every re-assert, and only
        by this store; ``SET key XX`` (which also renews its expiry) answers nil once Redis lost it
        (FLUSHALL, a restart without persistence, a failover to a replica that never saw it), and
        the node then writes its live sessions again. One command per second whatever the load,
        nothing per heartbeat, and it notices a loss even in rooms where nobody is heartbeating.
        """
        self.marker_key = key
        self._ops.append(("marker",))
        self._wake.set()

    def unwatch_marker(self) -> None:
        """Stop checking (shutdown: the node is about to give its id up)."""
        self.marker_key = None

    # -- buffered writes (never awaited) ------------------------------------------------------

    def join(
        self,
        room_id: str,
        tenant: str,
        code: str,
        capacity: int,
        session_id: str,
        user_id: str,
        now_ms: int,
        ttl_s: int,
        fields: dict,
    ) -> PendingJoin:
        """Record a session joining a room, with its static metadata, if the room has a place.

        Buffered like every write; the returned ``PendingJoin`` resolves when Redis answered.
        The room is full when it already holds ``capacity`` sessions of any node (0: no limit).
        """
        args = [session_id, now_ms, user_id, current_hour(now_ms / 1000), ttl_s, capacity, code, tenant,
                capacity]  # fmt: skip
        for name, value in fields.items():
            args.append(name)
            args.append("" if value is None else value)
        pending = PendingJoin(room_id, session_id, tenant, code, user_id, ttl_s, args,
                              asyncio.get_running_loop().create_future())  # fmt: skip
        self._ops.append(("join", pending))
        self._wake.set()
        return pending

    def heartbeat(self, room_id: str, session_id: str, now_ms: int, latency_ms: float) -> None:
        """Record a heartbeat; the newest per session wins, written with the next pipeline."""
        beats = self._beats.get(room_id)
        if beats is None:
            beats = self._beats[room_id] = {}
        beats[session_id] = (now_ms, latency_ms)
        self._wake.set()

    def update_session(
        self, room_id: str, session_id: str, tenant: str, user_id: str, ttl_s: int, fields: dict | None = None
    ) -> None:
        """Refresh a session's TTLs, and optionally some of its fields (resume: new ip)."""
        self._ops.append(("touch", room_id, session_id, ttl_s, fields, tenant, user_id))
        self._wake.set()

    def leave(self, room_id: str, session_id: str, tenant: str, user_id: str) -> None:
        """Remove a session from its room."""
        beats = self._beats.get(room_id)
        if beats is not None:
            beats.pop(session_id, None)
        self._ops.append(("leave", room_id, session_id, user_id, tenant))
        self._wake.set()

    def event(self, fields: dict) -> None:
        """Append a history event (see stores/events.py) to the stream, in the next pipeline."""
        self._ops.append(("event", events.encode(fields)))
        self._wake.set()

    def publish(self, channel: str, payload: bytes) -> None:
        """PUBLISH in the next pipeline, after the writes queued before it (readers see them)."""
        self._ops.append(("publish", channel, payload))
        self._wake.set()

    def set_capacity(self, room_id: str, capacity: int) -> None:
        """Record a room's capacity (shown in its metrics)."""
        self._ops.append(("capacity", room_id, capacity))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Operations waiting for the next pipeline."""
        return len(self._ops) + sum(len(b) for b in self._beats.values())

    @property
    def buffered(self) -> int:
        """Operations waiting in memory (heartbeats excluded: one per session at most)."""
        return len(self._ops)

    @property
    def spilled(self) -> int:
        """Operations waiting in the spill file."""
        return self.spill.ops if self.spill is not None else 0

    @property
    def mode(self) -> str:
        """``ok``, ``buffering`` (Redis away, writes in memory), ``spilling`` (... and on disk) or
        ``replaying`` (Redis back, the spill file still being sent)."""
        if self.spilled:
            return "replaying" if self.healthy else "spilling"
        return "ok" if self.healthy else "buffering"

    # -- the flusher ---------------------------------------------------------------------------

    def _build(
        self, pipe, ops: list[tuple], beats: dict, joins: list, check: bool
    ) -> tuple[int, int | None, bool]:
        """Queue ``ops`` and ``beats`` on ``pipe``; returns (command count, index of the marker
        check's reply or None, whether the batch writes the marker). Every command adds one
        reply, so a join's script reply is at the index ``commands`` had when queued: ``joins``
        receives (index, PendingJoin)."""
        commands = 0
        publishes = []
        marks = False
        for op in ops:
            kind = op[0]
            if kind == "join":
                j = op[1]
                room_id, session_id = j.room_id, j.session_id
                joins.append((commands, j))
                self._eval(
                    pipe, "join", [*keys.room_keys(room_id), keys.session(room_id, session_id)], j.args
                )
                pipe.hset(keys.tenant_rooms(j.tenant), room_id, j.code)
                # The user's index lives in its own slot: plain commands, not part of the script.
                # (Written with the join, not after its answer, to save a round trip; a refused
                # join takes them back with an "unindex".)
                user_key = keys.user_sessions(j.tenant, j.user_id)
                pipe.hset(user_key, session_id, room_id)
                pipe.expire(user_key, j.ttl_s)
                # The node's index: what to end if this process dies without a word.
                pipe.hset(self._node_key, session_id, room_id)
                commands += 5
            elif kind == "unindex":
                _, session_id, tenant, user_id = op
                pipe.hdel(keys.user_sessions(tenant, user_id), session_id)
                pipe.hdel(self._node_key, session_id)
                commands += 2
            elif kind == "leave":
                _, room_id, session_id, user_id, tenant = op
                self._eval(pipe, "leave", [*keys.room_keys(room_id), keys.session(room_id, session_id)],
                           [session_id, user_id])  # fmt: skip
                pipe.hdel(keys.user_sessions(tenant, user_id), session_id)
                pipe.hdel(self._node_key, session_id)
                commands += 3
            elif kind == "touch":
                _, room_id, session_id, ttl_s, fields, tenant, user_id = op
                key = keys.session(room_id, session_id)
                if fields:
                    pipe.hset(key, mapping={k: ("" if v is None else v) for k, v in fields.items()})
                    commands += 1
                pipe.expire(key, ttl_s)
                pipe.expire(keys.user_sessions(tenant, user_id), ttl_s)
                commands += 2
            elif kind == "event":
                pipe.xadd(events.STREAM, op[1], maxlen=events.STREAM_MAXLEN, approximate=True)
                commands += 1
            elif kind == "publish":
                publishes.append(op)
            elif kind == "capacity":
                _, room_id, capacity = op
                pipe.hset(keys.room_metrics(room_id), "capacity", capacity)
                commands += 1
            elif kind == "marker" and self.marker_key is not None:
                # After the node's first writes or a re-assert: Redis holds this node's state.
                pipe.set(self.marker_key, self.node_id, px=MARKER_TTL_MS)
                pipe.sadd(keys.NODES, self.node_id)  # FLUSHALL took the node off the reapers' list too
                commands += 2
                marks = True
        for room_id, room_beats in beats.items():
            packed = "\n".join([f"{sid} {b[0]} {b[1]}" for sid, b in room_beats.items()])
            self._eval(pipe, "heartbeats", [keys.room_online(room_id), keys.room_latency(room_id)], [packed])
            commands += 1
        # Announcements last: whoever hears one and reads Redis sees every write it announces.
        for _, channel, payload in publishes:
            pipeline_publish(pipe, channel, payload)
            commands += 1
        marker_at = None
        if check and self.marker_key is not None:
            # Last, so a marker written earlier in this very batch counts: nil means Redis lost it.
            marker_at = commands
            pipe.set(self.marker_key, self.node_id, xx=True, px=MARKER_TTL_MS)
            commands += 1
        return commands, marker_at, marks

    async def _flusher(self) -> None:
        backoff = 0.05
        last = 0.0
        while True:
            await self._wake.wait()
            replaying = self.spilled > 0
            if not self.healthy or replaying:
                await self._spill_excess()
            # Let a few milliseconds of writes gather: a pipeline costs the same Python work for
            # 2 commands as for 200 heartbeats coalesced into them. A flush() caller, the close and
            # a replay do not wait.
            pause = self.min_interval_s - (time.monotonic() - last)
            if pause > 0 and not self._waiters and not self._closing and not replaying:
                await asyncio.sleep(pause)
            last = time.monotonic()
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            spill_read = None
            if replaying:
                # The spill file holds the oldest writes: all of it goes before anything in memory.
                ops, spill_read = await self._read_spill()
                beats: dict = {}
            else:
                ops, beats = self._take()
            check = self._marker_due and self.marker_key is not None and not self._closing
            self._marker_due = False
            drained = spill_read is None and not self._ops and not self._beats
            ok = True
            if ops or beats or check:
                started = time.perf_counter()
                pipe = self.redis.pipeline(transaction=False)
                commands = 0
                joins: list = []
                try:
                    commands, marker_at, marks = self._build(pipe, ops, beats, joins, check)
                    results = await pipe.execute(raise_on_error=False)
                    errors = [r for r in results if isinstance(r, Exception)]
                    if any(isinstance(e, NoScriptError) for e in errors):
                        # Redis restarted and lost the scripts: load them, replay the batch
                        # (joins and leaves are idempotent, heartbeats carry absolute values).
                        await self.load_scripts()
                        raise NoScriptError("scripts reloaded; replaying the batch")
                    if errors:
                        log.error(
                            "redis pipeline: %d of %d commands failed: %s", len(errors), commands, errors[0]
                        )
                    self.healthy, self.last_error, backoff = True, None, 0.05
                    if spill_read is not None:
                        self._consume_spill(spill_read)
                    if self._outage_since is not None:
                        self._reconnected()
                    if marker_at is not None and results[marker_at] is None:
                        self._request_reassert("marker_lost")
                    if joins:
                        self._answer_joins(joins, results)
                        # What the admitted HELLOs write next (their history events) goes out
                        # without the pause, as it did when it travelled with the join.
                        last = 0.0
                    if marks:
                        self._start_reconcile()
                    if self._reassert_due:
                        self._queue_reassert()
                except REDIS_FAILURES as exc:
                    ok = False
                    self.healthy, self.last_error = False, str(exc)
                    if self._outage_since is None:
                        self._outage_since = time.monotonic()
                        logs.event(log, "redis_unreachable", logging.WARNING, error=str(exc))
                    log.error("redis pipeline failed (%d commands), will retry: %s", commands, exc)
                    self._marker_due = True  # ask at once whether Redis kept our state
                    if spill_read is None:
                        self._requeue(ops, beats)
                    # (a spill chunk stays in the file and is read again)
                except Exception:
                    # A bug, not an outage: retrying the same batch would fail forever. Drop it
                    # loudly and keep the flusher alive for everything after it.
                    log.exception("redis pipeline raised unexpectedly; %d commands dropped", commands)
                    for op in ops:
                        if op[0] == "join":
                            op[1]._resolve(None)
                    if spill_read is not None:
                        self._consume_spill(spill_read)
                    self.dropped += len(ops)
                if self.on_flush is not None:
                    self.on_flush(commands, time.perf_counter() - started, ok)
            elif spill_read is not None:
                self._consume_spill(spill_read)  # nothing in that chunk to send (all skipped)
            if not ok and not self._closing:
                # The waiters of this batch wait for its retry.
                self._waiters[:0] = waiters
                await self._wait_to_retry(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                self._wake.set()
                continue
            if ok and not drained:
                # More was queued before these waiters than one batch carries: they wait for it.
                self._waiters[:0] = waiters
                self._wake.set()
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(ok)
            if self._closing and (not ok or (not self._ops and not self._beats)):
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(ok)
                for op in self._ops:
                    if op[0] == "join":
                        op[1]._resolve(None)
                return

    def _take(self) -> tuple[list[tuple], dict]:
        """The next batch from memory: at most ``_MAX_BATCH_OPS`` operations, and the heartbeats
        only with the last part of a backlog (a heartbeat's ZADD XX needs its session's join)."""
        if len(self._ops) > _MAX_BATCH_OPS:
            ops = self._ops[:_MAX_BATCH_OPS]
            del self._ops[:_MAX_BATCH_OPS]
            return ops, {}
        ops, self._ops = self._ops, []
        beats, self._beats = self._beats, {}
        return ops, beats

    def _answer_joins(self, joins: list, results: list) -> None:
        """Resolve each join with its script's reply; undo the indexes of refused ones."""
        redo = []
        for index, j in joins:
            reply = results[index]
            if isinstance(reply, Exception):
                j._resolve(None)  # logged with the pipeline's errors; the caller decides
            elif int(reply) != REFUSED:
                j._resolve(int(reply))
            elif j.forced:
                # Admitted without Redis's answer (it came too late): Redis must hold the
                # session anyway. Ahead of what was queued since, so a LEAVE stays after it.
                redo.append(("join", j))
            else:
                j._resolve(REFUSED)
                self._ops.append(("unindex", j.session_id, j.tenant, j.user_id))
        if redo:
            self._ops[:0] = redo
        if self._ops:
            self._wake.set()

    def _requeue(self, ops: list[tuple], beats: dict) -> None:
        """Put a failed batch back in front of what arrived since, newest heartbeat winning."""
        self._ops[:0] = ops
        for room_id, room_beats in beats.items():
            merged = dict(room_beats)
            merged.update(self._beats.get(room_id, {}))
            self._beats[room_id] = merged

    # -- outages -------------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Once a second: have the next pipeline check the marker (one is sent if none is due)."""
        while True:
            await asyncio.sleep(MARKER_CHECK_S)
            if self.marker_key is not None:
                self._marker_due = True
                self._wake.set()

    async def _wait_to_retry(self, seconds: float) -> None:
        """Sleep before the next attempt, moving what passes the memory cap to the spill file."""
        deadline = time.monotonic() + seconds
        while not self._closing:
            await self._spill_excess()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(_SPILL_POLL_S, left))

    async def _spill_excess(self) -> None:
        """Past ``buffer_max_ops``: the oldest operations go to the spill file, down to half the
        cap (so it is written in chunks, not one operation at a time). Only between pipelines:
        a batch in flight may come back to the front of the memory buffer."""
        if len(self._ops) <= self.buffer_max_ops:
            return
        count = len(self._ops) - self.buffer_max_ops // 2
        chunk = self._ops[:count]
        del self._ops[:count]
        await self._spill_ops(chunk)

    async def _spill_ops(self, ops: list[tuple]) -> None:
        """Move ``ops`` (the oldest buffered) to the spill file; what it cannot keep is dropped."""
        for op in ops:
            if op[0] == "join":
                # Whoever waits for this join learns it was not answered and admits on the local
                # count (degraded mode); Redis must then hold it whatever its count says.
                op[1].force()
                op[1]._resolve(None)
        kept = 0
        if self.spill is not None:
            records = [_record(op) for op in ops]
            for i in range(0, len(records), CHUNK_OPS):
                try:
                    kept += await asyncio.to_thread(self.spill.append, records[i : i + CHUNK_OPS])
                except Exception:  # a bug here must not stop the flusher: count the chunk as lost
                    log.exception("spill append raised unexpectedly")
        if kept < len(ops):
            self._drop(len(ops) - kept)

    def _drop(self, count: int) -> None:
        """``count`` operations are lost for good (counted); Redis is rebuilt once it answers."""
        self.dropped += count
        self._request_reassert("operations_dropped")
        if not self._dropping:
            self._dropping = True
            logs.event(log, "redis_ops_dropped", logging.ERROR, dropped=count, buffer_max_ops=self.buffer_max_ops,
                       spill=str(self.spill.path) if self.spill is not None else None,
                       spill_error=self.spill.last_error if self.spill is not None else None)  # fmt: skip

    async def _read_spill(self) -> tuple[list[tuple], tuple[int, int]]:
        """The next chunk of the spill file as operations, and what to consume once it is sent."""
        try:
            records, offset, lines, leftover = await asyncio.to_thread(self.spill.read, CHUNK_OPS)
        except OSError as exc:  # the file went away under us: what it held is lost
            logs.event(log, "spill_read_failed", logging.ERROR, path=str(self.spill.path), error=str(exc))
            self._drop(self.spill.ops)
            self.spill.remove()
            return [], (0, 0)
        if not lines:  # counted records the file does not hold (cut short underneath us)
            logs.event(log, "spill_read_failed", logging.ERROR, path=str(self.spill.path), error="truncated")
            self._drop(self.spill.ops)
            self.spill.remove()
            return [], (0, 0)
        loop = asyncio.get_running_loop()
        ops = []
        bad = lines - len(records)  # torn or unreadable lines
        for record in records:
            if not isinstance(record, list) or not record or record[0] not in _SPILLED_KINDS:
                bad += 1  # not a record this code wrote
            elif not leftover or record[0] == "event":
                # (a leftover's state writes belong to a process that is gone: its sessions were reaped)
                try:
                    ops.append(_op(record, loop))
                except (TypeError, ValueError):
                    bad += 1
        if bad:
            self._drop(bad)
        return ops, (offset, lines)

    def _consume_spill(self, read: tuple[int, int]) -> None:
        offset, lines = read
        if self.spill is None or not lines:
            return
        self.spill.consume(offset, lines)
        if not self.spill.ops:
            logs.event(
                log, "spill_replayed", path=str(self.spill.path), spilled_total=self.spill.spilled_total
            )

    def _reconnected(self) -> None:
        down_s = time.monotonic() - self._outage_since
        self._outage_since = None
        self._dropping = False
        # Redis may have lost what this node wrote (a restart without persistence) or another
        # node may have reaped this node's sessions while it was cut off: write them again.
        self._request_reassert("reconnected")
        logs.event(log, "redis_reconnected", down_s=round(down_s, 3), buffered=len(self._ops),
                   spilled=self.spilled, dropped=self.dropped)  # fmt: skip

    def _request_reassert(self, reason: str) -> None:
        if not self._reassert_due:
            self._reassert_reason = reason
        self._reassert_due = True

    def _queue_reassert(self) -> None:
        """Start writing the live sessions again, unless that is already under way (then once
        it is done: the flag stays up)."""
        if self._reasserting is not None and not self._reasserting.done():
            return
        self._reassert_due = False
        if self.live_sessions is None:
            return
        self._reasserting = asyncio.get_running_loop().create_task(self._reassert(self._reassert_reason))

    async def _reassert(self, reason: str) -> None:
        """Queue every live session's join (unconditional), newest heartbeat and latency, then the
        marker, behind everything buffered so far.

        In chunks, yielding to the loop between them (50,000 sessions must not stall heartbeats
        for a second). Still in order: each chunk shows its sessions as they are when it is
        queued, a session that ends later has its LEAVE queued after its join here, and one that
        starts later has its own join queued (a second join changes nothing).
        """
        loop = asyncio.get_running_loop()
        hour = current_hour()
        count = 0
        for s in self.live_sessions():
            # The join script with the newest heartbeat as its time and no limit: it restores the
            # online score, the session hash, the users count, the peak and the indexes.
            args = [s.session_id, s.beat_ms, s.user_id, hour, s.ttl_s, s.capacity, s.code, s.tenant, 0]
            for name, value in s.fields.items():
                args.append(name)
                args.append("" if value is None else value)
            j = PendingJoin(s.room_id, s.session_id, s.tenant, s.code, s.user_id, s.ttl_s, args,
                            loop.create_future())  # fmt: skip
            j.forced = True
            self._ops.append(("join", j))
            if s.latency_ms is not None:
                room_beats = self._beats.get(s.room_id)
                if room_beats is None:
                    room_beats = self._beats[s.room_id] = {}
                room_beats.setdefault(s.session_id, (s.beat_ms, s.latency_ms))  # a newer one stays
            count += 1
            if count % _REASSERT_CHUNK == 0:
                self._wake.set()
                await asyncio.sleep(0)
        self._ops.append(("marker",))
        self.reasserts += 1
        logs.event(log, "sessions_reasserted", logging.WARNING, sessions=count, reason=reason)
        self._wake.set()

    def _start_reconcile(self) -> None:
        if self.is_live is None or (self._reconciling is not None and not self._reconciling.done()):
            return
        self._reconciling = asyncio.get_running_loop().create_task(self._reconcile())

    async def _reconcile(self) -> None:
        """End, in Redis, the sessions it lists for this node that the node no longer holds
        (their LEAVE was dropped while Redis was away)."""
        try:
            index = await self.redis.hgetall(self._node_key)
            stale = [
                (_text(sid), _text(room_id)) for sid, room_id in index.items() if not self.is_live(_text(sid))
            ]
            if not stale:
                return
            pipe = self.redis.pipeline(transaction=False)
            for sid, room_id in stale:
                pipe.hmget(keys.session(room_id, sid), "userId", "tenant")
            infos = await pipe.execute()
        except REDIS_FAILURES as exc:
            logs.event(log, "reconcile_failed", logging.WARNING, error=str(exc))
            return
        removed = 0
        for (sid, room_id), (user_id, tenant) in zip(stale, infos, strict=True):
            if self.is_live(sid):
                continue  # admitted while we read
            self.leave(room_id, sid, _text(tenant or ""), _text(user_id or ""))
            removed += 1
        if removed:
            logs.event(log, "ghost_sessions_removed", logging.WARNING, sessions=removed)

    async def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything buffered before this call is in Redis. True on success."""
        if self._task is None or self._task.done():
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (bounded by ``timeout``), stop the flusher, close the client.

        History events Redis did not take in time go to the spill file: the next start under the
        same node id replays them.
        """
        if self._task is not None:
            await self.flush(timeout)
            self._closing = True
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, 1.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        tasks = [
            t for t in (self._ticker, self._reconciling, self._reasserting) if t is not None and not t.done()
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left, self._ops = self._ops, []
        if left and self.spill is not None:
            kept = [op for op in left if op[0] == "event"]
            await self._spill_ops(kept)
            logs.event(log, "spill_kept_for_next_start", logging.WARNING, path=str(self.spill.path),
                       events=len(kept), lost=len(left) - len(kept))  # fmt: skip
        if self.spill is not None:
            self.spill.close()
        await self.redis.aclose()

    # -- reads ---------------------------------------------------------------------------------

    async def room_metrics(self, room_ids: list[str]) -> list[dict]:
        """Metrics of each room as Redis holds them (every node's sessions), in input order."""
        if not room_ids:
            return []
        await self.flush(2.0)
        hour = current_hour()
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for room_id in room_ids:
                self._eval(pipe, "room_metrics", keys.room_keys(room_id), [hour])
            try:
                replies = await pipe.execute()
                break
            except NoScriptError:
                # A restarted Redis, or a cluster replica promoted without our scripts.
                if attempt:
                    raise
                await self.load_scripts()
        out = []
        for room_id, raw in zip(room_ids, replies, strict=True):
            online, users, peak, capacity, lat_sum, lat_n, code, tenant = raw
            lat_sum = float(lat_sum)
            out.append(
                {
                    "roomId": room_id,
                    "roomCode": _text(code),
                    "tenant": _text(tenant),
                    "online": int(online),
                    "users": int(users),
                    "peak": int(peak),
                    "capacity": int(capacity),
                    "avgLatencyMs": round(lat_sum / lat_n, 1) if lat_n else 0.0,
                }
            )
        return out

    async def room_online(self, room_id: str) -> int:
        """Sessions in a room across every node."""
        await self.flush(2.0)
        return int(await self.redis.zcard(keys.room_online(room_id)))

    async def roster(self, room_id: str) -> list[dict]:
        """Every session of a room with its metadata, latency and last heartbeat."""
        await self.flush(2.0)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(keys.room_online(room_id), 0, -1, withscores=True)
        pipe.hgetall(keys.room_latency(room_id))
        members, latencies = await pipe.execute()
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for sid, _ in members:
            pipe.hgetall(keys.session(room_id, _text(sid)))
        infos = await pipe.execute()
        latencies = {_text(k): float(v) for k, v in latencies.items()}
        out = []
        for (sid, score), info in zip(members, infos, strict=True):
            sid = _text(sid)
            entry = {_text(k): _text(v) for k, v in info.items()}
            entry["sessionId"] = sid
            entry["latencyMs"] = latencies.get(sid)
            entry["lastHeartbeatAt"] = int(score)
            if "connectedAt" in entry:
                entry["connectedAt"] = int(entry["connectedAt"])
            out.append(entry)
        return out

    async def user_sessions(self, tenant: str, user_id: str) -> list[dict]:
        """Every live session of a user, across rooms and nodes, with latency and last heartbeat."""
        await self.flush(2.0)
        index = await self.redis.hgetall(keys.user_sessions(tenant, user_id))
        if not index:
            return []
        pairs = [(_text(sid), _text(room_id)) for sid, room_id in index.items()]
        pipe = self.redis.pipeline(transaction=False)
        for sid, room_id in pairs:
            pipe.hgetall(keys.session(room_id, sid))
            pipe.hget(keys.room_latency(room_id), sid)
            pipe.zscore(keys.room_online(room_id), sid)
        raw = await pipe.execute()
        out = []
        for i, (sid, room_id) in enumerate(pairs):
            info, latency, score = raw[3 * i : 3 * i + 3]
            if not info or score is None:
                continue  # ended between the two reads, or a stale index entry
            entry = {_text(k): _text(v) for k, v in info.items()}
            entry.update(sessionId=sid, roomId=room_id, lastHeartbeatAt=int(score),
                         latencyMs=float(latency) if latency is not None else None)  # fmt: skip
            if "connectedAt" in entry:
                entry["connectedAt"] = int(entry["connectedAt"])
            out.append(entry)
        return out

    async def tenant_rooms(self, tenant: str) -> dict[str, str]:
        """roomId -> roomCode for every room of a tenant that ever had a session."""
        await self.flush(2.0)
        raw = await self.redis.hgetall(keys.tenant_rooms(tenant))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def ping(self) -> bool:
        """Whether Redis answers within a second (on a cluster: every node)."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (*REDIS_FAILURES, TimeoutError):
            return False


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return url.startswith(CLUSTER_SCHEMES)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict]:
    """``redis+cluster://[user:password@]host:port[,host:port...]`` -> seed nodes and the
    connection options every node shares (credentials, TLS). A cluster has only database 0."""
    if not is_cluster_url(url):
        raise ConfigError(f"redis_url: not a redis+cluster:// URL: {url!r}")
    scheme, rest = url.split("://", 1)
    rest = rest.split("?", 1)[0].split("/", 1)[0]
    options: dict = {"ssl": scheme == "rediss+cluster"}
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    nodes = []
    for part in rest.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"redis_url: {part!r} is not host:port in {url!r}")
        nodes.append((host, int(port)))
    return nodes, options


def connect(url: str) -> aioredis.Redis | RedisCluster:
    """A redis-py asyncio client (hiredis parser when installed) for ``url``.

    ``redis+cluster://`` URLs give a ``RedisCluster`` seeded with every listed node; it learns
    the slot map from them and follows MOVED/ASK redirections by itself.
    """
    if is_cluster_url(url):
        nodes, options = parse_cluster_url(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            socket_connect_timeout=2.0,
            **options,
        )
    return aioredis.Redis.from_url(url, socket_connect_timeout=2.0, health_check_interval=0)


def connect_sync(url: str, **kwargs) -> redis.Redis | redis.cluster.RedisCluster:
    """The synchronous twin of ``connect`` (the history writer), with extra client options."""
    if is_cluster_url(url):
        from redis.cluster import ClusterNode as SyncClusterNode
        from redis.cluster import RedisCluster as SyncRedisCluster

        nodes, options = parse_cluster_url(url)
        return SyncRedisCluster(
            startup_nodes=[SyncClusterNode(host, port) for host, port in nodes], **options, **kwargs
        )
    return redis.Redis.from_url(url, **kwargs)


# redis-py refuses the ``evalsha`` and ``publish`` methods on a cluster pipeline (its list of
# commands it cannot route), yet routes the raw commands correctly: EVALSHA by its keys, PUBLISH by
# its channel as if it were a key. Both helpers queue the raw command, on plain pipelines too.


def pipeline_evalsha(pipe, sha: str, script_keys: list[str], args: list) -> None:
    """Queue EVALSHA on ``pipe``, a plain or a cluster pipeline (the keys pick the node)."""
    pipe.execute_command("EVALSHA", sha, len(script_keys), *script_keys, *args)


def pipeline_publish(pipe, channel: str, payload) -> None:
    """Queue a PUBLISH on ``pipe``, a plain or a cluster pipeline.

    On a cluster ``spidi:roster:{roomId}`` goes to the room's own master, after the room's writes
    of the same pipeline, and a classic PUBLISH reaches the subscribers of every node.
    """
    pipe.execute_command("PUBLISH", channel, payload)


def is_cluster(client) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


_NODE_OPTIONS = ("username", "password", "ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile",
                 "ssl_keyfile", "socket_connect_timeout", "socket_keepalive")  # fmt: skip


async def pubsub_client(client, attempt: int = 0) -> aioredis.Redis:
    """The client to SUBSCRIBE with: ``client`` itself, or on a cluster a plain client of one
    node (the ``attempt``-th, so a caller whose node went away moves on to the next).

    Classic PUBLISH reaches the subscribers of every node of a cluster, so one connection to any
    node hears every channel; a plain client keeps redis-py's ordinary PubSub, with its
    reconnect and resubscribe, instead of the cluster's per-slot routing of channels.
    """
    if not is_cluster(client):
        return client
    await client.initialize()
    nodes = sorted(client.get_nodes(), key=lambda n: n.name)
    node = nodes[attempt % len(nodes)]
    options = {k: v for k, v in node.connection_kwargs.items() if k in _NODE_OPTIONS}
    if issubclass(node.connection_class, SSLConnection):  # how the cluster client records TLS
        options["ssl"] = True
    return aioredis.Redis(host=node.host, port=node.port, **options)
