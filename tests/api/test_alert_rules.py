"""Alert rules through the REST API: CRUD, expressions, validation, roles, tenant isolation."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest

from spidi_server.history.sql import alerts
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for

from .conftest import assert_problem, check_shape, create_room, error_fields

RULES = "/api/v1/alert-rules"
RULE_KEYS = {
    "id",
    "name",
    "scope",
    "roomId",
    "roomType",
    "roomTypeId",
    "kind",
    "threshold",
    "share",
    "anomalyTypes",
    "expression",
    "resolveExpression",
    "severity",
    "forSeconds",
    "channels",
    "enabled",
    "sloId",
    "burnPolicy",
    "createdAt",
    "createdBy",
    "updatedAt",
    "updatedBy",
}


async def create_rule(api, tenant: str = "default", **fields) -> dict:
    """POST a rule as the tenant's admin (a tenant-wide capacity rule unless told); the created rule."""
    body = {"name": "Full", "scope": "tenant", "kind": "capacity", **fields}
    reply = await api.post(RULES, body, tenant=tenant)
    assert reply.status == 201, reply.body
    return reply.body


async def test_rule_crud_round_trip(api, pg, caplog):
    caplog.set_level(logging.INFO, "spidi.api")
    doc = (await api.get("/api/openapi.json", role=None)).body
    room = await create_room(api, "lobby", capacity=100)
    reply = await api.post(
        RULES, {"name": "Lobby full", "scope": "room", "roomId": room["id"], "kind": "capacity"}, sub="alice"
    )
    assert reply.status == 201, reply.body
    rule = reply.body
    assert set(rule) == RULE_KEYS
    check_shape(doc["components"]["schemas"]["AlertRule"], rule, doc, "rule")
    assert reply.headers["Location"] == f"{RULES}/{rule['id']}"
    # The defaults, and the expressions the evaluator will run, written from the default threshold.
    assert (rule["scope"], rule["roomId"], rule["roomType"], rule["roomTypeId"]) == (
        "room",
        room["id"],
        None,
        None,
    )
    assert (rule["kind"], rule["threshold"], rule["severity"], rule["forSeconds"], rule["enabled"]) == (
        "capacity",
        0.8,
        "warning",
        0,
        True,
    )
    assert (rule["expression"], rule["resolveExpression"]) == ("utilization > 0.8", "utilization < 0.72")
    assert rule["channels"] == [{"type": "in_app"}]
    assert rule["createdBy"] == rule["updatedBy"] == "alice" and rule["createdAt"] == rule["updatedAt"]

    got = await api.get(f"{RULES}/{rule['id']}", role="monitor")
    assert got.status == 200 and got.body == rule

    # A new threshold writes both expressions again (hysteresis 10 %).
    patched = await api.patch(f"{RULES}/{rule['id']}", {"threshold": 0.9, "severity": "critical"}, sub="bob")
    assert patched.status == 200, patched.body
    assert (patched.body["threshold"], patched.body["expression"], patched.body["resolveExpression"]) == (
        0.9,
        "utilization > 0.9",
        "utilization < 0.81",
    )
    assert patched.body["severity"] == "critical" and patched.body["name"] == "Lobby full"
    assert patched.body["createdBy"] == "alice" and patched.body["updatedBy"] == "bob"
    assert patched.body["updatedAt"] > rule["updatedAt"]

    # Another kind: the old threshold means nothing to it, so the new kind's default applies.
    latency = (await api.patch(f"{RULES}/{rule['id']}", {"kind": "latency"})).body
    assert (latency["kind"], latency["threshold"], latency["expression"], latency["resolveExpression"]) == (
        "latency",
        500.0,
        "avgLatencyMs > 500.0",
        "avgLatencyMs < 450.0",
    )
    rate = (await api.patch(f"{RULES}/{rule['id']}", {"kind": "heartbeat_rate", "threshold": 0.25})).body
    assert rate["expression"] == "staleSessions > 0 || heartbeatRateDrop > 0.25"
    assert rate["resolveExpression"] == "staleSessions == 0 && heartbeatRateDrop < 0.225"
    # ADR-0001's heartbeat rule: seconds of silence (default 60), any session or a share of them.
    heartbeat = (await api.patch(f"{RULES}/{rule['id']}", {"kind": "heartbeat"})).body
    assert (heartbeat["threshold"], heartbeat["share"], heartbeat["expression"]) == (
        60.0,
        None,
        "oldestHeartbeatAgeS > 60.0",
    )
    shared = (await api.patch(f"{RULES}/{rule['id']}", {"threshold": 30, "share": 0.25})).body
    assert (shared["threshold"], shared["share"]) == (30.0, 0.25)
    assert shared["expression"] == "oldestHeartbeatAgeS > 30.0 && silentShare >= 0.25"
    assert shared["resolveExpression"] == "silentShare < 0.225"
    kept = (await api.patch(f"{RULES}/{rule['id']}", {"threshold": 45})).body  # the share stays
    assert kept["expression"] == "oldestHeartbeatAgeS > 45.0 && silentShare >= 0.25"
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"share": 2})) == {
        "share": "must be a ratio in (0, 1]: the share of online sessions silent"
    }
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"kind": "capacity", "share": 0.5})) == {
        "share": "applies to the heartbeat kind only"
    }
    assert (await api.patch(f"{RULES}/{rule['id']}", {"share": None})).body["expression"] == (
        "oldestHeartbeatAgeS > 45.0"
    )

    # Custom: the operator's expressions as given, no threshold; a later PATCH keeps what it omits.
    custom = await api.patch(
        f"{RULES}/{rule['id']}",
        {
            "kind": "custom",
            "expression": "online > 90 && avgLatencyMs > 300.0",
            "resolveExpression": "online < 80",
        },
    )
    assert custom.status == 200, custom.body
    assert (custom.body["threshold"], custom.body["expression"], custom.body["resolveExpression"]) == (
        None,
        "online > 90 && avgLatencyMs > 300.0",
        "online < 80",
    )
    renamed = (await api.patch(f"{RULES}/{rule['id']}", {"expression": "online > 95"})).body
    assert (renamed["expression"], renamed["resolveExpression"]) == ("online > 95", "online < 80")
    cleared = (await api.patch(f"{RULES}/{rule['id']}", {"resolveExpression": None})).body
    assert (cleared["expression"], cleared["resolveExpression"]) == ("online > 95", None)

    # A new scope drops the old target; forSeconds, channels and enabled change like any field.
    wide = await api.patch(
        f"{RULES}/{rule['id']}",
        {
            "scope": "tenant",
            "forSeconds": 30,
            "enabled": False,
            "channels": [
                {"type": "webhook", "url": "https://hooks.example.test/x"},
                {"type": "email", "to": ["ops@example.test"]},
                {"type": "slack", "url": "https://hooks.example.test/slack"},
                {"type": "teams", "url": "https://flows.example.test/teams"},
                {"type": "pagerduty", "routingKey": "K" * 32},
            ],
        },
    )
    assert wide.status == 200, wide.body
    assert wide.body["channels"][4] == {"type": "pagerduty", "routingKey": "K" * 32}
    assert (wide.body["scope"], wide.body["roomId"], wide.body["forSeconds"], wide.body["enabled"]) == (
        "tenant",
        None,
        30,
        False,
    )
    assert wide.body["channels"][1] == {"type": "email", "to": ["ops@example.test"]}

    # The stored row: audit columns from the tokens' subjects; the evaluator reads what it needs.
    row = pg.execute(
        "SELECT created_by, updated_by, scope, room_id, for_seconds FROM dat_spd_alert_rule WHERE id = %s",
        [rule["id"]],
    ).fetchone()
    assert row == ("alice", "admin-of-default", "tenant", None, 30)
    assert (await api.patch(f"{RULES}/{rule['id']}", {"enabled": True})).status == 200
    (loaded,) = alerts.load_rules(pg)
    assert (loaded["rule_id"], loaded["tenant"], loaded["expression"]) == (
        rule["id"],
        "default",
        "online > 95",
    )

    deleted = await api.delete(f"{RULES}/{rule['id']}")
    assert deleted.status == 204 and deleted.body is None
    assert_problem(await api.get(f"{RULES}/{rule['id']}"), 404, "not-found")
    assert_problem(await api.delete(f"{RULES}/{rule['id']}"), 404, "not-found")
    assert_problem(await api.patch(f"{RULES}/{rule['id']}", {"name": "x"}), 404, "not-found")
    assert pg.execute(
        "SELECT deleted_at IS NOT NULL FROM dat_spd_alert_rule WHERE id = %s", [rule["id"]]
    ).fetchone() == (True,)
    assert alerts.load_rules(pg) == []

    logged = [(r.getMessage(), r.actor) for r in caplog.records if r.getMessage().startswith("alert_rule_")]
    assert logged[0] == ("alert_rule_created", "alice") and logged[1] == ("alert_rule_updated", "bob")
    assert logged[-1] == ("alert_rule_deleted", "admin-of-default")
    first_update = [r for r in caplog.records if r.getMessage() == "alert_rule_updated"][0]
    assert first_update.changed == ["expression", "resolveExpression", "severity", "threshold"]


async def test_room_type_scope_by_code(api):
    created = await api.post("/api/v1/room-types", {"code": "class", "name": "Classroom"})
    rule = await create_rule(api, scope="roomType", roomType="class", kind="latency", threshold=250)
    assert (rule["scope"], rule["roomType"], rule["roomTypeId"], rule["roomId"]) == (
        "roomType",
        "class",
        created.body["id"],
        None,
    )
    assert (rule["threshold"], rule["expression"]) == (250.0, "avgLatencyMs > 250.0")
    # Only the code changes: the scope stays, the id follows.
    await api.post("/api/v1/room-types", {"code": "hall", "name": "Hall"})
    moved = await api.patch(f"{RULES}/{rule['id']}", {"roomType": "hall"})
    assert moved.status == 200 and moved.body["roomType"] == "hall"
    # Another tenant's type is no type of this tenant's, whatever its code.
    await api.post("/api/v1/room-types", {"code": "stage", "name": "Stage"}, tenant="other")
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"roomType": "stage"})) == {
        "roomType": "unknown room type 'stage'"
    }
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"roomType": "nope"})) == {
        "roomType": "unknown room type 'nope'"
    }
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"roomType": None})) == {
        "roomType": "is required when scope is roomType"
    }
    # Back to a tenant-wide rule: the type is dropped.
    assert (await api.patch(f"{RULES}/{rule['id']}", {"scope": "tenant"})).body["roomType"] is None


async def test_list_filters_and_pagination(api):
    doc = (await api.get("/api/openapi.json", role=None)).body
    lobby = await create_room(api, "lobby")
    await create_rule(api, name="b-capacity")
    await create_rule(api, name="a-latency", kind="latency", enabled=False)
    await create_rule(api, name="c-lobby", scope="room", roomId=lobby["id"], kind="heartbeat")
    await create_rule(api, name="d-custom", kind="custom", expression="users > 3")
    await create_rule(api, tenant="acme", name="theirs")

    async def names(**params) -> tuple[list[str], dict]:
        reply = await api.get(RULES, params=params, role="monitor")
        assert reply.status == 200, reply.body
        check_shape(doc["components"]["schemas"]["AlertRuleList"], reply.body, doc, "rules")
        return [r["name"] for r in reply.body["items"]], reply.body

    everything, body = await names()
    assert everything == ["a-latency", "b-capacity", "c-lobby", "d-custom"]
    assert (body["total"], body["limit"], body["offset"]) == (4, 50, 0)
    assert (await names(kind="custom"))[0] == ["d-custom"]
    assert (await names(enabled="false"))[0] == ["a-latency"]
    assert (await names(enabled="true", kind="capacity"))[0] == ["b-capacity"]
    assert (await names(roomId=lobby["id"]))[0] == ["c-lobby"]
    page, body = await names(limit="2", offset="1")
    assert page == ["b-capacity", "c-lobby"] and (body["total"], body["limit"]) == (4, 2)
    assert error_fields(await api.get(RULES, params={"enabled": "yes", "kind": "cpu", "roomId": "x"})) == {
        "enabled": "must be true or false",
        "kind": "must be one of capacity, latency, heartbeat, heartbeat_rate, anomaly, custom, slo_burn",
        "roomId": "must be a UUID such as 00000000-0000-0000-0000-000000006c0f; got 'x'",
    }


async def test_validation_lists_every_mistake(api):
    # Each field on its own: every mistake of the body in one answer.
    errors = error_fields(
        await api.post(
            RULES,
            {
                "nme": "x",
                "scope": "everywhere",
                "kind": "cpu",
                "threshold": "high",
                "roomId": "room-1",
                "forSeconds": -1,
                "enabled": "yes",
                "severity": "fatal",
                "channels": "email",
            },
        )
    )
    assert errors["nme"].startswith("unknown field; allowed: name, scope, roomId, roomType, kind, threshold")
    assert errors == {
        "nme": errors["nme"],
        "name": "is required",
        "scope": "must be one of room, roomType, tenant",
        "kind": "must be one of capacity, latency, heartbeat, heartbeat_rate, anomaly, custom, slo_burn",
        "threshold": "must be a number",
        "roomId": "must be a UUID such as 00000000-0000-0000-0000-000000006c0f; got 'room-1'",
        "forSeconds": "must be an integer from 0 to 86400",
        "enabled": "must be true or false",
        "severity": "must be one of info, warning, critical",
        "channels": "must be a list of channel objects",
    }
    assert error_fields(await api.post(RULES, {})) == {
        "name": "is required",
        "scope": "is required",
        "kind": "is required",
    }
    assert_problem(
        await api.post(RULES, data=b"{nope", headers={"Content-Type": "application/json"}),
        400,
        "malformed-json",
    )

    async def rule_errors(**fields) -> dict[str, str]:
        body = {"name": "r", "scope": "tenant", "kind": "custom", **fields}
        return error_fields(await api.post(RULES, body))

    # The rule as a whole: the CEL parser's own message, naming the field.
    malformed = await rule_errors(expression="online >")
    assert set(malformed) == {"expression"}
    assert malformed["expression"].startswith("not a valid CEL expression: ")
    assert "Syntax error" in malformed["expression"] and "online >" in malformed["expression"]
    assert (await rule_errors(expression="cpu > 90")) == {
        "expression": "unknown metric(s) cpu; known: online, capacity, utilization, peak, users, avgLatencyMs, "
        "staleSessions, oldestHeartbeatAgeS, silentShare, heartbeatRateDrop, joinStorms, leaveStorms, "
        "latencySpikes, massDisconnects, flappingClients, roomCode, tenant"
    }
    assert (await rule_errors(expression="online + 1")) == {
        "expression": "must evaluate to a boolean, got int"
    }
    assert (await rule_errors()) == {"expression": "is required for a custom rule"}
    resolve = await rule_errors(expression="online > 1", resolveExpression="online <")
    assert resolve["resolveExpression"].startswith("not a valid CEL expression: ")
    assert (await rule_errors(expression="online > 1", threshold=3)) == {
        "threshold": "applies to the built-in kinds only; a custom rule has an expression"
    }
    assert (await rule_errors(kind="capacity", threshold=1.5)) == {
        "threshold": "a capacity threshold is a ratio between 0 and 1"
    }
    assert (await rule_errors(kind="latency", threshold=-5)) == {"threshold": "must be a positive number"}
    assert (await rule_errors(kind="capacity", expression="online > 1")) == {
        "expression": "a capacity rule writes its own expression from threshold; use kind custom"
    }
    assert (await rule_errors(kind="latency", channels=[{"type": "sms"}])) == {
        "channels[0]": "must be an object whose type is one of in_app, webhook, slack, teams, pagerduty, email"
    }
    assert (await rule_errors(kind="latency", channels=[{"type": "pagerduty", "routingKey": "x"}])) == {
        "channels[0].routingKey": "must be the 32-character integration key of a PagerDuty service (Events API v2)"
    }
    assert (
        await rule_errors(
            kind="latency", channels=[{"type": "in_app"}, {"type": "webhook", "url": "ftp://x"}]
        )
    ) == {"channels[1].url": "must be an http:// or https:// URL"}
    assert (await rule_errors(kind="latency", channels=[{"type": "email", "to": []}])) == {
        "channels[0].to": "must be a non-empty list of email addresses"
    }
    # Scope and target, with the expression's mistake in the same answer.
    assert (await rule_errors(scope="room", expression="online >>")).keys() == {"roomId", "expression"}
    assert (await rule_errors(scope="room", kind="latency")) == {"roomId": "is required when scope is room"}
    assert (await rule_errors(scope="roomType", kind="latency")) == {
        "roomType": "is required when scope is roomType"
    }
    room_id = room_id_for("default", "lobby")
    assert (await rule_errors(kind="latency", roomId=room_id)) == {
        "roomId": "only with scope room (scope is tenant)"
    }
    assert (await rule_errors(scope="room", kind="latency", roomId=room_id)) == {
        "roomId": f"no room {room_id} is stored for this tenant (rooms are created with POST /api/v1/rooms)"
    }

    # PATCH: the same checks against the stored rule; a refused change changes nothing.
    rule = await create_rule(api, kind="custom", expression="online > 5")
    reply = await api.patch(f"{RULES}/{rule['id']}", {"expression": "online >", "name": "renamed"})
    assert error_fields(reply)["expression"].startswith("not a valid CEL expression: ")
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"threshold": 0.5})) == {
        "threshold": "applies to the built-in kinds only; a custom rule has an expression"
    }
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"scope": "room"})) == {
        "roomId": "is required when scope is room"
    }
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {})) == {
        "(body)": "give at least one field to change"
    }
    assert error_fields(await api.get(f"{RULES}/not-a-uuid")) == {
        "id": "must be a UUID such as 00000000-0000-0000-0000-000000006c0f; got 'not-a-uuid'"
    }
    stored = (await api.get(f"{RULES}/{rule['id']}")).body
    assert (stored["name"], stored["expression"]) == ("Full", "online > 5")


async def test_patch_to_another_kind_rewrites_the_expressions(api):
    rule = await create_rule(api, kind="custom", expression="online > 5", resolveExpression="online < 2")
    built_in = await api.patch(f"{RULES}/{rule['id']}", {"kind": "capacity"})
    assert built_in.status == 200, built_in.body
    assert (built_in.body["threshold"], built_in.body["expression"], built_in.body["resolveExpression"]) == (
        0.8,
        "utilization > 0.8",
        "utilization < 0.72",
    )
    # Back to custom needs an expression: the built-in's is not the operator's.
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"kind": "custom"})) == {
        "expression": "is required for a custom rule"
    }


async def test_anomaly_rule_takes_a_sensitivity_and_flag_types(api):
    doc = (await api.get("/api/openapi.json", role=None)).body
    rule = await create_rule(api, kind="anomaly", anomalyTypes=["mass_disconnect", "join_storm"])
    check_shape(doc["components"]["schemas"]["AlertRule"], rule, doc, "rule")
    # The default z-score is the server's anomaly_z_threshold; the types are written in one order.
    assert (rule["threshold"], rule["anomalyTypes"], rule["expression"], rule["resolveExpression"]) == (
        api.node.settings.anomaly_z_threshold,
        ["join_storm", "mass_disconnect"],
        "joinStorms + massDisconnects > 0",
        "joinStorms + massDisconnects == 0",
    )
    # A new sensitivity keeps the types; new types keep the sensitivity.
    tuned = (await api.patch(f"{RULES}/{rule['id']}", {"threshold": 5})).body
    assert (tuned["threshold"], tuned["anomalyTypes"]) == (5.0, ["join_storm", "mass_disconnect"])
    tuned = (await api.patch(f"{RULES}/{rule['id']}", {"anomalyTypes": ["flapping"]})).body
    assert (tuned["threshold"], tuned["anomalyTypes"], tuned["expression"]) == (
        5.0,
        ["flapping"],
        "flappingClients > 0",
    )
    assert (await create_rule(api, kind="latency"))["anomalyTypes"] is None
    assert error_fields(
        await api.patch(f"{RULES}/{rule['id']}", {"anomalyTypes": ["flapping", "flapping"]})
    ) == {"anomalyTypes": "must name each type once"}
    assert error_fields(await api.patch(f"{RULES}/{rule['id']}", {"anomalyTypes": ["storm"]})) == {
        "anomalyTypes": "unknown type(s) storm; known: join_storm, leave_storm, latency_spike, "
        "mass_disconnect, flapping"
    }
    assert error_fields(
        await api.post(
            RULES, {"name": "x", "scope": "tenant", "kind": "capacity", "anomalyTypes": ["flapping"]}
        )
    ) == {"anomalyTypes": "applies to the anomaly kind only"}


async def test_roles(api):
    rule = await create_rule(api)
    for method, path, body in [("GET", RULES, None), ("GET", f"{RULES}/{rule['id']}", None)]:
        assert_problem(await api.call(method, path, role="user", json=body), 403, "forbidden")
        assert_problem(await api.call(method, path, role=None, json=body), 401, "unauthorized")
        assert (await api.call(method, path, role="monitor")).status == 200
    body = assert_problem(
        await api.post(RULES, {"name": "x", "scope": "tenant", "kind": "latency"}, role="monitor"),
        403,
        "forbidden",
    )
    assert body["detail"] == "this needs role spidi:admin"
    assert_problem(await api.patch(f"{RULES}/{rule['id']}", {"name": "x"}, role="monitor"), 403, "forbidden")
    assert_problem(await api.delete(f"{RULES}/{rule['id']}", role="monitor"), 403, "forbidden")
    assert_problem(await api.delete(f"{RULES}/{rule['id']}", role="user"), 403, "forbidden")
    assert (await api.get(f"{RULES}/{rule['id']}")).body["name"] == "Full"


async def test_channel_secrets_are_masked_for_monitors(api):
    channels = [
        {"type": "in_app"},
        {"type": "slack", "url": "https://hooks.example.test/services/T0/B0/s3cr3t"},
        {"type": "webhook", "url": "https://hooks.example.test:8443/spidi?token=s3cr3t"},
        {"type": "pagerduty", "routingKey": "R" * 28 + "9a8b"},
        {"type": "email", "to": ["ops@example.test"]},
    ]
    rule = await create_rule(api, channels=channels)
    assert rule["channels"] == channels  # the admin who wrote them reads them back whole
    assert (await api.get(f"{RULES}/{rule['id']}")).body["channels"] == channels

    masked = [
        {"type": "in_app"},
        {"type": "slack", "url": "https://hooks.example.test/***"},
        {"type": "webhook", "url": "https://hooks.example.test:8443/***"},
        {"type": "pagerduty", "routingKey": "***9a8b"},
        {"type": "email", "to": ["ops@example.test"]},
    ]
    got = await api.get(f"{RULES}/{rule['id']}", role="monitor")
    assert got.status == 200 and got.body["channels"] == masked
    listed = (await api.get(RULES, role="monitor")).body["items"]
    assert [r["channels"] for r in listed if r["id"] == rule["id"]] == [masked]
    assert "s3cr3t" not in str(listed) and "R" * 28 not in str(got.body)


async def test_tenants_are_isolated_by_row_level_security(api, pg_dsn):
    mine = await create_rule(api, tenant="acme", name="acme's")
    theirs_room = await create_room(api, "lobby", tenant="globex")
    path = f"{RULES}/{mine['id']}"
    # Another tenant's admin can neither see, change nor delete it; its list does not show it.
    assert_problem(await api.get(path, tenant="globex"), 404, "not-found")
    assert_problem(await api.patch(path, {"name": "hijacked"}, tenant="globex"), 404, "not-found")
    assert_problem(await api.delete(path, tenant="globex"), 404, "not-found")
    assert (await api.get(RULES, tenant="globex")).body["total"] == 0
    assert (await api.get(path, tenant="acme")).body["name"] == "acme's"
    # Nor point a rule of its own at another tenant's room.
    reply = await api.post(
        RULES, {"name": "x", "scope": "room", "roomId": theirs_room["id"], "kind": "latency"}, tenant="acme"
    )
    assert error_fields(reply)["roomId"].startswith(f"no room {theirs_room['id']} is stored for this tenant")

    # Row-level security does it, not only the statements' tenant conditions: as globex, asking
    # for acme's rule by id with acme's tenant in the WHERE clause still finds nothing.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with tenant_transaction(conn, "globex"):
            assert alerts.get_rule(conn, "acme", mine["id"]) is None
            assert alerts.list_rules(conn, "acme") == ([], 0)
            assert alerts.update_rule(conn, "acme", mine["id"], {"name": "x"}, actor="eve") is None
            assert not alerts.delete_rule(conn, "acme", mine["id"], actor="eve")
        # And cannot write a row of acme (the policy's WITH CHECK).
        planted = {"name": "planted", "scope": "tenant", "kind": "latency", "expression": "online > 1"}
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            tenant_transaction(conn, "globex"),
        ):
            alerts.create_rule(conn, "acme", planted, actor="eve")
        name, updated_by = conn.execute(
            "SELECT name, updated_by FROM dat_spd_alert_rule WHERE id = %s", [mine["id"]]
        ).fetchone()
        assert (name, updated_by) == ("acme's", "admin-of-acme")
        assert conn.execute("SELECT count(*) FROM dat_spd_alert_rule").fetchone() == (1,)


async def test_unknown_rule_ids_are_not_found(api):
    assert_problem(await api.get(f"{RULES}/{uuid.uuid4()}"), 404, "not-found")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9/x", "points at a refused loopback address 127.0.0.1"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "points at a refused link-local address 169.254.169.254",
        ),
        ("http://[::ffff:10.0.0.1]/x", "points at a refused private address 10.0.0.1 (as ::ffff:a00:1)"),
        ("http://0x7f000001/x", "points at a refused loopback address 127.0.0.1"),
        ("http://localhost:8080/x", "points at a refused loopback host name localhost"),
    ],
)
@pytest.mark.parametrize("kind", ["webhook", "slack", "teams", "pagerduty"])
async def test_webhook_channels_to_refused_addresses_are_a_400_naming_the_field(api, url, message, kind):
    # Literal internal addresses are refused when the rule is saved (names are checked at send time).
    channel = {"type": kind, "url": url} | ({"routingKey": "K" * 32} if kind == "pagerduty" else {})
    channels = [{"type": "in_app"}, channel]
    reply = await api.post(RULES, {"name": "x", "scope": "tenant", "kind": "capacity", "channels": channels})
    errors = error_fields(reply)
    assert set(errors) == {"channels[1].url"} and errors["channels[1].url"].startswith(message), errors
    assert "webhook_allowed_networks" in errors["channels[1].url"]
    rule = await create_rule(api, channels=[{"type": "webhook", "url": "https://hooks.example.test/x"}])
    reply = await api.patch(f"{RULES}/{rule['id']}", {"channels": channels})
    assert error_fields(reply) == errors
