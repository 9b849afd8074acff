"""What the evaluator reads of a room each round: its CEL metrics (``rules.VARIABLES``), from Redis.

Cluster-wide: every node's sessions are in the room's keys. The heartbeat figures come from the
room's online set (``spidi:room:{<roomId>}:online``, session -> last heartbeat in epoch ms), so
each is one O(log n) read whatever the room's size: ZCOUNT of the scores older than a cut-off
(sessions silent that long), ZRANGE 0 0 for the oldest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..stores import keys

if TYPE_CHECKING:
    from ..settings import Settings
    from ..stores.hot_store import HotStore


@dataclass
class RoomRef:
    """A room a rule may target."""

    room_id: str
    tenant: str
    code: str
    room_type_id: str | None = None
    capacity: int = 0


def _silent_before(now_ms: int, silence_s: float) -> str:
    """ZCOUNT's exclusive upper bound: heartbeats before it are more than ``silence_s`` old."""
    return f"({now_ms - int(silence_s * 1000)}"


def share(count: int, online: int) -> float:
    """``count`` sessions as a share of ``online`` (0 in an empty room)."""
    return min(1.0, count / online) if online else 0.0


async def room_metrics(
    store: HotStore, settings: Settings, rooms: list[RoomRef], now_ms: int
) -> dict[str, dict]:
    """The CEL variables of each room, by room id; ``silentShare`` at ``alert_stale_heartbeat_s``
    (a heartbeat rule's own threshold is applied with :func:`silent_sessions`)."""
    if not rooms:
        return {}
    ids = [r.room_id for r in rooms]
    base = await store.room_metrics(ids)
    stale_before = _silent_before(now_ms, settings.alert_stale_heartbeat_s)
    late_before = now_ms - int(settings.heartbeat_interval_ms * 1.5)
    pipe = store.redis.pipeline(transaction=False)
    for room_id in ids:
        key = keys.room_online(room_id)
        pipe.zcount(key, "-inf", stale_before)
        pipe.zcount(key, "-inf", late_before)
        pipe.zrange(key, 0, 0, withscores=True)
    replies = await pipe.execute()
    out = {}
    for i, (room, m) in enumerate(zip(rooms, base, strict=True)):
        stale, late, oldest = replies[3 * i : 3 * i + 3]
        online = m["online"]
        capacity = m["capacity"] or room.capacity
        out[room.room_id] = {
            "online": online,
            "capacity": capacity,
            "utilization": online / capacity if capacity else 0.0,
            "peak": m["peak"],
            "users": m["users"],
            "avgLatencyMs": float(m["avgLatencyMs"]),
            "staleSessions": int(stale),
            "oldestHeartbeatAgeS": max(0.0, (now_ms - oldest[0][1]) / 1000) if oldest else 0.0,
            "silentShare": share(int(stale), online),
            "heartbeatRateDrop": int(late) / online if online else 0.0,
            "roomCode": m["roomCode"] or room.code,
            "tenant": room.tenant,
        }
    return out


async def silent_sessions(
    redis, wanted: Iterable[tuple[str, float]], now_ms: int
) -> dict[tuple[str, float], int]:
    """How many online sessions of each (room id, seconds) pair have been silent longer than that."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    pipe = redis.pipeline(transaction=False)
    for room_id, silence_s in pairs:
        pipe.zcount(keys.room_online(room_id), "-inf", _silent_before(now_ms, silence_s))
    return {pair: int(n) for pair, n in zip(pairs, await pipe.execute(), strict=True)}
