"""The alert evaluator end to end: real clients drive a room's metrics on a real node; the rules
fire and resolve; monitors see it on /topic/alerts; the writer stores one event per transition."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time

import aiohttp
import orjson
import psycopg
import pytest
from aiohttp import web
from psycopg.rows import dict_row

from spidi_server.alerting.feed import publish_acknowledgement
from spidi_server.alerting.rules import make_rule_expressions
from spidi_server.history.sql import room_types, rooms
from spidi_server.stores import keys

from ..conftest import TEST_SECRET, token_for
from ..stomp_client import connected
from ..test_cli import free_port, read_banner

ALERTS = "/topic/alerts"


async def alert_node(node_factory, pg_dsn, **overrides):
    """A node with PostgreSQL, its writer, and a fast evaluator."""
    base = dict(
        postgres_dsn=pg_dsn,
        writer="child",
        writer_flush_interval_s=0.2,
        alert_interval_s=0.2,
        alert_lease_s=1.0,
        alert_rules_refresh_s=0.2,
        grace_period_ms=0,
    )
    base.update(overrides)
    return await node_factory(**base)


def add_room(dsn: str, tenant: str, code: str, capacity: int) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return rooms.create(conn, tenant, code, capacity=capacity, actor="test")["id"]


def add_rule(
    dsn: str,
    tenant: str,
    kind: str,
    *,
    threshold=None,
    expression=None,
    resolve=None,
    scope="tenant",
    room_id=None,
    for_seconds=0,
    channels=None,
    severity="warning",
    share=None,
) -> str:
    fire, resolve_expr, stored = make_rule_expressions(kind, threshold, expression, resolve, 0.1, share)
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            """INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, room_id, kind, expression,
                   resolve_expression, threshold, share, severity, for_seconds, channels)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING id::text""",
            [
                tenant,
                f"{kind} rule",
                scope,
                room_id,
                kind,
                fire,
                resolve_expr,
                stored,
                share,
                severity,
                for_seconds,
                orjson.dumps(channels or [{"type": "in_app"}]).decode(),
            ],
        ).fetchone()[0]


async def events_in_pg(dsn: str, rule_id: str, count: int, timeout: float = 15.0) -> list[dict]:
    """The rule's stored alert events, oldest first, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT id::text, state, value, room_code, kind, severity, details, at"
                " FROM dat_spd_alert_event WHERE rule_id = %s ORDER BY at, created_at",
                [rule_id],
            ).fetchall()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def monitor(node, tenant: str = "default"):
    client = await connected(node.ws_url, token_for(node.settings, f"mon-{tenant}", "spidi:monitor", tenant))
    await client.subscribe(ALERTS)
    snapshot = await client.json(ALERTS, type_="ALERTS")
    return client, snapshot


async def next_alert(client, state: str, timeout: float = 8.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        alert = await client.json(ALERTS, timeout=max(0.1, deadline - time.monotonic()), type_="ALERT")
        if alert["state"] == state:
            return alert


async def join(
    node, room: str, count: int, keep: list, prefix: str = "u", tenant: str = "default"
) -> list[str]:
    sids = []
    for i in range(count):
        client = await connected(node.ws_url, token_for(node.settings, f"{prefix}{i}", "spidi:user", tenant))
        sids.append((await client.hello(room, f"{prefix}{i}"))["sessionId"])
        keep.append(client)
    return sids


async def leave(client, sid: str) -> None:
    await client.app("/app/leave", {"sessionId": sid}, receipt="l")
    await client.next(command="RECEIPT")


def triggered(node, kind: str, severity: str = "warning") -> float:
    return node.metrics.alerts_triggered.labels(kind=kind, severity=severity)._value.get()


async def test_capacity_fires_and_resolves_with_hysteresis(pg_dsn, node_factory):
    room_id = add_room(pg_dsn, "default", "hall", 10)
    rule_id = add_rule(pg_dsn, "default", "capacity", threshold=0.5, scope="room", room_id=room_id)
    node = await alert_node(node_factory, pg_dsn)
    mon, snapshot = await monitor(node)
    assert snapshot["alerts"] == []
    clients: list = []
    sids = await join(node, "hall", 6, clients)
    firing = await next_alert(mon, "firing")  # 6/10 > 0.5
    assert (
        firing["ruleId"] == rule_id and firing["roomCode"] == "hall" and firing["previousState"] == "inactive"
    )
    assert firing["value"] == pytest.approx(0.6) and firing["metrics"]["online"] == 6
    assert triggered(node, "capacity") == 1
    await leave(clients[0], sids[0])  # 5/10: not above 0.5, but not below 0.45 either
    await asyncio.sleep(1.0)
    raw = await node.store.redis.hget(keys.alerts_active("default"), f"{rule_id}/{room_id}")
    assert orjson.loads(raw)["state"] == "firing"  # hovering inside the band: still firing, no flap
    await leave(clients[1], sids[1])  # 4/10 < 0.45
    resolved = await next_alert(mon, "resolved")
    assert resolved["episodeId"] == firing["alertId"] and resolved["value"] == pytest.approx(0.4)
    assert await node.store.redis.hlen(keys.alerts_active("default")) == 0
    rows = await events_in_pg(pg_dsn, rule_id, 2)
    assert [r["state"] for r in rows] == ["firing", "resolved"]  # one event per transition, no flaps
    assert (
        rows[0]["id"] == firing["alertId"]
        and rows[0]["kind"] == "capacity"
        and rows[0]["room_code"] == "hall"
    )
    assert rows[1]["details"]["episodeId"] == firing["alertId"]
    text = await metrics_text(node)
    assert 'spidi_alerts_triggered_total{kind="capacity",severity="warning"} 1.0' in text


async def metrics_text(node) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{node.ops.url}/metrics") as resp:
        return await resp.text()


async def test_latency_rule_waits_for_its_for_duration(pg_dsn, node_factory):
    rule_id = add_rule(pg_dsn, "default", "latency", threshold=300, for_seconds=1, severity="critical")
    node = await alert_node(node_factory, pg_dsn)
    mon, _ = await monitor(node)
    clients: list = []
    (sid,) = await join(node, "slow", 1, clients)
    await clients[0].app("/app/heartbeat", {"sessionId": sid, "latencyMs": 800})
    pending = await next_alert(mon, "pending")
    assert pending["severity"] == "critical" and pending["value"] == pytest.approx(800)
    # An operator acknowledges while it is pending: the acknowledgement stays when it fires.
    await publish_acknowledgement(
        node.store.redis, "default", rule_id, pending["roomId"], pending["episodeId"], "op", 1
    )
    firing = await next_alert(mon, "firing")
    assert firing["at"] - pending["at"] >= 1000 and firing["since"] == pending["at"]
    assert firing["episodeId"] == pending["alertId"] and firing["acknowledgedBy"] == "op"
    raw = await node.store.redis.hget(keys.alerts_active("default"), f"{rule_id}/{pending['roomId']}")
    assert orjson.loads(raw)["acknowledgedBy"] == "op"
    await clients[0].app("/app/heartbeat", {"sessionId": sid, "latencyMs": 20})
    resolved = await next_alert(mon, "resolved")
    assert resolved["previousState"] == "firing"
    rows = await events_in_pg(pg_dsn, rule_id, 3)
    assert [r["state"] for r in rows] == ["pending", "firing", "resolved"]
    assert triggered(node, "latency", "critical") == 1


async def test_latency_blip_shorter_than_for_never_fires(pg_dsn, node_factory):
    rule_id = add_rule(pg_dsn, "default", "latency", threshold=300, for_seconds=3)
    node = await alert_node(node_factory, pg_dsn)
    mon, _ = await monitor(node)
    clients: list = []
    (sid,) = await join(node, "blip", 1, clients)
    await clients[0].app("/app/heartbeat", {"sessionId": sid, "latencyMs": 900})
    await next_alert(mon, "pending")
    await clients[0].app("/app/heartbeat", {"sessionId": sid, "latencyMs": 10})
    resolved = await next_alert(mon, "resolved")
    assert resolved["previousState"] == "pending"
    await asyncio.sleep(3.5)
    assert triggered(node, "latency") == 0
    rows = await events_in_pg(pg_dsn, rule_id, 2)
    assert [r["state"] for r in rows] == ["pending", "resolved"]


async def test_heartbeat_rate_rule_fires_on_a_stale_session_and_resolves_when_it_beats(pg_dsn, node_factory):
    # The server would expire the session after 30 s; the rule's staleness is 0.6 s, so it sees
    # a session that is online without heartbeating (what a broken expiry would look like).
    rule_id = add_rule(pg_dsn, "default", "heartbeat_rate")
    node = await alert_node(
        node_factory,
        pg_dsn,
        alert_stale_heartbeat_s=0.6,
        heartbeat_interval_ms=20_000,
        heartbeat_timeout_ms=30_000,
    )
    mon, _ = await monitor(node)
    clients: list = []
    (sid,) = await join(node, "quiet", 1, clients)
    firing = await next_alert(mon, "firing")
    assert firing["metrics"]["staleSessions"] == 1 and firing["metrics"]["oldestHeartbeatAgeS"] >= 0.6
    await clients[0].app("/app/heartbeat", {"sessionId": sid, "latencyMs": 5})
    resolved = await next_alert(mon, "resolved")
    assert resolved["metrics"]["staleSessions"] == 0
    assert [r["state"] for r in await events_in_pg(pg_dsn, rule_id, 2)] == ["firing", "resolved"]


async def test_heartbeat_rate_rule_fires_when_the_room_heartbeat_rate_falls(pg_dsn, node_factory):
    add_rule(pg_dsn, "default", "heartbeat_rate", threshold=0.5)
    node = await alert_node(node_factory, pg_dsn, heartbeat_interval_ms=300, heartbeat_timeout_ms=20_000)
    mon, _ = await monitor(node)
    clients: list = []
    sids = await join(node, "beats", 4, clients)
    stop = asyncio.Event()

    async def beat(client, sid):
        while not stop.is_set():
            await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 5})
            await asyncio.sleep(0.1)

    beaters = {i: asyncio.create_task(beat(clients[i], sids[i])) for i in range(4)}
    with pytest.raises(TimeoutError):  # everyone beating: nothing to say
        await mon.json(ALERTS, timeout=1.0, type_="ALERT")
    for i in (1, 2, 3):  # three of four stop: the room's heartbeat rate falls by 75 %
        beaters[i].cancel()
    firing = await next_alert(mon, "firing")
    assert firing["value"] == pytest.approx(0.75) and firing["metrics"]["staleSessions"] == 0
    for i in (1, 2, 3):
        beaters[i] = asyncio.create_task(beat(clients[i], sids[i]))
    resolved = await next_alert(mon, "resolved")
    assert resolved["value"] == 0
    stop.set()
    await asyncio.gather(*beaters.values(), return_exceptions=True)


class Beaters:
    """Each client's heartbeats every 0.1 s over its open connection, stopped and restarted at will;
    the time of each one's last heartbeat (monotonic)."""

    def __init__(self, clients: list, sids: list[str]):
        self.clients, self.sids = clients, sids
        self.tasks: dict[int, asyncio.Task] = {}
        self.last: dict[int, float] = {}

    async def _beat(self, i: int) -> None:
        while True:
            await self.clients[i].app("/app/heartbeat", {"sessionId": self.sids[i], "latencyMs": 5})
            self.last[i] = time.monotonic()
            await asyncio.sleep(0.1)

    def start(self, *which: int) -> None:
        for i in which:
            self.tasks[i] = asyncio.create_task(self._beat(i))

    async def stop(self, *which: int) -> None:
        for i in which:
            task = self.tasks.pop(i)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self.stop(*list(self.tasks))


async def test_heartbeat_rule_fires_when_a_session_stays_silent_past_the_threshold(pg_dsn, node_factory):
    """ADR-0001's rule: seconds_since_heartbeat > threshold for an online session of the room.
    The connection stays open and the session online (timeout 30 s); only its heartbeats stop."""
    rule_id = add_rule(pg_dsn, "default", "heartbeat", threshold=1.0)
    node = await alert_node(node_factory, pg_dsn, heartbeat_interval_ms=20_000, heartbeat_timeout_ms=30_000)
    mon, _ = await monitor(node)
    clients: list = []
    sids = await join(node, "calls", 2, clients)
    beaters = Beaters(clients, sids)
    beaters.start(0, 1)
    try:
        with pytest.raises(TimeoutError):  # both beating: nobody is silent for a second
            await mon.json(ALERTS, timeout=2.0, type_="ALERT")
        await beaters.stop(1)
        silent_since = beaters.last[1]
        firing = await next_alert(mon, "firing")
        assert time.monotonic() - silent_since >= 1.0  # not before the threshold
        assert firing["ruleId"] == rule_id and firing["kind"] == "heartbeat" and firing["threshold"] == 1.0
        assert firing["expression"] == "oldestHeartbeatAgeS > 1.0"
        assert firing["value"] == firing["metrics"]["oldestHeartbeatAgeS"] > 1.0
        assert firing["metrics"]["online"] == 2 and firing["metrics"]["silentShare"] == 0.5
        assert firing["metrics"]["staleSessions"] == 0  # alert_stale_heartbeat_s (60 s) is not this rule's
        beaters.start(1)  # it beats again
        resolved = await next_alert(mon, "resolved")
        assert resolved["episodeId"] == firing["alertId"] and resolved["value"] < 0.9
        rows = await events_in_pg(pg_dsn, rule_id, 2)
        assert [(r["state"], r["kind"]) for r in rows] == [("firing", "heartbeat"), ("resolved", "heartbeat")]
        assert triggered(node, "heartbeat") == 1
    finally:
        await beaters.close()


async def test_heartbeat_rule_with_a_share_fires_when_that_share_of_the_room_is_silent(pg_dsn, node_factory):
    rule_id = add_rule(pg_dsn, "default", "heartbeat", threshold=1.0, share=0.5)
    node = await alert_node(node_factory, pg_dsn, heartbeat_interval_ms=20_000, heartbeat_timeout_ms=30_000)
    mon, _ = await monitor(node)
    clients: list = []
    sids = await join(node, "town", 4, clients)
    beaters = Beaters(clients, sids)
    beaters.start(0, 1, 2, 3)
    try:
        await beaters.stop(3)
        with pytest.raises(TimeoutError):  # one silent session of four: a quarter, not half
            await mon.json(ALERTS, timeout=2.5, type_="ALERT")
        await beaters.stop(2)
        firing = await next_alert(mon, "firing")
        assert firing["ruleId"] == rule_id and firing["threshold"] == 1.0
        assert firing["expression"] == "oldestHeartbeatAgeS > 1.0 && silentShare >= 0.5"
        assert firing["value"] == firing["metrics"]["silentShare"] == 0.5
        beaters.start(2)  # back to one of four: below 0.5 x 0.9
        resolved = await next_alert(mon, "resolved")
        assert resolved["value"] == 0.25 and resolved["metrics"]["oldestHeartbeatAgeS"] > 1.0
    finally:
        await beaters.close()


async def test_custom_rule_and_tenant_isolation(pg_dsn, node_factory):
    rule_id = add_rule(pg_dsn, "acme", "custom", expression="online >= 2 && avgLatencyMs > 100")
    node = await alert_node(node_factory, pg_dsn)
    mon_a, _ = await monitor(node, "acme")
    mon_b, _ = await monitor(node, "globex")
    clients: list = []
    sids = await join(node, "ops", 2, clients, tenant="acme")
    with pytest.raises(TimeoutError):  # two users, no latency yet: the condition does not hold
        await mon_a.json(ALERTS, timeout=0.6, type_="ALERT")
    for client, sid in zip(clients, sids, strict=True):
        await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 250})
    firing = await next_alert(mon_a, "firing")
    assert firing["ruleId"] == rule_id and firing["tenant"] == "acme" and firing["value"] is None
    # The other tenant's monitor hears nothing, live or in a fresh snapshot.
    with pytest.raises(TimeoutError):
        await mon_b.json(ALERTS, timeout=1.0, type_="ALERT")
    _, snapshot_b = await monitor(node, "globex")
    assert snapshot_b["alerts"] == []
    _, snapshot_a = await monitor(node, "acme")
    assert [a["ruleId"] for a in snapshot_a["alerts"]] == [rule_id]


async def test_unusable_stored_rule_is_skipped_and_others_still_run(pg_dsn, node_factory):
    good = add_rule(pg_dsn, "default", "capacity", threshold=0.0001)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # written around the API's validation
        conn.execute(
            "INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, kind, expression)"
            " VALUES ('default', 'broken', 'tenant', 'custom', 'online >')"
        )
    node = await alert_node(node_factory, pg_dsn)
    mon, _ = await monitor(node)
    clients: list = []
    await join(node, "any", 1, clients)
    assert (await next_alert(mon, "firing"))["ruleId"] == good
    assert len(node.alerts.rules) == 1


async def test_firing_alert_is_posted_to_a_webhook_with_a_valid_signature(pg_dsn, node_factory):
    from spidi_server.alerting.notify import verify_signature

    received: list[tuple[dict, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        add_rule(
            pg_dsn,
            "default",
            "capacity",
            threshold=0.0001,
            channels=[{"type": "in_app"}, {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}],
        )
        node = await alert_node(node_factory, pg_dsn, webhook_secret="s3cret", alert_rate_limit_s=0)
        clients: list = []
        sids = await join(node, "hooked", 1, clients)
        deadline = time.monotonic() + 8
        while not received and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        headers, body = received[0]
        assert verify_signature("s3cret", headers["X-Spidi-Timestamp"], body, headers["X-Spidi-Signature"])
        assert orjson.loads(body)["state"] == "firing"
        await leave(clients[0], sids[0])
        while len(received) < 2 and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.1)
        assert orjson.loads(received[1][1])["state"] == "resolved"
    finally:
        await runner.cleanup()


def start_evaluator_process(redis_url: str, pg_dsn: str, node_id: str) -> subprocess.Popen:
    """A `spidi serve` process (no writer of its own) that competes for the evaluator lease."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_POSTGRES_DSN=pg_dsn,
        SPIDI_JWT_SECRET=TEST_SECRET,
        SPIDI_WRITER="external",
        SPIDI_NODE_ID=node_id,
        SPIDI_LOG_LEVEL="warning",
        SPIDI_ALERT_INTERVAL_S="0.2",
        SPIDI_ALERT_LEASE_S="1.0",
        SPIDI_ALERT_RULES_REFRESH_S="0.2",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spidi_server.cli",
            "serve",
            "--dev",
            "--data-dir",
            tempfile.mkdtemp(),
            "--port",
            str(free_port()),
            "--ops-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    read_banner(proc)
    return proc


async def test_one_evaluator_in_the_cluster_and_failover_when_the_holder_is_killed(
    pg_dsn, node_factory, redis_url, redis_sync
):
    rule_id = add_rule(pg_dsn, "default", "capacity", threshold=0.0001)
    holder = start_evaluator_process(redis_url, pg_dsn, "eval-a")
    try:
        deadline = time.monotonic() + 5
        while (
            not (redis_sync.get(keys.ALERT_LEADER) or "").startswith("eval-a:")
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        node = await alert_node(node_factory, pg_dsn, node_id="eval-b")
        await asyncio.sleep(0.6)
        assert redis_sync.get(keys.ALERT_LEADER).startswith("eval-a:") and not node.alerts.leader
        mon, _ = await monitor(node)
        clients: list = []
        sids = await join(node, "fo", 1, clients)
        firing = await next_alert(mon, "firing")  # evaluated by the other process, relayed here
        assert not node.alerts.leader
        holder.kill()  # SIGKILL: nothing releases the lease
        killed_at = time.monotonic()
        while not node.alerts.leader and time.monotonic() - killed_at < 5:
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed_at
        print(f"evaluator failover took {took:.2f} s")
        assert node.alerts.leader and took <= node.settings.alert_lease_s + 1.0
        # The successor continues the episode: no second firing, and the resolution closes it.
        await leave(clients[0], sids[0])
        resolved = await next_alert(mon, "resolved")
        assert resolved["episodeId"] == firing["alertId"]
        rows = await events_in_pg(pg_dsn, rule_id, 2)
        assert [r["state"] for r in rows] == ["firing", "resolved"]
        assert triggered(node, "capacity") == 0  # it fired on the other process, not again here
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


async def test_rule_deleted_while_firing_closes_its_alert(pg_dsn, node_factory):
    rule_id = add_rule(pg_dsn, "default", "capacity", threshold=0.0001)
    node = await alert_node(node_factory, pg_dsn)
    mon, _ = await monitor(node)
    clients: list = []
    await join(node, "gone", 1, clients)
    await next_alert(mon, "firing")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE dat_spd_alert_rule SET deleted_at = now() WHERE id = %s", [rule_id])
    resolved = await next_alert(mon, "resolved")
    assert resolved["reason"] and resolved["ruleId"] == rule_id
    assert await node.store.redis.hlen(keys.alerts_active("default")) == 0
    assert await node.store.redis.hlen(keys.ALERT_STATE) == 0


async def test_room_type_rule_applies_to_rooms_of_that_type_only(pg_dsn, node_factory):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        stage = room_types.create(conn, "default", "stage", "Stage", default_capacity=10, actor="test")
        type_id = stage["id"]
        rooms.create(conn, "default", "stage-1", room_type="stage", actor="test")
        rooms.create(conn, "default", "plain-1", capacity=10, actor="test")
    fire, resolve, stored = make_rule_expressions("capacity", 0.05, None, None, 0.1)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rule_id = conn.execute(
            """INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, room_type_id, kind, expression,
                   resolve_expression, threshold) VALUES ('default', 'stages', 'room_type', %s, 'capacity', %s, %s, %s)
               RETURNING id::text""",
            [type_id, fire, resolve, stored],
        ).fetchone()[0]
    node = await alert_node(node_factory, pg_dsn)
    mon, _ = await monitor(node)
    clients: list = []
    await join(node, "plain-1", 1, clients, prefix="p")  # 1/10 > 0.05, but not a stage
    with pytest.raises(TimeoutError):
        await mon.json(ALERTS, timeout=1.0, type_="ALERT")
    await join(node, "stage-1", 1, clients, prefix="s")
    firing = await next_alert(mon, "firing")
    assert firing["ruleId"] == rule_id and firing["roomCode"] == "stage-1"
