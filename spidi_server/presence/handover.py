"""Sessions changing hands between processes, within the grace period.

Two ways a session outlives the process that held it:

- **adopt** (after a crash): a process restarting under the node id of one that was killed takes
  back the sessions Redis still lists in that id's index, as if each connection had just closed
  abruptly; a client that comes back within the grace period resumes, the rest end ``node_lost``
  at their last heartbeat.
- **hand over** (a graceful stop: SIGTERM, a deploy): the stopping process puts each of its
  sessions in Redis's handoff set (``stores.handoff``) with the end of its grace period, takes it
  off its own index and closes the sockets with 1012 (service restart). A HELLO with
  ``resumeSessionId`` on any node, this one restarted or another, claims it (the first claim
  wins) and resumes it. Nothing is published and no history event is written either way: every
  roster still lists the session. The reaper's check ends what nobody claimed in time
  (``shutdown``, at its last heartbeat).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .. import logs
from ..protocol import payloads
from ..rooms import RoomDef
from .model import Client, Session, now_ms

if TYPE_CHECKING:
    from .sessions import SessionLifecycle

log = logging.getLogger("spidi.presence")


def _restore(lc: SessionLifecycle, entry: dict, definition: RoomDef, deadline: float) -> Session:
    """Hold a session another process left in Redis (``entry``, as the stores read it) as a
    session whose connection closed: no lane beats until its client resumes it, ending when
    ``deadline`` (monotonic) passes unless it does."""
    session_id = entry["sessionId"]
    hello = payloads.HelloPayload(
        definition.code,
        entry.get("clientId", ""),
        entry.get("appVersion", ""),
        entry.get("device"),
        entry.get("os"),
        None,
    )
    room = lc.local.room(definition)
    session = Session(
        session_id,
        room,
        entry.get("userId", ""),
        hello,
        entry.get("ip", ""),
        entry.get("connectedAt", now_ms()),
        lc.lane,
    )
    # Its newest heartbeat as Redis kept it; no connection until its client resumes it.
    lc.lane.add_session(session_id, -1, room.key, entry["lastHeartbeatAt"], time.monotonic())
    lc.lane.detach(session_id)
    lc.local.sampling.enter(session)  # its SLO breakdown groups
    session.node_id = lc.node_id
    room.sessions[session_id] = session
    lc.local.sessions[session_id] = session
    lc.wheel.add(session_id, deadline)
    return session


def _counted(lc: SessionLifecycle) -> None:
    lc.metrics.sessions_active.set(len(lc.local.sessions))
    lc.local.count_rooms()


def adopt(lc: SessionLifecycle, stored: list[dict]) -> list[str]:
    """Take back this node id's sessions a previous process left in Redis (``SessionLifecycle.adopt``)."""
    if lc.grace_s <= 0:
        return []
    alive_after = now_ms() - lc.settings.heartbeat_timeout_ms
    deadline = time.monotonic() + lc.grace_s
    adopted = []
    for entry in stored:
        session_id = entry["sessionId"]
        if entry["lastHeartbeatAt"] <= alive_after or session_id in lc.local.sessions:
            continue
        definition = lc.catalog.lookup(entry.get("tenant", ""), entry.get("roomCode", ""), create=True)
        if definition is None or definition.room_id != entry["roomId"] or not definition.active:
            continue  # the room is gone or was replaced: let the reaper end the session
        session = _restore(lc, entry, definition, deadline)
        session.lost = True  # not resumed in time: its node was lost at its last heartbeat
        room = session.room
        # Its keys' expiry was set by the dead process, perhaps long ago: cover the grace period.
        lc.store.update_session(room.room_id, session_id, room.tenant, session.user_id, lc.session_ttl_s)
        adopted.append(session_id)
    if adopted:
        _counted(lc)
        logs.event(log, "sessions_adopted", node_id=lc.node_id, sessions=len(adopted))
    return adopted


def hand_over_all(lc: SessionLifecycle) -> int:
    """Hand every local session not handed over yet to the grace period in Redis (a graceful
    stop); how many this time. Called before the sockets close and again after (a HELLO answered
    in between).

    The sessions stay in this process's tables (it is stopping: nothing reads them any more), so
    their newest heartbeats still go with the last flush, which also carries the handoffs."""
    deadline_ms = now_ms() + int(lc.grace_s * 1000)
    count = 0
    done = lc.handed_over
    for session_id, session in lc.local.sessions.items():
        if session_id in done:
            continue
        done.add(session_id)
        room = session.room
        lc.store.hand_over(room.room_id, session_id, deadline_ms, lc.session_ttl_s)
        count += 1
    if count:
        logs.event(
            log, "sessions_handed_over", node_id=lc.node_id, sessions=count, grace_ms=lc.grace_s * 1000
        )
    return count


async def claim(
    lc: SessionLifecycle, client: Client, hello: payloads.HelloPayload, user_id: str, tenant: str
) -> Session | None:
    """The session ``hello.resume_session_id`` if a stopped process handed it over and it is
    this user's, in this room, within its grace period: claimed (no other process can have it)
    and held here, not yet attached to ``client``. None otherwise (the caller starts a new one)."""
    session_id = hello.resume_session_id
    definition = lc.catalog.lookup(tenant, hello.room_code, create=True)
    if definition is None or not definition.active:
        return None
    entry = await lc.store.handed_over(definition.room_id, session_id)
    if (
        entry is None
        or entry.get("userId") != user_id
        or entry.get("tenant") != tenant
        or entry.get("roomCode") != hello.room_code
        or session_id in lc.local.sessions
    ):
        return None
    if not await lc.store.claim_handover(definition.room_id, session_id):
        return None  # another HELLO claimed it first, or its grace period ran out meanwhile
    left_s = max(0.0, (entry["handoffUntil"] - now_ms()) / 1000)
    session = _restore(lc, entry, definition, time.monotonic() + left_s)
    room = session.room
    lc.store.index_session(room.room_id, session_id)
    lc.store.update_session(
        room.room_id, session_id, room.tenant, session.user_id, lc.session_ttl_s, {"nodeId": lc.node_id}
    )
    _counted(lc)
    logs.event(
        log,
        "session_claimed",
        trace_id=client.conn_id,
        session_id=session_id,
        user_id=user_id,
        room_id=room.room_id,
        from_node=entry.get("nodeId", ""),
    )
    return session
