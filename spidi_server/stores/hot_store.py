"""Redis hot state, the write side: pipelined writes that nobody awaits, and reads ordered after them.

Writers (the presence layer) call the synchronous ``join`` / ``heartbeat`` / ``leave`` methods;
they only append to in-memory buffers and wake the flusher. One flusher task sends everything
buffered so far as one pipeline, waits for it, then takes the next batch: while a pipeline is in
flight the next one fills, so the batch size grows with load and the round trips do not. Heartbeats
are coalesced per session (only the newest matters) and written per room as one ZADD XX and one
HSET, their arguments packed in C by the node's heartbeat lane; where they wait and when they
wake the flusher (the node's heartbeat lane, looked at every flush interval, so a heartbeat never
wakes anything by itself) is stores/beat_buffer.py's.
Reads (stores/reads.py) go through ``flush()`` first, so they see every write made before them.

A join is the one write whose answer matters: the join script refuses a session when the room
already holds its capacity of sessions of every node, so ``join`` returns a ``PendingJoin``
(stores/joins.py) whose future the flusher resolves with the script's result. Nothing else is
awaited per operation.

A failed pipeline goes back to the front of the buffer and is retried (backoff up to 1 s); one
unanswered after ``timeout_s`` (a hung Redis) counts as an outage while its reply is awaited; past
``buffer_max_ops`` the oldest operations go to the spill file. What happens then, and when Redis
answers again or turns out to have lost the node's state, is stores/recovery.py's job: the store
owns one ``Recovery`` and tells it how each pipeline went. What each buffered operation sends is
stores/commands.py's, connections and the cluster pipeline helpers are stores/client.py's, the Lua
scripts stores/scripts.py's. What is left here is one job, the write buffer and the one task that
empties it; it runs past 500 lines because the flusher's retry, waiter and close paths all work
on that buffer and read best together.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import events, handoff, reads
from .beat_buffer import BeatBuffer, BeatSource, PackedBeats
from .client import DEFAULT_TIMEOUT_S, REDIS_FAILURES, RedisFull, out_of_memory
from .commands import build
from .joins import REFUSED, LiveSession, PendingJoin
from .lean_pipeline import pipelines
from .recovery import Recovery
from .scripts import Scripts, current_hour, join_args
from .spill import SpillFile

log = logging.getLogger("spidi.redis")

# Operations per pipeline: a backlog goes out in several. Building one holds the event loop
# (redis-py encodes every argument in Python: ~50 µs for a history event's XADD on a busy host),
# so 5,000 held it 250 ms when a checkpoint pass queued 10,000 events; 250 hold it ~10 ms, and
# the drain rate stays the same (the round trips overlap the next batch's writes).
_MAX_BATCH_OPS = 250
# The most bytes of late heartbeats (rooms nobody watches) one batch carries; the rest follow in
# the next batches, at once. A batch is written in one go and its replies awaited: at 100,000
# heartbeats/s every room's heartbeats made ~1 MB, which the socket took in ~300 KB parts, each
# written once Redis had read the last (100-200 ms), and a HELLO's join waited behind all of it.
# In parts of about what the socket takes at once, joins and announcements go between them.
_LATE_PART_BYTES = 256 * 1024
_BACKOFF_MAX_S = 1.0  # longest wait between two attempts while Redis does not answer
_SPILL_POLL_S = 0.1  # while waiting to retry, the memory buffer is held to its cap this often


def _late_part(late: dict[str, PackedBeats], limit: int) -> tuple[dict, dict]:
    """(the first rooms of ``late`` up to ``limit`` bytes, at least one; the others)."""
    part: dict[str, PackedBeats] = {}
    rest: dict[str, PackedBeats] = {}
    size = 0
    for room_id, packed in late.items():
        if rest or (part and size + len(packed.members) + len(packed.latencies) > limit):
            rest[room_id] = packed
        else:
            part[room_id] = packed
            size += len(packed.members) + len(packed.latencies)
    return part, rest


def _carries_presence(ops: list[tuple]) -> bool:
    """Whether ``ops`` hold a join or an announcement: what a presence change shown waits for."""
    return any(op[0] == "join" or op[0] == "publish" for op in ops)


class _HangWatch:
    """The spilling that goes on while a batch awaited in the flusher's task hangs
    (``HotStore._execute_now``)."""

    __slots__ = ("task", "hung", "spilling")

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.hung = True  # until the reply comes
        self.spilling = False  # inside _spill_excess: operations between memory and the file

    async def stop(self) -> None:
        """The reply came (or the flusher is cancelled): stop spilling, never halfway through a
        chunk (taken from memory, not yet in the file)."""
        self.hung = False
        task = self.task
        if task is None or task.done():
            return
        if self.spilling:
            await asyncio.shield(task)  # it ends after this chunk
        else:
            task.cancel()


class _ScriptsReloaded(Exception):
    """A pipeline met NOSCRIPT and the scripts are loaded again: replay the batch (the flusher)."""


class HotStore:
    """The presence hot state of every room, in Redis.

    While Redis is unreachable every write stays buffered, in order: in memory up to
    ``buffer_max_ops`` operations, then the oldest in the ``spill`` file (see stores/spill.py);
    heartbeats stay coalesced per session (the newest wins) and are never spilled. Once Redis
    answers again the spill file is replayed first, then the memory buffer, then the node's live
    sessions are written again (see stores/recovery.py).
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
        timeout_s: float = DEFAULT_TIMEOUT_S,
        beat_interval_s: float = 0.0,
    ):
        self.redis = client
        # The longest a pipeline may take; past it Redis is hung, and that is an outage.
        self.timeout_s = timeout_s
        self.node_id = node_id
        self.min_interval_s = min_interval_s
        self.scripts = Scripts(client)
        # What the flusher's pipelines are and how they are sent (stores/lean_pipeline.py).
        self.pipelines = pipelines(client)
        self._ops: list[tuple] = []
        # Late heartbeats taken but not sent yet (beyond _LATE_PART_BYTES): the next batches' first.
        self._late_rest: dict[str, PackedBeats] = {}
        # The heartbeats: kept here or in the sources, and when they wake the flusher.
        self.beats = BeatBuffer(min_interval_s, beat_interval_s)
        self._beat_watch: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future] = []
        self._task: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self._closing = False
        self.on_flush = on_flush  # callable(commands, seconds, ok) for metrics
        self.healthy = True
        self.grade_ages_ms: tuple[float, float] | None = None  # see reads.Source
        self.last_error: str | None = None
        # -- outages --
        self.buffer_max_ops = buffer_max_ops
        self.spill = spill
        self.dropped = 0  # operations lost: beyond the memory buffer and not kept on disk
        self.live_sessions = None  # callable -> iterable of LiveSession (set by the node)
        self.is_live = None  # callable(session_id) -> bool (set by the node)
        self.marker_key: str | None = None
        self.recovery = Recovery(self)

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every Lua script (at start, and again if Redis lost them)."""
        await self.scripts.load()

    async def start(self) -> None:
        """Check the connection, load the scripts, take over a leftover spill file, start the flusher."""
        await self.redis.ping()
        await self.load_scripts()
        if await self.recovery.take_over_spill():
            self._wake.set()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._flusher(), name="spidi-redis-flusher")
        self._beat_watch = loop.create_task(self.beats.watch(self._wake), name="spidi-redis-beats")
        self._ticker = loop.create_task(self.recovery.tick(), name="spidi-redis-marker")

    def add_beat_source(self, source: BeatSource) -> None:
        """Drain ``source``'s heartbeats with every pipeline (a presence's lane)."""
        self.beats.add_source(source)

    def watch_marker(self, key: str) -> None:
        """Own ``key`` in Redis from now on and check every second that Redis still holds it.

        The key is written with this node's first pipeline and after every re-assert, and only
        by this store; ``SET key XX`` (which also renews its expiry) answers nil once Redis lost it
        (FLUSHALL, a restart without persistence, a failover to a replica that never saw it), and
        the node then writes its live sessions again. One command per second whatever the load,
        nothing per heartbeat, and it notices a loss even in rooms where nobody is heartbeating.
        """
        self.marker_key = key
        self.queue_marker()

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
        args = join_args(
            session_id,
            now_ms,
            user_id,
            current_hour(now_ms / 1000),
            ttl_s,
            capacity,
            code,
            tenant,
            capacity,
            fields,
        )
        pending = self._pending_join(room_id, session_id, tenant, code, user_id, ttl_s, args)
        self._ops.append(("join", pending))
        self._wake.set()
        return pending

    def heartbeat(self, room_id: str, session_id: str, now_ms: int, latency_ms: float) -> None:
        """Record a heartbeat; the newest per session wins, written with the next pipeline."""
        self.beats.put(room_id, session_id, now_ms, latency_ms)
        self._wake.set()

    def update_session(
        self, room_id: str, session_id: str, tenant: str, user_id: str, ttl_s: int, fields: dict | None = None
    ) -> None:
        """Refresh a session's TTLs, and optionally some of its fields (resume: new ip)."""
        self._ops.append(("touch", room_id, session_id, ttl_s, fields, tenant, user_id))
        self._wake.set()

    def hand_over(self, room_id: str, session_id: str, deadline_ms: int, ttl_s: int) -> None:
        """A graceful stop: leave the session to whoever resumes it by ``deadline_ms`` (epoch ms),
        any node (``stores.handoff``)."""
        self._ops.append(("handoff", room_id, session_id, deadline_ms, ttl_s))
        self._wake.set()

    def index_session(self, room_id: str, session_id: str) -> None:
        """List a session taken over from another process in this node's index."""
        self._ops.append(("index", room_id, session_id))
        self._wake.set()

    async def handed_over(self, room_id: str, session_id: str) -> dict | None:
        """The session if a stopped node handed it over (``handoff.handed_over``)."""
        return await handoff.handed_over(self.redis, room_id, session_id)

    async def claim_handover(self, room_id: str, session_id: str) -> bool:
        """Take a handed-over session: True for the one claim that wins (``handoff.claim``)."""
        return await handoff.claim(self.redis, room_id, session_id)

    def leave(self, room_id: str, session_id: str, tenant: str, user_id: str, empty_ttl_s: int = 0) -> None:
        """Remove a session from its room; the room's live state expires ``empty_ttl_s`` after it
        empties (0: the rooms sweep sets it, room_index.py)."""
        self.beats.drop(room_id, session_id)
        self._ops.append(("leave", room_id, session_id, user_id, tenant, empty_ttl_s))
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

    @staticmethod
    def _pending_join(
        room_id: str, session_id: str, tenant: str, code: str, user_id: str, ttl_s: int, args: list
    ) -> PendingJoin:
        future = asyncio.get_running_loop().create_future()
        return PendingJoin(room_id, session_id, tenant, code, user_id, ttl_s, args, future)

    # -- what recovery queues (stores/recovery.py) ---------------------------------------------

    def forced_join(
        self, room_id: str, session_id: str, tenant: str, code: str, user_id: str, ttl_s: int, args: list
    ) -> PendingJoin:
        """A join Redis must hold whatever its count says (replayed or re-asserted): nobody waits for it."""
        j = self._pending_join(room_id, session_id, tenant, code, user_id, ttl_s, args)
        j.forced = True
        return j

    def rejoin(self, session: LiveSession, hour: str) -> None:
        """Queue a live session's join again (unconditional), with its newest heartbeat and latency."""
        s = session
        # The join script with the newest heartbeat as its time and no limit: it restores the
        # online score, the session hash, the users count, the peak and the indexes.
        args = join_args(
            s.session_id, s.beat_ms, s.user_id, hour, s.ttl_s, s.capacity, s.code, s.tenant, 0, s.fields
        )
        self._ops.append(
            ("join", self.forced_join(s.room_id, s.session_id, s.tenant, s.code, s.user_id, s.ttl_s, args))
        )
        if s.latency_ms is not None:
            self.beats.put_unless_newer(s.room_id, s.session_id, s.beat_ms, s.latency_ms)  # a newer one stays

    def queue_marker(self) -> None:
        """Write the marker with the next pipeline: Redis holds this node's state from then on."""
        self._ops.append(("marker",))
        self._wake.set()

    def wake(self) -> None:
        """Have the flusher send what is buffered."""
        self._wake.set()

    # -- state ---------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Operations waiting for the next pipeline."""
        return len(self._ops) + self.beats.count()

    @property
    def buffered(self) -> int:
        """Operations waiting in memory (heartbeats excluded: one per session at most)."""
        return len(self._ops)

    @property
    def spilled(self) -> int:
        """Operations waiting in the spill file."""
        return self.spill.ops if self.spill is not None else 0

    @property
    def reasserts(self) -> int:
        """Times the live sessions were written to Redis again."""
        return self.recovery.reasserts

    @property
    def mode(self) -> str:
        """``ok``, ``buffering`` (Redis away, writes in memory), ``spilling`` (... and on disk) or
        ``replaying`` (Redis back, the spill file still being sent)."""
        if self.spilled:
            return "replaying" if self.healthy else "spilling"
        return "ok" if self.healthy else "buffering"

    # -- the flusher ---------------------------------------------------------------------------

    async def _flusher(self) -> None:
        backoff = 0.05
        last = 0.0
        answered = False  # the last pipeline carried joins, now answered
        bulk_next = False  # the last batch held the due heartbeats back for joins or announcements
        recovery = self.recovery
        reloaded = False  # the last batch found the scripts gone and loaded them again
        while True:
            await self._wake.wait()
            replaying = self.spilled > 0
            if not self.healthy or replaying:
                await self._spill_excess()
            # Let a few milliseconds of writes gather: a pipeline costs the same Python work for
            # 2 commands as for 200 heartbeats coalesced into them. A flush() caller, the close and
            # a replay do not wait.
            pause = self.min_interval_s - (time.monotonic() - last)
            if bulk_next or self._late_rest:
                pause = 0.0  # the heartbeats held back for the last batch's joins, or taken, go now
            if answered:
                # What the admitted HELLOs wrote next (their history events) goes at once, as it
                # did when it travelled with the join; unless more joins wait: then they gather
                # for the pause, or a connect ramp flushes back to back a few joins at a time
                # (twice the pipelines and join.lua calls for the same joins).
                answered = False
                if not any(op[0] == "join" for op in self._ops):
                    pause = 0.0
            if pause > 0 and not self._waiters and not self._closing and not replaying:
                await asyncio.sleep(pause)
            last = time.monotonic()
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            # Every heartbeat goes once the interval has passed (or for flush() and the close);
            # before it, a batch carries only the urgent ones (watched rooms), so that a watched
            # room does not bring every room's heartbeats back to the flush interval.
            everything = bool(waiters) or self._closing or self.beats.due(last)
            # Joins and announcements go ahead of a due load of heartbeats: a batch carrying every
            # room's heartbeats costs Redis and the round trip several times more (at 100,000/s,
            # tens of milliseconds), and a HELLO or a roster change waiting on it is a presence
            # change shown that much later. The heartbeats follow at once, in the next batch
            # (those of a session that leaves meanwhile are dropped by the lane, as before).
            # Once in a row only: a connect ramp has joins waiting at every batch. A flush()
            # caller (a read of room metrics or a roster, several a second) waits for the whole
            # of it, in as many batches, but does not make a HELLO wait for it.
            bulk_next = (
                (everything or bool(self._late_rest))
                and not bulk_next
                and not self._closing
                and not replaying
                and _carries_presence(self._ops)
            )
            if bulk_next:
                everything = False
                self._wake.set()
            spill_read = None
            if replaying:
                # The spill file holds the oldest writes: all of it goes before anything in memory.
                ops, spill_read = await recovery.read_spill()
                beats: dict = {}
                late: dict = {}
            else:
                ops, beats, late = self._take(everything, hold=bulk_next)
                if self._late_rest:
                    self._wake.set()
            check = recovery.marker_due and self.marker_key is not None and not self._closing
            recovery.marker_due = False
            # (the heartbeats left in the sources when not ``everything`` are not due yet)
            drained = (
                spill_read is None
                and not self._ops
                and not self.beats.kept
                and not self._late_rest
                and not (everything and self.beats.sources_pending())
            )
            ok = True
            if ops or beats or late or check:
                started = time.perf_counter()
                pipe = self.pipelines.pipeline()
                commands = 0
                joins: list = []
                try:
                    commands, marker_at, marks = build(pipe, ops, beats, joins, check, self, late)
                    # A batch a presence change waits for (a join's answer, a roster change's
                    # announcement) is awaited in this task: two turns of the event loop sooner,
                    # and at 100,000 heartbeats/s a turn can take tens of milliseconds. Heartbeat
                    # batches keep their own task (their pacing measured best so: RTT).
                    if _carries_presence(ops):
                        results = await self._execute_now(pipe)
                    else:
                        results = await self._execute(pipe)
                    errors = [r for r in results if isinstance(r, Exception)]
                    if any(isinstance(e, NoScriptError) for e in errors):
                        # Redis restarted and lost the scripts: load them, replay the batch
                        # (joins and leaves are idempotent, heartbeats carry absolute values).
                        await self.load_scripts()
                        if not reloaded:
                            raise _ScriptsReloaded()
                        # Gone again at once: handled as an outage (backoff), not a busy loop.
                        raise NoScriptError("scripts reloaded; replaying the batch")
                    reloaded = False
                    full = next((e for e in errors if out_of_memory(e)), None)
                    if full is not None:
                        # Redis is full (maxmemory, noeviction): an outage for this batch, kept
                        # and retried like one (replaying what did pass is harmless, as above),
                        # never dropped: a join lost here would be a session missing from Redis.
                        raise RedisFull(f"redis is out of memory (maxmemory): {full}")
                    if errors:
                        log.error(
                            "redis pipeline: %d of %d commands failed: %s", len(errors), commands, errors[0]
                        )
                    self.healthy, self.last_error, backoff = True, None, 0.05
                    if spill_read is not None:
                        recovery.consume_spill(spill_read)
                    recovery.answered(marker_lost=marker_at is not None and results[marker_at] is None)
                    if joins:
                        self._answer_joins(joins, results)
                        answered = True
                    recovery.written(marks)
                except _ScriptsReloaded:
                    # Redis answered, so no outage starts: the batch goes again at once. Whether
                    # Redis lost more than its scripts (a restart without persistence) is the
                    # marker check's to say, in that very batch. (Before heartbeats were plain
                    # commands a heartbeat script met the NOSCRIPT first, on the outage's retry.)
                    reloaded = True
                    recovery.marker_due = True
                    if spill_read is None:
                        self._requeue(ops, beats, late)
                    self._waiters[:0] = waiters
                    self._wake.set()
                    continue
                except asyncio.CancelledError:
                    # Closing with the batch in flight (Redis hung): its history events are kept
                    # for the next start like the rest (the writer's ledger takes an event once,
                    # should Redis apply the batch after all).
                    if spill_read is None:
                        self._requeue(ops, beats, late)
                    raise
                except REDIS_FAILURES as exc:
                    ok = False
                    self.healthy, self.last_error = False, str(exc)
                    recovery.unreachable(exc)
                    log.error("redis pipeline failed (%d commands), will retry: %s", commands, exc)
                    recovery.marker_due = True  # ask at once whether Redis kept our state
                    if spill_read is None:
                        self._requeue(ops, beats, late)
                    # (a spill chunk stays in the file and is read again)
                except Exception:
                    # A bug, not an outage: retrying the same batch would fail forever. Drop it
                    # loudly and keep the flusher alive for everything after it.
                    log.exception("redis pipeline raised unexpectedly; %d commands dropped", commands)
                    for op in ops:
                        if op[0] == "join":
                            op[1].resolve(None)
                    if spill_read is not None:
                        recovery.consume_spill(spill_read)
                    self.dropped += len(ops)
                if self.on_flush is not None:
                    self.on_flush(commands, time.perf_counter() - started, ok)
            elif spill_read is not None:
                recovery.consume_spill(spill_read)  # nothing in that chunk to send (all skipped)
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
            if self._closing and (
                not ok
                or (
                    not self._ops
                    and not self.beats.kept
                    and not self._late_rest
                    and not self.beats.sources_pending()
                )
            ):
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(ok)
                for op in self._ops:
                    if op[0] == "join":
                        op[1].resolve(None)
                return

    async def _execute(self, pipe) -> list:
        """Send ``pipe`` and return its replies; past ``timeout_s`` without them Redis is hung.

        A hung Redis (stopped, overloaded, behind a blackholed proxy) is an outage like a refused
        connection: the store turns unhealthy (readiness degraded, HELLO admits on the local count),
        writes keep buffering and spilling. The batch itself is not sent again meanwhile: its
        connection stays open and its reply is awaited, because a Redis that wakes up executes
        what it had received, and a second copy on another connection could run before or after
        it (a late heartbeat's latency after the session's LEAVE, a join after its leave). Only
        when the client's socket timeout (``DROP_AFTER`` times longer, stores/client.py) gives up
        on the reply is the connection dropped (stores/lean_pipeline.py, or redis-py's pipeline on a
        cluster), and the batch is retried like any failed
        one: then, only, a batch may reach Redis twice (see docs/operations.md, Faults).
        """
        task = asyncio.ensure_future(self.pipelines.execute(pipe))
        try:
            done, _ = await asyncio.wait((task,), timeout=self.timeout_s)
            if not done:
                self._hung()
                while not task.done():
                    await self._spill_excess()
                    await asyncio.wait((task,), timeout=_SPILL_POLL_S)
            return task.result()
        except asyncio.CancelledError:
            task.cancel()  # (close: a cancelled read drops its connection)
            raise

    async def _execute_now(self, pipe) -> list:
        """``_execute`` in this task: the hang is noticed by a timer, which spills the excess
        from a task of its own until the reply comes."""
        loop = asyncio.get_running_loop()
        watch = _HangWatch()
        timer = loop.call_later(self.timeout_s, self._hung_now, loop, watch)
        try:
            return await self.pipelines.execute(pipe)
        finally:
            timer.cancel()
            await watch.stop()

    def _hung_now(self, loop: asyncio.AbstractEventLoop, watch: _HangWatch) -> None:
        self._hung()
        watch.task = loop.create_task(self._spill_while_hung(watch), name="redis-hung-spill")

    async def _spill_while_hung(self, watch: _HangWatch) -> None:
        while watch.hung:
            watch.spilling = True
            try:
                await self._spill_excess()
            finally:
                watch.spilling = False
            await asyncio.sleep(_SPILL_POLL_S)

    def _hung(self) -> None:
        """The pipeline in flight has no answer after ``timeout_s``: an outage starts."""
        error = f"redis did not answer a pipeline within {self.timeout_s:g} s (hung); awaiting its reply"
        self.healthy, self.last_error = False, error
        self.recovery.unreachable(RedisTimeoutError(error))
        log.error("%s", error)

    def _take(
        self, everything: bool = True, hold: bool = False
    ) -> tuple[list[tuple], dict[str, PackedBeats], dict[str, PackedBeats]]:
        """The next batch from memory: at most ``_MAX_BATCH_OPS`` operations, and the heartbeats
        only with the last part of a backlog (a heartbeat's ZADD XX needs its session's join);
        the sources' urgent heartbeats (and the kept ones), and with ``everything`` the others
        too, apart: they go after the batch's announcements (``commands.build``'s ``late``), at
        most ``_LATE_PART_BYTES`` of them (the rest in the next batches; a flush() waits for them
        all) except at the close, which sends everything in one batch, none while ``hold``
        (joins or announcements wait: they go first).

        The sources are drained before the operations are taken: what a source queues while
        handing its beats out (TTL refreshes) travels with them."""
        if len(self._ops) > _MAX_BATCH_OPS:
            ops = self._ops[:_MAX_BATCH_OPS]
            del self._ops[:_MAX_BATCH_OPS]
            return ops, {}, {}
        beats = self.beats.take(False)
        if self._late_rest:
            # The sources' newer heartbeats stay there (one per session) until these are sent.
            late, self._late_rest = self._late_rest, {}
        else:
            late = self.beats.take(True) if everything else {}
        if hold:
            late, self._late_rest = {}, late
        elif late and not self._closing:
            late, self._late_rest = _late_part(late, _LATE_PART_BYTES)
        ops, self._ops = self._ops, []
        return ops, beats, late

    def _answer_joins(self, joins: list, results: list) -> None:
        """Resolve each join with its script's reply; undo the indexes of refused ones."""
        redo = []
        for index, position, j in joins:
            reply = results[index]
            if isinstance(reply, Exception):
                j.resolve(None)  # logged with the pipeline's errors; the caller decides
                continue
            reply = reply[position]  # join.lua answers each session of its batch
            if int(reply) != REFUSED:
                j.resolve(int(reply))
            elif j.forced:
                # Admitted without Redis's answer (it came too late): Redis must hold the
                # session anyway. Ahead of what was queued since, so a LEAVE stays after it.
                redo.append(("join", j))
            else:
                j.resolve(REFUSED)
                self._ops.append(("unindex", j.session_id, j.tenant, j.user_id))
        if redo:
            self._ops[:0] = redo
        if self._ops:
            self._wake.set()

    def _requeue(self, ops: list[tuple], beats: dict[str, PackedBeats], late: dict | None = None) -> None:
        """Put a failed batch back in front of what arrived since, newest heartbeat winning
        (``late`` first: ``beats`` holds the kept heartbeats, older than any the sources gave)."""
        self._ops[:0] = ops
        if late:
            self.beats.requeue(late)
        self.beats.requeue(beats)

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
        await self.recovery.spill_ops(chunk)

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
            t
            for t in (self._ticker, self._beat_watch, *self.recovery.tasks)
            if t is not None and not t.done()
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left, self._ops = self._ops, []
        await self.recovery.keep_for_next_start(left)
        if self.spill is not None:
            self.spill.close()
        await self.pipelines.close()
        await self.redis.aclose()

    # -- reads (stores/reads.py) ---------------------------------------------------------------

    async def room_metrics(self, room_ids: list[str]) -> list[dict]:
        """Metrics of each room as Redis holds them (every node's sessions), in input order."""
        return await self._read(reads.room_metrics(self, room_ids), "room metrics")

    async def room_online(self, room_id: str) -> int:
        """Sessions in a room across every node."""
        return await self._read(reads.room_online(self, room_id), "room online")

    async def roster(self, room_id: str) -> list[dict]:
        """Every session of a room with its metadata, latency and last heartbeat."""
        return await self._read(reads.roster(self, room_id), "roster")

    async def user_sessions(self, tenant: str, user_id: str) -> list[dict]:
        """Every live session of a user, across rooms and nodes, with latency and last heartbeat."""
        return await self._read(reads.user_sessions(self, tenant, user_id), "user sessions")

    async def node_sessions(self, node_id: str) -> list[dict]:
        """Every session ``node_id`` holds in Redis, with its room, metadata and last heartbeat."""
        return await reads.node_sessions(self, node_id)

    async def tenant_rooms(self, tenant: str) -> dict[str, str]:
        """roomId -> roomCode for every room of a tenant that ever had a session."""
        return await self._read(reads.tenant_rooms(self, tenant), "tenant rooms")

    async def _read(self, read, what: str):
        """Await ``read`` (one of stores/reads.py's) for at most ``timeout_s`` plus the 2 s its
        flush may wait; past it raise redis-py's TimeoutError, a failure its callers handle.

        A read, unlike a write, is safe to abandon: redis-py drops the connection of a cancelled
        read, and nothing is sent again.
        """
        try:
            async with asyncio.timeout(reads.FLUSH_WAIT_S + self.timeout_s):
                return await read
        except TimeoutError:  # asyncio's (redis-py's own is a RedisError: it passes through)
            raise RedisTimeoutError(f"redis {what}: no answer within {self.timeout_s:g} s (hung)") from None

    async def ping(self) -> bool:
        """Whether Redis answers within a second (on a cluster: every node).

        False at once while the flusher's pipelines fail (down, or hung past ``timeout_s``): a
        probe then answers without waiting on Redis, and the flusher's retries say when it is back.
        """
        if not self.healthy:
            return False
        return await reads.ping(self.redis)
