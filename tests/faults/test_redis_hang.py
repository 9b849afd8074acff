"""A Redis that accepts connections and never answers (SIGSTOP'd): the node notices within its
``redis_timeout_ms``, handles it as an outage (buffers, answers, admits in degraded mode, says
degraded), and once Redis answers again writes everything it held back, history once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest
import redis

from spidi_server.errors import ConfigError
from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings
from spidi_server.stores import events, keys
from spidi_server.stores.client import DROP_AFTER, connect
from spidi_server.stores.hot_store import HotStore
from spidi_server.stores.spill import SpillFile

from ..conftest import process_state, token_for
from ..stomp_client import connected
from .conftest import (
    SESSIONS_SQL,
    STATS_SQL,
    Member,
    expected_view,
    get_json,
    matches,
    poll_pg,
    redis_view,
    wait_until,
)

TIMEOUT_MS = 1000
HANG_S = 5.0
ROOM = "hang"


@pytest.mark.hardening(
    "fault",
    "redis-server SIGSTOP'd for 5 s (accepts connections, never answers) while 8 clients heartbeat 10/s, "
    "with redis_timeout_ms=1000; meanwhile one HELLO and one LEAVE",
    "The stalled pipeline times out: /health/ready says 503 buffering within the timeout + 1 s and answers "
    "promptly all along, /health/live 200; heartbeats get their receipts, HELLO is admitted (degraded); after "
    "SIGCONT ready again, Redis holds every live session's newest heartbeat, PostgreSQL every session once "
    "with its heartbeat count (a timed-out pipeline Redis applied late is not counted twice)",
)
async def test_hung_redis_is_an_outage(own_redis, pg_dsn, node_factory):
    server = own_redis(persistent=True)
    node = await node_factory(
        redis_url=server.url,
        postgres_dsn=pg_dsn,
        writer="child",
        writer_flush_interval_s=0.2,
        node_id="hang",
        alerting=False,
        heartbeat_interval_ms=1000,
        heartbeat_timeout_ms=30_000,
        grace_period_ms=0,
        checkpoint_interval_s=0.5,
        redis_timeout_ms=TIMEOUT_MS,
    )
    ready, live = f"{node.ops.url}/health/ready", f"{node.ops.url}/health/live"
    room_id = room_id_for("default", ROOM)
    members = [await Member.join(node, ROOM, f"u{i}") for i in range(8)]
    probe, leaver, beaters = members[0], members[1], members[2:]
    for m in beaters + [leaver]:
        m.start(0.1)
    await wait_until(lambda: _status(ready, 200), 20, 0.2, "ready before the hang")
    pid = server.process.pid
    stopped = False
    try:
        # -- Redis hangs -------------------------------------------------------------------------
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        hung_at = time.monotonic()
        slowest = 0.0

        async def degraded() -> bool:
            nonlocal slowest
            started = time.monotonic()
            status, body = await get_json(ready)
            slowest = max(slowest, time.monotonic() - started)
            r = body["components"]["redis"]
            return status == 503 and r["status"] == "DOWN" and r["mode"] == "buffering"

        noticed_s = await wait_until(degraded, 10, 0.1, "readiness degraded")
        assert noticed_s <= TIMEOUT_MS / 1000 + 1.0, noticed_s
        _, body = await get_json(ready)
        assert "(hung)" in body["components"]["redis"]["lastError"], body
        started = time.monotonic()
        status, _ = await get_json(live)
        assert status == 200 and time.monotonic() - started < 0.5
        # Heartbeats are answered (with their receipts) as usual.
        for i in range(3):
            started = time.monotonic()
            await probe.client.app("/app/heartbeat", {"sessionId": probe.sid, "latencyMs": 7.0}, f"hb-{i}")
            await probe.client.next(2, command="RECEIPT")
            probe.sent += 1
            assert time.monotonic() - started < 0.5
        # A HELLO is admitted without Redis's answer; a LEAVE is answered.
        started = time.monotonic()
        newcomer = await Member.join(node, ROOM, "n0")
        hello_s = time.monotonic() - started
        assert hello_s < 1.0, hello_s  # the store knows Redis is away: no redis_join_timeout_ms wait
        newcomer.start(0.1)
        beaters.append(newcomer)
        await leaver.leave()
        while time.monotonic() - hung_at < HANG_S:
            assert await degraded(), "readiness must stay degraded while Redis hangs"
            await asyncio.sleep(0.25)
        assert slowest < TIMEOUT_MS / 1000 + 0.5, slowest  # /health/ready never waited on the hang
        assert all(m.connected and m.sid in node.presence.sessions for m in beaters + [probe])
        assert node.store.dropped == 0

        # -- Redis answers again -----------------------------------------------------------------
        os.kill(pid, signal.SIGCONT)
        stopped = False
        back_s = await wait_until(lambda: _status(ready, 200), 20, 0.1, "ready after the hang")
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)  # the fixture stops it; a stopped one ignores SIGTERM
    for m in beaters:
        await m.stop()
    expected = expected_view(node, ROOM)
    try:
        await wait_until(
            lambda: matches(redis_view(server.url, room_id, node.node_id), expected, node.node_id), 10
        )
    except AssertionError:
        view = redis_view(server.url, room_id, node.node_id)
        raise AssertionError(f"Redis {view} != node {expected_view(node, ROOM)} (was {expected})") from None
    assert set(expected["online"]) == {m.sid for m in beaters + [probe]}

    # -- every session reaches PostgreSQL once, with every heartbeat -------------------------------
    for m in beaters + [probe]:
        await m.leave()
    node.presence.flush_history()
    assert await node.store.flush(10)
    # The batch in flight when Redis hung was awaited, not sent again: no event is in the stream
    # twice (what the writer has trimmed already was checked by the same rule as it went).
    ids = [f["id"] for _, f in await asyncio.to_thread(_stream, server.url)]
    assert ids and len(ids) == len(set(ids)), [i for i in set(ids) if ids.count(i) > 1]
    plan = {m.sid: ("leave", m.sent) for m in members + [newcomer]}
    rows = await poll_pg(
        pg_dsn, SESSIONS_SQL, lambda rows: len(rows) >= len(plan) and all(r["ended_at"] for r in rows), 40
    )
    assert {r["session_id"]: (r["end_reason"], r["heartbeat_count"]) for r in rows} == plan
    want = {"joins": len(plan), "leaves": len(plan), "timeouts": 0, "disconnects": 0}
    stats = await poll_pg(pg_dsn, STATS_SQL, lambda rows: rows and rows[0] == want, 20)
    assert stats[0] == want
    print(
        f"\nredis hung {HANG_S:.0f}s (timeout {TIMEOUT_MS} ms): degraded after {noticed_s:.2f}s, slowest "
        f"/health/ready {slowest:.2f}s, HELLO {hello_s * 1000:.0f} ms, ready {back_s:.2f}s after SIGCONT"
    )


@pytest.mark.hardening(
    "fault",
    "redis-server SIGSTOP'd past the client's socket timeout (DROP_AFTER x timeout_s) with a history event in flight",
    "The hung pipeline's connection is dropped and its batch resent; once Redis answers every event is in the "
    "stream (the hung one at most twice, same id) and later replies are read in step (no half-read reply reused)",
)
async def test_connection_hung_past_the_socket_timeout_is_dropped(own_redis):
    server = own_redis()
    timeout_s = 0.2
    flushes: list[tuple[bool, float]] = []
    store = HotStore(
        connect(server.url, timeout_s),
        node_id="drop",
        timeout_s=timeout_s,
        on_flush=lambda commands, seconds, ok: flushes.append((ok, seconds)),
    )
    await store.start()
    check = redis.Redis.from_url(server.url, decode_responses=True)
    pid = server.process.pid
    stopped = False

    def emit(event_id: str) -> None:
        store.event({"id": event_id, "kind": events.SESSION_CHECKPOINT})

    try:
        emit("before")
        assert await store.flush(5)
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        emit("hung")
        await wait_until(lambda: not store.healthy, 2, what="the store noticing the hang")
        assert "(hung)" in store.last_error
        # redis-py gives up on the reply after DROP_AFTER x timeout_s: the pipeline fails.
        drop_s = DROP_AFTER * timeout_s
        await wait_until(lambda: any(not ok for ok, _ in flushes), drop_s + 3, what="the dropped pipeline")
        failed_after = next(seconds for ok, seconds in flushes if not ok)
        assert drop_s - 0.1 <= failed_after <= drop_s + 1.0, failed_after
        os.kill(pid, signal.SIGCONT)
        stopped = False
        emit("after")
        assert await store.flush(10)
        ids = [f["id"] for _, f in check.xrange(events.STREAM)]
        assert set(ids) == {"before", "hung", "after"} and ids.count("before") == ids.count("after") == 1, ids
        assert ids.count("hung") in (1, 2), ids
        assert store.healthy and store.dropped == 0
        assert await store.room_online(room_id_for("default", "nobody")) == 0  # replies in step
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        check.close()
        await store.close()


@pytest.mark.parametrize("value", [0, 99, -5, 600_001])
def test_redis_timeout_ms_out_of_range_is_refused(value):
    with pytest.raises(ConfigError, match="redis_timeout_ms must be between 100 and 600000"):
        Settings(redis_timeout_ms=value).validate()


def _stream(url: str) -> list:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return client.xrange(events.STREAM)
    finally:
        client.close()


async def _status(url: str, want: int) -> bool:
    with contextlib.suppress(Exception):
        status, _ = await get_json(url)
        return status == want
    return False


@pytest.mark.hardening(
    "fault",
    "redis-server SIGSTOP'd while the batch in flight carries a HELLO's join (awaited in the flusher's own "
    "task), with a 10-operation memory cap and 40 history events queued during the hang",
    "The hang is noticed within the store's timeout; the excess goes to the spill file while the join's reply "
    "is awaited; after SIGCONT the join is answered from Redis, and every event is in the stream once",
)
async def test_a_hung_batch_carrying_a_join_notices_the_hang_and_spills(own_redis, tmp_path):
    server = own_redis()
    timeout_s = 0.3
    store = HotStore(
        connect(server.url, 5.0),  # the socket timeout far beyond the hang: the reply is awaited
        node_id="hung-join",
        timeout_s=timeout_s,
        buffer_max_ops=10,
        spill=SpillFile(tmp_path / "spill.jsonl", 1 << 24),
    )
    await store.start()
    check = redis.Redis.from_url(server.url, decode_responses=True)
    pid = server.process.pid
    stopped = False
    room = room_id_for("default", ROOM)
    try:
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        hung_at = time.monotonic()
        join = store.join(room, "default", ROOM, 0, "s-hung", "u1", 1_767_000_000_000, 60, {"userId": "u1"})
        await wait_until(lambda: not store.healthy, 2, what="the store noticing the hang")
        assert time.monotonic() - hung_at < timeout_s + 0.5
        assert "(hung)" in store.last_error and not join.result.done()
        for i in range(40):
            store.event({"id": f"e{i}", "kind": events.SESSION_CHECKPOINT})
        await wait_until(lambda: store.spilled > 0, 2, what="the excess spilled while the join hangs")
        assert store.buffered <= 10
        os.kill(pid, signal.SIGCONT)
        stopped = False
        assert await asyncio.wait_for(join.result, 5) == 1  # Redis's own answer, not a degraded one
        assert await store.flush(10)
        ids = [f["id"] for _, f in check.xrange(events.STREAM)]
        assert sorted(ids) == sorted(f"e{i}" for i in range(40)), ids
        assert check.zrange(keys.room_online(room), 0, -1) == ["s-hung"]
        assert store.healthy and store.dropped == 0 and store.spilled == 0
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        check.close()
        await store.close()


@pytest.mark.hardening(
    "fault",
    "redis-server SIGSTOP'd while a session leaves a room a roster subscriber on the same node watches; "
    "then Redis resumes and another session joins",
    "The subscriber has the leave while Redis is still stopped (a process hands its own changes to its "
    "subscribers as it publishes them); once Redis echoes the message back it is skipped: the next delta is "
    "the join, and the leave was told once",
)
async def test_a_subscriber_hears_its_own_nodes_changes_without_waiting_for_redis(own_redis, node_factory):
    server = own_redis()
    node = await node_factory(redis_url=server.url, node_id="echo", alerting=False, redis_timeout_ms=10_000)
    topic = f"/topic/rooms/{ROOM}/roster"
    monitor = await connected(node.ws_url, token_for(node.settings, "mon", "spidi:monitor"))
    await monitor.subscribe(topic)
    assert (await monitor.json(topic))["users"] == []
    leaver = await Member.join(node, ROOM, "leaver")
    assert [e["sessionId"] for e in (await monitor.json(topic))["joined"]] == [leaver.sid]
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await leaver.client.app("/app/leave", {"sessionId": leaver.sid})
        delta = await monitor.json(topic, timeout=5)
        assert delta["left"] == [{"sessionId": leaver.sid, "reason": "leave"}] and delta["joined"] == []
        assert process_state(pid) == "T"  # heard while Redis was still stopped
    finally:
        os.kill(pid, signal.SIGCONT)
    room_id = room_id_for("default", ROOM)
    await wait_until(
        lambda: redis_view(server.url, room_id, node.node_id)["online"] == {}, 10, 0.05, "the leave in Redis"
    )
    comer = await Member.join(node, ROOM, "comer")
    delta = await monitor.json(topic, timeout=5)
    assert delta["left"] == [] and [e["sessionId"] for e in delta["joined"]] == [comer.sid]
