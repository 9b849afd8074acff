"""Clients come and go on a real node; its writer child puts exactly that into PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import psycopg
from psycopg.rows import dict_row

from spidi_server.rooms import room_id_for

from ..conftest import token_for
from ..stomp_client import connected


async def _poll(dsn: str, query: str, predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(_fetch, dsn, query)
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


def _fetch(dsn: str, query: str) -> list[dict]:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


async def test_session_rows_and_room_stats_match_what_happened(node_factory, pg_dsn, redis_sync):
    node = await node_factory(
        postgres_dsn=pg_dsn,
        writer="child",
        writer_flush_interval_s=0.2,
        heartbeat_interval_ms=300,
        heartbeat_timeout_ms=700,
        grace_period_ms=0,
    )
    assert node.writer_proc is not None and node.writer_proc.poll() is None
    # Who does what: 3 leave after 2 heartbeats, 2 time out after 1, 2 disconnect cleanly after 3.
    plan = {"leave": 3, "timeout": 2, "disconnect": 2}
    latencies = {"leave": [10, 30], "timeout": [50], "disconnect": [5, 15, 700]}
    clients, expected = [], {}
    for reason, count in plan.items():
        for i in range(count):
            user = f"{reason}-{i}"
            client = await connected(node.ws_url, token_for(node.settings, user, "spidi:user"))
            welcome = await client.hello("hist", f"client-{user}", device="Pixel", os="Android 15")
            sid = welcome["sessionId"]
            for latency in latencies[reason]:
                await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": latency}, receipt="r")
                await client.next(command="RECEIPT")
            clients.append((reason, client, sid))
            expected[sid] = (reason, user, latencies[reason])
    for reason, client, sid in clients:
        if reason == "leave":
            await client.app("/app/leave", {"sessionId": sid}, receipt="l")
            await client.next(command="RECEIPT")
        elif reason == "disconnect":
            await client.send("DISCONNECT", {"receipt": "d"})
            await client.next(command="RECEIPT")
    deadline = time.monotonic() + 5
    while node.presence.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not node.presence.sessions  # the two silent ones timed out
    node.presence.flush_history()  # the partial minute's room sample
    await node.store.flush()

    sessions = await _poll(
        pg_dsn,
        "SELECT session_id::text, user_id, end_reason, heartbeat_count, latency_min, latency_max, latency_avg,"
        " device, os, app_version, ip, client_id, room_code, node_id, started_at, ended_at, last_heartbeat_at"
        " FROM dat_spd_session",
        lambda rows: len(rows) == len(expected) and all(r["ended_at"] for r in rows),
    )
    assert len(sessions) == len(expected)
    for row in sessions:
        reason, user, lats = expected[row["session_id"]]
        assert row["end_reason"] == reason and row["user_id"] == user
        assert row["heartbeat_count"] == len(lats)
        assert row["latency_min"] == min(lats) and row["latency_max"] == max(lats)
        assert abs(row["latency_avg"] - sum(lats) / len(lats)) < 1e-9
        assert (row["device"], row["os"], row["app_version"], row["ip"]) == (
            "Pixel",
            "Android 15",
            "1.0.0",
            "127.0.0.1",
        )
        assert row["client_id"] == f"client-{user}" and row["room_code"] == "hist"
        assert row["node_id"] == node.node_id
        assert row["started_at"] <= row["last_heartbeat_at"] <= row["ended_at"]

    room_id = room_id_for("default", "hist")
    totals = await _poll(
        pg_dsn,
        "SELECT sum(joins) AS joins, sum(leaves) AS leaves, sum(timeouts) AS timeouts,"
        " sum(disconnects) AS disconnects, sum(latency_count) AS beats, sum(latency_sum) AS lat"
        f" FROM dat_spd_room_stats WHERE room_id = '{room_id}'",
        lambda rows: rows and rows[0]["joins"] == sum(plan.values()),
    )
    (row,) = totals
    assert (row["joins"], row["leaves"], row["timeouts"], row["disconnects"]) == (7, 3, 2, 2)
    assert row["beats"] == sum(len(v) * plan[k] for k, v in latencies.items())
    assert row["lat"] == sum(sum(v) * plan[k] for k, v in latencies.items())
    for _, client, _ in clients:
        await client.close()
