"""No ghost presences: the sessions of a process that died without a word are ended by others.

Every node keeps ``spidi:node:<id>:alive`` alive (a key with a short expiry, renewed each second)
and lists its sessions in ``spidi:node:<id>:sessions``. Every node checks the other nodes'
keys; when one has expired, the first node to take ``spidi:node:<id>:reaping`` ends that node's
sessions with reason ``node_lost``: removed from the rooms, the users' indexes and the node's,
a ``session_ended`` event for the history (the writer counts the room's disconnects from those
events; ``ended_at`` is the session's last heartbeat known, not the reaping time), and a roster
change for every subscriber. A node starting ends the sessions of every dead node it knows of
before it serves, its own id's first (it crashed and came back), so nothing is resurrected and a
cluster where every node died is cleaned up by the first one back. A supervisor that saw a worker
die calls ``reap_node`` at once instead of waiting for the key to expire. What Redis forgot (a
restart without persistence, FLUSHALL) the writer's reconciliation sweep ends in PostgreSQL.
Sessions a restarted node took back for resume (``keep``: still alive, resumable within the grace
period) are not ended. Sessions a node handed over when it stopped gracefully (``stores.handoff``)
are in no node's index: any node resumes them within their grace period, and the next check after
it ends the rest, reason ``shutdown``.

Every command touches one key, or one room's keys (the leave script), so it all runs unchanged on a
Redis Cluster: the node's index, the users' indexes, the stream and each room live in slots of
their own, and the cluster pipeline sends each node its share, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from redis.exceptions import OutOfMemoryError

from . import logs
from .stores import events, handoff, keys
from .stores.client import pipeline_evalsha, pipeline_publish, text
from .stores.scripts import script_source
from .tasks import cancel_and_wait, run_every, warn

log = logging.getLogger("spidi.reaper")

ALIVE_TTL_MS = 5000
RENEW_S = 1.0
CHECK_S = 2.0
HANDOFF_PAGE = 1000  # handed-over sessions ended per check, at most


async def reap_node(redis, node_id: str, reason: str = events.NODE_LOST, by: str = "", keep=None) -> int:
    """End every session ``node_id`` holds in Redis but those ``keep(session_id)`` says to keep
    (a restarted node's sessions it took back for resume); returns how many were ended.

    Each ends at its last heartbeat known to Redis (its join time if it never beat): when the
    node died, not when it was noticed.
    """
    index = await redis.hgetall(keys.node_sessions(node_id))
    if not index:
        return 0
    pairs = [(text(sid), text(room_id)) for sid, room_id in index.items()]
    if keep is not None:
        pairs = [(sid, room_id) for sid, room_id in pairs if not keep(sid)]
    ended = await end_stored_sessions(
        redis, pairs, reason, by or f"reaper:{node_id}", keys.node_sessions(node_id)
    )
    if ended:
        logs.event(log, "node_reaped", node_id=node_id, sessions=ended, reason=reason, by=by)
    return ended


async def end_handoffs_due(redis, by: str, limit: int = HANDOFF_PAGE) -> int:
    """End the handed-over sessions (``stores.handoff``) nobody resumed within their grace
    period, reason ``shutdown``; returns how many this process ended (each one is ended by one
    process only: the one whose ZREM removed it)."""
    pairs = await handoff.take_due(redis, int(time.time() * 1000), limit)
    ended = await end_stored_sessions(redis, pairs, events.SHUTDOWN, by or "handoff", None)
    if ended:
        logs.event(log, "handoff_ended", sessions=ended, by=by)
    return ended


async def end_stored_sessions(
    redis, pairs: list[tuple[str, str]], reason: str, by: str, index_key: str | None
) -> int:
    """End sessions no process holds any more, from what Redis keeps of them: ``pairs`` of
    (sessionId, roomId). Each gets its ``session_ended`` event (ending at its last heartbeat known
    to Redis, its join time if it never beat), leaves its room and its user's index (and
    ``index_key``'s, a node's index, if given), and each room's subscribers hear of it. Returns
    how many were still there to end."""
    if not pairs:
        return 0
    pipe = redis.pipeline(transaction=False)
    for sid, room_id in pairs:
        pipe.hgetall(keys.session(room_id, sid))
        pipe.zscore(keys.room_online(room_id), sid)
    raw = await pipe.execute()
    # SCRIPT LOAD (on a cluster: on every master) then EVALSHA in the pipeline: redis-py's
    # Script object cannot queue itself on a cluster pipeline.
    leave = await redis.script_load(script_source("leave"))
    now = int(time.time() * 1000)
    per_room: dict[str, dict] = {}
    pipe = redis.pipeline(transaction=False)
    ended = 0
    for i, (sid, room_id) in enumerate(pairs):
        info = {text(k): text(v) for k, v in (raw[2 * i] or {}).items()}
        last_beat = raw[2 * i + 1]
        if index_key is not None:
            pipe.hdel(index_key, sid)
        if not info:
            continue  # already gone (ended, or expired with its TTL)
        user, tenant = info.get("userId", ""), info.get("tenant", "")
        if tenant:
            pipe.hdel(keys.user_sessions(tenant, user), sid)
            last_heartbeat_at = int(last_beat) if last_beat is not None else None
            started_at = int(info.get("connectedAt") or now)
            ended_at = min(now, max(started_at, last_heartbeat_at or started_at))
            end_event = events.session_ended(
                session_id=sid,
                room_id=room_id,
                tenant=tenant,
                started_at=started_at,
                ended_at=ended_at,
                reason=reason,
                user_id=user,
                room_code=info.get("roomCode"),
                client_id=info.get("clientId"),
                device=info.get("device"),
                os=info.get("os"),
                app_version=info.get("appVersion"),
                last_heartbeat_at=last_heartbeat_at,
            )
            pipe.xadd(
                keys.EVENTS_STREAM, events.encode(end_event), maxlen=events.STREAM_MAXLEN, approximate=True
            )
            room = per_room.setdefault(
                room_id, {"tenant": tenant, "code": info.get("roomCode", ""), "left": {}}
            )
            room["left"][sid] = reason
        # The end is in the stream before the session leaves Redis: the writer's sweep, which ends
        # what Redis forgot, never sees a reaped session without its end.
        pipeline_evalsha(pipe, leave, [*keys.room_keys(room_id), keys.session(room_id, sid)], [sid, user])
        ended += 1
    # No room sample: the dead node's online figures are lost with it, and its sessions' joins and
    # disconnects are counted by the writer from their session_started/session_ended events.
    # Announcements last, after the writes they announce (as the hot store does).
    for room_id, room in per_room.items():
        # "reaped": the sessions were not the publisher's own, so no process skips this echo.
        payload = orjson.dumps({"n": by, "reaped": True, "j": [], "l": room["left"], "u": []})
        pipeline_publish(pipe, keys.roster_channel(room_id), payload)
    await pipe.execute()
    return ended


class NodeLiveness:
    """This node's liveness key, and the reaping of nodes whose key expired."""

    def __init__(self, redis, node_id: str, on_reaped=None, keep=None):
        self.redis = redis
        self.node_id = node_id
        self.on_reaped = on_reaped  # callable(count): metrics
        self.keep = keep  # callable(session_id): this process took it back, not to be reaped
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Claim the id, end what a previous process under it left behind and what dead nodes
        left (no live node may be there to do it), then keep alive."""
        await self._beat()
        left_over = await reap_node(
            self.redis, self.node_id, events.NODE_LOST, by=self.node_id, keep=self.keep
        )
        if left_over and self.on_reaped:
            self.on_reaped(left_over)
        await self.redis.sadd(keys.NODES, self.node_id)
        await self.check()
        loop = asyncio.get_running_loop()
        # Redis down: the hot store reports it; each loop retries at its next tick.
        renew = run_every(RENEW_S, self._beat, "alive-renew", warn(log, "alive_renew_failed"))
        check = run_every(CHECK_S, self.check, "reaper-check", warn(log, "reaper_check_failed"))
        self._tasks = [loop.create_task(renew), loop.create_task(check)]

    async def stop(self) -> None:
        """Stop renewing and give the id up (a clean stop leaves nothing to reap)."""
        await cancel_and_wait(self._tasks)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(keys.node_alive(self.node_id))
            pipe.srem(keys.NODES, self.node_id)
            await pipe.execute()
        except Exception:  # Redis gone at shutdown: the key expires by itself
            pass

    async def _beat(self) -> None:
        key = keys.node_alive(self.node_id)
        try:
            await self.redis.set(key, int(time.time() * 1000), px=ALIVE_TTL_MS)
        except OutOfMemoryError:
            # A full Redis (maxmemory, noeviction) refuses SET but not PEXPIRE: keep the key
            # alive, or in ALIVE_TTL_MS every other node would reap this live node's sessions.
            if not await self.redis.pexpire(key, ALIVE_TTL_MS):
                raise

    async def check(self) -> int:
        """Reap every known node whose liveness key expired, and end the handed-over sessions
        whose grace period ran out; returns sessions ended."""
        total = await end_handoffs_due(self.redis, self.node_id)
        others = [text(n) for n in await self.redis.smembers(keys.NODES)]
        others = [n for n in others if n != self.node_id]
        if not others:
            if total and self.on_reaped:
                self.on_reaped(total)
            return total
        pipe = self.redis.pipeline(transaction=False)
        for node_id in others:
            pipe.exists(keys.node_alive(node_id))
        alive = await pipe.execute()
        for node_id, is_alive in zip(others, alive, strict=True):
            if is_alive:
                continue
            # One reaper per dead node, whichever node gets there first.
            if not await self.redis.set(keys.node_reaping(node_id), self.node_id, nx=True, px=30_000):
                continue
            try:
                total += await reap_node(self.redis, node_id, events.NODE_LOST, by=self.node_id)
                if not await self.redis.exists(keys.node_sessions(node_id)):
                    await self.redis.srem(keys.NODES, node_id)
            finally:
                await self.redis.delete(keys.node_reaping(node_id))
        if total and self.on_reaped:
            self.on_reaped(total)
        return total
