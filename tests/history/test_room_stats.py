"""Room statistics: samples of several nodes for one minute merge additively; p95 comes from the
merged histogram; 1m/1h/1d rollups."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from spidi_server.history.sql.sessions import hist_quantile, room_stats
from spidi_server.rooms import room_id_for

from ..conftest import token_for
from ..stomp_client import connected
from .helpers import (
    FakeSession,
    dt,
    hist_of,
    ms,
    push,
    quantile,
    room_sample,
    running_writer,
    wait_for,
    written,
)

ROOM = room_id_for("acme", "stage")


def test_two_nodes_same_minute_merge(history_settings, redis_sync, pg):
    minute = ms("2026-05-04T10:07")
    lat_a = [3, 8, 8, 20, 40, 90, 140, 180]
    lat_b = [4, 12, 30, 60, 70, 260, 480, 900, 1500, 7000]
    # Counters as older nodes sent them: ignored (the session events below are what count).
    a = room_sample(
        "acme", "stage", minute, "node-a", online=[10, 12, 14], joins=5, leaves=1, timeouts=1, latencies=lat_a
    )
    b = room_sample(
        "acme",
        "stage",
        minute,
        "node-b",
        online=[20, 18, 22],
        joins=2,
        leaves=3,
        disconnects=2,
        latencies=lat_b,
    )
    sessions = [
        FakeSession("acme", "stage", f"u{i}", minute + 1000 * i, node=f"node-{'ab'[i % 2]}") for i in range(7)
    ]
    reasons = ["leave", "leave", "leave", "leave", "timeout", "disconnect", "shutdown"]
    ends = [
        s.ended(minute + 30_000 + i, reason)
        for i, (s, reason) in enumerate(zip(sessions, reasons, strict=True))
    ]
    with running_writer(history_settings):
        first = [a, *(s.started() for s in sessions)]
        push(redis_sync, first)  # separate batches: the second merges into the stored row
        wait_for(lambda: written(redis_sync) == len(first))
        push(redis_sync, [b, *ends])
        wait_for(lambda: written(redis_sync) == len(first) + 1 + len(ends))
    with pg.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM dat_spd_room_stats").fetchone()
    assert row["ts_bucket"] == dt("2026-05-04T10:07") and str(row["room_id"]) == ROOM
    # The room's maximum is its count at one instant across nodes: second by second 30, 30, 36;
    # not the largest node's own maximum (22, below the room's average).
    assert (row["online_sum"], row["online_samples"], row["online_max"]) == (36 + 60, 6, 36)
    assert row["online_secs"] == [30, 30, 36]
    # The room's average online is the sum of the nodes' averages (12 + 20), not the mean of samples.
    assert row["online_avg"] == pytest.approx(12 + 20) and row["online_max"] >= row["online_avg"]
    # From the session events: 7 starts; 4 leaves, 1 timeout, and a disconnect and a shutdown.
    assert (row["joins"], row["leaves"], row["timeouts"], row["disconnects"]) == (7, 4, 1, 2)
    assert row["latency_count"] == len(lat_a) + len(lat_b)
    assert row["latency_sum"] == pytest.approx(sum(lat_a) + sum(lat_b))
    merged = hist_of(lat_a + lat_b)
    assert (
        row["latency_hist"] == merged == [x + y for x, y in zip(hist_of(lat_a), hist_of(lat_b), strict=True)]
    )
    assert row["node_samples"] == 2

    (stats,) = room_stats(pg, ROOM, dt("2026-05-04T10:07"), dt("2026-05-04T10:08"), "1m")
    assert stats["latency_p95"] == pytest.approx(quantile(merged, 0.95))
    assert stats["latency_avg"] == pytest.approx((sum(lat_a) + sum(lat_b)) / 18)
    assert stats["online_avg"] == pytest.approx(32) and stats["online_max"] == 36


async def test_two_nodes_store_the_room_wide_maximum(node_factory, pg_dsn):
    # Two processes on one Redis (as `spidi serve --workers 2` runs them), 3 sessions on one and 2
    # on the other, in one room: the stored maximum is the room's 5, not one node's 3 (which is
    # below the room's average).
    a = await node_factory(node_id="node-a", postgres_dsn=pg_dsn, writer="child", writer_flush_interval_s=0.2)
    b = await node_factory(node_id="node-b", postgres_dsn=pg_dsn, writer="external")
    room_id = room_id_for("default", "crowd")
    clients = []
    for node, count in ((a, 3), (b, 2)):
        for i in range(count):
            client = await connected(
                node.ws_url, token_for(node.settings, f"{node.node_id}-{i}", "spidi:user")
            )
            await client.hello("crowd", f"c{i}")
            clients.append(client)

    def together() -> bool:
        """Both nodes sampled their full count in one same second of the current minute, and the
        minute is not about to end (its rest would be a second sample of each node for it)."""
        sa, sb = a.presence.rooms[room_id].sample, b.presence.rooms[room_id].sample
        return (
            time.time() % 60 < 45
            and sa.bucket == sb.bucket
            and any(x == 3 and y == 2 for x, y in zip(sa.online_secs, sb.online_secs, strict=True))
        )

    deadline = time.monotonic() + 30
    while not together():
        assert time.monotonic() < deadline, "the nodes never sampled the same second"
        await asyncio.sleep(0.1)
    for node in (a, b):
        node.presence.flush_history()  # the partial minute's samples
        await node.store.flush()

    def rows() -> list[dict]:
        with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT online_max, online_avg, node_samples FROM dat_spd_room_stats WHERE room_id = %s",
                [room_id],
            ).fetchall()

    deadline = time.monotonic() + 20
    stored = await asyncio.to_thread(rows)
    while not any(r["online_max"] == 5 for r in stored):
        assert time.monotonic() < deadline, f"no minute with the room-wide maximum: {stored}"
        await asyncio.sleep(0.2)
        stored = await asyncio.to_thread(rows)
    assert all(r["online_max"] <= 5 for r in stored), stored
    # (Two such minutes if one ended between the nodes' common second and the flush.)
    for peak in (r for r in stored if r["online_max"] == 5):
        assert peak["node_samples"] >= 2 and peak["online_avg"] <= peak["online_max"], stored
    for client in clients:
        await client.close()


@pytest.mark.parametrize(
    ("hist", "q"),
    [
        ([0] * 15, 0.95),
        ([100] + [0] * 14, 0.95),
        ([0, 0, 10, 10] + [0] * 11, 0.5),
        ([1] * 15, 0.95),
        ([0] * 14 + [5], 0.95),
        ([3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0.75),
    ],
)
def test_sql_quantile_matches_python(pg, hist, q):
    assert hist_quantile(pg, hist, q) == (
        None if quantile(hist, q) is None else pytest.approx(quantile(hist, q))
    )


def test_rollups_1m_1h_1d(history_settings, redis_sync, pg):
    # Day 1: 10:00 and 10:01 (one hour), 11:30; day 2: 09:00. Latencies grow per sample.
    plan = [
        ("2026-05-04T10:00", [4, 4], 2, [10, 20]),
        ("2026-05-04T10:01", [6, 6], 1, [30, 40, 600]),
        ("2026-05-04T11:30", [2], 0, [5]),
        ("2026-05-05T09:00", [1, 3], 4, [100, 100, 100]),
    ]
    evs = [room_sample("acme", "stage", ms(t), online=o, latencies=lat) for t, o, _, lat in plan]
    evs += [
        FakeSession("acme", "stage", f"u{k}", ms(t) + 1000 * k).started()
        for t, _, j, _ in plan
        for k in range(j)
    ]
    push(redis_sync, evs)
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == len(evs))
    start, end = dt("2026-05-04T00:00"), dt("2026-05-06T00:00")

    minutes = room_stats(pg, ROOM, start, end, "1m")
    assert [m["bucket"] for m in minutes] == [dt(t) for t, *_ in plan]
    assert [m["online_avg"] for m in minutes] == [4, 6, 2, 2]
    assert [m["joins"] for m in minutes] == [2, 1, 0, 4]

    hours = room_stats(pg, ROOM, start, end, "1h")
    assert [h["bucket"] for h in hours] == [
        dt("2026-05-04T10:00"),
        dt("2026-05-04T11:00"),
        dt("2026-05-05T09:00"),
    ]
    # Time-weighted over the hour's 60 minutes: minutes with no sample count as nobody online.
    assert hours[0]["online_avg"] == pytest.approx((4 + 6) / 60) and hours[0]["online_max"] == 6
    assert [h["joins"] for h in hours] == [3, 0, 4]
    assert hours[0]["latency_count"] == 5 and hours[0]["latency_avg"] == pytest.approx(700 / 5)
    assert hours[0]["latency_p95"] == pytest.approx(quantile(hist_of([10, 20, 30, 40, 600]), 0.95))

    days = room_stats(pg, ROOM, start, end, "1d")
    assert [d["bucket"] for d in days] == [dt("2026-05-04T00:00"), dt("2026-05-05T00:00")]
    assert days[0]["online_avg"] == pytest.approx((4 + 6 + 2) / 1440)
    assert [d["joins"] for d in days] == [3, 4] and days[0]["latency_count"] == 6
    assert days[0]["latency_hist"] == hist_of([10, 20, 30, 40, 600, 5])
    assert days[1]["latency_p95"] == pytest.approx(quantile(hist_of([100] * 3), 0.95))

    # A window cutting into an hour averages over the minutes inside the window only.
    (part,) = room_stats(pg, ROOM, dt("2026-05-04T10:00"), dt("2026-05-04T10:02"), "1h")
    assert part["online_avg"] == pytest.approx((4 + 6) / 2)
    # Plain SQL works too, and every room at once with a NULL room.
    assert (
        pg.execute("SELECT count(*) FROM spd_room_stats(NULL, %s, %s, '1d')", [start, end]).fetchone()[0] == 2
    )
    with pytest.raises(ValueError):
        room_stats(pg, ROOM, start, end, "5m")
