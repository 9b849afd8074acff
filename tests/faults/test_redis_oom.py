"""Redis memory: the embedded redis-server's limit and policy, the memory gauges, and a Redis that
is full (maxmemory reached, policy noeviction) refusing writes with OOM errors: the node keeps
them and retries, so nothing is lost and no session is missing or left behind once it has room."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from spidi_server.history.stream import DEAD_LETTER_STREAM
from spidi_server.reaper import ALIVE_TTL_MS
from spidi_server.rooms import room_id_for
from spidi_server.stores import events, keys
from spidi_server.stores.client import connect
from spidi_server.stores.embedded_redis import EmbeddedRedis
from spidi_server.stores.hot_store import HotStore

from ..conftest import token_for
from ..history.helpers import pending, push, room_sample, running_writer, wait_for
from ..stomp_client import connected
from ..test_cli import free_port
from .conftest import get_json, metric, redis_view

MIB = 1 << 20


@pytest.fixture
def small_redis():
    """A private redis-server limited to 64 MiB, as the node starts its embedded one."""
    path = Path(tempfile.mkdtemp(prefix="spidi-oom-redis-"))
    server = EmbeddedRedis(path, port=free_port(), maxmemory_mb=64).start()
    yield server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


async def until(check, timeout: float = 10.0):
    """Poll ``check`` (sync) until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return value


async def test_the_embedded_redis_has_a_limit_and_never_evicts(node_factory):
    node = await node_factory(redis_url="", embedded_redis_maxmemory_mb=48)
    assert node.embedded_redis is not None
    config = await node.store.redis.config_get("maxmemory*")
    assert config["maxmemory"] == str(48 * MIB) and config["maxmemory-policy"] == "noeviction"
    # The gauges are read from INFO memory (at start, then every few seconds), not made up.
    used = await metric(node, "spidi_redis_used_memory_bytes")
    info = await node.store.redis.info("memory")
    assert await metric(node, "spidi_redis_maxmemory_bytes") == 48 * MIB
    assert 100_000 < used < 48 * MIB and abs(used - info["used_memory"]) < 8 * MIB
    # A node restarted on the same data directory adopts the server and applies its own limit.
    adopted = EmbeddedRedis(node.embedded_redis.data_path, maxmemory_mb=40).start()
    assert adopted.adopted_pid == node.embedded_redis.pid
    assert (await node.store.redis.config_get("maxmemory"))["maxmemory"] == str(40 * MIB)


async def test_a_full_redis_refuses_writes_and_the_node_keeps_them_until_it_has_room(
    small_redis, node_factory, caplog
):
    caplog.set_level(logging.INFO, logger="spidi")
    direct = redis.Redis.from_url(small_redis.url, decode_responses=True)
    room = room_id_for("default", "lobby")
    node = await node_factory(redis_url=small_redis.url)
    other = await node_factory(redis_url=small_redis.url)  # a reaper, should the first look dead
    staying = await connected(node.ws_url, token_for(node.settings, "staying", "spidi:user"))
    leaving = await connected(node.ws_url, token_for(node.settings, "leaving", "spidi:user"))
    stays = (await staying.hello("lobby"))["sessionId"]
    leaves = (await leaving.hello("lobby"))["sessionId"]
    assert await node.store.flush(5.0)

    # Full: an 8 MiB filler, and maxmemory 2 MiB above what Redis used without it (not below what
    # it uses with it: the filler's own query buffer is counted until Redis frees it).
    before = int(direct.info("memory")["used_memory"])
    direct.set("filler", "x" * (8 * MIB))
    direct.config_set("maxmemory", before + 2 * MIB)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        direct.set("probe", "x")

    # Meanwhile one joins and one leaves: the client is served (admitted on this node's own
    # count, as when Redis is away), Redis holds neither change yet.
    joining = await connected(node.ws_url, token_for(node.settings, "joining", "spidi:user"))
    joins = (await joining.hello("lobby"))["sessionId"]
    await leaving.app("/app/leave", {"sessionId": leaves}, receipt="bye")
    await leaving.next(command="RECEIPT")
    assert await until(lambda: node.store.mode == "buffering"), node.store.last_error
    _, ready = await get_json(f"{node.ops.url}/health/ready")
    state = ready["components"]["redis"]
    assert state["mode"] == "buffering" and "out of memory (maxmemory)" in state["lastError"], state
    assert "OOM command not allowed" in state["lastError"] and state["dropped"] == 0
    assert joins not in redis_view(small_redis.url, room, node.node_id)["online"]
    logged = [r.getMessage() for r in caplog.records if r.name == "spidi.redis"]
    # Once per episode and node (both nodes write), not once per retry.
    assert 1 <= logged.count("redis_out_of_memory") <= 2
    # Longer than a node's liveness key lives: renewed all the same (PEXPIRE passes a full Redis),
    # so the other node reaps none of this live node's sessions.
    alive = keys.node_alive(node.node_id)
    deadline = time.monotonic() + ALIVE_TTL_MS / 1000 + 1.5
    while time.monotonic() < deadline:
        assert direct.exists(alive), "the liveness key expired while Redis was full"
        await asyncio.sleep(0.2)
    assert other.metrics.sessions_reaped._value.get() == 0
    assert stays in redis_view(small_redis.url, room, node.node_id)["online"]

    # Room again (the filler goes: deletes pass a full Redis): the kept writes go through.
    direct.delete("filler")

    def settled():
        view = redis_view(small_redis.url, room, node.node_id)
        return set(view["online"]) == {stays, joins} and set(view["users"]) == {"staying", "joining"} and view

    view = await until(settled)
    assert view, redis_view(small_redis.url, room, node.node_id)
    assert set(view["node"]) == {stays, joins} and set(view["sessions"]) == {stays, joins}
    # Redis applies a batch before the node has read its replies: the mode turns back to "ok"
    # once it has (read here, the view alone raced it).
    await until(lambda: node.store.mode == "ok")
    assert node.store.mode == "ok" and node.store.dropped == 0
    assert any(r.getMessage() == "redis_reconnected" for r in caplog.records)
    # Every history event is in the stream: three starts and the leaver's end (and the room's
    # minute sample when the test crosses a minute's end: no session of its own).
    kinds = [(e[1]["kind"], e[1].get("session_id")) for e in direct.xrange(events.STREAM)]
    skip = (events.SESSION_CHECKPOINT, events.ROOM_SAMPLE)
    assert sorted(k for k in kinds if k[0] not in skip) == sorted(
        [
            (events.SESSION_ENDED, leaves),
            (events.SESSION_STARTED, joins),
            (events.SESSION_STARTED, leaves),
            (events.SESSION_STARTED, stays),
        ]
    )
    for client in (staying, leaving, joining):
        await client.close()
    direct.close()


async def test_heartbeats_refused_by_a_full_redis_are_kept_and_written_once_it_has_room(small_redis):
    """The heartbeats' plain ZADD XX and HSET refused with OOM: the batch is kept (a newer beat
    without a latency keeps the refused one's) and written when Redis has room again."""
    online, latency = keys.room_online("oom-room"), keys.room_latency("oom-room")
    direct = redis.Redis.from_url(small_redis.url, decode_responses=True)
    direct.zadd(online, {"a": 1, "b": 1})
    store = HotStore(connect(small_redis.url), node_id="oom-beats", min_interval_s=0.01)
    await store.start()
    try:
        before = int(direct.info("memory")["used_memory"])
        direct.set("filler", "x" * (8 * MIB))
        direct.config_set("maxmemory", before + 2 * MIB)
        store.heartbeat("oom-room", "a", 100, 10)
        store.heartbeat("oom-room", "b", 100, 20)
        assert await until(lambda: store.mode == "buffering"), store.last_error
        assert "out of memory" in store.last_error
        store.heartbeat("oom-room", "b", 200, None)  # newer, without a latency
        assert direct.zscore(online, "a") == 1 and not direct.exists(latency)
        direct.delete("filler")
        assert await store.flush(10.0) and store.mode == "ok" and store.dropped == 0
    finally:
        await store.close()
        await store.redis.aclose()
    assert direct.zrange(online, 0, -1, withscores=True) == [("a", 100.0), ("b", 200.0)]
    assert direct.hgetall(latency) == {"a": "10", "b": "20"}
    direct.close()


async def test_the_writer_drains_a_full_redis_and_so_frees_it(small_redis, pg_dsn, node_factory, caplog):
    """The history backlog is what usually fills Redis (a writer stopped for long): a writer
    (re)started on a full Redis must still read, write to PostgreSQL, acknowledge and trim, which
    is what gives the memory back. Its status hash waits (writer_status_refused, once)."""
    caplog.set_level(logging.INFO, logger="spidi")
    node = await node_factory(redis_url=small_redis.url, postgres_dsn=pg_dsn, writer="external")
    direct = redis.Redis.from_url(small_redis.url, decode_responses=True)
    direct.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)  # a writer ran before
    started = int(time.time() * 1000)
    backlog = [
        events.session_started(
            session_id=str(uuid.uuid4()),
            room_id=room_id_for("default", "lobby"),
            room_code="lobby",
            tenant="default",
            user_id=f"u{i}",
            client_id="c",
            app_version="1.0.0",
            device=None,
            os=None,
            ip="10.0.0.1",
            node_id="gone",
            started_at=started,
        )
        for i in range(5000)
    ]
    push(direct, backlog)
    full_at = int(direct.info("memory")["used_memory"]) - 256 * 1024
    direct.config_set("maxmemory", full_at)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        direct.set("probe", "x")
    settings = dataclasses.replace(node.settings, writer_flush_interval_s=0.1).validate()
    with running_writer(settings):
        await asyncio.to_thread(wait_for, lambda: direct.xlen(events.STREAM) < 100, 30.0, 0.05, "the drain")
    assert int(direct.info("memory")["used_memory"]) < full_at
    direct.set("probe", "x")  # room again
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM dat_spd_session WHERE node_id = 'gone'").fetchone() == (
            5000,
        )
    refused = [r for r in caplog.records if r.getMessage() == "writer_status_refused"]
    assert len(refused) <= 1
    direct.close()


async def test_an_event_postgresql_rejects_stays_pending_while_redis_is_too_full_to_dead_letter_it(
    small_redis, pg_dsn, node_factory, caplog
):
    """The dead-letter stream is an XADD, which a full Redis refuses: the rejected event is then
    left unacknowledged (nothing else of its batch waits for it), and dead-lettered by the next
    writer that reads it once Redis has room. It is never acknowledged without a copy kept."""
    caplog.set_level(logging.INFO, logger="spidi")
    node = await node_factory(redis_url=small_redis.url, postgres_dsn=pg_dsn, writer="external")
    direct = redis.Redis.from_url(small_redis.url, decode_responses=True)
    direct.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)
    bucket = int(time.time() * 1000) // 60_000 * 60_000
    good = room_sample("default", "oom-dl", bucket, online=[1])
    bad = room_sample("default", "oom-dl-bad", bucket, online=[1])
    bad["online_max"] = 10**12  # passes the writer's checks; PostgreSQL refuses it (out of range)
    push(direct, [good, bad])
    limit = direct.config_get("maxmemory")["maxmemory"]
    direct.config_set("maxmemory", int(direct.info("memory")["used_memory"]) - 256 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        direct.set("probe", "x")
    settings = dataclasses.replace(node.settings, writer_flush_interval_s=0.1).validate()

    def stored(room: str) -> int:
        with psycopg.connect(pg_dsn) as conn:
            query = "SELECT count(*) FROM dat_spd_room_stats WHERE room_id = %s"
            return conn.execute(query, [room_id_for("default", room)]).fetchone()[0]

    with running_writer(settings):
        await asyncio.to_thread(wait_for, lambda: stored("oom-dl") == 1, 15.0, 0.05, "the good sample")
        deferred = await until(
            lambda: [r for r in caplog.records if r.getMessage() == "writer_dead_letter_deferred"]
        )
    assert deferred, "the refused dead letter is logged"
    assert direct.exists(DEAD_LETTER_STREAM) == 0 and pending(direct) == 1  # kept, not acknowledged

    direct.config_set("maxmemory", limit)  # room again
    with running_writer(settings):
        await asyncio.to_thread(
            wait_for, lambda: direct.xlen(DEAD_LETTER_STREAM) == 1, 15.0, 0.05, "dead letter"
        )
        await asyncio.to_thread(wait_for, lambda: pending(direct) == 0, 15.0, 0.05, "acknowledged")
    [(_, kept)] = direct.xrange(DEAD_LETTER_STREAM)
    assert kept["room_code"] == "oom-dl-bad" and "NumericValueOutOfRange" in kept["_error"]
    assert stored("oom-dl") == 1 and stored("oom-dl-bad") == 0
    direct.close()
