"""The dashboard's alerts in a real Chromium, fed the way the evaluator feeds /topic/alerts.

The test plays the evaluator: it keeps the tenant's open alerts in ``keys.alerts_active`` and
publishes each transition on ``keys.ALERTS_CHANNEL`` (the message contract of
``spidi_server/alerting/__init__.py``). The page must follow: the room's alert column, the alerts
panel and the room view. Acknowledging goes through the real REST API and PostgreSQL.
"""

from __future__ import annotations

import re
import time
import uuid

import orjson
import redis.asyncio as aioredis
from psycopg.types.json import Jsonb

from spidi_server.alerting.feed import alert_key, publish_acknowledgement
from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

from ..conftest import token_for
from ..stomp_client import connected
from .conftest import ARTIFACTS


class Evaluator:
    """What the evaluator does with a transition: the open alerts hash, then the announcement."""

    def __init__(self, redis_sync, tenant: str = "default"):
        self.redis = redis_sync
        self.tenant = tenant

    def alert(
        self, rule: dict, room: str, state: str = "firing", episode: str | None = None, **extra
    ) -> dict:
        now = int(time.time() * 1000)
        alert_id = str(uuid.uuid4())
        return {
            "type": "ALERT",
            "alertId": alert_id,
            "episodeId": episode or alert_id,
            "ruleId": rule["id"],
            "ruleName": rule["name"],
            "kind": rule["kind"],
            "severity": rule["severity"],
            "expression": rule["expression"],
            "threshold": rule.get("threshold"),
            "state": state,
            "previousState": "pending" if state == "firing" else "inactive",
            "tenant": self.tenant,
            "roomId": room_id_for(self.tenant, room),
            "roomCode": room,
            "value": extra.pop("value", 0.93),
            "since": now - 95_000,
            "at": now,
            "metrics": {"online": 93, "capacity": 100},
            **extra,
        }

    def store(self, alert: dict) -> None:
        field = alert_key(alert["ruleId"], alert["roomId"])
        if alert["state"] == "resolved":
            self.redis.hdel(keys.alerts_active(self.tenant), field)
        else:
            self.redis.hset(keys.alerts_active(self.tenant), field, orjson.dumps(alert).decode())

    def transition(self, alert: dict) -> dict:
        self.store(alert)
        self.redis.publish(keys.ALERTS_CHANNEL, orjson.dumps(alert).decode())
        return alert

    def resolve(self, alert: dict) -> dict:
        return self.transition(
            {
                **alert,
                "alertId": str(uuid.uuid4()),
                "state": "resolved",
                "previousState": alert["state"],
                "at": int(time.time() * 1000),
            }
        )


def stored_rule(pg, name: str, kind: str, severity: str, expression: str, threshold: float | None) -> dict:
    """A rule row (alert events reference it), disabled: no evaluator runs in this test anyway."""
    rule = {
        "id": str(uuid.uuid4()),
        "name": name,
        "kind": kind,
        "severity": severity,
        "expression": expression,
        "threshold": threshold,
    }
    pg.execute(
        """INSERT INTO dat_spd_alert_rule (id, unidad_negocio_id, name, scope, kind, expression, threshold, severity,
                                           enabled)
           VALUES (%(id)s, 'default', %(name)s, 'tenant', %(kind)s, %(expression)s, %(threshold)s, %(severity)s,
                   false)""",
        rule,
    )
    return rule


def stored_event(pg, alert: dict) -> None:
    """The alert's transition as the history writer stores it."""
    pg.execute(
        """INSERT INTO dat_spd_alert_event (id, rule_id, unidad_negocio_id, room_id, room_code, state, kind, severity,
                                            value, at, details)
           VALUES (%s, %s, 'default', %s, %s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), %s)""",
        [
            alert["alertId"],
            alert["ruleId"],
            alert["roomId"],
            alert["roomCode"],
            alert["state"],
            alert["kind"],
            alert["severity"],
            alert["value"],
            alert["at"],
            Jsonb({"episodeId": alert["episodeId"]}),
        ],
    )


async def test_alerts_live_in_chromium(node_factory, pg_dsn, pg, redis_sync, redis_url, page):
    from playwright.async_api import expect

    node = await node_factory(postgres_dsn=pg_dsn, writer="external", alerting=False)
    evaluator = Evaluator(redis_sync)
    full = stored_rule(pg, "Lobby full", "capacity", "critical", "utilization > 0.8", 0.8)
    slow = stored_rule(pg, "Slow answers", "latency", "warning", "avgLatencyMs > 300.0", 300.0)
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    await alice.hello("lobby", client_id="phone-1")
    await alice.hello("checkout", client_id="web-1")

    await page.goto(node.ops.url + "/")
    await page.click("#signin-button")  # development mode: an admin token is filled in
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=3000)
    lobby = page.locator('#rooms-table tr[data-room="lobby"]')
    checkout = page.locator('#rooms-table tr[data-room="checkout"]')
    await expect(lobby.locator(".online")).to_have_text("1", timeout=2000)
    await expect(page.locator("#alerts-empty")).to_have_text("No open alerts.")
    await expect(lobby.locator(".c-alert")).to_have_text("—")

    # Another tenant's alert never reaches this tenant's dashboards.
    Evaluator(redis_sync, tenant="acme").transition(Evaluator(redis_sync, "acme").alert(full, "lobby"))
    # The lobby fills up: the evaluator fires. Column and panel show it within 2 s.
    fired_at = time.monotonic()
    firing = evaluator.transition(evaluator.alert(full, "lobby"))
    stored_event(pg, firing)
    await expect(lobby.locator(".c-alert .sev")).to_have_text("critical", timeout=2000)
    row = page.locator(f'#alerts-table tr[data-alert="{full["id"]}/{firing["roomId"]}"]')
    await expect(row).to_be_visible(timeout=2000)
    seen_s = time.monotonic() - fired_at
    await expect(lobby.locator(".c-alert")).to_have_attribute("title", "Lobby full (critical, firing)")
    await expect(row.locator(".c-rule .primary-text")).to_have_text("Lobby full")
    await expect(row.locator(".c-rule .expr")).to_have_text("utilization > 0.8")
    await expect(row.locator(".c-room a")).to_have_text("lobby")
    await expect(row.locator(".c-state")).to_have_text("firing")
    await expect(row.locator(".c-value")).to_have_text("93 %")
    await expect(row.locator(".c-since")).to_have_text(re.compile(r"^1 min 3\d s$"))
    await expect(page.locator("#alerts-table tbody tr")).to_have_count(1)
    await expect(checkout.locator(".c-alert")).to_have_text("—")

    # A second rule pending in the same room: the worst shows, the other counts; newest first.
    pending = evaluator.transition(evaluator.alert(slow, "lobby", state="pending", value=412.0))
    pending_row = page.locator(f'#alerts-table tr[data-alert="{slow["id"]}/{pending["roomId"]}"]')
    await expect(pending_row.locator(".c-value")).to_have_text("412 ms", timeout=2000)
    await expect(lobby.locator(".c-alert")).to_have_text("critical+1")
    await expect(lobby.locator(".c-alert")).to_have_attribute(
        "title", "Lobby full (critical, firing)\nSlow answers (warning, pending)"
    )
    await expect(page.locator("#alerts-table tbody tr .c-rule .primary-text")).to_have_text(
        ["Slow answers", "Lobby full"]
    )
    await expect(page.locator("#alerts-count")).to_have_text("2 open · 1 firing")
    # The alert column sorts worst first.
    await page.click('#rooms-table th[data-key="alert"]')
    await expect(page.locator("#rooms-table tbody tr .c-code")).to_have_text(["lobby", "checkout"])
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"), full_page=True)

    # Acknowledge: the REST API with the page's token, then ALERT_ACK to every dashboard.
    await row.locator("button.ack").click()
    await expect(row.locator(".c-ack")).to_contain_text("dev-admin", timeout=2000)
    assert pg.execute(
        "SELECT acknowledged_by FROM dat_spd_alert_event WHERE id = %s", [firing["alertId"]]
    ).fetchone() == ("dev-admin",)
    # Another operator (another dashboard, another node) acknowledges the pending one.
    async with aioredis.Redis.from_url(redis_url) as client:
        await publish_acknowledgement(
            client,
            "default",
            slow["id"],
            pending["roomId"],
            pending["episodeId"],
            "mo",
            int(time.time() * 1000),
        )
    await expect(pending_row.locator(".c-ack")).to_contain_text("mo", timeout=2000)
    await expect(pending_row.locator("button.ack")).to_have_count(0)
    # pending -> firing continues the episode: the acknowledgement still holds.
    evaluator.transition(
        {**pending, "alertId": str(uuid.uuid4()), "state": "firing", "previousState": "pending"}
    )
    await expect(pending_row.locator(".c-state")).to_have_text("firing", timeout=2000)
    await expect(pending_row.locator(".c-ack")).to_contain_text("mo")

    # The room view lists the room's open alerts.
    await lobby.locator(".c-code a").click()
    await expect(page.locator("#room")).to_be_visible()
    room_rows = page.locator("#room-alerts-table tbody tr")
    await expect(room_rows).to_have_count(2)
    await expect(page.locator("#room-alerts-card")).to_be_visible()
    await expect(room_rows.locator(".c-ack")).to_contain_text(["mo", "dev-admin"])
    await page.screenshot(path=str(ARTIFACTS / "dashboard-room-alerts.png"), full_page=True)

    # Resolved: gone within 2 s, here and in the global view.
    resolved_at = time.monotonic()
    evaluator.resolve(firing)
    await expect(room_rows).to_have_count(1, timeout=2000)
    resolved_s = time.monotonic() - resolved_at
    await page.click("#crumbs a")
    await expect(page.locator("#alerts-table tbody tr")).to_have_count(1)
    await expect(lobby.locator(".c-alert")).to_have_text("warning")

    # A dashboard opened now starts from the snapshot: the open alerts, with their acknowledgements.
    acked = evaluator.alert(
        full, "checkout", severity="info", acknowledgedBy="carol", acknowledgedAt=int(time.time() * 1000)
    )
    evaluator.store(acked)  # stored, not announced
    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=3000)
    await expect(page.locator("#alerts-table tbody tr")).to_have_count(2, timeout=2000)
    await expect(checkout.locator(".c-alert .sev")).to_have_text("info")
    checkout_row = page.locator(f'#alerts-table tr[data-alert="{full["id"]}/{acked["roomId"]}"]')
    await expect(checkout_row.locator(".c-ack")).to_contain_text("carol")

    # Everything resolves: the panel says so, the column is empty again.
    evaluator.resolve(pending)
    evaluator.resolve(evaluator.alert(full, "checkout"))
    await expect(page.locator("#alerts-empty")).to_have_text("No open alerts.", timeout=2000)
    await expect(page.locator("#alerts-table tbody tr")).to_have_count(0)
    await expect(lobby.locator(".c-alert")).to_have_text("—")
    await expect(checkout.locator(".c-alert")).to_have_text("—")
    await alice.close()
    print(f"\nalert seen {seen_s:.2f}s, resolution seen {resolved_s:.2f}s")


async def test_acknowledge_failure_is_reported(node_factory, redis_sync, page):
    """Without a history store the acknowledgement cannot be recorded: the page says why."""
    from playwright.async_api import expect

    node = await node_factory()  # no PostgreSQL
    evaluator = Evaluator(redis_sync)
    rule = {
        "id": str(uuid.uuid4()),
        "name": "Full",
        "kind": "capacity",
        "severity": "warning",
        "expression": "utilization > 0.8",
        "threshold": 0.8,
    }
    alert = evaluator.alert(rule, "lobby")
    evaluator.store(alert)
    row = page.locator(f'#alerts-table tr[data-alert="{rule["id"]}/{alert["roomId"]}"]')
    # A monitor may not acknowledge (admins do, unless monitors_may_acknowledge): its button is
    # disabled and says why; an admin's acknowledgement fails here for want of PostgreSQL, and the
    # page says that.
    await page.goto(node.ops.url + "/")
    await page.fill("#token", token_for(node.settings, "mo", "spidi:monitor"))
    await page.click("#signin-button")
    await expect(row.locator(".c-sev .sev")).to_have_text("warning", timeout=3000)
    await expect(row.locator("button.ack")).to_be_disabled()
    await expect(row.locator(".c-ack")).to_have_attribute(
        "title", "Acknowledging alerts needs the role spidi:admin"
    )
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()
    for role, reason in (("spidi:admin", "the history store is unavailable"),):
        await page.goto(node.ops.url + "/")
        await page.fill("#token", token_for(node.settings, "mo", role))
        await page.click("#signin-button")
        await expect(row.locator(".c-sev .sev")).to_have_text("warning", timeout=3000)
        await row.locator("button.ack").click()
        await expect(page.locator("#toast")).to_contain_text(reason, timeout=2000)
        await expect(row.locator("button.ack")).to_have_text("Acknowledge")
        await expect(row.locator("button.ack")).to_be_enabled()
        await page.click("#signout")
        await expect(page.locator("#signin")).to_be_visible()


async def test_heartbeat_alert_values_are_seconds_or_a_share(node_factory, redis_sync, page):
    """A heartbeat rule reports seconds of silence (oldestHeartbeatAgeS), or with a share the
    share of silent sessions; its threshold is seconds either way; heartbeat_rate is a share."""
    from playwright.async_api import expect

    node = await node_factory()
    evaluator = Evaluator(redis_sync)

    def rule(name: str, kind: str, expression: str, threshold: float) -> dict:
        return {"id": str(uuid.uuid4()), "name": name, "kind": kind, "severity": "warning",
                "expression": expression, "threshold": threshold}  # fmt: skip

    cases = [
        (rule("Silent", "heartbeat", "oldestHeartbeatAgeS > 60.0", 60.0), 72.5, "72.5 s", "threshold 60 s"),
        (
            rule("Half silent", "heartbeat", "oldestHeartbeatAgeS > 30.0 && silentShare >= 0.5", 30.0),
            0.75,
            "75 %",
            "threshold 30 s",
        ),
        (
            rule("Beats late", "heartbeat_rate", "staleSessions > 0 || heartbeatRateDrop > 0.5", 0.5),
            0.6,
            "60 %",
            "threshold 50 %",
        ),
    ]
    for r, value, _, _ in cases:
        evaluator.store(evaluator.alert(r, "lobby", value=value))
    await page.goto(node.ops.url + "/")
    await page.click("#signin-button")
    for r, _, shown, title in cases:
        cell = page.locator(
            f'#alerts-table tr[data-alert="{r["id"]}/{room_id_for("default", "lobby")}"] .c-value'
        )
        await expect(cell).to_have_text(shown, timeout=3000)
        await expect(cell).to_have_attribute("title", title)
