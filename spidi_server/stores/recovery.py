"""Recovery of the hot state: outages, the spill file's replay, and rebuilding what Redis lost.

While Redis does not answer, a failed pipeline goes back to the front of the hot store's buffer and
is retried (backoff up to 1 s). Past ``buffer_max_ops`` buffered operations the oldest move to a
spill file (stores/spill.py, in the record format of ``_record`` / ``_op`` below) and come back
first, in order, when Redis answers; then the node's live sessions are written again
(``live_sessions``: re-asserted, since Redis may have lost them or another node may have reaped
them while this one was cut off) and sessions Redis lists for the node that it no longer holds are
removed (``is_live``). A marker key, checked once a second, tells a Redis that lost the node's state
without an outage the node saw (FLUSHALL, a quick restart, a failover): the sessions are written
again too.

The hot store (stores/hot_store.py) owns one ``Recovery``, tells it how each pipeline went
(``answered`` / ``written`` / ``unreachable``) and hands it what passes its memory cap
(``spill_ops``); ``Host`` says what recovery needs from the store in return. None of it runs per
heartbeat: at most once per pipeline, and once a second for the marker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .. import logs
from . import keys
from .client import REDIS_FAILURES, text
from .scripts import current_hour
from .spill import CHUNK_OPS, SpillFile

log = logging.getLogger("spidi.redis")

_REASSERT_CHUNK = 1_000  # sessions re-asserted between two yields to the event loop
MARKER_CHECK_S = 1.0  # how often the node checks that Redis still holds its marker


class Host(Protocol):
    """What recovery needs from the hot store that owns it."""

    redis: Any
    node_id: str
    spill: SpillFile | None
    buffer_max_ops: int
    dropped: int  # operations lost for good (recovery adds its own)
    marker_key: str | None
    live_sessions: Callable[[], Iterable[Any]] | None  # -> the node's LiveSessions
    is_live: Callable[[str], bool] | None  # session_id -> whether the node holds it

    @property
    def buffered(self) -> int: ...

    @property
    def spilled(self) -> int: ...

    def leave(self, room_id: str, session_id: str, tenant: str, user_id: str) -> None: ...

    def forced_join(
        self, room_id: str, session_id: str, tenant: str, code: str, user_id: str, ttl_s: int, args: list
    ) -> Any: ...

    def rejoin(self, session: Any, hour: str) -> None: ...

    def queue_marker(self) -> None: ...

    def wake(self) -> None: ...


# -- the spill record codec ----------------------------------------------------------------------

_SPILLED_KINDS = frozenset(
    {"join", "unindex", "leave", "touch", "event", "publish", "capacity", "marker", "handoff", "index"}
)


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


def _op(record: list, host: Host) -> tuple:
    """An operation read back from the spill file. A join comes back forced: whoever waited
    for it was answered when it was spilled."""
    if record[0] == "join":
        _, room_id, session_id, tenant, code, user_id, ttl_s, args = record
        return ("join", host.forced_join(room_id, session_id, tenant, code, user_id, ttl_s, args))
    return tuple(record)


class Recovery:
    """Outage bookkeeping, the spill file's replay, and the re-assert and reconcile tasks."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.reasserts = 0  # times the live sessions were written to Redis again
        self.marker_due = False  # the next pipeline checks the marker
        self._reassert_due = False
        self._reassert_reason = ""
        self._outage_since: float | None = None
        self._dropping = False  # inside an episode of dropped operations (logged once)
        self._reconciling: asyncio.Task | None = None
        self._reasserting: asyncio.Task | None = None

    @property
    def tasks(self) -> tuple[asyncio.Task | None, ...]:
        """The tasks recovery may have running (the store cancels them when it closes)."""
        return self._reconciling, self._reasserting

    async def tick(self) -> None:
        """Once a second: have the next pipeline check the marker (one is sent if none is due)."""
        host = self.host
        while True:
            await asyncio.sleep(MARKER_CHECK_S)
            if host.marker_key is not None:
                self.marker_due = True
                host.wake()

    # -- how the pipelines went ----------------------------------------------------------------

    def unreachable(self, exc: BaseException) -> None:
        """A pipeline failed: an outage starts, unless one is under way (logged once per outage)."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logs.event(log, "redis_unreachable", logging.WARNING, error=str(exc))

    def answered(self, marker_lost: bool) -> None:
        """A pipeline went through; ``marker_lost``: its marker check found the marker gone."""
        if self._outage_since is not None:
            self._reconnected()
        if marker_lost:
            self.request_reassert("marker_lost")

    def written(self, marks: bool) -> None:
        """After a pipeline's joins were answered; ``marks``: it wrote the marker."""
        if marks:
            self._start_reconcile()
        if self._reassert_due:
            self._queue_reassert()

    def _reconnected(self) -> None:
        host = self.host
        down_s = time.monotonic() - self._outage_since
        self._outage_since = None
        self._dropping = False
        # Redis may have lost what this node wrote (a restart without persistence) or another
        # node may have reaped this node's sessions while it was cut off: write them again.
        self.request_reassert("reconnected")
        logs.event(
            log,
            "redis_reconnected",
            down_s=round(down_s, 3),
            buffered=host.buffered,
            spilled=host.spilled,
            dropped=host.dropped,
        )

    # -- the spill file ------------------------------------------------------------------------

    async def take_over_spill(self) -> bool:
        """At start: whether a leftover spill file holds records to replay."""
        spill = self.host.spill
        if spill is None:
            return False
        found = await asyncio.to_thread(spill.recover)
        if found:
            # A process under this node id stopped or died while Redis was away. Its sessions
            # are gone (the liveness reaper ends what Redis lists for it): only its history
            # events are replayed, ahead of everything this process writes.
            logs.event(log, "spill_leftover_found", logging.WARNING, path=str(spill.path), records=found)
        return bool(found)

    async def spill_ops(self, ops: list[tuple]) -> None:
        """Move ``ops`` (the oldest buffered) to the spill file; what it cannot keep is dropped."""
        spill = self.host.spill
        for op in ops:
            if op[0] == "join":
                # Whoever waits for this join learns it was not answered and admits on the local
                # count (degraded mode); Redis must then hold it whatever its count says.
                op[1].force()
                op[1].resolve(None)
        kept = 0
        if spill is not None:
            records = [_record(op) for op in ops]
            for i in range(0, len(records), CHUNK_OPS):
                try:
                    kept += await asyncio.to_thread(spill.append, records[i : i + CHUNK_OPS])
                except Exception:  # a bug here must not stop the flusher: count the chunk as lost
                    log.exception("spill append raised unexpectedly")
        if kept < len(ops):
            self.drop(len(ops) - kept)

    async def keep_for_next_start(self, left: list[tuple]) -> None:
        """At close: the history events among ``left`` (what Redis did not take) go to the spill
        file, for the next start under the same node id; the rest is lost."""
        spill = self.host.spill
        if left and spill is not None:
            kept = [op for op in left if op[0] == "event"]
            await self.spill_ops(kept)
            logs.event(
                log,
                "spill_kept_for_next_start",
                logging.WARNING,
                path=str(spill.path),
                events=len(kept),
                lost=len(left) - len(kept),
            )

    def drop(self, count: int) -> None:
        """``count`` operations are lost for good (counted); Redis is rebuilt once it answers."""
        host = self.host
        host.dropped += count
        self.request_reassert("operations_dropped")
        if not self._dropping:
            self._dropping = True
            logs.event(
                log,
                "redis_ops_dropped",
                logging.ERROR,
                dropped=count,
                buffer_max_ops=host.buffer_max_ops,
                spill=str(host.spill.path) if host.spill is not None else None,
                spill_error=host.spill.last_error if host.spill is not None else None,
            )

    async def read_spill(self) -> tuple[list[tuple], tuple[int, int]]:
        """The next chunk of the spill file as operations, and what to consume once it is sent."""
        spill = self.host.spill
        try:
            records, offset, lines, leftover = await asyncio.to_thread(spill.read, CHUNK_OPS)
        except OSError as exc:  # the file went away under us: what it held is lost
            logs.event(log, "spill_read_failed", logging.ERROR, path=str(spill.path), error=str(exc))
            self.drop(spill.ops)
            spill.remove()
            return [], (0, 0)
        if not lines:  # counted records the file does not hold (cut short underneath us)
            logs.event(log, "spill_read_failed", logging.ERROR, path=str(spill.path), error="truncated")
            self.drop(spill.ops)
            spill.remove()
            return [], (0, 0)
        ops = []
        bad = lines - len(records)  # torn or unreadable lines
        for record in records:
            if not isinstance(record, list) or not record or record[0] not in _SPILLED_KINDS:
                bad += 1  # not a record this code wrote
            elif not leftover or record[0] == "event":
                # (a leftover's state writes belong to a process that is gone: its sessions were reaped)
                try:
                    ops.append(_op(record, self.host))
                except (TypeError, ValueError):
                    bad += 1
        if bad:
            self.drop(bad)
        return ops, (offset, lines)

    def consume_spill(self, read: tuple[int, int]) -> None:
        """The chunk ``read_spill`` returned is in Redis: take it off the file."""
        spill = self.host.spill
        offset, lines = read
        if spill is None or not lines:
            return
        spill.consume(offset, lines)
        if not spill.ops:
            logs.event(log, "spill_replayed", path=str(spill.path), spilled_total=spill.spilled_total)

    # -- rebuilding what Redis lost ------------------------------------------------------------

    def request_reassert(self, reason: str) -> None:
        """Have the live sessions written again after the next pipeline that goes through."""
        if not self._reassert_due:
            self._reassert_reason = reason
        self._reassert_due = True

    def _queue_reassert(self) -> None:
        """Start writing the live sessions again, unless that is already under way (then once
        it is done: the flag stays up)."""
        if self._reasserting is not None and not self._reasserting.done():
            return
        self._reassert_due = False
        if self.host.live_sessions is None:
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
        host = self.host
        hour = current_hour()
        count = 0
        for s in host.live_sessions():
            host.rejoin(s, hour)
            count += 1
            if count % _REASSERT_CHUNK == 0:
                host.wake()
                await asyncio.sleep(0)
        host.queue_marker()
        self.reasserts += 1
        logs.event(log, "sessions_reasserted", logging.WARNING, sessions=count, reason=reason)

    def _start_reconcile(self) -> None:
        if self.host.is_live is None or (self._reconciling is not None and not self._reconciling.done()):
            return
        self._reconciling = asyncio.get_running_loop().create_task(self._reconcile())

    async def _reconcile(self) -> None:
        """End, in Redis, the sessions it lists for this node that the node no longer holds
        (their LEAVE was dropped while Redis was away)."""
        host = self.host
        is_live = host.is_live
        try:
            index = await host.redis.hgetall(keys.node_sessions(host.node_id))
            stale = [(text(sid), text(room_id)) for sid, room_id in index.items() if not is_live(text(sid))]
            if not stale:
                return
            pipe = host.redis.pipeline(transaction=False)
            for sid, room_id in stale:
                pipe.hmget(keys.session(room_id, sid), "userId", "tenant")
            infos = await pipe.execute()
        except REDIS_FAILURES as exc:
            logs.event(log, "reconcile_failed", logging.WARNING, error=str(exc))
            return
        removed = 0
        for (sid, room_id), (user_id, tenant) in zip(stale, infos, strict=True):
            if is_live(sid):
                continue  # admitted while we read
            host.leave(room_id, sid, text(tenant or ""), text(user_id or ""))
            removed += 1
        if removed:
            logs.event(log, "ghost_sessions_removed", logging.WARNING, sessions=removed)
