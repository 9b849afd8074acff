"""The reconciliation report of one room: Redis, the nodes and PostgreSQL compared and repaired.

Three views of who is in a room should agree: the room's roster in Redis (its online set and
session hashes), the sessions the nodes hold (each live node's index in Redis, the handoff set
of stopped nodes, and this process's own sessions), and the sessions history holds as open in
PostgreSQL. ``reconcile_room`` lists every difference with what was done about it:

- ``ghost``: in the roster, held by no live node and not handed over. Ended (``node_lost``, at its
  last heartbeat) as the reaper ends a dead node's sessions. Confirmed twice, ``CONFIRM_S`` apart,
  so a session changing hands (a resume claimed and not yet indexed) is not taken for one.
- ``missing_in_redis``: held by a live node but not in the roster (removed behind the node's
  back). The node is asked to write its sessions again: its marker key is deleted, which it reads
  as "Redis lost my state" (``stores/recovery.py``) within a second.
- ``open_in_history_only``: open in PostgreSQL, in neither Redis nor any node. Ended in history
  (``node_lost`` at its last heartbeat, through the stream and the writer) once that heartbeat is
  older than a live session's checkpoints could be; younger ones are only reported.
- ``missing_in_history``: live but without a row in PostgreSQL once the writer should have written
  it. Its ``session_started`` is written again from what Redis holds.

Each repair goes through the path the ordinary one takes (the leave script, the events stream),
so nothing is written behind the writer's back and a repeated repair is a replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from . import logs
from .reaper import end_stored_sessions
from .stores import events, keys
from .stores.client import text

log = logging.getLogger("spidi.reconcile")

GHOST = "ghost"
MISSING_IN_REDIS = "missing_in_redis"
OPEN_IN_HISTORY_ONLY = "open_in_history_only"
MISSING_IN_HISTORY = "missing_in_history"

ENDED = "ended"
REASSERT_REQUESTED = "reassert_requested"
ENDED_IN_HISTORY = "ended_in_history"
STARTED_IN_HISTORY = "started_in_history"
NONE = "none"

CONFIRM_S = 0.5  # a ghost is judged again this much later before it is ended
HISTORY_LIMIT = 10_000  # open sessions of one room read from history, at most


@dataclass
class Difference:
    """One session the views disagree on, and what was done about it."""

    sessionId: str  # noqa: N815 (the JSON field names of the report)
    kind: str
    detail: str
    action: str
    nodeId: str | None = None  # noqa: N815


# (session ids) -> history's rows for the room's open sessions and for those ids
HistoryRead = Callable[[Sequence[str]], Awaitable[list]]


@dataclass
class Views:
    """What each side holds of one room."""

    roster: dict[str, dict]  # sessionId -> session hash fields (+ lastHeartbeatAt)
    held: dict[str, str]  # sessionId -> the live node whose index lists it in this room
    dead_index: dict[str, str]  # sessionId -> a dead node whose index still lists it
    handed_over: set[str]


async def read_views(redis, room_id: str) -> Views:
    """Read the room's roster and every node's claim on the room's sessions from Redis."""
    pipe = redis.pipeline(transaction=False)
    pipe.zrange(keys.room_online(room_id), 0, -1, withscores=True)
    pipe.smembers(keys.NODES)
    pipe.zrange(keys.HANDOFF, 0, -1)
    members, nodes, handoffs = await pipe.execute()
    sids = [text(m) for m, _ in members]
    pipe = redis.pipeline(transaction=False)
    for sid in sids:
        pipe.hgetall(keys.session(room_id, sid))
    node_ids = sorted(text(n) for n in nodes)
    for node_id in node_ids:
        pipe.exists(keys.node_alive(node_id))
        pipe.hgetall(keys.node_sessions(node_id))
    replies = await pipe.execute()
    roster = {}
    for (sid, (_, score)), info in zip(zip(sids, members, strict=True), replies[: len(sids)], strict=True):
        entry = {text(k): text(v) for k, v in (info or {}).items()}
        entry["lastHeartbeatAt"] = int(score)
        roster[sid] = entry
    held: dict[str, str] = {}
    dead: dict[str, str] = {}
    rest = replies[len(sids) :]
    for i, node_id in enumerate(node_ids):
        alive, index = rest[2 * i], rest[2 * i + 1]
        for sid, rid in (index or {}).items():
            if text(rid) == room_id:
                (held if alive else dead)[text(sid)] = node_id
    prefix = keys.handoff_member(room_id, "")
    handed = {text(m)[len(prefix) :] for m in handoffs if text(m).startswith(prefix)}
    return Views(roster, held, dead, handed)


def _ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


async def reconcile_room(
    redis,
    room_id: str,
    tenant: str,
    *,
    node_id: str,
    held_here: Callable[[str], bool],
    history: HistoryRead | None,
    history_settle_ms: int,
    judge_after_ms: int,
    repair: bool,
) -> dict:
    """The reconciliation report of one room (see the module's docstring); repairs when ``repair``.

    ``held_here``: whether this process holds a session; ``history``: reads the room's sessions
    from PostgreSQL (None: no history); ``history_settle_ms``: how old a live session must be
    before a missing history row counts (the writer's lag); ``judge_after_ms``: how old the last
    heartbeat of a session open only in history must be before it is ended there."""
    views = await read_views(redis, room_id)
    now = int(time.time() * 1000)

    def holder(sid: str) -> str | None:
        if held_here(sid):
            return node_id
        if sid in views.handed_over:
            return "handoff"
        return views.held.get(sid)

    diffs: list[Difference] = []
    ghosts = [sid for sid in views.roster if holder(sid) is None]
    if ghosts:
        await asyncio.sleep(CONFIRM_S)
        again = await read_views(redis, room_id)
        views.held.update(again.held)
        views.handed_over |= again.handed_over
        ghosts = [sid for sid in ghosts if sid in again.roster and holder(sid) is None]
    for sid in ghosts:
        dead = views.dead_index.get(sid)
        detail = f"its node {dead} is gone" if dead else "no node holds it"
        diffs.append(
            Difference(sid, GHOST, f"in the Redis roster, {detail}", ENDED if repair else NONE, dead)
        )
    if repair and ghosts:
        await end_stored_sessions(
            redis, [(sid, room_id) for sid in ghosts], events.NODE_LOST, f"reconcile:{node_id}", None
        )

    missing = sorted((sid, node) for sid, node in views.held.items() if sid not in views.roster)
    for sid, node in missing:
        diffs.append(
            Difference(
                sid,
                MISSING_IN_REDIS,
                f"node {node} holds it; the Redis roster does not list it",
                REASSERT_REQUESTED if repair else NONE,
                node,
            )
        )
    if repair:
        for node in sorted({node for _, node in missing}):
            await redis.delete(keys.node_marker(node))  # the node writes its sessions again

    pipe_events: list[dict] = []
    history_open = None
    if history is not None:
        live = [sid for sid in views.roster if sid not in ghosts]
        rows = await history([*live, *views.held])
        by_id = {r.session_id: r for r in rows}
        history_open = sum(1 for r in rows if r.ended_at is None)
        for r in rows:
            if r.ended_at is not None or r.session_id in views.roster or holder(r.session_id):
                continue
            last = _ms(r.last_heartbeat_at) or _ms(r.started_at)
            age_s = (now - last) / 1000
            if now - last < judge_after_ms:
                diffs.append(
                    Difference(
                        r.session_id,
                        OPEN_IN_HISTORY_ONLY,
                        f"open in history, unknown to Redis and the nodes; last heartbeat {age_s:.0f} s ago, "
                        "too recent to judge",
                        NONE,
                        r.node_id,
                    )
                )
                continue
            diffs.append(
                Difference(
                    r.session_id,
                    OPEN_IN_HISTORY_ONLY,
                    f"open in history, unknown to Redis and the nodes; last heartbeat {age_s:.0f} s ago",
                    ENDED_IN_HISTORY if repair else NONE,
                    r.node_id,
                )
            )
            if repair:
                pipe_events.append(
                    events.session_ended(
                        session_id=r.session_id,
                        room_id=room_id,
                        tenant=tenant,
                        started_at=_ms(r.started_at),
                        ended_at=last,
                        reason=events.NODE_LOST,
                        user_id=r.user_id or "",
                        room_code=None,
                        client_id=None,
                        device=None,
                        os=None,
                        app_version=None,
                        last_heartbeat_at=last,
                    )
                )
        for sid in live:
            info = views.roster[sid]
            started = int(info.get("connectedAt") or now)
            if sid in by_id or now - started < history_settle_ms or not info.get("tenant"):
                continue
            diffs.append(
                Difference(
                    sid,
                    MISSING_IN_HISTORY,
                    "live, but history has no row for it",
                    STARTED_IN_HISTORY if repair else NONE,
                    info.get("nodeId") or None,
                )
            )
            if repair:
                pipe_events.append(
                    events.session_started(
                        session_id=sid,
                        room_id=room_id,
                        room_code=info.get("roomCode", ""),
                        tenant=info["tenant"],
                        user_id=info.get("userId", ""),
                        client_id=info.get("clientId", ""),
                        app_version=info.get("appVersion", ""),
                        device=info.get("device") or None,
                        os=info.get("os") or None,
                        ip=info.get("ip", ""),
                        node_id=info.get("nodeId", ""),
                        started_at=started,
                    )
                )
    if pipe_events:
        pipe = redis.pipeline(transaction=False)
        for ev in pipe_events:
            pipe.xadd(keys.EVENTS_STREAM, events.encode(ev), maxlen=events.STREAM_MAXLEN, approximate=True)
        await pipe.execute()
    if diffs:
        logs.event(
            log,
            "room_reconciled",
            logging.WARNING,
            room_id=room_id,
            differences=len(diffs),
            kinds=sorted({d.kind for d in diffs}),
            repaired=repair,
        )
    return {
        "roomId": room_id,
        "checkedAt": now,
        "repair": repair,
        "redis": len(views.roster),
        "nodes": sum(1 for sid in {*views.roster, *views.held} if holder(sid)),
        "history": history_open,
        "differences": [asdict(d) for d in diffs],
    }
