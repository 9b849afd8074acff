"""Sessions handed over by a stopping node (``keys.HANDOFF``), in Redis where any node finds them.

A node that stops gracefully queues ``queue_hand_over`` for each of its sessions (with its last
flush): the session keeps its keys and its place in the room and the roster, joins the handoff
set with the end of its grace period, and leaves the node's index (so the reaper does not end it
as ``node_lost``). Whoever wants it first reads it (``handed_over``), checks it, and claims it
with ``claim``: one ZREM, so exactly one HELLO (on one node) or one reaper (``take_due``, once
the grace period is over) gets each session. Every command touches one key: it all runs
unchanged on Redis Cluster.
"""

from __future__ import annotations

from . import keys
from .client import text


def queue_hand_over(pipe, node_key: str, room_id: str, session_id: str, deadline_ms: int, ttl_s: int) -> int:
    """Queue the handoff of one session on ``pipe`` (``node_key``: the stopping node's index);
    returns how many commands. The ZADD comes before the HDEL: a session is never in neither."""
    pipe.zadd(keys.HANDOFF, {keys.handoff_member(room_id, session_id): deadline_ms})
    pipe.expire(keys.session(room_id, session_id), ttl_s)
    pipe.hdel(node_key, session_id)
    return 3


async def handed_over(redis, room_id: str, session_id: str) -> dict | None:
    """The handed-over session as Redis holds it (its hash's fields, ``sessionId``, ``roomId``,
    ``lastHeartbeatAt``, ``handoffUntil``), or None when it is not handed over or is gone."""
    pipe = redis.pipeline(transaction=False)
    pipe.zscore(keys.HANDOFF, keys.handoff_member(room_id, session_id))
    pipe.hgetall(keys.session(room_id, session_id))
    pipe.zscore(keys.room_online(room_id), session_id)
    until, info, last_beat = await pipe.execute()
    if until is None or not info or last_beat is None:
        return None
    entry = {text(k): text(v) for k, v in info.items()}
    entry["sessionId"] = session_id
    entry["roomId"] = room_id
    entry["lastHeartbeatAt"] = int(last_beat)
    entry["handoffUntil"] = int(until)
    if "connectedAt" in entry:
        entry["connectedAt"] = int(entry["connectedAt"])
    return entry


async def claim(redis, room_id: str, session_id: str) -> bool:
    """Take a handed-over session: True for the one caller that removed it from the set."""
    return bool(await redis.zrem(keys.HANDOFF, keys.handoff_member(room_id, session_id)))


async def take_due(redis, now_ms: int, limit: int) -> list[tuple[str, str]]:
    """Claim up to ``limit`` handed-over sessions whose grace period is over: (sessionId, roomId)
    of those this caller removed from the set (another process may take some of them first)."""
    due = await redis.zrangebyscore(keys.HANDOFF, "-inf", now_ms, start=0, num=limit)
    if not due:
        return []
    members = [text(m) for m in due]
    pipe = redis.pipeline(transaction=False)
    for member in members:
        pipe.zrem(keys.HANDOFF, member)
    won = await pipe.execute()
    out = []
    for member, removed in zip(members, won, strict=True):
        if removed:
            room_id, session_id = keys.parse_handoff_member(member)
            out.append((session_id, room_id))
    return out
