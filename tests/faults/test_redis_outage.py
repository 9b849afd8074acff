"""Redis unreachable for a while under load: the node keeps serving, buffers (memory, then the
spill file), replays in order, rebuilds Redis, and PostgreSQL ends up with exactly what happened."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from spidi_server.rooms import room_id_for
from spidi_server.stores import events
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import HotStore
from spidi_server.stores.spill import SpillFile

from ..conftest import token_for
from ..stomp_client import connected
from .conftest import (
    SESSIONS_SQL,
    STATS_SQL,
    Member,
    expected_view,
    get_json,
    matches,
    metric,
    poll_pg,
    redis_view,
    wait_until,
)

OUTAGE_S = 10.0
ROOM = "load"


@pytest.mark.hardening(
    "fault",
    "Redis unreachable for 10 s while 20 clients heartbeat 10/s; meanwhile 3 join, 3 leave, 2 disconnect, 2 go silent",
    "Clients stay connected and heartbeating, only the silent ones time out, HELLO admits (degraded); writes "
    "buffered (100 in memory), then spilled to disk and replayed in order; /health/ready 503 with the "
    "buffered/spilled counts, then 200; Redis holds every live session with its newest heartbeat; PostgreSQL "
    "has every session once with its end reason and heartbeat count, and the room counts exactly",
)
async def test_redis_unreachable_10s_under_load(own_redis, pg_dsn, node_factory):
    server = own_redis(persistent=True)  # a cut-off Redis keeps its data: AOF, fsync always
    node = await node_factory(
        redis_url=server.url,
        postgres_dsn=pg_dsn,
        writer="child",
        writer_flush_interval_s=0.2,
        node_id="outage",
        alerting=False,
        heartbeat_interval_ms=1000,
        heartbeat_timeout_ms=3000,
        grace_period_ms=0,
        checkpoint_interval_s=0.5,
        redis_buffer_max_ops=100,
        redis_join_timeout_ms=2000,
    )
    ready = f"{node.ops.url}/health/ready"
    room_id = room_id_for("default", ROOM)
    monitor = await connected(node.ws_url, token_for(node.settings, "mon", "spidi:monitor"))
    await monitor.subscribe(f"/topic/rooms/{ROOM}/roster")  # the room is watched: roster announcements too
    members = [await Member.join(node, ROOM, f"u{i}") for i in range(20)]
    for m in members:
        m.start(0.1)
    await wait_until(lambda: _is_ready(ready), 20, 0.2, "ready before the outage")  # the writer reported

    # -- Redis goes away ------------------------------------------------------------------------
    beats_before = node.metrics.hot.heartbeats
    await asyncio.to_thread(server.stop)
    down_at = time.monotonic()
    silent, leavers, quitters, beaters = members[:2], members[2:5], members[5:7], members[7:]
    for m in silent:
        await m.stop()  # they stop heartbeating: their sessions must time out, locally
    await asyncio.sleep(1.0)
    started = time.monotonic()
    newcomers = [await Member.join(node, ROOM, f"n{i}") for i in range(3)]
    hello_s = (time.monotonic() - started) / 3
    for m in newcomers:
        m.start(0.1)
    beaters += newcomers
    for m in leavers:
        await m.leave()
    for m in quitters:
        await m.disconnect()
    most_buffered = most_spilled = 0
    spill_seen = False
    while time.monotonic() - down_at < OUTAGE_S:
        status, body = await get_json(ready)
        r = body["components"]["redis"]
        assert status == 503 and body["status"] == "DOWN" and r["status"] == "DOWN", body
        assert r["mode"] in ("buffering", "spilling") and r["dropped"] == 0, r
        most_buffered, most_spilled = max(most_buffered, r["buffered"]), max(most_spilled, r["spilled"])
        spill_seen |= node.settings.spill_path(node.node_id).is_file()
        await asyncio.sleep(0.5)
    # Nobody who kept beating was ended; the silent ones timed out on their local deadlines.
    assert all(m.connected and m.sid in node.presence.sessions for m in beaters)
    assert not any(m.sid in node.presence.sessions for m in silent + leavers + quitters)
    ended = node.metrics.sessions_ended
    assert ended.labels(reason="timeout")._value.get() == 2
    assert node.metrics.hot.heartbeats - beats_before >= 20 * (OUTAGE_S - 1)  # processed all along
    assert hello_s < 1.0  # admitted at once, not after redis_join_timeout_ms (2 s)
    assert spill_seen and most_spilled > 0 and most_buffered <= 100 + 150, (most_buffered, most_spilled)
    spilled_total = await metric(node, "spidi_spilled_ops_total")

    # -- Redis is back -------------------------------------------------------------------------
    await asyncio.to_thread(server.start)
    back_at = time.monotonic()
    ready_s = await wait_until(lambda: _is_ready(ready), 20, 0.1, "ready after the outage")
    replay_s = await wait_until(
        lambda: node.store.spilled == 0 and not node.settings.spill_path(node.node_id).exists(), 20
    )
    assert await metric(node, "spidi_redis_dropped_ops_total") == 0
    assert await metric(node, "spidi_redis_reasserts_total") >= 1
    for m in beaters:
        await m.stop()
    # Redis holds exactly the live sessions, each with its newest heartbeat and latency.
    expected = expected_view(node, ROOM)
    rebuilt_s = await wait_until(
        lambda: matches(redis_view(server.url, room_id, node.node_id), expected, node.node_id), 10
    )
    matched_s = time.monotonic() - back_at
    assert set(expected["online"]) == {m.sid for m in beaters}
    assert all(expected["latency"][m.sid] == m.latency for m in beaters)

    # -- everything reaches PostgreSQL, once -----------------------------------------------------
    for m in beaters:
        await m.leave()
    node.presence.flush_history()  # the partial minute's room sample
    assert await node.store.flush(10)
    plan = {m.sid: ("timeout", m.sent) for m in silent}
    plan |= {m.sid: ("leave", m.sent) for m in leavers + beaters}
    plan |= {m.sid: ("disconnect", m.sent) for m in quitters}
    rows = await poll_pg(
        pg_dsn, SESSIONS_SQL, lambda rows: len(rows) >= len(plan) and all(r["ended_at"] for r in rows), 40
    )
    assert {r["session_id"]: (r["end_reason"], r["heartbeat_count"]) for r in rows} == plan
    want = {"joins": 23, "leaves": 3 + len(beaters), "timeouts": 2, "disconnects": 2}
    stats = await poll_pg(pg_dsn, STATS_SQL, lambda rows: rows and rows[0] == want, 20)
    assert stats[0] == want
    print(
        f"\nredis outage {OUTAGE_S:.0f}s: heartbeats processed during it "
        f"{node.metrics.hot.heartbeats - beats_before}, HELLO {hello_s * 1000:.0f} ms, most buffered "
        f"{most_buffered}, most in the spill file {most_spilled}, spilled in all {spilled_total:.0f}; after it: "
        f"ready in {ready_s:.2f}s, spill replayed {replay_s:.2f}s later, Redis matching the quiet clients "
        f"{rebuilt_s:.2f}s after they stopped ({matched_s:.2f}s after Redis was back)"
    )
    await monitor.close()


async def _is_ready(url: str) -> bool:
    status, _ = await get_json(url)
    return status == 200


@pytest.mark.hardening(
    "fault",
    "Redis stopped while 1,500 history events are written with a 100-operation memory buffer",
    "The oldest go to the spill file on disk; once Redis is back the stream holds all 1,550 in the order "
    "they were written, none twice, and the spill file is gone",
)
async def test_spilled_writes_reach_redis_in_order(own_redis, tmp_path):
    server = own_redis(persistent=True)
    spill = SpillFile(tmp_path / "spill" / "redis-order.jsonl", 1 << 24)
    store = HotStore(
        connect(server.url), node_id="order", buffer_max_ops=100, spill=spill, min_interval_s=0.005
    )
    await store.start()
    check = redis.Redis.from_url(server.url, decode_responses=True)

    def emit(seq: int) -> None:
        store.event({"id": str(uuid.uuid4()), "kind": events.SESSION_CHECKPOINT, "seq": seq})

    try:
        for seq in range(50):
            emit(seq)
        assert await store.flush(5)
        await asyncio.to_thread(server.stop)
        most_buffered = 0
        for seq in range(50, 1550):
            emit(seq)
            if seq % 100 == 0:
                await asyncio.sleep(0.15)  # the flusher fails, waits, and spills past the cap
                most_buffered = max(most_buffered, store.buffered)
        await wait_until(lambda: store.buffered <= 100, 5, what="the buffer back under its cap")
        assert spill.path.is_file() and spill.ops >= 1400 and not store.healthy
        assert most_buffered <= 100 + 150  # the cap, plus what arrived since the flusher last looked
        await asyncio.to_thread(server.start)
        assert await store.flush(20)
        seqs = [int(f["seq"]) for _, f in check.xrange(events.STREAM)]
        assert seqs == list(range(1550))
        assert not spill.path.exists() and spill.ops == 0 and store.dropped == 0
        assert spill.spilled_total >= 1400
    finally:
        check.close()
        await store.close()


@pytest.mark.hardening(
    "fault",
    "A node stops while Redis is down with history events still buffered; the next process under the same "
    "node id starts once Redis is back",
    "The stopping node writes the buffered events to its spill file; the next one replays them (history "
    "events only, not the gone process's session writes) before its own, then removes the file",
)
async def test_events_buffered_at_a_stop_are_replayed_by_the_next_start(own_redis, tmp_path):
    server = own_redis(persistent=True)
    path = tmp_path / "spill" / "redis-again.jsonl"
    store = HotStore(connect(server.url), node_id="again", spill=SpillFile(path, 1 << 24))
    await store.start()
    check = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        await asyncio.to_thread(server.stop)
        for seq in range(30):
            store.event({"id": str(uuid.uuid4()), "kind": events.SESSION_CHECKPOINT, "seq": seq})
        store.leave(str(uuid.uuid4()), str(uuid.uuid4()), "default", "gone")  # that process's state
        await store.close(timeout=0.5)
        assert path.is_file()
        await asyncio.to_thread(server.start)
        again = HotStore(connect(server.url), node_id="again", spill=SpillFile(path, 1 << 24))
        await again.start()
        again.event({"id": str(uuid.uuid4()), "kind": events.SESSION_CHECKPOINT, "seq": 30})
        assert await again.flush(10)
        assert [int(f["seq"]) for _, f in check.xrange(events.STREAM)] == list(range(31))
        assert not path.exists() and again.dropped == 0
        await again.close()
    finally:
        check.close()
