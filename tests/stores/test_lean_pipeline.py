"""The hot store's lean pipelines (stores/lean_pipeline.py), on real redis-servers: the bytes Redis
receives, every kind of reply and error as redis-py gives it, and the failures (hung, killed,
cancelled) leaving no connection that could read a stale reply."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import DataError, NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from spidi_core.lane_py import pack_beats
from spidi_server.stores import commands, events, keys
from spidi_server.stores.client import (
    REDIS_FAILURES,
    PackedPipelineMixin,
    RawCommand,
    connect,
    out_of_memory,
    use_packed_pipelines,
)
from spidi_server.stores.embedded_redis import EmbeddedRedis
from spidi_server.stores.hot_store import HotStore
from spidi_server.stores.lean_pipeline import LeanExecutor, LeanPipeline, StockPipelines, pipelines
from spidi_server.stores.scripts import Scripts

from ..test_cli import free_port
from .test_packed import Target, built_pipeline, sample_ops


@pytest.fixture
def own_redis(tmp_path):
    """Private redis-servers on TCP ports of their own (a test stops, kills, restarts them)."""
    started: list[EmbeddedRedis] = []

    def start(port: int = 0, name: str = "r") -> EmbeddedRedis:
        server = EmbeddedRedis(tmp_path / name, port=port or free_port()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)  # a test that failed while it was stopped
        server.stop()


@contextlib.asynccontextmanager
async def lean(client):
    """``client`` and a ``LeanExecutor`` on it, both closed at the end."""
    executor = LeanExecutor(client)
    try:
        yield client, executor
    finally:
        await executor.close()
        await client.aclose()


async def poll(check, timeout: float = 10.0, what: str = "condition"):
    """Poll ``check`` (sync) every 10 ms until it returns something true."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
    return value


async def test_the_plain_client_goes_lean_and_the_others_keep_redis_py(redis_url):
    plain, resp2 = connect(redis_url), use_packed_pipelines(aioredis.Redis.from_url(redis_url, protocol=2))
    decoded = use_packed_pipelines(aioredis.Redis.from_url(redis_url, decode_responses=True))
    unpacked = aioredis.Redis.from_url(redis_url)
    cluster = RedisCluster(host="127.0.0.1", port=free_port())  # never connected: only inspected
    try:
        for lean in (plain, resp2):
            assert isinstance(pipelines(lean), LeanExecutor)
        for other in (decoded, unpacked, cluster):
            assert isinstance(pipelines(other), StockPipelines)
        store = HotStore(plain)
        assert isinstance(store.pipelines, LeanExecutor)
    finally:
        for client in (plain, resp2, decoded, unpacked):
            await client.aclose()


async def test_the_bytes_sent_are_redis_pys(redis_url, redis_sync):
    """The flusher's batch (every kind of operation, heartbeats as raw commands) built on a lean
    pipeline is byte for byte what redis-py's packing sends; Redis runs it without an error."""
    client = connect(redis_url)
    try:
        stock_pipe = await built_pipeline(client)
        conn = client.connection_pool.make_connection()
        stock = super(PackedPipelineMixin, conn).pack_commands  # redis-py's own packing
        expected = [
            args[-1] if type(args[-1]) is RawCommand else b"".join(stock([args]))
            for args, _ in stock_pipe.command_stack
        ]
        executor = LeanExecutor(client)
        scripts = Scripts(client)
        await scripts.load()
        lean = executor.pipeline()
        beats = stock_pipe_beats()
        count, marker_at, _ = commands.build(
            lean, sample_ops(asyncio.get_running_loop()), beats, [], True, Target(scripts)
        )
        assert lean.packed == expected and count == len(lean)
        replies = await executor.execute(lean)
        assert not [r for r in replies if isinstance(r, Exception)], replies
        assert replies[marker_at] == b"OK"  # (raw: redis-py's callback would say True)
        await executor.close()
    finally:
        await client.aclose()
    assert redis_sync.hget(keys.session("room1", "s1"), "userId") == "zoë"


def stock_pipe_beats():
    """The heartbeats ``built_pipeline`` queues (test_packed.py)."""
    return {
        "room1": pack_beats(
            [("s1", 1767000000123, 12.5), ("s2", 1767000000200, None), ("s3", 1767000000456, 7)]
        )
    }


@pytest.mark.parametrize("protocol", [2, 3])
async def test_every_kind_of_reply_and_an_error_in_the_middle(redis_url, redis_sync, protocol):
    client = use_packed_pipelines(aioredis.Redis.from_url(redis_url, protocol=protocol))
    resp3 = protocol == 3
    executor = LeanExecutor(client)
    try:
        for _ in range(2):  # twice on the same connection: nothing left over from the first
            redis_sync.flushall()
            pipe = executor.pipeline()
            pipe.set("s", "zoë").get("s").get("missing").incr("n").hset("h", mapping={"a": 1, "b": 2.5})
            pipe.execute_command("HGETALL", "h")
            pipe.execute_command("LPUSH", "s", "wrong type")  # an error reply in the middle
            pipe.execute_command("EVAL", "return {1, 'two', {3, nil}, redis.status_reply('OK')}", 0)
            pipe.execute_command("EVAL", "return redis.error_reply('CUSTOM failure')", 0)
            pipe.zadd("z", {"m": 2.5}).execute_command("ZRANGE", "z", 0, -1, "WITHSCORES")
            pipe.xadd("x", {"f": b"\x00\xff"}, id="1-1", maxlen=10, approximate=True).expire("s", 60)
            pipe.execute_command("SET", "k", bytearray(b"v"))  # refused by hiredis: redis-py packs it
            replies = await executor.execute(pipe)
            wrong, custom = replies[6], replies[8]
            assert type(wrong) is ResponseError and str(wrong).startswith("WRONGTYPE")
            assert type(custom) is ResponseError and str(custom) == "CUSTOM failure"
            assert replies[:6] + [replies[7]] + replies[9:] == [
                b"OK",
                "zoë".encode(),
                None,
                1,
                2,
                {b"a": b"1", b"b": b"2.5"} if resp3 else [b"a", b"1", b"b", b"2.5"],
                [1, b"two", [3], b"OK"],
                1,
                [[b"m", 2.5]] if resp3 else [b"m", b"2.5"],
                b"1-1",
                1,
                b"OK",
            ]
        assert redis_sync.get("k") == "v"
    finally:
        await executor.close()
        await client.aclose()


async def test_noscript_is_redis_pys_no_script_error(redis_url, redis_sync):
    async with lean(connect(redis_url)) as (client, executor):
        pipe = executor.pipeline()
        pipe.set("a", 1).execute_command("EVALSHA", "0" * 40, 0).get("a")
        first, missing, last = await executor.execute(pipe)
        assert isinstance(missing, NoScriptError) and (first, last) == (b"OK", b"1")


async def test_out_of_memory_is_redis_pys_and_the_flusher_sees_it(own_redis):
    server = own_redis()
    async with lean(connect(server.url)) as (client, executor):
        await client.set("before", "x")
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", 1)  # below what Redis uses: every write is refused
        pipe = executor.pipeline()
        pipe.set("k", "v").get("before").execute_command(
            "EVAL", "return redis.call('SET', KEYS[1], 'x')", 1, "k"
        )
        written, read, scripted = await executor.execute(pipe)
        assert isinstance(written, OutOfMemoryError) and out_of_memory(written)
        assert read == b"x" and out_of_memory(scripted)
        await client.config_set("maxmemory", 0)


async def test_a_stopped_redis_is_hung_then_answers_on_the_same_connection(own_redis):
    """SIGSTOP: the store turns unhealthy after ``timeout_s`` and keeps waiting for the reply (the
    connection is not dropped, nothing is sent twice); SIGCONT: the batch is answered, once."""
    server = own_redis()
    client = connect(server.url, timeout_s=0.2)  # reads dropped after 2 s
    store = HotStore(client, node_id="lean-hung", timeout_s=0.2)
    await store.start()
    try:
        assert isinstance(store.pipelines, LeanExecutor)
        store.event({"id": "warm", "kind": "session_started"})
        assert await store.flush(5)
        conn = store.pipelines._conn
        os.kill(server.pid, signal.SIGSTOP)
        try:
            store.event({"id": "during", "kind": "session_started"})
            flushed = asyncio.ensure_future(store.flush(10))
            await poll(lambda: not store.healthy, what="the hung pipeline")
            assert "hung" in store.last_error and not flushed.done()
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert await flushed
        assert store.healthy and store.pipelines._conn is conn and conn.is_connected
        assert await client.xlen(events.STREAM) == 2  # the batch went once
    finally:
        await store.close()


async def test_a_reply_later_than_the_socket_timeout_drops_the_connection(own_redis):
    server = own_redis()
    # Reads dropped after 0.5 s.
    async with lean(connect(server.url, timeout_s=0.05)) as (client, executor):
        await executor.execute(executor.pipeline().incr("n"))
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await executor.execute(executor.pipeline().incr("n"))
            assert not executor._conn.is_connected
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # The late reply (2) went to the dropped socket; a new connection reads its own.
        assert await executor.execute(executor.pipeline().incr("n").get("n")) == [3, b"3"]


async def test_a_killed_redis_raises_a_redis_failure_and_its_connection_is_not_reused(own_redis):
    server = own_redis()
    async with lean(connect(server.url)) as (client, executor):
        assert await executor.execute(executor.pipeline().set("k", "v")) == [b"OK"]
        conn = executor._conn
        os.kill(server.pid, signal.SIGSTOP)
        reading = asyncio.ensure_future(executor.execute(executor.pipeline().get("k")))
        await poll(lambda: conn._reader is not None and conn._reader._waiter is not None, what="the read")
        os.kill(server.pid, signal.SIGKILL)  # mid-read: the kernel closes its sockets
        with pytest.raises(REDIS_FAILURES):
            await reading
        assert not conn.is_connected
        with pytest.raises(REDIS_FAILURES):  # down: the next batch fails too, at connect
            await executor.execute(executor.pipeline().get("k"))
        server.process.wait()
        server.process = None
        own_redis(server.port, "again")  # a new, empty Redis on the same port
        assert await executor.execute(executor.pipeline().get("k").set("k", "w")) == [None, b"OK"]


async def test_a_restarted_redis_is_reconnected_before_the_write(own_redis):
    """Redis closed the idle connection (a restart between two batches): the next batch reconnects
    first, as redis-py's pool does, instead of failing on the dead socket."""
    server = own_redis()
    async with lean(connect(server.url)) as (client, executor):
        assert await executor.execute(executor.pipeline().incr("n")) == [1]
        conn = executor._conn
        await client.execute_command("CLIENT", "KILL", "SKIPME", "yes")  # closes the executor's connection
        await poll(lambda: conn._reader.at_eof(), what="the close")
        assert await executor.execute(executor.pipeline().incr("n")) == [2]


async def test_a_cancelled_read_never_gives_its_reply_to_the_next_batch(own_redis):
    server = own_redis()
    async with lean(connect(server.url)) as (client, executor):
        assert await executor.execute(executor.pipeline().incr("n")) == [1]
        conn = executor._conn
        os.kill(server.pid, signal.SIGSTOP)
        try:
            reading = asyncio.ensure_future(executor.execute(executor.pipeline().incr("n")))
            await poll(lambda: conn._reader._waiter is not None, what="the read")
            reading.cancel()  # the store's close, with the batch in flight
            with pytest.raises(asyncio.CancelledError):
                await reading
            assert not conn.is_connected
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # Redis ran the cancelled INCR (2) and answered a closed socket; this batch reads its own.
        assert await executor.execute(executor.pipeline().incr("n")) == [3]


def test_a_lean_pipeline_queues_only(redis_url):
    """Queueing sends nothing and needs no connection; an argument redis-py refuses is refused
    when queued, with redis-py's DataError."""
    client = connect(redis_url)
    pipe = LeanExecutor(client).pipeline()
    assert isinstance(pipe, LeanPipeline) and pipe.takes_raw
    pipe.hset("h", "a", 1)
    assert pipe.packed == [b"*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\na\r\n$1\r\n1\r\n"]
    with pytest.raises(DataError):
        pipe.set("k", None)


async def test_a_push_message_is_not_taken_for_a_reply(redis_url, redis_sync):
    """RESP3: with client tracking on, Redis pushes an invalidation to the executor's connection
    when another client writes a key it read; the next batch still reads its own replies."""
    async with lean(connect(redis_url)) as (client, executor):
        redis_sync.set("tracked", "1")
        pipe = executor.pipeline().execute_command("CLIENT", "TRACKING", "ON").get("tracked")
        assert await executor.execute(pipe) == [b"OK", b"1"]
        socket = executor._conn._writer
        for round in range(3):
            # (synchronous: the loop reads nothing before the next batch is written)
            redis_sync.set("tracked", str(round + 2))  # an invalidation pushed to the executor
            pipe = executor.pipeline().execute_command("CLIENT", "TRACKING", "ON").get("tracked")
            assert await executor.execute(pipe) == [b"OK", str(round + 2).encode()]
        assert executor._conn._writer is socket  # read past on the same connection, not dropped


async def test_build_queues_what_redis_pys_methods_queue(redis_url):
    """``build`` queues its frequent commands by name: the arguments are those of redis-py's
    ``xadd``, ``hset(mapping=)``, ``expire``, ``sadd`` and ``hdel``, as it called them before."""
    client = connect(redis_url)
    try:
        scripts = Scripts(client)
        scripts.shas = {"join": "j" * 40, "leave": "l" * 40}  # (never sent)
        target = Target(scripts)
        loop = asyncio.get_running_loop()
        join, event, touch, _, unindex, leave = sample_ops(loop)[:6]
        ops = [join, event, touch, unindex, leave]
        built = client.pipeline(transaction=False)
        commands.build(built, ops, {}, [], False, target)
        expected = client.pipeline(transaction=False)
        j = join[1]
        node_key = keys.node_sessions(target.node_id)
        expected.xadd(events.STREAM, event[1], maxlen=events.STREAM_MAXLEN, approximate=True)
        scripts.queue(
            expected,
            "join",
            [*keys.room_keys("room1"), keys.session("room1", "s1")],
            [len(j.args), *j.args],
        )
        expected.hset(keys.tenant_rooms("t1"), mapping={"room1": "café"})
        expected.sadd(keys.TENANTS, "t1")
        expected.hset(keys.user_sessions("t1", "zoë"), mapping={"s1": "room1"})
        expected.expire(keys.user_sessions("t1", "zoë"), 120)
        expected.hset(node_key, mapping={"s1": "room1"})
        session = keys.session("room1", "s1")
        expected.hset(session, mapping={"ip": "10.0.0.1", "gone": ""})
        expected.expire(session, 120).expire(keys.user_sessions("t1", "zoë"), 120)
        expected.hdel(keys.user_sessions("t1", "u9"), "s9").hdel(node_key, "s9")
        scripts.queue(
            expected, "leave", [*keys.room_keys("room1"), keys.session("room1", "s2")], ["s2", "u2", 0]
        )
        expected.hdel(keys.user_sessions("t1", "u2"), "s2").hdel(node_key, "s2")
        assert [args for args, _ in built.command_stack] == [args for args, _ in expected.command_stack]
    finally:
        await client.aclose()
