"""Redis hot state, the read side: room metrics, rosters, a user's sessions, a tenant's rooms.

Every read first waits for the hot store's buffered writes (``flush``), so it sees every write made
before it, then reads what every node wrote. The hot store (stores/hot_store.py) calls these from its
read methods; ``Source`` says what they need from it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from redis.exceptions import NoScriptError

from . import keys
from .client import REDIS_FAILURES, is_cluster, text
from .scripts import Scripts, current_hour

FLUSH_WAIT_S = 2.0  # the longest a read waits for the writes made before it
# Sessions per pipeline of a roster read. redis-py packs a pipeline's commands and parses its
# replies in one go: 1,000 HGETALLs held the event loop 14-17 ms, 200 about 3; the round trip
# between two pipelines gives the loop back.
ROSTER_CHUNK = 200


class Source(Protocol):
    """What the reads need from the hot store."""

    redis: Any
    scripts: Scripts
    # (late, at risk): ages in ms of a last heartbeat past which a session is counted late / at
    # risk in room metrics (presence/liveness.py sets them); None: not counted.
    grade_ages_ms: tuple[float, float] | None

    async def flush(self, timeout: float | None = 10.0) -> bool: ...


async def room_metrics(source: Source, room_ids: list[str]) -> list[dict]:
    """Metrics of each room as Redis holds them (every node's sessions), in input order."""
    if not room_ids:
        return []
    await source.flush(FLUSH_WAIT_S)
    args: list = [current_hour()]
    if source.grade_ages_ms is not None:
        now = time.time() * 1000
        args += [int(now - source.grade_ages_ms[0]), int(now - source.grade_ages_ms[1])]
    for attempt in range(2):
        pipe = source.redis.pipeline(transaction=False)
        for room_id in room_ids:
            source.scripts.queue(pipe, "room_metrics", keys.room_keys(room_id), args)
        try:
            replies = await pipe.execute()
            break
        except NoScriptError:
            # A restarted Redis, or a cluster replica promoted without our scripts.
            if attempt:
                raise
            await source.scripts.load()
    out = []
    for room_id, raw in zip(room_ids, replies, strict=True):
        online, users, peak, capacity, lat_sum, lat_n, code, tenant, late, at_risk = raw
        lat_sum = float(lat_sum)
        out.append(
            {
                "roomId": room_id,
                "roomCode": text(code),
                "tenant": text(tenant),
                "online": int(online),
                "users": int(users),
                "peak": int(peak),
                "capacity": int(capacity),
                "avgLatencyMs": round(lat_sum / lat_n, 1) if lat_n else 0.0,
                "late": int(late),
                "atRisk": int(at_risk),
            }
        )
    return out


async def room_online(source: Source, room_id: str) -> int:
    """Sessions in a room across every node."""
    await source.flush(FLUSH_WAIT_S)
    return int(await source.redis.zcard(keys.room_online(room_id)))


async def roster(source: Source, room_id: str, chunk: int = ROSTER_CHUNK) -> list[dict]:
    """Every session of a room with its metadata, latency and last heartbeat.

    The sessions' hashes are read ``chunk`` at a time, one pipeline each (see ROSTER_CHUNK).
    """
    await source.flush(FLUSH_WAIT_S)
    pipe = source.redis.pipeline(transaction=False)
    pipe.zrange(keys.room_online(room_id), 0, -1, withscores=True)
    pipe.hgetall(keys.room_latency(room_id))
    members, latencies = await pipe.execute()
    if not members:
        return []
    latencies = {text(k): float(v) for k, v in latencies.items()}
    out = []
    for start in range(0, len(members), chunk):
        part = members[start : start + chunk]
        pipe = source.redis.pipeline(transaction=False)
        for sid, _ in part:
            pipe.hgetall(keys.session(room_id, text(sid)))
        infos = await pipe.execute()
        for (sid, score), info in zip(part, infos, strict=True):
            sid = text(sid)
            entry = {text(k): text(v) for k, v in info.items()}
            entry["sessionId"] = sid
            entry["latencyMs"] = latencies.get(sid)
            entry["lastHeartbeatAt"] = int(score)
            if "connectedAt" in entry:
                entry["connectedAt"] = int(entry["connectedAt"])
            out.append(entry)
    return out


async def user_sessions(source: Source, tenant: str, user_id: str) -> list[dict]:
    """Every live session of a user, across rooms and nodes, with latency and last heartbeat."""
    await source.flush(FLUSH_WAIT_S)
    return await _indexed_sessions(source, keys.user_sessions(tenant, user_id), latency=True)


async def node_sessions(source: Source, node_id: str) -> list[dict]:
    """Every session a node holds in Redis (its index), with its room, metadata and last heartbeat.

    What a process restarting under the same node id reads to take its previous sessions back."""
    await source.flush(2.0)
    return await _indexed_sessions(source, keys.node_sessions(node_id), latency=False)


async def _indexed_sessions(source: Source, index_key: str, *, latency: bool) -> list[dict]:
    """The sessions an index hash (sessionId -> roomId) lists that Redis still holds: their hash
    fields, room and last heartbeat, and with ``latency`` their latest latency."""
    index = await source.redis.hgetall(index_key)
    if not index:
        return []
    pairs = [(text(sid), text(room_id)) for sid, room_id in index.items()]
    pipe = source.redis.pipeline(transaction=False)
    for sid, room_id in pairs:
        pipe.hgetall(keys.session(room_id, sid))
        pipe.zscore(keys.room_online(room_id), sid)
        if latency:
            pipe.hget(keys.room_latency(room_id), sid)
    raw = await pipe.execute()
    step = 3 if latency else 2
    out = []
    for i, (sid, room_id) in enumerate(pairs):
        info, score = raw[step * i], raw[step * i + 1]
        if not info or score is None:
            continue  # ended between the two reads, expired, or a stale index entry
        entry = {text(k): text(v) for k, v in info.items()}
        entry.update(sessionId=sid, roomId=room_id, lastHeartbeatAt=int(score))
        if latency:
            value = raw[step * i + 2]
            entry["latencyMs"] = float(value) if value is not None else None
        if "connectedAt" in entry:
            entry["connectedAt"] = int(entry["connectedAt"])
        out.append(entry)
    return out


async def tenant_rooms(source: Source, tenant: str) -> dict[str, str]:
    """roomId -> roomCode for every room of a tenant that ever had a session."""
    await source.flush(FLUSH_WAIT_S)
    raw = await source.redis.hgetall(keys.tenant_rooms(tenant))
    return {text(k): text(v) for k, v in raw.items()}


async def memory(client) -> tuple[int, int]:
    """(used_memory, maxmemory) in bytes from ``INFO memory`` (maxmemory 0: no limit). On a Redis
    Cluster, the primary nearest its limit (the fullest, when none has one): the first to refuse."""
    if is_cluster(client):
        replies = list((await client.info("memory", target_nodes=client.PRIMARIES)).values())
    else:
        replies = [await client.info("memory")]
    figures = [(int(r.get("used_memory", 0)), int(r.get("maxmemory", 0))) for r in replies]
    return max(figures, key=lambda f: (f[0] / f[1] if f[1] else 0.0, f[0]), default=(0, 0))


async def ping(client) -> bool:
    """Whether ``client``'s Redis answers within a second (on a cluster: every node)."""
    try:
        return bool(await asyncio.wait_for(client.ping(), 1.0))
    except (*REDIS_FAILURES, TimeoutError):
        return False
