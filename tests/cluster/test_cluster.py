"""Spidi on a real 3-master Redis Cluster (``SPIDI_REDIS_URL=redis+cluster://...``), unchanged:
rooms on every master, two nodes, monitors, capacity, history through the writer, reaping."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import psycopg
import pytest
from psycopg.rows import dict_row
from redis.crc import key_slot

from spidi_server.errors import ConfigError
from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings
from spidi_server.stores import keys
from spidi_server.stores.client import is_cluster, parse_cluster_url

from ..conftest import token_for
from ..stomp_client import connected
from ..test_capacity import hello_outcome
from ..test_node_failure import start_node


def rooms_on_every_master(cluster, count_per_master: int = 1) -> list[str]:
    """Room codes of tenant ``default`` whose keys live on each master in turn."""
    by_port: dict[int, list[str]] = {port: [] for port in cluster.ports}
    i = 0
    while any(len(codes) < count_per_master for codes in by_port.values()):
        code = f"room{i}"
        slot = key_slot(keys.room_online(room_id_for("default", code)).encode())
        codes = by_port[cluster.port_of_slot(slot)]
        if len(codes) < count_per_master:
            codes.append(code)
        i += 1
    return [code for port in cluster.ports for code in by_port[port]]


def _fetch(dsn: str, query: str) -> list[dict]:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


async def _drain_roster(mon, topic: str, until, timeout: float = 5.0) -> dict:
    """Roster deltas merged until ``until(joined, left, updated)`` holds."""
    joined, left, updated = {}, {}, {}
    deadline = time.monotonic() + timeout
    while not until(joined, left, updated):
        try:
            delta = await mon.json(topic, timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(
                f"{topic}: joined {list(joined)} left {left} updated {list(updated)}"
            ) from None
        joined.update({e["sessionId"]: e for e in delta["joined"]})
        left.update({e["sessionId"]: e["reason"] for e in delta["left"]})
        updated.update({e["sessionId"]: e for e in delta["updated"]})
    return {"joined": joined, "left": left, "updated": updated}


def test_cluster_urls_parse():
    nodes, options = parse_cluster_url("redis+cluster://spidi:p%40ss@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002)]
    assert options == {"ssl": False, "username": "spidi", "password": "p@ss"}
    assert parse_cluster_url("rediss+cluster://h")[0] == [("h", 6379)]
    assert parse_cluster_url("rediss+cluster://h")[1]["ssl"] is True
    with pytest.raises(ConfigError, match="redis_url"):
        Settings(redis_url="redis+cluster://10.0.0.1:7000,10.0.0.2:x").validate()
    Settings(redis_url="redis+cluster://10.0.0.1:7000,10.0.0.2:7001").validate()


async def test_two_nodes_on_a_cluster(pg_dsn, redis_cluster, node_factory):
    # pg_dsn first: its database is dropped after the nodes (and their writer) have stopped.
    codes = rooms_on_every_master(redis_cluster)
    small = codes[0]
    common = {"redis_url": redis_cluster.url, "rooms": {small: 2}, "heartbeat_timeout_ms": 60_000}
    # Node A runs the history writer (a child process, on the cluster URL too).
    a = await node_factory(
        node_id="cl-a", postgres_dsn=pg_dsn, writer="child", writer_flush_interval_s=0.2, **common
    )
    b = await node_factory(node_id="cl-b", history=True, **common)
    assert is_cluster(a.store.redis) and is_cluster(b.store.redis)
    assert a.writer_proc is not None and a.writer_proc.poll() is None

    mon = await connected(b.ws_url, token_for(b.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms")
    # Nobody joined yet: only the configured room is listed.
    assert [(r["roomCode"], r["online"]) for r in (await mon.json("/topic/rooms"))["rooms"]] == [(small, 0)]
    for code in codes:
        await mon.subscribe(f"/topic/rooms/{code}/roster")
        assert (await mon.json(f"/topic/rooms/{code}/roster"))["users"] == []
        await mon.subscribe(f"/topic/rooms/{code}/metrics")
        await mon.json(f"/topic/rooms/{code}/metrics")

    # Two sessions per room, one through each node; a third HELLO for the small room (capacity 2)
    # gets ROOM_FULL although neither node holds 2 sessions of it.
    sessions: dict[str, list] = {}
    for code in codes:
        for node in (a, b):
            client = await connected(
                node.ws_url, token_for(node.settings, f"{code}-{node.node_id}", "spidi:user")
            )
            welcome = await hello_outcome(client, code, f"{code}-{node.node_id}")
            assert welcome["type"] == "WELCOME", welcome
            sessions.setdefault(code, []).append((client, welcome["sessionId"]))
    extra = await connected(a.ws_url, token_for(a.settings, "extra", "spidi:user"))
    assert (await hello_outcome(extra, small))["code"] == "ROOM_FULL"

    for code in codes:
        sids = {sid for _, sid in sessions[code]}
        seen = await _drain_roster(mon, f"/topic/rooms/{code}/roster", lambda j, _l, _u, s=sids: set(j) == s)
        assert {e["userId"] for e in seen["joined"].values()} == {f"{code}-cl-a", f"{code}-cl-b"}
        for i, (client, sid) in enumerate(sessions[code]):
            await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 10 + 20 * i}, receipt="hb")
            await client.next(command="RECEIPT")
        while (m := await mon.json(f"/topic/rooms/{code}/metrics"))["avgLatencyMs"] != 20.0:
            pass
        assert m["online"] == 2 and m["users"] == 2 and m["roomCode"] == code

    # Every room's keys are on its own master, and one master each.
    for code, port in zip(codes, redis_cluster.ports, strict=True):
        with redis_cluster.client(port) as node_client:
            assert node_client.zcard(keys.room_online(room_id_for("default", code))) == 2

    # /topic/rooms (one read per master, fanned out by the cluster pipeline) lists them all.
    deadline = time.monotonic() + 5
    while True:
        rooms = {r["roomCode"]: r for r in (await mon.json("/topic/rooms"))["rooms"]}
        if set(rooms) == set(codes) and all(r["online"] == 2 for r in rooms.values()):
            break
        assert time.monotonic() < deadline, rooms
    assert rooms[small]["capacity"] == 2

    # Readiness pings every master.
    async with aiohttp.ClientSession() as http, http.get(f"{a.ops.url}/health/ready") as resp:
        ready = await resp.json()
    assert ready["components"]["redis"]["status"] == "UP", ready  # (the writer reports later)

    # Every master forgets the scripts (a restart, a promoted replica): EVALSHA gets NOSCRIPT, the
    # node loads them on every master again and replays the batch.
    for port in redis_cluster.ports:
        with redis_cluster.client(port) as node_client:
            node_client.script_flush()

    # One leaves per room; the monitor sees it, and the history writer records it in PostgreSQL.
    for code in codes:
        client, sid = sessions[code][0]
        await client.app("/app/leave", {"sessionId": sid}, receipt="bye")
        await client.next(command="RECEIPT")
        seen = await _drain_roster(mon, f"/topic/rooms/{code}/roster", lambda _j, left, _u, s=sid: s in left)
        assert seen["left"][sid] == "leave"
    left_sids = {sessions[code][0][1] for code in codes}
    all_sids = {sid for pairs in sessions.values() for _, sid in pairs}
    await asyncio.gather(a.store.flush(), b.store.flush())
    deadline = time.monotonic() + 20
    while True:
        rows = await asyncio.to_thread(
            _fetch, pg_dsn, "SELECT session_id::text AS sid, end_reason, node_id FROM dat_spd_session"
        )
        ended = {r["sid"] for r in rows if r["end_reason"] == "leave"}
        if {r["sid"] for r in rows} == all_sids and ended == left_sids:
            break
        assert time.monotonic() < deadline, rows
    assert {r["node_id"] for r in rows} == {"cl-a", "cl-b"}
    for pairs in sessions.values():
        for client, _ in pairs:
            await client.close()
    await asyncio.gather(mon.close(), extra.close())


@pytest.mark.timeout(60)
async def test_sessions_of_a_dead_node_are_reaped_on_a_cluster(node_factory, redis_cluster):
    codes = rooms_on_every_master(redis_cluster)
    survivor = await node_factory(node_id="cl-survivor", redis_url=redis_cluster.url, history=False)
    mon = await connected(survivor.ws_url, token_for(survivor.settings, "mon", "spidi:monitor"))
    for code in codes:
        await mon.subscribe(f"/topic/rooms/{code}/roster")
        await mon.json(f"/topic/rooms/{code}/roster")
    # A real `spidi serve` process on the cluster URL, killed with its sessions in three rooms.
    proc, port = await asyncio.to_thread(start_node, redis_cluster.url, "cl-victim")
    clients, sids = [], {}
    try:
        for i, code in enumerate(codes):
            client = await connected(
                f"ws://127.0.0.1:{port}/ws", token_for(survivor.settings, f"v{i}", "spidi:user")
            )
            clients.append(client)
            sids[code] = (await client.hello(code, f"v{i}"))["sessionId"]
        for code in codes:
            await _drain_roster(mon, f"/topic/rooms/{code}/roster", lambda j, _l, _u, s=sids[code]: s in j)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for client in clients:
            client._reader.cancel()
    # Its liveness key would expire within 5 s; expire it now (it lives on its own master).
    await survivor.store.redis.delete(keys.node_alive("cl-victim"))
    for code in codes:
        seen = await _drain_roster(
            mon, f"/topic/rooms/{code}/roster", lambda _j, left, _u, s=sids[code]: s in left
        )
        assert seen["left"][sids[code]] == "node_lost"
        assert await survivor.store.room_online(room_id_for("default", code)) == 0
    redis = survivor.store.redis
    assert not await redis.exists(keys.node_sessions("cl-victim"))
    for i in range(len(codes)):
        assert not await redis.exists(keys.user_sessions("default", f"v{i}"))
    assert survivor.metrics.registry.get_sample_value("spidi_sessions_reaped_total") == len(codes)
    await mon.close()


async def test_empty_rooms_expire_and_leave_the_list_on_a_cluster(redis_cluster, node_factory):
    # Rooms on every master: each empties, its keys expire on its master, the sweep (one lease,
    # its own slot) unindexes it, and spidi_rooms_total says the same on both nodes meanwhile.
    codes = rooms_on_every_master(redis_cluster)
    common = {"redis_url": redis_cluster.url, "room_sweep_interval_s": 0.2, "room_empty_ttl_s": 1}
    a = await node_factory(node_id="cl-a", **common)
    b = await node_factory(node_id="cl-b", **common)
    sessions = []
    for i, code in enumerate(codes):
        node = (a, b)[i % 2]
        client = await connected(node.ws_url, token_for(node.settings, f"u{i}", "spidi:user"))
        sessions.append((client, (await client.hello(code, f"c{i}"))["sessionId"]))

    async def totals() -> list:
        return [
            n.metrics.registry.get_sample_value("spidi_rooms_total", {"tenant": "default"}) for n in (a, b)
        ]

    deadline = time.monotonic() + 5
    while await totals() != [len(codes), len(codes)]:
        assert time.monotonic() < deadline, await totals()
        await asyncio.sleep(0.05)
    for client, sid in sessions:
        await client.app("/app/leave", {"sessionId": sid}, receipt="bye")
        await client.next(command="RECEIPT")
    await asyncio.gather(a.store.flush(), b.store.flush())
    for code, port in zip(codes, redis_cluster.ports, strict=True):
        with redis_cluster.client(port) as node_client:
            assert 0 < node_client.ttl(keys.room_metrics(room_id_for("default", code))) <= 1
    deadline = time.monotonic() + 5
    redis = a.store.redis
    while await redis.hlen(keys.tenant_rooms("default")) or await totals() != [None, None]:
        assert time.monotonic() < deadline, (
            await redis.hgetall(keys.tenant_rooms("default")),
            await totals(),
        )
        await asyncio.sleep(0.05)
    mon = await connected(b.ws_url, token_for(b.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms")
    assert (await mon.json("/topic/rooms"))["rooms"] == []
    for client, _ in sessions:
        await client.close()
    await mon.close()
