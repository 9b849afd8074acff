"""The room view's SLO card in a real Chromium: the real REST API over history written through the
writer; only the SLOs that cover the room, judged on its heartbeats."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import aiohttp

from ..api.conftest import write_history
from ..conftest import token_for
from ..slo_history import MINUTE, sample, with_breakdown
from ..stomp_client import connected
from .conftest import ARTIFACTS


async def test_slo_card_of_a_room(node_factory, pg_dsn, redis_sync, page):
    from playwright.async_api import expect

    node = await node_factory(postgres_dsn=pg_dsn, writer="external", alerting=False)
    # The lobby's last ten minutes: 100 heartbeats each, 10 of them slow (over 150 ms).
    now = datetime.fromtimestamp(time.time() // 60 * 60, UTC)
    await write_history(
        node, redis_sync, [sample("lobby", now - (m + 1) * MINUTE, 90, 10) for m in range(10)]
    )
    admin = {"Authorization": "Bearer " + token_for(node.settings, "ad", "spidi:admin")}
    async with aiohttp.ClientSession(base_url=node.ops.url, headers=admin) as http:
        async with http.post("/api/v1/rooms", json={"code": "other"}) as resp:
            other = await resp.json()
        slos = [
            {
                "name": "Fast tenant",
                "scope": "tenant",
                "objective": "share",
                "thresholdMs": 150,
                "target": 0.99,
            },
            {
                "name": "Relaxed",
                "scope": "tenant",
                "objective": "percentile",
                "thresholdMs": 300,
                "percentile": 95,
            },
            {
                "name": "Other only",
                "scope": "room",
                "roomId": other["id"],
                "objective": "percentile",
                "thresholdMs": 150,
                "percentile": 95,
            },
        ]
        for body in slos:
            async with http.post("/api/v1/slos", json=body) as resp:
                assert resp.status == 201, await resp.text()
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    await alice.hello("lobby")

    await page.goto(node.ops.url + "/#/rooms/lobby")
    await page.fill("#token", token_for(node.settings, "mo", "spidi:monitor"))
    await page.click("#signin-button")
    card = page.locator("#room-slos-card")
    await expect(card).to_be_visible(timeout=5000)
    rows = page.locator("#room-slos-table tbody tr")
    await expect(rows).to_have_count(2)  # not "Other only": its scope leaves the lobby out
    await expect(page.locator("#room-slos-count")).to_have_text("2")
    fast = rows.filter(has_text="Fast tenant")
    await expect(fast.locator(".c-objective")).to_have_text("≥ 99.00 % ≤ 150 ms over 28 d")
    # 90 % fast against 99 %: ten times the budget burns, 900 % of it overspent.
    await expect(fast.locator(".c-compliance")).to_have_text("90.000 %")
    await expect(fast.locator(".c-compliance")).to_have_class("num c-compliance warn")
    await expect(fast.locator(".c-budget")).to_have_text("-900.0 %")
    await expect(fast.locator(".c-burn-1h")).to_have_text("10.0×")
    await expect(fast.locator(".c-burn-5m")).to_have_text("10.0×")
    await expect(fast.locator(".c-burn-3d")).to_have_text("10.0×")
    # At 300 ms every heartbeat of the lobby is good.
    relaxed = rows.filter(has_text="Relaxed")
    await expect(relaxed.locator(".c-objective")).to_have_text("p95 ≤ 300 ms over 28 d")
    await expect(relaxed.locator(".c-compliance")).to_have_text("100.000 %")
    await expect(relaxed.locator(".c-budget")).to_have_text("100.0 %")
    await expect(relaxed.locator(".c-burn-1h")).to_have_text("0.00×")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-slos.png"), full_page=True)

    # A room no SLO with heartbeats covers still shows the tenant's SLOs, without figures.
    bob = await connected(node.ws_url, token_for(node.settings, "bob", "spidi:user"))
    await bob.hello("quiet")
    await page.goto(node.ops.url + "/#/rooms/quiet")
    quiet = page.locator("#room-slos-table tbody tr").filter(has_text="Fast tenant")
    await expect(quiet.locator(".c-compliance")).to_have_text("—", timeout=5000)
    await expect(quiet.locator(".c-budget")).to_have_text("100.0 %")
    await alice.close()
    await bob.close()


async def test_slo_card_breaks_down_by_app_version_and_os(node_factory, pg_dsn, redis_sync, page):
    from playwright.async_api import expect

    node = await node_factory(postgres_dsn=pg_dsn, writer="external", alerting=False)
    # The lobby's last ten minutes: release 5.1 (on Android) slow, 5.0 (on iOS) fast.
    now = datetime.fromtimestamp(time.time() // 60 * 60, UTC)
    evs = []
    for m in range(10):
        event = with_breakdown(
            sample("lobby", now - (m + 1) * MINUTE, 90, 10),
            "appVersion",
            {"5.0": (80, 0), "5.1": (5, 10), None: (5, 0)},
        )
        evs.append(with_breakdown(event, "os", {"iOS": (80, 0), "Android": (5, 10), "": (5, 0)}))
    await write_history(node, redis_sync, evs)
    admin = {"Authorization": "Bearer " + token_for(node.settings, "ad", "spidi:admin")}
    async with aiohttp.ClientSession(base_url=node.ops.url, headers=admin) as http:
        body = {
            "name": "Fast tenant",
            "scope": "tenant",
            "objective": "share",
            "thresholdMs": 150,
            "target": 0.99,
        }
        async with http.post("/api/v1/slos", json=body) as resp:
            assert resp.status == 201, await resp.text()
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    await alice.hello("lobby")

    await page.goto(node.ops.url + "/#/rooms/lobby")
    await page.fill("#token", token_for(node.settings, "mo", "spidi:monitor"))
    await page.click("#signin-button")
    groups = page.locator("#room-slos-table tbody tr.slo-group")
    # By app version (the default): the most overspent first, other last.
    await expect(groups).to_have_count(3, timeout=5000)
    await expect(groups.locator(".c-group")).to_have_text(["↳ 5.1", "↳ 5.0", "↳ other app versions"])
    slow = groups.nth(0)
    await expect(slow.locator(".c-objective")).to_have_text("150 heartbeats")
    await expect(slow.locator(".c-compliance")).to_have_text("33.333 %")
    await expect(slow.locator(".c-compliance")).to_have_class("num c-compliance warn")
    await expect(slow.locator(".c-burn-1h")).to_have_text("66.7×")
    fast = groups.nth(1)
    await expect(fast.locator(".c-compliance")).to_have_text("100.000 %")
    await expect(fast.locator(".c-budget")).to_have_text("100.0 %")
    await expect(fast.locator(".c-burn-1h")).to_have_text("0.00×")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-slo-breakdown.png"), full_page=True)
    # By OS: the same figures per system; the clients that sent none have their own row (a tie in
    # budget goes by value).
    await page.select_option("#room-slos-breakdown", "os")
    await expect(groups.locator(".c-group")).to_have_text(
        ["↳ Android", "↳ no OS given", "↳ iOS"], timeout=5000
    )
    await expect(groups.nth(0).locator(".c-burn-5m")).to_have_text("66.7×")
    await alice.close()
