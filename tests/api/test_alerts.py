"""Alerts through the REST API: the event history, acknowledgement (and its ALERT_ACK), open alerts.

Events are inserted with SQL as the connecting (super)user, the way the history writer stores the
evaluator's transitions; open alerts are written to Redis the way the evaluator keeps them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import redis.asyncio as aioredis
from psycopg.types.json import Jsonb

from spidi_server.alerting.feed import alert_key
from spidi_server.history.sql import alerts
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

from .conftest import assert_problem, check_shape, error_fields

ALERTS = "/api/v1/alerts"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
EVENT_KEYS = {
    "id",
    "ruleId",
    "ruleName",
    "roomId",
    "roomCode",
    "state",
    "kind",
    "severity",
    "value",
    "at",
    "details",
    "acknowledgedBy",
    "acknowledgedAt",
}


async def disabled_rule(api, tenant: str = "default", name: str = "Full", severity: str = "warning") -> dict:
    """A rule to hang events on; disabled, so the node's own evaluator leaves it alone."""
    body = {"name": name, "scope": "tenant", "kind": "capacity", "severity": severity, "enabled": False}
    reply = await api.post("/api/v1/alert-rules", body, tenant=tenant)
    assert reply.status == 201, reply.body
    return reply.body


def insert_event(
    pg,
    rule: dict,
    *,
    tenant: str = "default",
    room: str = "lobby",
    state: str = "firing",
    at: datetime = T0,
    severity: str | None = None,
    value: float | None = 0.93,
    episode: str | None = None,
) -> str:
    """Store one transition as the history writer does; its id."""
    event_id = str(uuid.uuid4())
    details = {
        "ruleName": rule["name"],
        "previousState": "pending",
        "episodeId": episode or event_id,
        "metrics": {"online": 93, "capacity": 100},
    }
    pg.execute(
        """INSERT INTO dat_spd_alert_event (id, rule_id, unidad_negocio_id, room_id, room_code, state, kind, severity,
                                            value, at, details, created_by, updated_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'spidi-writer', 'spidi-writer')""",
        [
            event_id,
            rule["id"],
            tenant,
            room_id_for(tenant, room),
            room,
            state,
            rule["kind"],
            severity or rule["severity"],
            value,
            at,
            Jsonb(details),
        ],
    )
    return event_id


def open_alert(
    rule: dict,
    event_id: str,
    *,
    tenant: str = "default",
    room: str = "lobby",
    since: int,
    state: str = "firing",
) -> dict:
    """An open alert as the evaluator keeps it in keys.alerts_active (the ALERT message)."""
    return {
        "type": "ALERT",
        "alertId": event_id,
        "episodeId": event_id,
        "ruleId": rule["id"],
        "ruleName": rule["name"],
        "kind": rule["kind"],
        "severity": rule["severity"],
        "expression": rule["expression"],
        "threshold": rule["threshold"],
        "state": state,
        "previousState": "pending",
        "tenant": tenant,
        "roomId": room_id_for(tenant, room),
        "roomCode": room,
        "value": 0.93,
        "since": since,
        "at": since + 1000,
        "metrics": {"online": 93, "capacity": 100, "utilization": 0.93},
    }


async def test_history_filters_and_pagination(api, pg):
    doc = (await api.get("/api/openapi.json", role=None)).body
    full = await disabled_rule(api, name="Full", severity="critical")
    slow = await disabled_rule(api, name="Slow")
    theirs = await disabled_rule(api, tenant="acme", name="Theirs")
    ids = {
        "full-pending": insert_event(pg, full, state="pending", at=T0),
        "full-firing": insert_event(pg, full, state="firing", at=T0 + timedelta(minutes=1)),
        "slow-firing": insert_event(pg, slow, room="hall", at=T0 + timedelta(minutes=2), value=None),
        "full-resolved": insert_event(pg, full, state="resolved", at=T0 + timedelta(minutes=3)),
    }
    insert_event(pg, theirs, tenant="acme", at=T0 + timedelta(minutes=4))
    name_of = {v: k for k, v in ids.items()}

    async def listed(**params) -> tuple[list[str], dict]:
        reply = await api.get(ALERTS, params=params, role="monitor")
        assert reply.status == 200, reply.body
        check_shape(doc["components"]["schemas"]["AlertList"], reply.body, doc, "alerts")
        return [name_of[e["id"]] for e in reply.body["items"]], reply.body

    everything, body = await listed()
    assert everything == ["full-resolved", "slow-firing", "full-firing", "full-pending"]  # newest first
    assert (body["total"], body["limit"], body["offset"]) == (4, 100, 0)
    item = body["items"][2]
    assert set(item) == EVENT_KEYS
    assert (
        item["ruleId"],
        item["ruleName"],
        item["roomId"],
        item["roomCode"],
        item["state"],
        item["kind"],
    ) == (full["id"], "Full", room_id_for("default", "lobby"), "lobby", "firing", "capacity")
    assert (item["severity"], item["value"], item["at"]) == ("critical", 0.93, "2026-03-02T10:01:00.000Z")
    assert item["details"]["metrics"] == {"online": 93, "capacity": 100}
    assert (item["acknowledgedBy"], item["acknowledgedAt"]) == (None, None)

    assert (await listed(state="firing"))[0] == ["slow-firing", "full-firing"]
    assert (await listed(ruleId=full["id"], state="resolved"))[0] == ["full-resolved"]
    assert (await listed(roomId=room_id_for("default", "hall")))[0] == ["slow-firing"]
    assert (await listed(severity="critical"))[0] == ["full-resolved", "full-firing", "full-pending"]
    window = {"from": "2026-03-02T10:01:00Z", "to": "2026-03-02T10:03:00Z"}
    assert (await listed(**window))[0] == ["slow-firing", "full-firing"]  # [from, to)
    assert (await listed(**{"from": "2026-03-02T12:02:00+02:00"}))[0] == ["full-resolved", "slow-firing"]
    assert (await listed(to="2026-03-02T10:01:00Z"))[0] == ["full-pending"]
    page, body = await listed(limit="2", offset="1")
    assert page == ["slow-firing", "full-firing"] and (body["total"], body["limit"], body["offset"]) == (
        4,
        2,
        1,
    )

    # A rule deleted later: its events stay, with its name.
    assert (await api.delete(f"/api/v1/alert-rules/{slow['id']}")).status == 204
    assert (await api.get(f"{ALERTS}/{ids['slow-firing']}")).body["ruleName"] == "Slow"

    # Like the stats route: a range that ends before it starts is refused.
    assert error_fields(
        await api.get(ALERTS, params={"from": "2026-03-02T11:00:00Z", "to": "2026-03-02T10:00:00Z"})
    ) == {"from": "must be before to (2026-03-02T11:00:00.000Z is not before 2026-03-02T10:00:00.000Z)"}
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert set(error_fields(await api.get(ALERTS, params={"from": future}))) == {"from"}
    assert error_fields(
        await api.get(ALERTS, params={"state": "open", "severity": "fatal", "ruleId": "r1", "x": "1"})
    ) == {
        "x": "unknown parameter; allowed: state, roomId, ruleId, severity, from, to, limit, offset, archive",
        "state": "must be one of pending, firing, resolved",
        "severity": "must be one of info, warning, critical",
        "ruleId": "must be a UUID such as 00000000-0000-0000-0000-000000006c0f; got 'r1'",
    }

    got = await api.get(f"{ALERTS}/{ids['full-firing']}", role="monitor")
    assert got.status == 200 and got.body == item
    check_shape(doc["components"]["schemas"]["Alert"], got.body, doc, "alert")
    assert_problem(await api.get(f"{ALERTS}/{uuid.uuid4()}"), 404, "not-found")
    assert set(error_fields(await api.get(f"{ALERTS}/nope"))) == {"id"}


async def test_acknowledge_stores_who_and_when_and_tells_every_dashboard(api, pg, redis_url):
    doc = (await api.get("/api/openapi.json", role=None)).body
    rule = await disabled_rule(api)
    episode = insert_event(pg, rule, state="pending", at=T0)
    firing = insert_event(pg, rule, state="firing", at=T0 + timedelta(seconds=30), episode=episode)
    since = int(T0.timestamp() * 1000)
    active = keys.alerts_active("default")
    field = alert_key(rule["id"], room_id_for("default", "lobby"))
    alert = open_alert(rule, firing, since=since) | {"episodeId": episode}

    listener = aioredis.Redis.from_url(redis_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.ALERTS_CHANNEL)
    try:
        await listener.hset(active, field, orjson.dumps(alert))

        async def next_message(timeout: float = 2.0) -> dict | None:
            # get_message answers None for the subscription's confirmation too: read until a message.
            deadline = asyncio.get_running_loop().time() + timeout
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                message = await pubsub.get_message(timeout=left)
                if message is not None:
                    return orjson.loads(message["data"])
            return None

        # Admins acknowledge (a monitor only when monitors_may_acknowledge is on: tests/test_roles.py).
        # The episode's first event is the one to acknowledge.
        assert_problem(await api.post(f"{ALERTS}/{episode}/acknowledge", role="monitor"), 403, "forbidden")
        before = datetime.now(UTC) - timedelta(seconds=1)
        reply = await api.post(f"{ALERTS}/{episode}/acknowledge", role="admin", sub="mo")
        assert reply.status == 200, reply.body
        check_shape(doc["components"]["schemas"]["Alert"], reply.body, doc, "ack")
        acked_at = reply.body["acknowledgedAt"]
        assert reply.body["id"] == episode and reply.body["acknowledgedBy"] == "mo"
        assert before <= datetime.fromisoformat(acked_at) <= datetime.now(UTC)
        at_ms = int(datetime.fromisoformat(acked_at).timestamp() * 1000)
        assert await next_message() == {
            "type": "ALERT_ACK",
            "tenant": "default",
            "ruleId": rule["id"],
            "roomId": room_id_for("default", "lobby"),
            "alertId": episode,
            "acknowledgedBy": "mo",
            "acknowledgedAt": at_ms,
        }
        row = pg.execute(
            "SELECT acknowledged_by, acknowledged_at, updated_by, created_by FROM dat_spd_alert_event "
            "WHERE id = %s",
            [episode],
        ).fetchone()
        assert (row[0], int(row[1].timestamp() * 1000), row[2], row[3]) == ("mo", at_ms, "mo", "spidi-writer")
        # The open alert carries it too: a dashboard that subscribes now sees it acknowledged.
        stored = orjson.loads(await listener.hget(active, field))
        assert (stored["acknowledgedBy"], stored["acknowledgedAt"]) == ("mo", at_ms)
        listed = (await api.get(f"{ALERTS}/active")).body["items"]
        assert [(a["alertId"], a["acknowledgedBy"], a["acknowledgedAt"]) for a in listed] == [
            (firing, "mo", at_ms)
        ]

        # Idempotent: a second acknowledgement (an admin's) keeps the first one's who and when, and
        # announces it again.
        again = await api.post(f"{ALERTS}/{episode}/acknowledge", role="admin", sub="ad")
        assert again.status == 200 and again.body == reply.body
        assert (await next_message())["acknowledgedBy"] == "mo"
        assert pg.execute(
            "SELECT acknowledged_by FROM dat_spd_alert_event WHERE id = %s", [episode]
        ).fetchone() == ("mo",)

        # Another event of the episode is acknowledged on its own; the open alert keeps its first.
        other = await api.post(f"{ALERTS}/{firing}/acknowledge", sub="ad")
        assert other.status == 200 and other.body["acknowledgedBy"] == "ad"
        assert (await next_message())["alertId"] == firing

        # Users may not; unknown or malformed ids are 404 and 400, and announce nothing.
        assert_problem(await api.post(f"{ALERTS}/{episode}/acknowledge", role="user"), 403, "forbidden")
        assert_problem(await api.post(f"{ALERTS}/{episode}/acknowledge", role=None), 401, "unauthorized")
        assert_problem(await api.post(f"{ALERTS}/{uuid.uuid4()}/acknowledge"), 404, "not-found")
        assert set(error_fields(await api.post(f"{ALERTS}/nope/acknowledge"))) == {"id"}
        assert await next_message(0.3) is None
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_concurrent_acknowledgements_keep_the_first(api, pg):
    rule = await disabled_rule(api)
    event = insert_event(pg, rule)
    replies = await asyncio.gather(
        *(api.post(f"{ALERTS}/{event}/acknowledge", sub=f"op-{i}") for i in range(4))
    )
    assert {r.status for r in replies} == {200}
    (who,) = {(r.body["acknowledgedBy"], r.body["acknowledgedAt"]) for r in replies}
    assert pg.execute(
        "SELECT acknowledged_by FROM dat_spd_alert_event WHERE id = %s", [event]
    ).fetchone() == (who[0],)


async def test_active_alerts_from_redis(api, redis_sync):
    doc = (await api.get("/api/openapi.json", role=None)).body
    assert (await api.get(f"{ALERTS}/active", role="monitor")).body == {"items": []}
    rule = await disabled_rule(api)
    theirs = await disabled_rule(api, tenant="acme")
    older = open_alert(rule, str(uuid.uuid4()), room="hall", since=1_000_000, state="pending")
    newer = open_alert(rule, str(uuid.uuid4()), room="lobby", since=2_000_000)
    mine = keys.alerts_active("default")
    redis_sync.hset(mine, alert_key(rule["id"], older["roomId"]), orjson.dumps(older).decode())
    redis_sync.hset(mine, alert_key(rule["id"], newer["roomId"]), orjson.dumps(newer | {"extra": 1}).decode())
    redis_sync.hset(mine, "broken", "{not json")
    acme = open_alert(theirs, str(uuid.uuid4()), tenant="acme", since=3_000_000)
    redis_sync.hset(
        keys.alerts_active("acme"), alert_key(theirs["id"], acme["roomId"]), orjson.dumps(acme).decode()
    )

    reply = await api.get(f"{ALERTS}/active", role="monitor")
    assert reply.status == 200, reply.body
    check_shape(doc["components"]["schemas"]["ActiveAlerts"], reply.body, doc, "active")
    items = reply.body["items"]
    assert [a["roomCode"] for a in items] == ["lobby", "hall"]  # newest first; the broken value skipped
    expected = {k: v for k, v in newer.items() if k != "type"} | {
        "acknowledgedBy": None,
        "acknowledgedAt": None,
    }
    assert items[0] == expected  # the contract's keys only
    assert [a["tenant"] for a in (await api.get(f"{ALERTS}/active", tenant="acme")).body["items"]] == ["acme"]
    assert_problem(await api.get(f"{ALERTS}/active", role="user"), 403, "forbidden")


async def test_tenants_are_isolated_by_row_level_security(api, pg, pg_dsn):
    theirs = await disabled_rule(api, tenant="acme")
    event = insert_event(pg, theirs, tenant="acme")
    # Another tenant sees nothing of acme's alerts, by list or by id, and cannot acknowledge them.
    assert (await api.get(ALERTS, tenant="globex")).body["total"] == 0
    assert (await api.get(ALERTS, params={"ruleId": theirs["id"]}, tenant="globex")).body["items"] == []
    assert_problem(await api.get(f"{ALERTS}/{event}", tenant="globex"), 404, "not-found")
    assert_problem(await api.post(f"{ALERTS}/{event}/acknowledge", tenant="globex"), 404, "not-found")
    assert (await api.get(f"{ALERTS}/{event}", tenant="acme")).body["acknowledgedBy"] is None

    # Row-level security does it: as globex, even with acme in the statements' own conditions.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with tenant_transaction(conn, "globex"):
            assert alerts.get_event(conn, "acme", event) is None
            assert alerts.list_events(conn, "acme") == ([], 0)
            assert alerts.acknowledge_event(conn, "acme", event, actor="eve") == (None, False)
            cur = conn.execute(
                "UPDATE dat_spd_alert_event SET acknowledged_by = 'eve', acknowledged_at = now()"
            )
            assert cur.rowcount == 0
        with tenant_transaction(conn, "acme"):
            assert alerts.get_event(conn, "acme", event)["id"] == event
    assert pg.execute(
        "SELECT acknowledged_by FROM dat_spd_alert_event WHERE id = %s", [event]
    ).fetchone() == (None,)
