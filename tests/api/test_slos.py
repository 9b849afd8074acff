"""Latency SLOs through the REST API: CRUD, validation, roles, tenant isolation (row-level
security), and the status computed over 28 days of history written through the writer."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest

from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.stores import events

from ..slo_history import AT, HOUR, MINUTE, degraded_month, sample
from .conftest import assert_problem, check_shape, create_room, error_fields, write_history

SLOS = "/api/v1/slos"
SLO_KEYS = {
    "id",
    "name",
    "scope",
    "roomId",
    "roomType",
    "roomTypeId",
    "objective",
    "thresholdMs",
    "percentile",
    "target",
    "windowDays",
    "createdAt",
    "createdBy",
    "updatedAt",
    "updatedBy",
}
BOUNDS = ", ".join(str(b) for b in events.LATENCY_BUCKETS_MS)


async def create_slo(api, tenant: str = "default", **fields) -> dict:
    """POST an SLO as the tenant's admin (tenant-wide, p95 <= 150 ms unless told); the created SLO."""
    body = {
        "name": "Snappy",
        "scope": "tenant",
        "objective": "percentile",
        "thresholdMs": 150,
        "percentile": 95,
    }
    reply = await api.post(SLOS, {**body, **fields}, tenant=tenant)
    assert reply.status == 201, reply.body
    return reply.body


async def test_slo_crud_round_trip(api, caplog):
    caplog.set_level(logging.INFO, "spidi.api")
    doc = (await api.get("/api/openapi.json", role=None)).body
    room = await create_room(api, "stage")
    reply = await api.post(
        SLOS,
        {
            "name": "Stage p95",
            "scope": "room",
            "roomId": room["id"],
            "objective": "percentile",
            "thresholdMs": 150,
            "percentile": 95,
        },
        sub="alice",
    )
    assert reply.status == 201, reply.body
    slo = reply.body
    assert set(slo) == SLO_KEYS
    check_shape(doc["components"]["schemas"]["Slo"], slo, doc, "slo")
    assert reply.headers["Location"] == f"{SLOS}/{slo['id']}"
    # The percentile form is stored as its share: p95 <= 150 ms == 95 % of heartbeats <= 150 ms.
    assert (slo["objective"], slo["percentile"], slo["target"], slo["thresholdMs"]) == (
        "percentile",
        95,
        0.95,
        150,
    )
    assert (slo["scope"], slo["roomId"], slo["windowDays"], slo["createdBy"]) == (
        "room",
        room["id"],
        28,
        "alice",
    )
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("slo_")] == ["slo_created"]
    (line,) = [r for r in caplog.records if r.name == "spidi.audit" and r.resource_type == "slo"]
    assert (line.actor, line.action, line.resource_type, line.resource_id) == (
        "alice",
        "create",
        "slo",
        slo["id"],
    )

    assert (await api.get(f"{SLOS}/{slo['id']}", role="monitor")).body == slo
    listed = (await api.get(SLOS, role="monitor")).body
    assert listed["total"] == 1 and listed["items"] == [slo]
    check_shape(doc["components"]["schemas"]["SloList"], listed, doc, "list")

    # To the share form: it takes a target, and drops the percentile.
    changed = await api.patch(f"{SLOS}/{slo['id']}", {"objective": "share", "target": 0.99, "windowDays": 7})
    assert changed.status == 200, changed.body
    assert (changed.body["objective"], changed.body["percentile"], changed.body["target"]) == (
        "share",
        None,
        0.99,
    )
    assert changed.body["windowDays"] == 7 and changed.body["thresholdMs"] == 150
    # The target alone, then another threshold (a bucket bound).
    changed = await api.patch(f"{SLOS}/{slo['id']}", {"target": 0.995, "thresholdMs": 300})
    assert (changed.body["target"], changed.body["thresholdMs"]) == (0.995, 300)
    (line,) = [r for r in caplog.records if r.name == "spidi.audit" and r.action == "update"][-1:]
    assert line.changes == {"target": [0.99, 0.995], "thresholdMs": [150, 300]}
    # To scope roomType: the room goes.
    assert (await api.post("/api/v1/room-types", {"code": "webrtc", "name": "WebRTC"})).status == 201
    changed = await api.patch(f"{SLOS}/{slo['id']}", {"scope": "roomType", "roomType": "webrtc"})
    assert changed.status == 200, changed.body
    assert (changed.body["scope"], changed.body["roomType"], changed.body["roomId"]) == (
        "roomType",
        "webrtc",
        None,
    )

    assert (await api.delete(f"{SLOS}/{slo['id']}")).status == 204
    assert_problem(await api.get(f"{SLOS}/{slo['id']}"), 404, "not-found")
    assert_problem(await api.delete(f"{SLOS}/{slo['id']}"), 404, "not-found")
    assert (await api.get(SLOS)).body["total"] == 0


async def test_validation_errors(api):
    # A threshold off the histogram's bounds: refused with the bounds listed.
    errors = error_fields(
        await api.post(
            SLOS, {"name": "x", "scope": "tenant", "objective": "share", "thresholdMs": 140, "target": 0.99}
        )
    )
    assert errors == {
        "thresholdMs": f"must be one of the latency histogram's bucket bounds ({BOUNDS} ms), so the share "
        "under it is counted exactly; got 140"
    }
    # Every mistake of a body in one answer.
    errors = error_fields(
        await api.post(
            SLOS,
            {
                "name": "",
                "scope": "room",
                "objective": "percentile",
                "thresholdMs": -1,
                "percentile": 95,
                "windowDays": 91,
                "colour": "red",
            },
        )
    )
    assert set(errors) == {"name", "thresholdMs", "windowDays", "colour"}
    assert errors["windowDays"] == "must be an integer from 1 to 90"
    # Whole-SLO checks: the objective's own field, the scope's target.
    errors = error_fields(
        await api.post(
            SLOS,
            {"name": "x", "scope": "room", "objective": "percentile", "thresholdMs": 150, "target": 0.9},
        )
    )
    assert errors == {
        "roomId": "is required when scope is room",
        "target": "only with objective share (a percentile objective's target is percentile / 100)",
    }
    errors = error_fields(
        await api.post(SLOS, {"name": "x", "scope": "tenant", "objective": "share", "thresholdMs": 150})
    )
    assert errors == {"target": "is required when objective is share (e.g. 0.99)"}
    errors = error_fields(
        await api.post(
            SLOS, {"name": "x", "scope": "tenant", "objective": "share", "thresholdMs": 150, "target": 1}
        )
    )
    assert errors == {"target": "must be a share between 0 and 1 (exclusive), e.g. 0.99"}
    errors = error_fields(
        await api.post(
            SLOS,
            {
                "name": "x",
                "scope": "tenant",
                "objective": "percentile",
                "thresholdMs": 150,
                "percentile": 100,
            },
        )
    )
    assert errors == {"percentile": "must be between 0 and 100 (exclusive), e.g. 95 or 99.9"}
    errors = error_fields(
        await api.post(
            SLOS,
            {
                "name": "x",
                "scope": "roomType",
                "roomType": "nope",
                "objective": "percentile",
                "thresholdMs": 150,
                "percentile": 95,
            },
        )
    )
    assert list(errors) == ["roomType"]
    errors = error_fields(
        await api.post(
            SLOS,
            {
                "name": "x",
                "scope": "room",
                "roomId": str(uuid.uuid4()),
                "objective": "percentile",
                "thresholdMs": 150,
                "percentile": 95,
            },
        )
    )
    assert errors["roomId"].startswith("no room ")
    slo = await create_slo(api)
    assert error_fields(await api.patch(f"{SLOS}/{slo['id']}", {"thresholdMs": 151})).keys() == {
        "thresholdMs"
    }
    assert error_fields(await api.patch(f"{SLOS}/{slo['id']}", {})) == {
        "(body)": "give at least one field to change"
    }
    assert error_fields(await api.get(f"{SLOS}/{slo['id']}/status", params={"at": "yesterday"})).keys() == {
        "at"
    }
    assert error_fields(await api.get(f"{SLOS}/not-a-uuid")).keys() == {"id"}


async def test_roles_and_tenant_isolation(api, pg_dsn):
    slo = await create_slo(api)
    path = f"{SLOS}/{slo['id']}"
    # Monitors read; only admins write; client apps do neither.
    assert (await api.get(path, role="monitor")).status == 200
    assert (await api.get(path + "/status", role="monitor")).status == 200
    for call in (
        api.post(SLOS, {"name": "m", "scope": "tenant"}, role="monitor"),
        api.patch(path, {"name": "m"}, role="monitor"),
        api.delete(path, role="monitor"),
        api.get(SLOS, role="user"),
        api.get(path + "/status", role="user"),
    ):
        assert_problem(await call, 403, "forbidden")
    assert_problem(await api.get(SLOS, role=None), 401, "unauthorized")

    # Another tenant sees nothing of it, by list, id, status or change.
    assert (await api.get(SLOS, tenant="acme")).body["total"] == 0
    assert_problem(await api.get(path, tenant="acme"), 404, "not-found")
    assert_problem(await api.get(path + "/status", tenant="acme"), 404, "not-found")
    assert_problem(await api.patch(path, {"name": "stolen"}, tenant="acme"), 404, "not-found")
    assert_problem(await api.delete(path, tenant="acme"), 404, "not-found")
    assert (await api.get(path)).body["name"] == "Snappy"

    # Row-level security below the API: the reader role sees and writes only its tenant's rows.
    with psycopg.connect(pg_dsn) as conn:
        with tenant_transaction(conn, "acme") as c:
            assert c.execute("SELECT count(*) FROM dat_spd_slo").fetchone()[0] == 0
            assert c.execute("UPDATE dat_spd_slo SET name = 'x'").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, "acme") as c:
            c.execute(
                """INSERT INTO dat_spd_slo (unidad_negocio_id, name, scope, objective, threshold_ms, target)
                   VALUES ('default', 'forged', 'tenant', 'share', 150, 0.99)"""
            )
        with tenant_transaction(conn, "default") as c:
            assert c.execute("SELECT count(*) FROM dat_spd_slo").fetchone()[0] == 1


# -- the status, over 28 days of history --------------------------------------------------------


@pytest.fixture
async def month(api, api_node, redis_sync):
    """Rooms stage (the degraded month) and calm (one good minute), written through the writer."""
    for code in ("webrtc", "chat"):
        assert (await api.post("/api/v1/room-types", {"code": code, "name": code})).status == 201
    stage = await create_room(api, "stage", type="webrtc")
    calm = await create_room(api, "calm", type="chat")
    evs = degraded_month("stage") + [sample("calm", AT - 3 * HOUR, 1000, 0)]
    evs.append(sample("stage", AT, 0, 1000))  # at the end of the windows: counted by none
    evs.append(sample("stage", AT - 28 * 24 * HOUR - MINUTE, 0, 1000))  # before the 28 days
    evs.append(sample("elsewhere", AT - HOUR, 0, 1000, tenant="acme"))  # another tenant's
    await write_history(api_node, redis_sync, evs)
    return stage, calm


def window(status: dict, label: str) -> dict:
    return next(w for w in status["windows"] if w["window"] == label)


async def test_status_over_28_days_then_a_bad_hour(api, month):
    stage, calm = month
    doc = (await api.get("/api/openapi.json", role=None)).body
    slo = await create_slo(
        api, name="Stage", scope="room", roomId=stage["id"], objective="share", target=0.99, percentile=None
    )
    reply = await api.get(f"{SLOS}/{slo['id']}/status", params={"at": "2026-05-29T12:00:00Z"}, role="monitor")
    assert reply.status == 200, reply.body
    status = reply.body
    check_shape(doc["components"]["schemas"]["SloStatus"], status, doc, "status")
    assert (status["at"], status["roomId"], status["target"], status["windowDays"]) == (
        "2026-05-29T12:00:00.000Z",
        None,
        0.99,
        28,
    )
    # 28 days: 671 hourly minutes (995 of 1000 fast) and the last hour's 60 minutes (80 of 100).
    good, total = 671 * 995 + 60 * 80, 671 * 1000 + 60 * 100
    assert (status["good"], status["total"]) == (good, total) == (672_445, 677_000)
    assert status["compliance"] == pytest.approx(good / total)  # 0.99327: the SLO is met
    assert status["met"] is True
    # 4555 slow heartbeats of a budget of 1 % x 677000 = 6770: 67.3 % spent, 32.7 % left.
    assert status["errorBudgetRemaining"] == pytest.approx(1 - (total - good) / (0.01 * total))
    assert status["errorBudgetRemaining"] == pytest.approx(0.32718, abs=1e-5)
    # Burn rates: the last hour burns 20 % / 1 % = 20x; 6 h mixes 5 good hours in; 3 d more of them.
    assert status["burnRates"] == pytest.approx(
        {
            "5m": 20.0,
            "30m": 20.0,
            "1h": 20.0,
            "6h": (25 + 1200) / 11_000 / 0.01,
            "3d": (355 + 1200) / 77_000 / 0.01,
        }
    )
    assert (window(status, "5m")["good"], window(status, "5m")["total"]) == (400, 500)
    assert (window(status, "6h")["good"], window(status, "6h")["total"]) == (5 * 995 + 4800, 11_000)
    assert [w["window"] for w in status["windows"]] == ["5m", "30m", "1h", "6h", "3d", "28d"]

    # The same history against p95 <= 150 ms: a budget of 5 %, so the bad hour burns 4x.
    p95 = await create_slo(api, name="p95", scope="room", roomId=stage["id"])
    status = (await api.get(f"{SLOS}/{p95['id']}/status", params={"at": "2026-05-29T12:00:00Z"})).body
    assert status["burnRates"]["1h"] == pytest.approx(4.0)
    assert status["errorBudgetRemaining"] == pytest.approx(1 - (total - good) / (0.05 * total))
    # At 300 ms every heartbeat is good.
    loose = await create_slo(api, name="loose", scope="room", roomId=stage["id"], thresholdMs=300)
    status = (await api.get(f"{SLOS}/{loose['id']}/status", params={"at": "2026-05-29T12:00:00Z"})).body
    assert (status["compliance"], status["errorBudgetRemaining"], status["burnRates"]["1h"]) == (
        1.0,
        1.0,
        0.0,
    )

    # A window without heartbeats: no compliance, no burn, the whole budget left.
    status = (await api.get(f"{SLOS}/{slo['id']}/status", params={"at": "2026-01-01T00:00:00Z"})).body
    assert (status["total"], status["compliance"], status["met"], status["errorBudgetRemaining"]) == (
        0,
        None,
        None,
        1.0,
    )
    assert set(status["burnRates"].values()) == {None}


async def test_status_of_a_tenant_and_a_room_type_and_one_room(api, month):
    stage, calm = month
    at = {"at": "2026-05-29T12:00:00Z"}
    tenant = await create_slo(api, objective="share", target=0.99, percentile=None)
    status = (await api.get(f"{SLOS}/{tenant['id']}/status", params=at)).body
    # Both rooms of the tenant (calm's 1000 good ones too), never another tenant's.
    assert (status["good"], status["total"]) == (672_445 + 1000, 677_000 + 1000)
    assert status["burnRates"]["6h"] == pytest.approx(1225 / 12_000 / 0.01)
    # One room of the scope.
    status = (await api.get(f"{SLOS}/{tenant['id']}/status", params={**at, "roomId": calm["id"]})).body
    assert (status["roomId"], status["good"], status["total"], status["compliance"]) == (
        calm["id"],
        1000,
        1000,
        1.0,
    )
    # A room type: only its rooms.
    chat = await create_slo(
        api, scope="roomType", roomType="chat", objective="share", target=0.99, percentile=None
    )
    status = (await api.get(f"{SLOS}/{chat['id']}/status", params=at)).body
    assert (status["good"], status["total"]) == (1000, 1000)
    errors = error_fields(await api.get(f"{SLOS}/{chat['id']}/status", params={**at, "roomId": stage["id"]}))
    assert errors == {"roomId": f"room {stage['id']} is not in this SLO's scope"}


async def test_slo_watched_by_a_burn_rule_cannot_be_deleted(api):
    slo = await create_slo(api)
    reply = await api.post(
        "/api/v1/alert-rules", {"name": "Burn", "scope": "tenant", "kind": "slo_burn", "sloId": slo["id"]}
    )
    assert reply.status == 201, reply.body
    rule = reply.body
    assert (rule["kind"], rule["sloId"], rule["burnPolicy"], rule["threshold"]) == (
        "slo_burn",
        slo["id"],
        "page",
        14.4,
    )
    assert rule["expression"] == "burnRate1h > 14.4 && burnRate5m > 14.4"
    assert rule["resolveExpression"] == "burnRate1h < 12.96 || burnRate5m < 12.96"
    # The ticket policy: its windows and its default factor.
    changed = (await api.patch(f"/api/v1/alert-rules/{rule['id']}", {"burnPolicy": "ticket"})).body
    assert (changed["burnPolicy"], changed["threshold"]) == ("ticket", 6.0)
    assert changed["expression"] == "burnRate6h > 6.0 && burnRate30m > 6.0"

    body = assert_problem(await api.delete(f"{SLOS}/{slo['id']}"), 409, "conflict")
    assert "'Burn'" in body["detail"]
    # Rule checks: an SLO is required, must be the tenant's, and only for slo_burn.
    errors = error_fields(
        await api.post("/api/v1/alert-rules", {"name": "b", "scope": "tenant", "kind": "slo_burn"})
    )
    assert errors == {"sloId": "is required when kind is slo_burn"}
    other = await create_slo(api, tenant="acme")
    errors = error_fields(
        await api.post(
            "/api/v1/alert-rules", {"name": "b", "scope": "tenant", "kind": "slo_burn", "sloId": other["id"]}
        )
    )
    assert errors == {"sloId": f"no SLO {other['id']} is stored for this tenant (/api/v1/slos)"}
    errors = error_fields(
        await api.post(
            "/api/v1/alert-rules",
            {"name": "b", "scope": "tenant", "kind": "latency", "sloId": slo["id"], "burnPolicy": "page"},
        )
    )
    assert errors == {
        "sloId": "applies to the slo_burn kind only",
        "burnPolicy": "applies to the slo_burn kind only",
    }
    # A custom rule cannot name the burn rates.
    errors = error_fields(
        await api.post(
            "/api/v1/alert-rules",
            {"name": "b", "scope": "tenant", "kind": "custom", "expression": "burnRate1h > 1.0"},
        )
    )
    assert errors["expression"].startswith("unknown metric(s) burnRate1h")
    # Once the rule is gone the SLO may go.
    assert (await api.delete(f"/api/v1/alert-rules/{rule['id']}")).status == 204
    assert (await api.delete(f"{SLOS}/{slo['id']}")).status == 204
