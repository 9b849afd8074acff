"""The room view's replay slider (views/replay.js) in a real Chromium, against a real node whose
history the real writer wrote (time-shifted session events through the Redis stream)."""

from __future__ import annotations

import time

import aiohttp

from ..api.conftest import write_history
from ..conftest import token_for
from ..history.helpers import FakeSession
from ..stomp_client import connected
from .conftest import ARTIFACTS

MIN = 60_000


async def test_replay_slider_replays_roster_and_counts(node_factory, pg_dsn, redis_sync, page):
    from playwright.async_api import expect

    node = await node_factory(postgres_dsn=pg_dsn)
    admin = token_for(node.settings, "ops", "spidi:admin")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            node.ops.url + "/api/v1/rooms",
            json={"code": "replay"},
            headers={"Authorization": f"Bearer {admin}"},
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
    now = int(time.time() * 1000)
    # carol [now-20h, now-19h), alice [now-3h, now-1h), bob since now-2h and still heartbeating.
    carol = FakeSession("default", "replay", "carol", now - 20 * 60 * MIN)
    alice = FakeSession("default", "replay", "alice", now - 180 * MIN, ip="10.1.2.3")
    bob = FakeSession("default", "replay", "bob", now - 120 * MIN, device="iPhone", os="iOS 18")
    bob.beat(now - 5_000, 20)
    await write_history(
        node,
        redis_sync,
        [
            carol.started(),
            carol.ended(now - 19 * 60 * MIN),
            alice.started(),
            alice.ended(now - 60 * MIN, "timeout"),
            bob.started(),
            bob.checkpoint(),
        ],
    )
    # A live client, so the room view learns the room's id from its roster as it does in use.
    dave = await connected(node.ws_url, token_for(node.settings, "dave", "spidi:user"))
    await dave.hello("replay")

    await page.goto(node.ops.url + "/#/rooms/replay")
    await page.fill("#token", admin)
    await page.click("#signin-button")
    await expect(page.locator("#room")).to_be_visible()
    card = page.locator("#replay-card")
    await expect(card.locator("#replay-body")).to_be_visible(timeout=5000)
    slider = page.locator("#replay-slider")
    await expect(slider).to_have_attribute("max", "287")  # 24 h every 5 minutes
    await expect(page.locator("#replay-chart path.line")).to_have_count(1)
    # At first the latest instant (5 minutes ago at most): bob only.
    users = card.locator("#replay-table tbody tr td:first-child b")
    await expect(users).to_have_text(["bob"], timeout=3000)
    await expect(page.locator("#replay-online")).to_have_text("1")
    assert await card.get_attribute("data-roster-at") == await card.get_attribute("data-at")

    async def slide_to(index: int) -> None:
        await slider.evaluate(
            "(s, i) => { s.value = String(i); s.dispatchEvent(new Event('input', {bubbles: true})); }", index
        )

    # 95 minutes back (19 steps before the last): alice and bob, alice's IP shown to an admin.
    await slide_to(287 - 19)
    await expect(users).to_have_text(["alice", "bob"], timeout=3000)
    await expect(page.locator("#replay-online")).to_have_text("2")
    alice_row = card.locator("#replay-table tbody tr").first
    await expect(alice_row.locator("td").nth(4)).to_have_text("10.1.2.3")
    await expect(alice_row.locator("td").nth(7)).to_have_text("timeout")
    await expect(card.locator("#replay-table tbody tr").nth(1).locator("td").nth(6)).to_have_text(
        "still open"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-replay.png"), full_page=True)
    # 19.5 hours back: carol alone; 12 hours back: nobody.
    await slide_to(287 - 233)
    await expect(users).to_have_text(["carol"], timeout=3000)
    await slide_to(287 - 144)
    await expect(card.locator("#replay-empty")).to_be_visible(timeout=3000)
    await expect(page.locator("#replay-online")).to_have_text("0")
    await dave.close()


async def test_replay_hides_ips_from_monitors_and_reports_errors(node_factory, pg_dsn, redis_sync, page):
    from playwright.async_api import expect

    node = await node_factory(postgres_dsn=pg_dsn, auto_create_rooms=True)
    now = int(time.time() * 1000)
    erin = FakeSession("default", "side", "erin", now - 30 * MIN)
    erin.beat(now - 5_000, 10)
    await write_history(node, redis_sync, [erin.started(), erin.checkpoint()])
    dave = await connected(node.ws_url, token_for(node.settings, "dave", "spidi:user"))
    await dave.hello("side")

    await page.goto(node.ops.url + "/#/rooms/side")
    await page.fill("#token", token_for(node.settings, "mo", "spidi:monitor"))
    await page.click("#signin-button")
    card = page.locator("#replay-card")
    await expect(card.locator("#replay-table tbody tr td:first-child b")).to_have_text(["erin"], timeout=5000)
    await expect(card.locator("#replay-table tbody tr td").nth(4)).to_have_text("hidden")

    # The history store gone: the card says why instead of a stale replay.
    await page.route("**/api/v1/rooms/*/timeline*", lambda route: route.fulfill(status=503, body="{}"))
    await card.locator('#replay-range button[data-range="7d"]').click()
    await expect(card.locator("#replay-status")).to_contain_text("history store is unavailable", timeout=3000)
    await expect(card.locator("#replay-body")).to_be_hidden()
    await dave.close()
