"""Anomaly markers on the dashboard's history charts, end to end: a join storm made by real clients
on a room with weeks of calm history raises a flag through the evaluator; Chromium shows it as a
marker on the online chart, explaining itself, and none on the latency chart."""

from __future__ import annotations

import asyncio
import time

import psycopg

from ..alerting.test_anomaly_live import FAST, add_anomaly_rule, hello, write_calm_baseline
from ..alerting.test_evaluator import add_room, alert_node
from ..conftest import token_for
from .conftest import ARTIFACTS


async def test_a_join_storm_is_marked_on_the_history_chart(settings, redis_sync, pg_dsn, node_factory, page):
    from playwright.async_api import expect

    room_id = add_room(pg_dsn, "default", "lobby", 100)
    write_calm_baseline(settings, redis_sync, pg_dsn, "default", "lobby")
    node = await alert_node(node_factory, pg_dsn, **FAST)
    clients = [(await hello(node, "lobby", f"storm{i}"))[0] for i in range(9)]
    # The rule's first evaluation sees all nine joins: the writer stores them in batches, and a
    # flag raised on the first six or seven would keep that count (the marker's title shows it).
    await _until_joins_stored(pg_dsn, room_id, 9)
    await add_anomaly_rule(node, ["join_storm"], scope="room", roomId=room_id)
    await _until_stored(node, room_id)

    await page.goto(node.ops.url + "/#/rooms/lobby")
    await page.fill("#token", token_for(node.settings, "mo", "spidi:monitor"))
    await page.click("#signin-button")
    await expect(page.locator("#history-charts")).to_be_visible(timeout=10_000)
    mark = page.locator('#chart-online .anomaly-mark[data-flag="join_storm"]')
    await expect(mark).to_have_count(1)
    await expect(page.locator("#chart-latency .anomaly-mark")).to_have_count(0)
    title = await mark.locator("title").text_content()
    assert title.startswith("Join storm · ") and "joinsPerMin 9" in title
    assert "baseline median 1, MAD 0 (180 min)" in title and "> 3.5" in title
    await page.screenshot(path=str(ARTIFACTS / "dashboard-anomaly-marker.png"), full_page=True)
    for client in clients:
        await client.close()


async def _until_joins_stored(pg_dsn: str, room_id: str, count: int) -> None:
    def stored() -> int:
        with psycopg.connect(pg_dsn) as conn:
            return conn.execute(
                "SELECT count(*) FROM dat_spd_session WHERE room_id = %s::uuid AND user_id LIKE 'storm%%'",
                (room_id,),
            ).fetchone()[0]

    deadline = time.monotonic() + 15
    while await asyncio.to_thread(stored) < count:
        assert time.monotonic() < deadline, f"the {count} joins not stored"
        await asyncio.sleep(0.05)


async def _until_stored(node, room_id: str) -> None:
    deadline = time.monotonic() + 15
    while not any(key[1] == room_id for key in node.alerts.anomalies._open or {}):
        assert time.monotonic() < deadline, "no anomaly flag stored"
        await asyncio.sleep(0.05)
