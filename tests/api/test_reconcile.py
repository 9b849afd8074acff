"""GET /api/v1/rooms/{id}/reconcile: differences between Redis, the nodes and PostgreSQL, reported
and repaired. A real node, real Redis and PostgreSQL (history written through the writer), real
WebSocket clients; each difference is made for real behind the node's back, then mended."""

from __future__ import annotations

import asyncio
import time

from spidi_server.rooms import room_id_for
from spidi_server.stores import events, keys
from tests.conftest import token_for
from tests.stomp_client import connected

from .conftest import ApiClient, assert_problem, check_shape, write_history


async def _until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def _ends(redis_sync) -> list[dict]:
    return [e for _, e in redis_sync.xrange(keys.EVENTS_STREAM) if e["kind"] == events.SESSION_ENDED]


async def test_a_session_removed_from_redis_behind_the_nodes_back_is_reported_and_written_again(
    api, api_node, redis_sync
):
    node = api_node
    room_id = room_id_for("default", "mended")
    users = [await connected(node.ws_url, token_for(node.settings, f"u{i}", "spidi:user")) for i in range(2)]
    sids = [(await u.hello("mended"))["sessionId"] for u in users]
    await _until(lambda: redis_sync.zcard(keys.room_online(room_id)) == 2, what="both sessions in Redis")

    report = await api.get(f"/api/v1/rooms/{room_id}/reconcile")
    assert report.status == 200, report.body
    doc = (await api.get("/api/openapi.json")).body
    check_shape(doc["components"]["schemas"]["ReconcileReport"], report.body, doc, "report")
    assert (report.body["redis"], report.body["nodes"], report.body["differences"]) == (2, 2, [])

    # Behind the node's back: the session leaves the roster and its hash is gone.
    redis_sync.zrem(keys.room_online(room_id), sids[0])
    redis_sync.delete(keys.session(room_id, sids[0]))
    dry = await api.get(f"/api/v1/rooms/{room_id}/reconcile?repair=false")
    assert dry.body["differences"] == [
        {
            "sessionId": sids[0],
            "kind": "missing_in_redis",
            "detail": f"node {node.node_id} holds it; the Redis roster does not list it",
            "action": "none",
            "nodeId": node.node_id,
        }
    ]
    assert redis_sync.zscore(keys.room_online(room_id), sids[0]) is None  # a dry run repairs nothing

    fixed = await api.get(f"/api/v1/rooms/{room_id}/reconcile")
    assert [(d["sessionId"], d["kind"], d["action"]) for d in fixed.body["differences"]] == [
        (sids[0], "missing_in_redis", "reassert_requested")
    ]
    # The node writes its sessions again (it reads its marker's loss as Redis having lost state).
    await _until(lambda: redis_sync.zscore(keys.room_online(room_id), sids[0]) is not None, what="re-assert")
    assert redis_sync.hget(keys.session(room_id, sids[0]), "userId") == "u0"
    assert (await api.get(f"/api/v1/rooms/{room_id}/reconcile")).body["differences"] == []
    # The client never noticed: its heartbeat is answered.
    await users[0].app("/app/heartbeat", {"sessionId": sids[0], "latencyMs": 9}, receipt="hb")
    assert (await users[0].next(command="RECEIPT"))[1]["receipt-id"] == "hb"
    for u in users:
        await u.close()


async def test_a_ghost_in_redis_is_ended_once_and_leaves_the_roster(api, api_node, redis_sync):
    node = api_node
    room_id = room_id_for("default", "haunted")
    user = await connected(node.ws_url, token_for(node.settings, "ann", "spidi:user"))
    real = (await user.hello("haunted"))["sessionId"]
    await _until(lambda: redis_sync.zcard(keys.room_online(room_id)) == 1, what="the real session")
    ghost = "0d5ba4e1-53a0-4c48-8f0e-4f1f5d0f2a11"
    now = int(time.time() * 1000)
    redis_sync.zadd(keys.room_online(room_id), {ghost: now - 5000})
    redis_sync.hset(
        keys.session(room_id, ghost),
        mapping={"userId": "casper", "tenant": "default", "roomCode": "haunted", "connectedAt": now - 60_000},
    )
    mon = await connected(node.ws_url, token_for(node.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms/haunted/roster")
    assert {u["sessionId"] for u in (await mon.json("/topic/rooms/haunted/roster"))["users"]} == {real, ghost}

    report = await api.get(f"/api/v1/rooms/{room_id}/reconcile")
    assert [(d["sessionId"], d["kind"], d["action"]) for d in report.body["differences"]] == [
        (ghost, "ghost", "ended")
    ]
    delta = await mon.json("/topic/rooms/haunted/roster")
    assert delta["left"] == [{"sessionId": ghost, "reason": "node_lost"}]
    assert redis_sync.zscore(keys.room_online(room_id), ghost) is None
    assert redis_sync.zscore(keys.room_online(room_id), real) is not None
    ends = [e for e in _ends(redis_sync) if e["session_id"] == ghost]
    assert [(e["reason"], int(e["ended_at"])) for e in ends] == [("node_lost", now - 5000)]
    assert (await api.get(f"/api/v1/rooms/{room_id}/reconcile")).body["differences"] == []
    for c in (user, mon):
        await c.close()


async def test_history_differences_are_mended_through_the_writer(http, node_factory, redis_sync, pg_dsn):
    # The report judges a missing history row after 2 writer flush intervals + 2 s: a short one here.
    node = await node_factory(postgres_dsn=pg_dsn, writer="external", writer_flush_interval_s=0.2)
    api = ApiClient(http, node)
    room_id = room_id_for("default", "ledger")
    # In history only: a session whose node died long ago without a word (written by the writer).
    lost_sid = "7b1e6c1a-2f0e-4d7e-9a53-0b7d0c6f9e21"
    long_ago = int(time.time() * 1000) - 3_600_000
    started = events.session_started(
        session_id=lost_sid,
        room_id=room_id,
        room_code="ledger",
        tenant="default",
        user_id="old",
        client_id="c",
        app_version="1",
        device=None,
        os=None,
        ip="10.0.0.1",
        node_id="gone-node",
        started_at=long_ago,
    )
    await write_history(node, redis_sync, [started])
    # Live, but its session_started never reached PostgreSQL (this node has no writer running).
    user = await connected(node.ws_url, token_for(node.settings, "bob", "spidi:user"))
    live_sid = (await user.hello("ledger"))["sessionId"]
    # ... and the stream lost it (as if Redis had lost those entries).
    await _until(lambda: redis_sync.xlen(keys.EVENTS_STREAM) > 0, what="the session_started in the stream")
    redis_sync.delete(keys.EVENTS_STREAM)
    # A session younger than the writer's lag is not judged yet: dry runs until it is.
    deadline = time.monotonic() + 15
    while True:
        dry = await api.get(f"/api/v1/rooms/{room_id}/reconcile?repair=false")
        if any(d["sessionId"] == live_sid for d in dry.body["differences"]):
            break
        assert time.monotonic() < deadline, dry.body
        await asyncio.sleep(0.2)

    report = await api.get(f"/api/v1/rooms/{room_id}/reconcile")
    got = {d["sessionId"]: (d["kind"], d["action"]) for d in report.body["differences"]}
    assert got == {
        lost_sid: ("open_in_history_only", "ended_in_history"),
        live_sid: ("missing_in_history", "started_in_history"),
    }
    assert report.body["history"] == 1
    # The repairs went to the stream; the writer applies them.
    await write_history(node, redis_sync, [])
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(long_ago / 1000 - 60))
    rows = await api.get(f"/api/v1/sessions?roomId={room_id}&from={since}&limit=100")
    by_id = {r["sessionId"]: r for r in rows.body["items"]}
    assert by_id[lost_sid]["endReason"] == "node_lost" and by_id[live_sid]["endedAt"] is None
    assert (await api.get(f"/api/v1/rooms/{room_id}/reconcile")).body["differences"] == []
    await user.close()


async def test_reconcile_is_for_admins_and_known_rooms(api):
    room_id = room_id_for("default", "nobody-here")
    assert_problem(await api.get(f"/api/v1/rooms/{room_id}/reconcile"), 404, "not-found")
    reply = await api.get(f"/api/v1/rooms/{room_id}/reconcile", role="monitor")
    assert reply.status == 403
    bad = await api.get(f"/api/v1/rooms/{room_id}/reconcile?repair=maybe")
    assert bad.status == 400
