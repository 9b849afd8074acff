"""The SLO breakdown through the REST API: compliance, budget and burn rates per client app version
and per OS. Real WebSocket clients whose latencies the test sets, on a real node whose room samples
go through the real writer; and 28 days of time-shifted history written through the writer."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from ..conftest import token_for
from ..slo_history import AT, HOUR, sample, with_breakdown
from ..stomp_client import connected
from .conftest import check_shape, create_room, error_fields, write_history
from .test_slos import SLOS, create_slo


def groups(status: dict) -> dict:
    """value (None: other) -> the group's figures."""
    return {g["value"]: g for g in status["breakdown"]["groups"]}


async def test_a_slow_release_burns_and_the_fast_one_is_compliant(api, api_node, node_factory, redis_sync):
    doc = (await api.get("/api/openapi.json", role=None)).body
    room = await create_room(api, "stage")
    slo = await create_slo(
        api, name="Stage", scope="room", roomId=room["id"], objective="share", target=0.99, percentile=None
    )
    # A node of its own for the clients: its shutdown sends the room's partial minute.
    node = await node_factory(postgres_dsn=api_node.settings.postgres_dsn, writer="external")
    clients = []
    for user, version, os_name, latency in (
        ("ann", "5.0", "iOS", 40),
        ("bob", "5.0", "Android", 60),
        ("cid", "5.1", "Android", 400),  # the new release: slow
    ):
        client = await connected(node.ws_url, token_for(node.settings, user, "spidi:user"))
        welcome = await client.hello("stage", client_id=user, appVersion=version, os=os_name)
        clients.append((client, welcome["sessionId"], latency))
    for i in range(10):
        for client, sid, latency in clients:
            # Answered by the heartbeat lane (the C fast path): recorded before the RECEIPT.
            await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": latency}, receipt=f"h{i}")
            assert (await client.next(command="RECEIPT"))[1]["receipt-id"] == f"h{i}"
    for client, _, _ in clients:
        await client.close()
    await node.stop()
    await write_history(api_node, redis_sync, [])

    at = datetime.fromtimestamp(time.time() // 60 * 60 + 60, UTC).isoformat()
    status = (await api.get(f"{SLOS}/{slo['id']}/status", params={"at": at, "breakdown": "appVersion"})).body
    check_shape(doc["components"]["schemas"]["SloStatus"], status, doc, "status")
    assert (status["good"], status["total"]) == (20, 30)
    assert status["breakdown"]["dimension"] == "appVersion"
    by_version = groups(status)
    assert list(by_version) == ["5.1", "5.0"]  # the most overspent first
    slow, fast = by_version["5.1"], by_version["5.0"]
    assert (slow["good"], slow["total"], slow["compliance"], slow["met"]) == (0, 10, 0.0, False)
    assert slow["burnRates"]["5m"] == pytest.approx(100.0)  # every heartbeat slow: 1 / (1 - 0.99)
    assert slow["errorBudgetRemaining"] == pytest.approx(-99.0)
    assert (fast["good"], fast["total"], fast["compliance"], fast["met"]) == (20, 20, 1.0, True)
    assert (fast["burnRates"]["5m"], fast["errorBudgetRemaining"], fast["other"]) == (0.0, 1.0, False)

    status = (await api.get(f"{SLOS}/{slo['id']}/status", params={"at": at, "breakdown": "os"})).body
    by_os = groups(status)
    assert list(by_os) == ["Android", "iOS"]
    assert (by_os["Android"]["good"], by_os["Android"]["total"]) == (10, 20)
    assert by_os["Android"]["burnRates"]["1h"] == pytest.approx(50.0)
    assert (by_os["iOS"]["compliance"], by_os["iOS"]["met"]) == (1.0, True)
    # Without the parameter: no breakdown; a dimension the API does not know: refused.
    assert (await api.get(f"{SLOS}/{slo['id']}/status", params={"at": at})).body["breakdown"] is None
    errors = error_fields(await api.get(f"{SLOS}/{slo['id']}/status", params={"breakdown": "device"}))
    assert errors["breakdown"].startswith("must be one of")


async def test_breakdown_over_28_days_of_history(api, api_node, redis_sync):
    # Two releases a day apart for 28 days: 1.0 always fast; 1.1 (from the last 3 days) 10 % slow.
    # Plus the clients beyond the top N (other), and another room whose groups do not count.
    room = await create_room(api, "stage")
    await create_room(api, "calm")

    def with_groups(event: dict, versions: dict, os_name: str = "iOS") -> dict:
        fast, slow = (sum(f for f, _ in versions.values()), sum(s for _, s in versions.values()))
        return with_breakdown(with_breakdown(event, "appVersion", versions), "os", {os_name: (fast, slow)})

    evs = []
    for day in range(28):
        at = AT - timedelta(days=28) + timedelta(days=day) + HOUR
        evs.append(with_groups(sample("stage", at, 1000 + 5, 0), {"1.0": (1000, 0), None: (5, 0)}))
        if day >= 25:
            evs.append(with_groups(sample("stage", at + HOUR, 90, 10), {"1.1": (90, 10)}, "Android"))
    evs.append(with_groups(sample("calm", AT - HOUR, 0, 50), {"1.0": (0, 50)}))
    await write_history(api_node, redis_sync, evs)

    slo = await create_slo(
        api, name="Stage", scope="room", roomId=room["id"], objective="share", target=0.99, percentile=None
    )
    at = {"at": AT.isoformat(), "breakdown": "appVersion"}
    status = (await api.get(f"{SLOS}/{slo['id']}/status", params=at)).body
    by_version = groups(status)
    assert list(by_version) == ["1.1", "1.0", None]  # other last
    assert (by_version["1.0"]["good"], by_version["1.0"]["total"]) == (28_000, 28_000)
    assert (by_version[None]["total"], by_version[None]["other"], by_version[None]["met"]) == (
        140,
        True,
        True,
    )
    release = by_version["1.1"]
    assert (release["good"], release["total"], release["met"]) == (270, 300, False)
    # 10 % slow against a 1 % budget: ten times; over 3 days it is the only thing in the 3d window.
    assert release["burnRates"]["3d"] == pytest.approx(10.0)
    assert release["errorBudgetRemaining"] == pytest.approx(1 - 10.0)
    assert release["burnRates"]["5m"] is None  # no heartbeats in the last 5 minutes
    # The groups add up to the whole, as computed by the same code.
    assert sum(g["total"] for g in by_version.values()) == status["total"]
    assert sum(g["good"] for g in by_version.values()) == status["good"]
    # By OS, and for a tenant-wide SLO over both rooms (the calm room's 1.0 slow ones count there).
    status = (await api.get(f"{SLOS}/{slo['id']}/status", params={**at, "breakdown": "os"})).body
    assert {k: (g["good"], g["total"]) for k, g in groups(status).items()} == {
        "Android": (270, 300),
        "iOS": (28_140, 28_140),
    }
    tenant = await create_slo(api, objective="share", target=0.99, percentile=None)
    status = (await api.get(f"{SLOS}/{tenant['id']}/status", params=at)).body
    assert (groups(status)["1.0"]["good"], groups(status)["1.0"]["total"]) == (28_000, 28_050)
    status = (
        await api.get(f"{SLOS}/{tenant['id']}/status", params={**at, "roomId": room["id"]})
    ).body  # one room of the scope
    assert groups(status)["1.0"]["total"] == 28_000
