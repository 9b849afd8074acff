"""Room lifecycle webhooks: room_occupied, room_vacated, batched member_joined / member_left.

Sent once for the whole cluster: the alert evaluator runs ``RoomHooks`` only while its process
holds the evaluator lease, and stops it when the lease is lost. The source of truth is the
history events stream ``spidi:events`` (so hooks need ``history`` on), read with a consumer group
of its own, ``spidi-hooks``; only ``session_started`` and ``session_ended`` matter.

Batching: at most one flush per room per ``window_s`` (1 s). The first event of a quiet room is
flushed at once; events arriving within a second of the room's last flush wait for the next one,
which carries all of them. A flush POSTs, in this order and each only if listed in
``room_hooks_events`` and non-empty::

    room_occupied  {"event", "tenant", "roomId", "roomCode", "online", "at", "sentAt"}
    member_joined  {"event", "tenant", "roomId", "roomCode", "members": [member...], "sentAt"}
    member_left    {"event", "tenant", "roomId", "roomCode", "members": [member...], "sentAt"}
    room_vacated   {"event", "tenant", "roomId", "roomCode", "online": 0, "at", "sentAt"}

    member         {"sessionId", "userId", "clientId", "device", "os", "appVersion", "at"}
                   (member_left adds "reason": leave, timeout, disconnect or shutdown)

``at`` is the event's time (epoch ms: the session's start or end; room_occupied: the batch's first
join, room_vacated: its last leave), ``sentAt`` the POST's. Member fields come from the events themselves (``session_ended`` carries
who left since it is read alone); an end event written by an older version, without them, takes
them from the ``session_started`` this instance saw, else null.

Occupied / vacated come from the room's cluster-wide online count (``ZCARD`` of its online set)
read when a batch is flushed, against the count seen at the room's previous flush: 0 -> more is
``room_occupied``, more -> 0 is ``room_vacated``. A room seen for the first time counts as
``online - joins + leaves`` of its batch before it. So a room that empties and refills within one
batch window emits neither (only its member events), and a first-seen room whose next joins are
already in Redis but not yet read may miss its ``room_occupied``.

Delivery is at least once. A batch's stream entries are acknowledged (XACK) once its POSTs are
done or given up (``webhook_retries``; at once when ``egress``'s address policy refuses the
receiver, counted as outcome ``refused``); on start, an instance re-reads its own pending entries
and claims (XAUTOCLAIM) those of a previous leader idle for over ``claim_idle_s`` (30 s, longer
than a stopping leader needs to give up), so a failover loses nothing, but may repeat a batch
the old leader was sending when it stopped. Dedupe on the members' ``sessionId`` and the event.

The history writer trims the stream only up to what every consumer group has read: a group
nobody reads would keep every event forever. With hooks off, the group is destroyed
(``drop_hooks_group``; ``RoomHooks.start`` does it too when ``room_hooks_url`` is empty).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.exceptions import RedisError, ResponseError

from .. import logs
from ..stores import events, keys
from .notify import WebhookSender

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings

log = logging.getLogger("spidi.alerting.hooks")

GROUP = "spidi-hooks"
HOOK_EVENTS = ("room_occupied", "member_joined", "member_left", "room_vacated")
READ_COUNT = 500  # stream entries per XREADGROUP
MAX_BUFFERED = 20_000  # stop reading while this many entries wait for their POSTs (receiver down)
MAX_CONCURRENT_FLUSHES = 8
MEMBER_CACHE = 50_000  # sessions whose session_started fields are kept for their member_left
_MEMBER_FIELDS = (
    ("userId", "user_id"),
    ("clientId", "client_id"),
    ("device", "device"),
    ("os", "os"),
    ("appVersion", "app_version"),
)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def ensure_hooks_group(redis) -> None:
    """Create the ``spidi-hooks`` group at the stream's end (and the stream) if missing."""
    try:
        await redis.xgroup_create(events.STREAM, GROUP, id="$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def drop_hooks_group(redis) -> bool:
    """Destroy the ``spidi-hooks`` group (hooks off), so it no longer holds back stream trimming.

    True if a group was destroyed; never raises. The evaluator calls it when it takes the lead
    with ``room_hooks_url`` empty.
    """
    try:
        dropped = bool(await redis.xgroup_destroy(events.STREAM, GROUP))
    except ResponseError:  # no stream at all
        return False
    except (RedisError, OSError) as exc:  # Redis away: the next leader tries again
        logs.event(log, "room_hooks_group_drop_failed", logging.WARNING, error=str(exc))
        return False
    if dropped:
        logs.event(log, "room_hooks_group_dropped", group=GROUP)
    return dropped


@dataclass
class _Batch:
    """A room's session events since its last flush."""

    tenant: str = ""
    room_code: str = ""
    joins: list[dict] = field(default_factory=list)
    leaves: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # stream entries to acknowledge after the POSTs

    def merge_before(self, later: _Batch) -> _Batch:
        """This batch followed by ``later`` (a flush that could not run goes back in front)."""
        self.joins += later.joins
        self.leaves += later.leaves
        self.ids += later.ids
        self.room_code = self.room_code or later.room_code
        self.tenant = self.tenant or later.tenant
        return self


class RoomHooks:
    """Posts room lifecycle events to ``room_hooks_url``; run by the evaluator lease holder only."""

    def __init__(
        self,
        settings: Settings,
        redis,
        metrics: NodeMetrics,
        node_id: str,
        *,
        sender: WebhookSender | None = None,
        window_s: float = 1.0,
        claim_idle_s: float = 30.0,
    ):
        """``window_s``: least time between two flushes of a room; ``claim_idle_s``: how long
        another consumer's entry must have been pending before this one takes it over."""
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.consumer = f"hooks-{node_id}"  # stable per node: a restarted node finds its pending entries
        self.sender = sender or WebhookSender(settings, metrics)
        self._own_sender = sender is None
        self.window_s = window_s
        self.claim_idle_s = claim_idle_s
        self.enabled = set(settings.room_hooks_events)
        self._batches: dict[str, _Batch] = {}
        self._last_flush: dict[str, float] = {}  # room -> loop time of its last flush
        self._counts: dict[str, int] = {}  # room -> online count at its last flush
        self._inflight: dict[str, asyncio.Task] = {}
        self._held: set[str] = set()  # entry ids buffered or being sent (not to be claimed again)
        self._members: dict[str, dict] = {}  # sessionId -> member fields from session_started
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_FLUSHES)
        self._task: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading and posting; with ``room_hooks_url`` empty, drop the group instead."""
        if not self.settings.room_hooks_url:
            await drop_hooks_group(self.redis)
            return
        problem = self.sender.policy.url_problem(self.settings.room_hooks_url)
        if problem is not None:  # said once here; each POST is still refused (and counted) at send time
            logs.event(log, "room_hooks_url_refused", logging.ERROR, error=f"room_hooks_url {problem}")
        try:
            await ensure_hooks_group(self.redis)
        except (RedisError, OSError) as exc:  # the reader creates it when Redis is back (NOGROUP)
            logs.event(log, "room_hooks_failed", logging.WARNING, error=str(exc))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spidi-room-hooks")
        logs.event(log, "room_hooks_started", consumer=self.consumer, events=sorted(self.enabled))

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop reading; give in-flight POSTs up to ``timeout`` s, then cancel them.

        What was read and not acknowledged stays pending in the group: the next leader claims it.
        """
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        inflight = list(self._inflight.values())
        if inflight:
            _, pending = await asyncio.wait(inflight, timeout=max(timeout, 0.0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
        self._batches.clear()
        self._held.clear()
        if self._own_sender:
            await self.sender.close()
        logs.event(log, "room_hooks_stopped", consumer=self.consumer)

    # -- reading -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        recovered = False
        next_claim = 0.0
        backoff = 0.2
        while True:
            try:
                if not recovered:
                    await self._read_own_pending()
                    recovered = True
                if loop.time() >= next_claim:
                    await self._claim_idle()
                    next_claim = loop.time() + min(self.claim_idle_s, 10.0)
                if len(self._held) < MAX_BUFFERED:
                    reply = await self.redis.xreadgroup(
                        GROUP, self.consumer, {events.STREAM: ">"}, count=READ_COUNT, block=self._block_ms()
                    )
                    await self._take(self._entries(reply))
                else:
                    await asyncio.sleep(0.05)
                self._flush_due()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if "NOGROUP" in str(exc):  # destroyed under us (a process with hooks off): recreate
                    logs.event(log, "room_hooks_group_missing", logging.WARNING)
                    try:
                        await ensure_hooks_group(self.redis)
                    except Exception as again:
                        logs.event(log, "room_hooks_failed", logging.WARNING, error=str(again))
                else:
                    logs.event(
                        log, "room_hooks_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _block_ms(self) -> int:
        """How long XREADGROUP may wait: short while a room's batch waits for its window."""
        waiting = [room for room in self._batches if room not in self._inflight]
        if not waiting:  # nothing, or only rooms whose previous flush is still sending
            return 250 if not self._batches else 100
        now = asyncio.get_running_loop().time()
        due = min(self._last_flush.get(room, -math.inf) + self.window_s for room in waiting)
        return 1 if due <= now else min(250, int((due - now) * 1000) + 1)

    @staticmethod
    def _entries(reply) -> list[tuple[str, dict | None]]:
        if not reply:
            return []
        streams = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
        out = []
        for entries in streams:
            for entry_id, fields in entries:
                out.append((_text(entry_id), fields))
        return out

    async def _read_own_pending(self) -> None:
        """Re-read what this consumer read before and never acknowledged (a restart)."""
        last = "0"
        while True:
            reply = await self.redis.xreadgroup(GROUP, self.consumer, {events.STREAM: last}, count=READ_COUNT)
            entries = self._entries(reply)
            if not entries:
                return
            await self._take(entries, recovered=True)
            last = entries[-1][0]

    async def _claim_idle(self) -> None:
        """Take over entries another consumer (an old leader) read and left unacknowledged."""
        start = "0-0"
        claimed = 0
        while True:
            reply = await self.redis.xautoclaim(
                events.STREAM,
                GROUP,
                self.consumer,
                int(self.claim_idle_s * 1000),
                start_id=start,
                count=READ_COUNT,
            )
            start = _text(reply[0])
            entries = [(_text(i), f) for i, f in reply[1] if _text(i) not in self._held]
            claimed += len(entries)
            await self._take(entries)
            if start == "0-0" or not reply[1]:
                break
        if claimed:
            logs.event(log, "room_hooks_claimed", count=claimed, consumer=self.consumer)
        # Consumers of past leaders (one per node id) with nothing pending are only clutter.
        for consumer in await self.redis.xinfo_consumers(events.STREAM, GROUP):
            name = _text(consumer.get("name"))
            if name != self.consumer and not consumer.get("pending") and consumer.get("idle", 0) > 3_600_000:
                await self.redis.xgroup_delconsumer(events.STREAM, GROUP, name)

    async def _take(self, entries: list[tuple[str, dict | None]], recovered: bool = False) -> None:
        """Sort entries into their rooms' batches; acknowledge at once those of no interest."""
        done = []
        for entry_id, raw in entries:
            if entry_id in self._held:  # already buffered (a recovery read repeated after an error)
                continue
            fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
            kind = fields.get("kind")
            room_id = fields.get("room_id")
            if kind not in (events.SESSION_STARTED, events.SESSION_ENDED) or not room_id:
                done.append(entry_id)  # samples, checkpoints, trimmed entries (no fields)
                continue
            batch = self._batches.get(room_id)
            if batch is None:
                batch = self._batches[room_id] = _Batch()
            batch.tenant = batch.tenant or fields.get("tenant", "")
            batch.room_code = batch.room_code or fields.get("room_code", "")
            batch.ids.append(entry_id)
            self._held.add(entry_id)
            session_id = fields.get("session_id", "")
            if kind == events.SESSION_STARTED:
                member = {"sessionId": session_id}
                member.update({name: fields.get(src) or None for name, src in _MEMBER_FIELDS})
                self._remember(session_id, {**member, "roomCode": fields.get("room_code", "")})
                member["at"] = _int(fields.get("started_at"))
                batch.joins.append(member)
            else:
                known = self._members.pop(session_id, None) or {}
                batch.room_code = batch.room_code or known.get("roomCode", "")
                member = {"sessionId": session_id}
                member.update({name: fields.get(src) or known.get(name) for name, src in _MEMBER_FIELDS})
                member["reason"] = fields.get("reason") or None
                member["at"] = _int(fields.get("ended_at"))
                batch.leaves.append(member)
        if done:
            await self.redis.xack(events.STREAM, GROUP, *done)
        if recovered and entries:
            logs.event(log, "room_hooks_recovered", entries=len(entries), consumer=self.consumer)

    def _remember(self, session_id: str, member: dict) -> None:
        if len(self._members) >= MEMBER_CACHE:
            self._members.pop(next(iter(self._members)))  # the oldest
        self._members[session_id] = member

    # -- flushing ----------------------------------------------------------------------------

    def _flush_due(self) -> None:
        """Start the flush of every room whose window has passed and whose last flush is done."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for room_id in list(self._batches):
            if room_id in self._inflight or now < self._last_flush.get(room_id, -math.inf) + self.window_s:
                continue
            batch = self._batches.pop(room_id)
            self._last_flush[room_id] = now
            task = loop.create_task(self._flush(room_id, batch), name=f"spidi-room-hook-{room_id}")
            self._inflight[room_id] = task
            task.add_done_callback(lambda _t, r=room_id: self._inflight.pop(r, None))
        if len(self._last_flush) > 10_000:  # forget the windows of rooms gone quiet
            for room_id, at in list(self._last_flush.items()):
                if now - at > self.window_s and room_id not in self._batches:
                    del self._last_flush[room_id]

    async def _flush(self, room_id: str, batch: _Batch) -> None:
        try:
            async with self._slots:
                try:
                    online = int(await self.redis.zcard(keys.room_online(room_id)))
                    if not batch.room_code:
                        code = await self.redis.hget(keys.room_metrics(room_id), "code")
                        batch.room_code = _text(code) if code is not None else ""
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: keep the batch for the next window
                    logs.event(log, "room_hooks_failed", logging.WARNING, room_id=room_id, error=str(exc))
                    later = self._batches.get(room_id)
                    self._batches[room_id] = batch.merge_before(later) if later else batch
                    return
                for name, payload in self.payloads(room_id, batch, online):
                    result = await self.sender.post(
                        self.settings.room_hooks_url, payload, event=name, purpose="hook"
                    )
                    outcome = "sent" if result.ok else "refused" if result.refused else "failed"
                    self.metrics.room_hooks.labels(event=name, outcome=outcome).inc()
                    logs.event(
                        log,
                        "room_hook_sent" if result.ok else "room_hook_failed",
                        logging.DEBUG if result.ok else logging.WARNING,
                        hook_event=name,
                        room_id=room_id,
                        members=len(payload.get("members", ())),
                        attempts=result.attempts,
                        status=result.status,
                        error=result.error,
                    )
            # The window counts from the end of a flush: retries of a slow receiver do not let the
            # next POST of this room follow its previous one closer than window_s.
            self._last_flush[room_id] = asyncio.get_running_loop().time()
            try:
                await self.redis.xack(events.STREAM, GROUP, *batch.ids)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # stays pending: sent again after claim_idle_s (at least once)
                logs.event(log, "room_hooks_ack_failed", logging.WARNING, room_id=room_id, error=str(exc))
            self._held.difference_update(batch.ids)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("room_hooks_flush_error")

    def payloads(self, room_id: str, batch: _Batch, online: int) -> list[tuple[str, dict]]:
        """The POSTs of one flush, in order; updates the room's last seen online count."""
        before = self._counts.get(room_id)
        if before is None:  # first sight: what the room held before this batch
            before = max(0, online - len(batch.joins) + len(batch.leaves))
        self._counts[room_id] = online
        base = {"tenant": batch.tenant, "roomId": room_id, "roomCode": batch.room_code}
        sent_at = int(time.time() * 1000)
        out: list[tuple[str, dict]] = []
        if before == 0 and online > 0 and batch.joins:
            at = min((m["at"] for m in batch.joins if m["at"] is not None), default=sent_at)
            out.append(("room_occupied", {"event": "room_occupied", **base, "online": online, "at": at}))
        if batch.joins:
            out.append(("member_joined", {"event": "member_joined", **base, "members": batch.joins}))
        if batch.leaves:
            out.append(("member_left", {"event": "member_left", **base, "members": batch.leaves}))
        if before > 0 and online == 0 and batch.leaves:
            at = max((m["at"] for m in batch.leaves if m["at"] is not None), default=sent_at)
            out.append(("room_vacated", {"event": "room_vacated", **base, "online": 0, "at": at}))
        for _, payload in out:
            payload["sentAt"] = sent_at
        return [(name, payload) for name, payload in out if name in self.enabled]
