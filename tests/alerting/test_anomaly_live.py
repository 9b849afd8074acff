"""Anomaly rules end to end: weeks of calm history written through the writer, then real WebSocket
clients make a join storm, a mass disconnect of one app version and a flapping client; the
evaluator raises the flags, fires the rule on /topic/alerts (in-app), stores the flags, and the
API serves them with their explanation."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp
import pytest

from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

from ..api.conftest import check_shape
from ..conftest import token_for
from ..history.helpers import FakeSession, push, room_sample, running_writer, wait_for, written
from ..stomp_client import connected
from .test_evaluator import add_room, alert_node, events_in_pg, monitor, next_alert

WEEK_MS = 7 * 86_400_000
HOUR_MS = 3_600_000
FAST = dict(anomaly_refresh_s=0.2, anomaly_min_excess=5, anomaly_baseline_weeks=4)


def write_calm_baseline(settings, redis_sync, pg_dsn, tenant: str, room: str, weeks: int = 3) -> int:
    """One join and one leave a minute, someone online, in this hour and the next of the last
    ``weeks`` weeks: the room's baseline is joins 1/min, MAD 0. Written through the writer."""
    hour = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    evs = []
    for k in range(1, weeks + 1):
        for m in range(120):
            minute = hour - k * WEEK_MS + m * 60_000
            session = FakeSession(tenant, room, f"calm{k}-{m}", minute + 5_000)
            evs += [session.started(), session.ended(minute + 20_000), room_sample(tenant, room, minute)]
    with running_writer(dataclasses.replace(settings, postgres_dsn=pg_dsn, writer_flush_interval_s=0.2)):
        push(redis_sync, evs)
        wait_for(lambda: written(redis_sync) >= len(evs), timeout=60, what="the baseline written")
    return len(evs)


async def api_call(
    node, method: str, path: str, body: dict | None = None, status: int = 200, tenant: str = "default"
) -> dict:
    token = token_for(node.settings, "ops", "spidi:admin", tenant)
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, node.ops.url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        assert resp.status == status, await resp.text()
        return await resp.json(content_type=None)


async def api_get(node, path: str) -> dict:
    return await api_call(node, "GET", path)


async def add_anomaly_rule(node, types: list[str], **fields) -> str:
    """An anomaly rule created through the REST API (tenant-wide unless told); its id."""
    body = {"name": "anomalies", "scope": "tenant", "kind": "anomaly", "anomalyTypes": types, **fields}
    return (await api_call(node, "POST", "/api/v1/alert-rules", body, status=201))["id"]


async def hello(node, room: str, user: str, client_id: str = "web", **info):
    client = await connected(node.ws_url, token_for(node.settings, user, "spidi:user"))
    return client, (await client.hello(room, client_id, **info))["sessionId"]


async def until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_join_storm_on_a_calm_room_fires_with_its_explanation(
    settings, redis_sync, pg_dsn, node_factory
):
    room_id = add_room(pg_dsn, "default", "lobby", 100)
    write_calm_baseline(settings, redis_sync, pg_dsn, "default", "lobby")
    node = await alert_node(node_factory, pg_dsn, **FAST)
    rule_id = await add_anomaly_rule(
        node, ["join_storm", "leave_storm"], threshold=3.5, scope="room", roomId=room_id
    )
    mon, snapshot = await monitor(node)
    assert snapshot["alerts"] == []
    watch, clients = node.alerts.anomalies, []
    # Two joins in a room whose baseline is one a minute: z = 1, no flag.
    for i in range(2):
        clients.append((await hello(node, "lobby", f"early{i}"))[0])
    await until(lambda: getattr(watch._recent.get(room_id), "joins", 0) == 2, what="2 joins read")
    rounds = node.alerts.rounds
    await until(lambda: node.alerts.rounds > rounds + 1, what="an evaluation of them")
    assert await node.store.redis.hlen(keys.alerts_active("default")) == 0
    # Seven more within the minute: 9 joins, z = (9 - 1) / max(1.4826 x 0, 1) = 8 > 3.5.
    for i in range(7):
        clients.append((await hello(node, "lobby", f"storm{i}"))[0])
    firing = await next_alert(mon, "firing", timeout=15)
    assert (firing["ruleId"], firing["kind"], firing["roomCode"]) == (rule_id, "anomaly", "lobby")
    assert firing["value"] == 1.0 and firing["metrics"]["joinStorms"] == 1
    (flag,) = firing["anomalies"]
    assert (flag["flag"], flag["metric"], flag["group"], flag["threshold"]) == (
        "join_storm",
        "joinsPerMin",
        None,
        3.5,
    )
    assert flag["value"] >= 8 and flag["z"] == pytest.approx(flag["value"] - 1.0)
    # The baseline: the minutes of this hour of week in the 3 weeks with history (the 4th has none).
    assert (flag["baselineMedian"], flag["baselineMad"], flag["baselineMinutes"]) == (1.0, 0.0, 180)
    stored = await api_get(node, f"/api/v1/rooms/{room_id}/anomalies")
    doc = await api_get(node, "/api/openapi.json")
    check_shape(doc["components"]["schemas"]["RoomAnomalies"], stored, doc, "anomalies")
    (item,) = stored["items"]
    assert (item["flag"], item["ruleId"], item["roomCode"], item["endedAt"]) == (
        "join_storm",
        rule_id,
        "lobby",
        None,
    )
    assert (item["baselineMedian"], item["baselineMad"], item["baselineMinutes"]) == (1.0, 0.0, 180)
    # Another tenant does not see the room, nor its flags (row-level security).
    other = await api_call(node, "GET", f"/api/v1/rooms/{room_id}/anomalies", status=404, tenant="other")
    assert other["status"] == 404
    assert node.metrics.anomaly_flags.labels(flag="join_storm")._value.get() == 1
    (event,) = await events_in_pg(pg_dsn, rule_id, 1)
    assert event["state"] == "firing" and event["details"]["anomalies"][0]["flag"] == "join_storm"
    for client in clients:
        await client.close()


@pytest.mark.exclusive(
    "nine sockets close one after the other: on busy cores an evaluation may fall between them"
)
async def test_mass_disconnect_of_one_app_version_is_flagged_by_group(pg_dsn, node_factory):
    room_id = room_id_for("default", "arena")
    node = await alert_node(node_factory, pg_dsn, **FAST)
    rule_id = await add_anomaly_rule(node, ["mass_disconnect"])
    mon, _ = await monitor(node)
    doomed = [await hello(node, "arena", f"new{i}", appVersion="9.9.9", os="Linux") for i in range(6)]
    others = [await hello(node, "arena", f"old{i}", appVersion="1.0.0", os="Windows") for i in range(3)]
    for client, _ in doomed + others:  # every socket drops at once: ends of reason disconnect
        await client.close()
    firing = await next_alert(mon, "firing", timeout=15)
    assert firing["ruleId"] == rule_id and firing["roomId"] == room_id
    groups = {f["group"]: f for f in firing["anomalies"] if f["flag"] == "mass_disconnect"}
    # 6 of 9.9.9 and Linux, 9 from 127.0.0.0/24; the 3 of 1.0.0 (Windows) are under the floor of 5.
    assert set(groups) == {"appVersion=9.9.9", "os=Linux", "ip=127.0.0.0/24"}
    assert groups["appVersion=9.9.9"]["value"] == 6 and groups["ip=127.0.0.0/24"]["value"] == 9
    assert groups["appVersion=9.9.9"]["metric"] == "abnormalEndsPerMin"
    stored = await api_get(node, f"/api/v1/rooms/{room_id}/anomalies")
    assert {i["group"] for i in stored["items"]} >= {"appVersion=9.9.9", "os=Linux", "ip=127.0.0.0/24"}


async def test_a_client_reconnecting_repeatedly_is_flapping(pg_dsn, node_factory):
    node = await alert_node(node_factory, pg_dsn, anomaly_flap_reconnects=3, **FAST)
    await add_anomaly_rule(node, ["flapping"])
    mon, _ = await monitor(node)
    for _ in range(5):  # 5 sessions of flappy/web: 4 reconnects, more than 3
        client, _ = await hello(node, "desk", "flappy", "web")
        await client.close()
    steady, _ = await hello(node, "desk", "steady", "web")
    firing = await next_alert(mon, "firing", timeout=15)
    flapping = [f for f in firing["anomalies"] if f["flag"] == "flapping"]
    assert [(f["group"], f["value"], f["threshold"], f["metric"]) for f in flapping] == [
        ("flappy/web", 4.0, 3.0, "reconnects")
    ]
    assert firing["metrics"]["flappingClients"] == 1
    await steady.close()
