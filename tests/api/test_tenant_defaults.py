"""Defaults shipped (ADR-0001): a tenant's first API use gives it the room types WebRTC, Chat and
Notification and the three built-in rules, once; they are edited and deleted like any others, and
what an operator deleted stays deleted, across requests, processes and concurrent first uses."""

from __future__ import annotations

import asyncio

import psycopg

from tests.alerting.test_evaluator import ALERTS, join, next_alert
from tests.conftest import token_for
from tests.stomp_client import connected

from .conftest import ApiClient

RULES = "/api/v1/alert-rules"
TYPES = "/api/v1/room-types"


async def defaults_node(node_factory, pg_dsn, **overrides):
    """A node with PostgreSQL and the defaults on (the test settings turn them off)."""
    return await node_factory(postgres_dsn=pg_dsn, writer="external", tenant_defaults=True, **overrides)


def stored(dsn: str, tenant: str) -> tuple[list[tuple], list[tuple], int]:
    """The tenant's live room types and rules, and its seeding marks, as PostgreSQL has them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        types = conn.execute(
            "SELECT code, name, default_capacity FROM tba_spd_room_type"
            " WHERE unidad_negocio_id = %s AND deleted_at IS NULL ORDER BY code",
            [tenant],
        ).fetchall()
        rules = conn.execute(
            "SELECT kind, threshold, scope, created_by FROM dat_spd_alert_rule"
            " WHERE unidad_negocio_id = %s AND deleted_at IS NULL ORDER BY kind",
            [tenant],
        ).fetchall()
        marks = conn.execute(
            "SELECT count(*) FROM spd_tenant_defaults WHERE unidad_negocio_id = %s", [tenant]
        ).fetchone()[0]
    return types, rules, marks


async def test_a_fresh_tenant_gets_the_default_room_types_and_rules_on_first_use(http, node_factory, pg_dsn):
    node = await defaults_node(
        node_factory, pg_dsn, alert_interval_s=0.2, alert_lease_s=1.0, alert_rules_refresh_s=0.2
    )
    api = ApiClient(http, node)
    assert stored(pg_dsn, "fresh") == ([], [], 0)  # nothing before its first use

    types = await api.get(TYPES, role="monitor", tenant="fresh")
    assert types.status == 200, types.body
    assert [(t["code"], t["name"], t["defaultCapacity"]) for t in types.body["items"]] == [
        ("chat", "Chat", 1000),
        ("notification", "Notification", None),
        ("webrtc", "WebRTC", 50),
    ]
    rules = (await api.get(RULES, role="monitor", tenant="fresh")).body["items"]
    by_kind = {r["kind"]: r for r in rules}
    assert len(rules) == 3 and set(by_kind) == {"capacity", "latency", "heartbeat"}
    assert (by_kind["capacity"]["threshold"], by_kind["capacity"]["expression"]) == (0.8, "utilization > 0.8")
    assert (by_kind["latency"]["threshold"], by_kind["latency"]["expression"]) == (
        500.0,
        "avgLatencyMs > 500.0",
    )
    assert (by_kind["heartbeat"]["threshold"], by_kind["heartbeat"]["expression"]) == (
        60.0,
        "oldestHeartbeatAgeS > 60.0",
    )
    for rule in rules:
        assert (rule["scope"], rule["severity"], rule["channels"], rule["enabled"]) == (
            "tenant",
            "warning",
            [{"type": "in_app"}],
            True,
        )
        assert rule["createdBy"] == "spidi-defaults"
    # Only the tenant that used the API got them.
    assert stored(pg_dsn, "other") == ([], [], 0)

    # The default rules are live: the evaluator runs the capacity rule over the tenant's rooms.
    room = await api.post("/api/v1/rooms", {"code": "call", "type": "webrtc", "capacity": 2}, tenant="fresh")
    assert room.status == 201, room.body
    mon = await connected(node.ws_url, token_for(node.settings, "mon", "spidi:monitor", "fresh"))
    await mon.subscribe(ALERTS)
    await mon.json(ALERTS, type_="ALERTS")
    clients: list = []
    await join(node, "call", 2, clients, tenant="fresh")
    firing = await next_alert(mon, "firing")
    assert (firing["ruleId"], firing["value"]) == (by_kind["capacity"]["id"], 1.0)


async def test_defaults_are_edited_and_deleted_like_any_and_stay_deleted(http, node_factory, pg_dsn):
    api = ApiClient(http, await defaults_node(node_factory, pg_dsn))
    rules = {r["kind"]: r for r in (await api.get(RULES, tenant="acme")).body["items"]}
    types = {t["code"]: t for t in (await api.get(TYPES, tenant="acme")).body["items"]}

    edited = await api.patch(f"{RULES}/{rules['capacity']['id']}", {"threshold": 0.9}, tenant="acme")
    assert edited.status == 200 and edited.body["expression"] == "utilization > 0.9"
    assert (await api.delete(f"{RULES}/{rules['heartbeat']['id']}", tenant="acme")).status == 204
    renamed = await api.patch(f"{TYPES}/{types['chat']['id']}", {"defaultCapacity": 200}, tenant="acme")
    assert renamed.status == 200 and renamed.body["defaultCapacity"] == 200
    assert (await api.delete(f"{TYPES}/{types['notification']['id']}", tenant="acme")).status == 204

    expected = (
        [("chat", "Chat", 200), ("webrtc", "WebRTC", 50)],
        [("capacity", 0.9, "tenant", "spidi-defaults"), ("latency", 500.0, "tenant", "spidi-defaults")],
        1,
    )
    assert stored(pg_dsn, "acme") == expected
    # More requests, and another process that never saw this tenant: nothing comes back.
    assert len((await api.get(RULES, tenant="acme")).body["items"]) == 2
    other = ApiClient(http, await defaults_node(node_factory, pg_dsn))
    assert [t["code"] for t in (await other.get(TYPES, tenant="acme")).body["items"]] == ["chat", "webrtc"]
    assert stored(pg_dsn, "acme") == expected


async def test_concurrent_first_use_on_two_processes_seeds_once(http, node_factory, pg_dsn):
    apis = [ApiClient(http, await defaults_node(node_factory, pg_dsn)) for _ in range(2)]
    # Each process's pool holds four connections: up to eight first requests race to seed.
    replies = await asyncio.gather(
        *(apis[i % 2].get(TYPES if i % 3 else RULES, role="monitor", tenant="rush") for i in range(16))
    )
    assert [r.status for r in replies] == [200] * 16
    types, rules, marks = stored(pg_dsn, "rush")
    assert [t[0] for t in types] == ["chat", "notification", "webrtc"]
    assert sorted(r[0] for r in rules) == ["capacity", "heartbeat", "latency"]
    assert marks == 1
    # Every answer saw the whole set: seeding commits before the request's own transaction starts.
    for reply in replies:
        assert reply.body["total"] == 3


async def test_a_tenant_first_used_by_a_websocket_client_gets_its_defaults(node_factory, pg_dsn):
    """No API call at all: the node's periodic step seeds the tenants of its rooms."""
    node = await defaults_node(node_factory, pg_dsn)
    clients: list = []
    await join(node, "lobby", 1, clients, tenant="sockets")
    deadline = asyncio.get_running_loop().time() + 15.0
    while stored(pg_dsn, "sockets")[2] == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    types, rules, marks = stored(pg_dsn, "sockets")
    assert ([t[0] for t in types], sorted(r[0] for r in rules), marks) == (
        ["chat", "notification", "webrtc"],
        ["capacity", "heartbeat", "latency"],
        1,
    )


async def test_tenant_defaults_off_gives_nothing(api, pg_dsn):
    """With the setting off (the test settings' default) a tenant starts empty."""
    assert (await api.get(TYPES, tenant="plain")).body["items"] == []
    assert (await api.get(RULES, tenant="plain")).body["items"] == []
    assert stored(pg_dsn, "plain") == ([], [], 0)
