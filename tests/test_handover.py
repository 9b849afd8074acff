"""A graceful stop hands its sessions to the grace period in Redis: any node resumes them.

Two nodes on the test Redis, real WebSocket clients: node A stops (as on SIGTERM), its clients
hear 1012 and come back to node B with ``resumeSessionId``; monitors on B see neither a leave nor
a join. What nobody resumes ends ``shutdown`` once the grace period is over, exactly once.
"""

from __future__ import annotations

import asyncio
import time

from spidi_server.rooms import room_id_for
from spidi_server.stores import events, handoff, keys

from .conftest import token_for
from .stomp_client import connected


async def _until(condition, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _stream_ends(redis_sync) -> list[dict]:
    return [e for _, e in redis_sync.xrange(keys.EVENTS_STREAM) if e["kind"] == events.SESSION_ENDED]


async def _roster_changes(mon, room: str, seconds: float) -> list[dict]:
    """Every roster delta the monitor receives for ``seconds`` (joined or left non-empty)."""
    changes = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            delta = await mon.json(f"/topic/rooms/{room}/roster", timeout=left)
        except TimeoutError:
            break
        if delta.get("joined") or delta.get("left"):
            changes.append(delta)
    return changes


async def test_stopped_node_hands_sessions_to_another_node_without_leave_or_join(node_factory, redis_sync):
    a = await node_factory(node_id="node-a", grace_period_ms=5000)
    b = await node_factory(node_id="node-b", grace_period_ms=5000)
    mon = await connected(b.ws_url, token_for(b.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms/deploy/roster")
    await mon.json("/topic/rooms/deploy/roster")
    users = [await connected(a.ws_url, token_for(a.settings, f"u{i}", "spidi:user")) for i in range(3)]
    welcomes = [await u.hello("deploy", f"phone-{i}") for i, u in enumerate(users)]
    assert all(w["gracePeriodMs"] == 5000 and w["resumed"] is False for w in welcomes)
    sids = [w["sessionId"] for w in welcomes]
    await users[0].app("/app/heartbeat", {"sessionId": sids[0], "latencyMs": 42})
    joined = set()
    while len(joined) < 3:
        joined |= {e["sessionId"] for e in (await mon.json("/topic/rooms/deploy/roster"))["joined"]}

    await a.stop()
    await _until(lambda: all(u.closed.is_set() for u in users), what="clients closed")
    assert {u.ws.close_code for u in users} == {1012}
    room_id = room_id_for("default", "deploy")
    assert redis_sync.zcard(keys.HANDOFF) == 3
    assert not redis_sync.hgetall(keys.node_sessions("node-a"))  # nothing for a reaper to end

    back = []
    for i, sid in enumerate(sids):
        c = await connected(b.ws_url, token_for(b.settings, f"u{i}", "spidi:user"))
        back.append(c)
        w = await c.hello("deploy", f"phone-{i}", resumeSessionId=sid)
        assert (w["sessionId"], w["resumed"]) == (sid, True)
    assert redis_sync.zcard(keys.HANDOFF) == 0
    # B's index and the sessions' owner are written with B's next flush.
    await _until(
        lambda: (
            redis_sync.hgetall(keys.node_sessions("node-b")) == dict.fromkeys(sids, room_id)
            and {redis_sync.hget(keys.session(room_id, s), "nodeId") for s in sids} == {"node-b"}
        ),
        what="node B's index",
    )

    # Resumed sessions live on: a heartbeat on B reaches the roster as an update, never a join.
    await back[1].app("/app/heartbeat", {"sessionId": sids[1], "latencyMs": 77}, receipt="hb")
    await back[1].next(command="RECEIPT")
    while True:
        delta = await mon.json("/topic/rooms/deploy/roster")
        assert not delta["joined"] and not delta["left"], delta
        if delta["updated"]:
            break
    assert delta["updated"][0]["sessionId"] == sids[1] and delta["updated"][0]["latencyMs"] == 77
    # Past the grace period nobody ends them either (B's reaper check runs every 2 s).
    assert await _roster_changes(mon, "deploy", 2.5) == []
    assert _stream_ends(redis_sync) == []
    metrics_key = keys.room_online(room_id)
    assert redis_sync.zcard(metrics_key) == 3
    for c in (mon, *back):
        await c.close()


async def test_a_handed_over_session_nobody_resumes_ends_shutdown_once(node_factory, redis_sync):
    a = await node_factory(node_id="node-a", grace_period_ms=600)
    b = await node_factory(node_id="node-b", grace_period_ms=600)
    c = await node_factory(node_id="node-c", grace_period_ms=600)
    mon = await connected(b.ws_url, token_for(b.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms/gone/roster")
    await mon.json("/topic/rooms/gone/roster")
    user = await connected(a.ws_url, token_for(a.settings, "ann", "spidi:user"))
    sid = (await user.hello("gone"))["sessionId"]
    assert [e["sessionId"] for e in (await mon.json("/topic/rooms/gone/roster"))["joined"]] == [sid]

    await a.stop()
    # B and C both check; exactly one of them ends it, at its last heartbeat, reason shutdown.
    delta = await mon.json("/topic/rooms/gone/roster", timeout=6)
    assert delta["left"] == [{"sessionId": sid, "reason": "shutdown"}]
    ends = await _until(lambda: _stream_ends(redis_sync), what="session_ended event")
    await asyncio.sleep(2.2)  # one more reaper period of both nodes: still one end
    ends = _stream_ends(redis_sync)
    assert [(e["session_id"], e["reason"]) for e in ends] == [(sid, "shutdown")]
    room_id = room_id_for("default", "gone")
    assert redis_sync.zcard(keys.room_online(room_id)) == 0
    assert not redis_sync.exists(keys.session(room_id, sid))
    assert redis_sync.zcard(keys.HANDOFF) == 0
    # Too late to resume: a HELLO with its id starts a new session.
    late = await connected(c.ws_url, token_for(c.settings, "ann", "spidi:user"))
    w = await late.hello("gone", resumeSessionId=sid)
    assert w["resumed"] is False and w["sessionId"] != sid
    for cl in (mon, late):
        await cl.close()


async def test_only_its_user_in_its_room_can_claim_a_handed_over_session(node_factory, redis_sync):
    a = await node_factory(node_id="node-a", grace_period_ms=5000)
    b = await node_factory(node_id="node-b", grace_period_ms=5000)
    ann = await connected(a.ws_url, token_for(a.settings, "ann", "spidi:user"))
    sid = (await ann.hello("private"))["sessionId"]
    await a.stop()

    mallory = await connected(b.ws_url, token_for(b.settings, "mallory", "spidi:user"))
    w = await mallory.hello("private", resumeSessionId=sid)
    assert w["resumed"] is False and w["sessionId"] != sid
    other_room = await connected(b.ws_url, token_for(b.settings, "ann", "spidi:user"))
    w = await other_room.hello("elsewhere", resumeSessionId=sid)
    assert w["resumed"] is False and w["sessionId"] != sid
    other_tenant = await connected(b.ws_url, token_for(b.settings, "ann", "spidi:user", tenant="acme"))
    w = await other_tenant.hello("private", resumeSessionId=sid)
    assert w["resumed"] is False
    assert redis_sync.zcard(keys.HANDOFF) == 1  # still there for ann

    ann_back = await connected(b.ws_url, token_for(b.settings, "ann", "spidi:user"))
    w = await ann_back.hello("private", resumeSessionId=sid)
    assert (w["sessionId"], w["resumed"]) == (sid, True)
    for cl in (mallory, other_room, other_tenant, ann_back):
        await cl.close()


async def test_concurrent_claims_one_wins(node_factory, redis_sync):
    a = await node_factory(node_id="node-a", grace_period_ms=5000)
    b = await node_factory(node_id="node-b", grace_period_ms=5000)
    c = await node_factory(node_id="node-c", grace_period_ms=5000)
    ann = await connected(a.ws_url, token_for(a.settings, "ann", "spidi:user"))
    sid = (await ann.hello("race"))["sessionId"]
    await a.stop()
    room_id = room_id_for("default", "race")
    # Straight at the store: the first ZREM wins, whatever the order the claims reach Redis in.
    wins = await asyncio.gather(*(handoff.claim(n.store.redis, room_id, sid) for n in (b, c, b, c)))
    assert sorted(wins) == [False, False, False, True]
    # Claimed by nobody's HELLO: the session is in no node's hands nor the handoff set; a HELLO
    # resuming it gets a new session rather than a session two nodes would both hold.
    again = await connected(b.ws_url, token_for(b.settings, "ann", "spidi:user"))
    w = await again.hello("race", resumeSessionId=sid)
    assert w["resumed"] is False
    await again.close()


async def test_no_grace_period_means_1001_and_sessions_end_shutdown(node_factory, redis_sync):
    a = await node_factory(node_id="node-a", grace_period_ms=0)
    user = await connected(a.ws_url, token_for(a.settings, "ann", "spidi:user"))
    sid = (await user.hello("nograce"))["sessionId"]
    await a.stop()
    await _until(lambda: user.closed.is_set(), what="client closed")
    assert user.ws.close_code == 1001
    assert [(e["session_id"], e["reason"]) for e in _stream_ends(redis_sync)] == [(sid, "shutdown")]
    assert redis_sync.zcard(keys.HANDOFF) == 0
