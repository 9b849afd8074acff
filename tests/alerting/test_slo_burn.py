"""slo_burn rules in the evaluator: multi-window burn rates read from history written through the
writer, page and ticket policies, and the spidi_slo_* metrics of the lease holder."""

from __future__ import annotations

import dataclasses

import orjson
import psycopg
import pytest
from prometheus_client import generate_latest

from spidi_server.alerting.evaluator import AlertEvaluator
from spidi_server.alerting.feed import alert_key
from spidi_server.alerting.rules import make_rule_expressions
from spidi_server.history.sql import rooms
from spidi_server.stores import keys

from ..api.conftest import write_history
from ..slo_history import AT, HOUR, MINUTE, degraded_month, sample

AT_MS = int(AT.timestamp() * 1000)


def add_slo(dsn: str, tenant: str = "default") -> str:
    """A tenant-wide SLO: 99 % of heartbeats at or under 150 ms over 28 days."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            """INSERT INTO dat_spd_slo (unidad_negocio_id, name, scope, objective, threshold_ms, target)
               VALUES (%s, 'fast', 'tenant', 'share', 150, 0.99) RETURNING id::text""",
            [tenant],
        ).fetchone()[0]


def add_burn_rule(dsn: str, slo_id: str, policy: str, tenant: str = "default") -> str:
    fire, resolve, factor = make_rule_expressions("slo_burn", None, None, None, 0.1, None, burn_policy=policy)
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            """INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, kind, expression,
                   resolve_expression, threshold, slo_id, burn_policy, severity)
               VALUES (%s, %s, 'tenant', 'slo_burn', %s, %s, %s, %s, %s, 'critical') RETURNING id::text""",
            [tenant, f"burn {policy}", fire, resolve, factor, slo_id, policy],
        ).fetchone()[0]


def blip(room: str) -> list[dict]:
    """A good hour before AT whose last 5 minutes are bad (30 of 100 slow): the short windows
    burn, the long ones do not."""
    return [
        sample(room, AT - HOUR + m * MINUTE, 70 if m >= 55 else 100, 30 if m >= 55 else 0) for m in range(60)
    ]


@pytest.fixture
async def burning(node_factory, pg_dsn, redis_sync):
    """A node (no evaluator of its own), rooms burning and blip, their history written."""
    node = await node_factory(postgres_dsn=pg_dsn, writer="external", alerting=False)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ids = {
            code: rooms.create(conn, "default", code, capacity=100, actor="test")["id"]
            for code in ("burning", "blip")
        }
    await write_history(node, redis_sync, degraded_month("burning") + blip("blip"))
    settings = dataclasses.replace(node.settings, slo_refresh_s=0.001, slo_budget_refresh_s=0.001).validate()
    evaluator = AlertEvaluator(settings, node.store, pg_dsn, node.metrics, "slo-test")
    yield node, evaluator, ids
    await evaluator.stop()


async def open_alerts(node) -> dict[str, dict]:
    raw = await node.store.redis.hgetall(keys.alerts_active("default"))
    return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()}


async def test_page_fires_when_both_windows_burn_and_not_on_a_short_blip(burning, pg_dsn, redis_sync):
    node, evaluator, ids = burning
    slo_id = add_slo(pg_dsn)
    page = add_burn_rule(pg_dsn, slo_id, "page")
    ticket = add_burn_rule(pg_dsn, slo_id, "ticket")
    await evaluator.tick(AT_MS)  # leads, loads, starts reading the burn rates in the background
    assert evaluator.leader
    await evaluator.slo.settled()
    await evaluator.tick(AT_MS)
    alerts = await open_alerts(node)
    # burning: 20 % slow over 1 h and over 5 m, 20x a 1 % budget > 14.4 on both: a page. Its 6 h
    # (11.1x) and 30 m (20x) exceed 6 as well: a ticket.
    fired = alerts[alert_key(page, ids["burning"])]
    assert (fired["state"], fired["kind"], fired["severity"], fired["roomCode"]) == (
        "firing",
        "slo_burn",
        "critical",
        "burning",
    )
    assert fired["value"] == pytest.approx(20.0)  # burnRate1h
    assert fired["metrics"]["burnRate5m"] == pytest.approx(20.0)
    assert fired["metrics"]["burnRate6h"] == pytest.approx((25 + 1200) / 11_000 / 0.01)
    assert alerts[alert_key(ticket, ids["burning"])]["value"] == pytest.approx((25 + 1200) / 11_000 / 0.01)
    # blip: 30x over 5 m, but 2.5x over 1 h: no page; 5x over 30 m, 2.5x over 6 h: no ticket.
    assert alert_key(page, ids["blip"]) not in alerts and alert_key(ticket, ids["blip"]) not in alerts
    assert set(alerts) == {alert_key(page, ids["burning"]), alert_key(ticket, ids["burning"])}
    blip_vars = evaluator.slo.variables(slo_id, ids["blip"])
    assert blip_vars["burnRate5m"] == pytest.approx(30.0) and blip_vars["burnRate1h"] == pytest.approx(2.5)

    # The lease holder exports the SLO's figures over the whole tenant (both rooms).
    m = node.metrics
    good, total = 671 * 995 + 60 * 80 + 55 * 100 + 5 * 70, 671 * 1000 + 60 * 100 + 6000
    assert m.slo_compliance.labels(slo=slo_id)._value.get() == pytest.approx(good / total)
    assert m.slo_error_budget_remaining.labels(slo=slo_id)._value.get() == pytest.approx(
        1 - (total - good) / total / 0.01
    )
    assert m.slo_burn_rate.labels(slo=slo_id, window="1h")._value.get() == pytest.approx(1350 / 12_000 / 0.01)
    assert m.slo_burn_rate.labels(slo=slo_id, window="5m")._value.get() == pytest.approx(250 / 1000 / 0.01)
    exported = generate_latest(m.registry).decode()
    assert f'spidi_slo_burn_rate{{slo="{slo_id}",window="3d"}}' in exported

    # Ten good minutes later the short window has recovered: the page resolves although the hour
    # still burns (the workbook's reason for the short window).
    await write_history(node, redis_sync, [sample("burning", AT + m * MINUTE, 100, 0) for m in range(10)])
    await evaluator.tick(AT_MS + 10 * 60_000)
    await evaluator.slo.settled()
    await evaluator.tick(AT_MS + 10 * 60_000)
    alerts = await open_alerts(node)
    assert alert_key(page, ids["burning"]) not in alerts
    assert evaluator.slo.variables(slo_id, ids["burning"])["burnRate1h"] > 14.4
    # A follower exports no SLO series.
    await evaluator.stop()
    assert not list(m.slo_compliance.collect()[0].samples)


async def test_rooms_outside_the_slo_scope_are_not_judged(burning, pg_dsn):
    node, evaluator, ids = burning
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        slo_id = conn.execute(
            """INSERT INTO dat_spd_slo (unidad_negocio_id, name, scope, room_id, objective, threshold_ms,
                   percentile, target) VALUES ('default', 'blip only', 'room', %s, 'percentile', 150, 95, 0.95)
               RETURNING id::text""",
            [ids["blip"]],
        ).fetchone()[0]
    page = add_burn_rule(pg_dsn, slo_id, "page")
    await evaluator.tick(AT_MS)
    await evaluator.slo.settled()
    await evaluator.tick(AT_MS)
    # The tenant-wide rule covers burning too, but its SLO is blip's alone; blip's 5 m burns at
    # 30 % / 5 % = 6x and its hour at 0.5x: nothing fires.
    assert await open_alerts(node) == {}
    assert evaluator.slo.burns[slo_id].keys() == {ids["blip"]}
    assert evaluator.slo.variables(slo_id, ids["blip"])["burnRate5m"] == pytest.approx(6.0)
    assert page
