"""Pipelines packed by hiredis (stores/client.py ``use_packed_pipelines``): Redis receives the very
commands redis-py's own packing sends, and what hiredis refuses takes redis-py's path."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from spidi_core.lane_py import pack_beats
from spidi_server.stores import commands, keys
from spidi_server.stores.client import PackedPipelineMixin, RawCommand, connect, use_packed_pipelines
from spidi_server.stores.hot_store import PendingJoin
from spidi_server.stores.scripts import Scripts, join_args


class Target:
    node_id = "packed"
    marker_key = keys.node_marker("packed")

    def __init__(self, scripts):
        self.scripts = scripts


def sample_ops(loop) -> list[tuple]:
    """One operation of every kind, with str, int, float, None and non-ASCII arguments."""
    fields = {"userId": "zoë", "clientId": "c1", "ip": None, "connectedAt": 1767000000000, "x": 1.25}
    args = join_args("s1", 1767000000000, "zoë", "2026120420", 120, 5, "café", "t1", 5, fields)
    join = PendingJoin("room1", "s1", "t1", "café", "zoë", 120, args, loop.create_future())
    return [
        ("join", join),
        ("event", {"id": "e1", "kind": "session_started", "n": "3"}),
        ("touch", "room1", "s1", 120, {"ip": "10.0.0.1", "gone": None}, "t1", "zoë"),
        ("capacity", "room1", 5),
        ("unindex", "s9", "t1", "u9"),
        ("leave", "room1", "s2", "u2", "t1"),
        ("publish", keys.roster_channel("room1"), b'{"joined":[]}'),
        ("marker",),
    ]


async def built_pipeline(client):
    scripts = Scripts(client)
    await scripts.load()
    pipe = client.pipeline(transaction=False)
    # packed per room, as the lane gives them (s2's beat carried no latency)
    beats = {
        "room1": pack_beats(
            [("s1", 1767000000123, 12.5), ("s2", 1767000000200, None), ("s3", 1767000000456, 7)]
        )
    }
    commands.build(pipe, sample_ops(asyncio.get_running_loop()), beats, [], True, Target(scripts))
    return pipe


async def test_packed_bytes_equal_redis_pys_and_redis_runs_them(redis_url, redis_sync):
    client = connect(redis_url)
    try:
        assert issubclass(client.connection_pool.connection_class, PackedPipelineMixin)
        pipe = await built_pipeline(client)
        stack = [args for args, _ in pipe.command_stack]
        conn = client.connection_pool.make_connection()
        stock = super(PackedPipelineMixin, conn).pack_commands  # redis-py's own, on the same connection
        # The heartbeats went as raw commands: the very bytes of the ordinary ones.
        raw = [args for args in stack if type(args[-1]) is RawCommand]
        assert [args[0] for args in raw] == ["ZADD", "HSET"]
        online, latency = keys.room_online("room1"), keys.room_latency("room1")
        plain = [
            ("ZADD", online, "XX", 1767000000123, "s1", 1767000000200, "s2", 1767000000456, "s3"),
            ("HSET", latency, "s1", 12.5, "s3", 7),
        ]
        stack = [plain.pop(0) if type(args[-1]) is RawCommand else args for args in stack]
        assert b"".join(conn.pack_commands(stack)) == b"".join(stock(stack))
        assert [raw[0][-1], raw[1][-1]] == [b"".join(stock([a])) for a in stack if a[1] in (online, latency)]
        assert len(conn.pack_commands(stack)) == 1  # one buffer: one write
        results = await pipe.execute(raise_on_error=False)
        assert not [r for r in results if isinstance(r, Exception)], results
    finally:
        await client.aclose()
    assert redis_sync.hget(keys.session("room1", "s1"), "userId") == "zoë"
    assert redis_sync.hget(keys.room_metrics("room1"), "code") == "café"
    assert redis_sync.zscore(keys.room_online("room1"), "s1") == 1767000000123
    assert redis_sync.hget(keys.room_latency("room1"), "s1") == "12.5"


async def test_monitor_sees_the_same_commands_from_both_packings(redis_url, redis_sync):
    """What Redis itself logs (MONITOR) for the same pipeline, packed by hiredis and by redis-py."""
    packed = connect(redis_url)
    stock = aioredis.Redis.from_url(redis_url)
    watcher = aioredis.Redis.from_url(redis_url, decode_responses=True)
    seen: list[str] = []
    try:
        async with watcher.monitor() as monitor:
            for client in (packed, stock):
                await client.flushall()  # the same state before each: the scripts take the same paths
                pipe = await built_pipeline(client)
                await pipe.execute(raise_on_error=False)
                await client.execute_command("ECHO", "end-of-pipeline")
            while sum(1 for c in seen if "end-of-pipeline" in c) < 2:
                info = await asyncio.wait_for(monitor.next_command(), 5)
                seen.append(info["command"])
    finally:
        await packed.aclose()
        await stock.aclose()
        await watcher.aclose()
    first_end = next(i for i, c in enumerate(seen) if "end-of-pipeline" in c)
    by_packed = [c for c in seen[:first_end] if not c.startswith(("SCRIPT", "FLUSHALL"))]
    by_stock = [c for c in seen[first_end + 1 : -1] if not c.startswith(("SCRIPT", "FLUSHALL"))]
    assert len(by_packed) > 10 and by_packed == by_stock


async def test_what_hiredis_refuses_takes_redis_pys_path(redis_url):
    client = connect(redis_url)
    conn = client.connection_pool.make_connection()
    stock = super(PackedPipelineMixin, conn).pack_commands
    try:
        odd = [("SET", "k", bytearray(b"v")), ("SCRIPT LOAD", "return 1"), ("SET", "k2", memoryview(b"w"))]
        assert b"".join(conn.pack_commands(odd)) == b"".join(bytes(c) for c in stock(odd))
        for bad in (None, True):
            with pytest.raises(DataError):
                conn.pack_commands([("SET", "k", bad)])
        pipe = client.pipeline(transaction=False)
        pipe.set("k", bytearray(b"v")).get("k")
        assert await pipe.execute() == [True, b"v"]
    finally:
        await client.aclose()


async def test_another_encoding_keeps_redis_pys_packing(redis_url):
    client = use_packed_pipelines(aioredis.Redis.from_url(redis_url, encoding="latin-1"))
    try:
        assert not issubclass(client.connection_pool.connection_class, PackedPipelineMixin)
    finally:
        await client.aclose()


async def _replies(client, protocol_note: str) -> list:
    """Every kind of reply in one pipeline, an error among them, then a command on the same connection."""
    await client.flushall()
    pipe = client.pipeline(transaction=False)
    pipe.set("s", "v").get("s").get("missing").incr("n").incrbyfloat("f", 1.5)
    pipe.hset("h", mapping={"a": "1", "b": "2"}).hgetall("h").rpush("l", "x", "y").lrange("l", 0, -1)
    pipe.execute_command("EVAL", "return {1, 'two', {3, nil}, redis.status_reply('OK')}", 0)
    pipe.lpush("s", "wrong type")  # an error reply in the middle
    pipe.execute_command("EVAL", "return redis.error_reply('CUSTOM failure')", 0)
    pipe.zadd("z", {"m": 2.5}).zrange("z", 0, -1, withscores=True).exists("s", "h", "missing")
    results = await pipe.execute(raise_on_error=False)
    shown = [(type(r).__name__, str(r)) if isinstance(r, Exception) else r for r in results]
    return [*shown, await client.get("s"), protocol_note]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_replies_read_without_the_per_read_timeout_equal_redis_pys(redis_url, protocol):
    """The packed connection takes replies hiredis already holds without redis-py's timed read:
    the very replies, errors in place, and the connection fit for the next command."""
    packed = use_packed_pipelines(aioredis.Redis.from_url(redis_url, protocol=protocol))
    stock = aioredis.Redis.from_url(redis_url, protocol=protocol)
    taken: list[int] = []
    original = PackedPipelineMixin.read_response

    async def counting(self, *args, **kwargs):
        # How many replies were already parsed when asked for (the path without the timeout).
        if self._parser._reader.has_data():
            taken.append(1)
        return await original(self, *args, **kwargs)

    try:
        assert issubclass(packed.connection_pool.connection_class, PackedPipelineMixin)
        PackedPipelineMixin.read_response = counting
        try:
            from_packed = await _replies(packed, "p")
        finally:
            PackedPipelineMixin.read_response = original
        from_stock = await _replies(stock, "p")
    finally:
        await packed.aclose()
        await stock.aclose()
    assert from_packed == from_stock
    assert ("ResponseError", "CUSTOM failure") in from_packed and from_packed[-2] == b"v"
    assert len(taken) > 10  # most replies were there already: the untimed path did run
