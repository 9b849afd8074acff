"""History past retention_hot_days: retention moves it to the archive (alert events included), the
API reads it with ?archive=true, and a tenant never reads another's archived rows.

Everything is written the way production writes it: events through the stream and the real writer
(sessions, room samples, alert transitions) at fixed past dates, then one retention pass at a
fixed "now".
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import psycopg
import pytest

from spidi_server.history.partitions import list_archived
from spidi_server.history.retention import apply_retention
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for
from spidi_server.stores import events

from ..history.helpers import FakeSession, ms, room_sample
from .conftest import assert_problem, create_room, error_fields, write_history
from .test_alerts import disabled_rule

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # hot: 90 days (from 2026-09-01), kept: 730 days
OLD, NEW, ANCIENT = "2025-03-10T10:00", "2026-11-20T10:00", "2023-06-10T10:00"
SPAN = {"from": "2023-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


def alert(rule: dict, tenant: str, when: str) -> dict:
    """An alert transition as the evaluator sends it to the writer."""
    return events.alert_event(
        alert_id=str(uuid.uuid4()),
        rule_id=rule["id"],
        tenant=tenant,
        room_id=room_id_for(tenant, "hist"),
        room_code="hist",
        state="firing",
        alert_kind=rule["kind"],
        severity=rule["severity"],
        value=0.97,
        at=ms(when),
        details=orjson.dumps({"ruleName": rule["name"], "when": when}).decode(),
    )


@pytest.fixture
async def archived(api, api_node, redis_sync, pg):
    """Tenants default and acme with sessions, room samples and alerts old (archived), new (hot)
    and ancient (dropped), written through the writer; then one retention pass."""
    rules = {}
    for tenant in ("default", "acme"):
        await create_room(api, "hist", tenant=tenant)
        rules[tenant] = await disabled_rule(api, tenant=tenant)
    plan = [("default", "old-alice", OLD), ("default", "new-bob", NEW), ("default", "ancient", ANCIENT)]
    plan.append(("acme", "acme-old", OLD))
    evs, alerts = [], {}
    for tenant, user, when in plan:
        session = FakeSession(tenant, "hist", user, ms(when))
        session.beat(ms(when) + 10_000, 25)
        evs += [session.started(), session.ended(ms(when) + 30_000, "leave")]
        evs.append(room_sample(tenant, "hist", ms(when), online=[1, 1], latencies=[25]))
        alerts[user] = alert(rules[tenant], tenant, when)
        evs.append(alerts[user])
    await write_history(api_node, redis_sync, evs)

    report = apply_retention(pg, hot_days=90, drop_days=730, now=NOW)
    assert sorted(report.archived) == ["dat_spd_room_stats_p2025_q1", "dat_spd_session_p2025_03"]
    assert {"dat_spd_session_p2023_06", "dat_spd_room_stats_p2023_q2"} <= set(report.dropped)
    # The alert events follow the same ages: 3 older than 90 days archived, of which the one
    # older than 730 days is dropped; the new one stays hot.
    assert (report.alert_events_archived, report.alert_events_dropped) == (3, 1)
    assert pg.execute("SELECT count(*) FROM dat_spd_alert_event").fetchone()[0] == 1
    archived_ids = {str(r[0]) for r in pg.execute("SELECT id FROM spd_archive.dat_spd_alert_event")}
    assert archived_ids == {alerts["old-alice"]["id"], alerts["acme-old"]["id"]}
    assert list_archived(pg) == ["dat_spd_room_stats_p2025_q1", "dat_spd_session_p2025_03"]
    return alerts


async def test_sessions_with_and_without_the_archive(api, archived):
    hot = await api.get("/api/v1/sessions", params=SPAN)
    assert hot.status == 200, hot.body
    assert [s["userId"] for s in hot.body["items"]] == ["new-bob"] and hot.body["total"] == 1
    both = await api.get("/api/v1/sessions", params={**SPAN, "archive": "true"})
    assert [s["userId"] for s in both.body["items"]] == ["new-bob", "old-alice"] and both.body["total"] == 2
    old = both.body["items"][1]
    assert (old["endReason"], old["heartbeatCount"], old["latencyAvgMs"]) == ("leave", 1, 25)
    explicit = await api.get("/api/v1/sessions", params={**SPAN, "archive": "false"})
    assert explicit.body == hot.body
    # The other tenant's archive holds its own session only.
    acme = await api.get("/api/v1/sessions", tenant="acme", params={**SPAN, "archive": "true"})
    assert [s["userId"] for s in acme.body["items"]] == ["acme-old"]


async def test_room_stats_with_and_without_the_archive(api, archived):
    url = f"/api/v1/rooms/{room_id_for('default', 'hist')}/stats"
    day = {"from": "2025-03-10T00:00:00Z", "to": "2025-03-11T00:00:00Z", "bucket": "1h"}
    hot = await api.get(url, role="monitor", params=day)
    assert hot.status == 200 and hot.body["points"] == []
    both = await api.get(url, role="monitor", params={**day, "archive": "true"})
    (point,) = both.body["points"]
    assert (point["ts"], point["onlineMax"], point["joins"], point["leaves"]) == (
        "2025-03-10T10:00:00.000Z",
        1,
        1,
        1,
    )
    assert point["latencyAvgMs"] == 25
    # acme's room of the same code is another room, with acme's archived minute; to the default
    # tenant it is no room at all, archive or not.
    acme_url = f"/api/v1/rooms/{room_id_for('acme', 'hist')}/stats"
    acme = await api.get(acme_url, role="monitor", tenant="acme", params={**day, "archive": "true"})
    assert [p["joins"] for p in acme.body["points"]] == [1]
    assert_problem(
        await api.get(acme_url, role="monitor", params={**day, "archive": "true"}), 404, "not-found"
    )


async def test_alerts_with_and_without_the_archive(api, archived, api_node, redis_sync, pg):
    old_id, new_id = archived["old-alice"]["id"], archived["new-bob"]["id"]
    hot = await api.get("/api/v1/alerts", role="monitor")
    assert [a["id"] for a in hot.body["items"]] == [new_id]
    both = await api.get("/api/v1/alerts", role="monitor", params={"archive": "true"})
    assert [a["id"] for a in both.body["items"]] == [new_id, old_id] and both.body["total"] == 2
    assert both.body["items"][1]["at"] == "2025-03-10T10:00:00.000Z"
    assert (await api.get(f"/api/v1/alerts/{old_id}", role="monitor")).status == 404
    one = await api.get(f"/api/v1/alerts/{old_id}", role="monitor", params={"archive": "true"})
    assert one.status == 200 and one.body["id"] == old_id and one.body["ruleName"] == "Full"
    # Another tenant does not find it, archive or not; its own archived alert it does.
    assert (
        await api.get(f"/api/v1/alerts/{old_id}", role="monitor", tenant="acme", params={"archive": "true"})
    ).status == 404
    acme = await api.get("/api/v1/alerts", role="monitor", tenant="acme", params={"archive": "true"})
    assert [a["id"] for a in acme.body["items"]] == [archived["acme-old"]["id"]]
    # A replay of an archived event (a writer re-reading its stream) does not bring it back hot.
    await write_history(api_node, redis_sync, [archived["old-alice"]])
    assert pg.execute("SELECT count(*) FROM dat_spd_alert_event").fetchone()[0] == 1


async def test_archive_flag_is_validated(api, archived):
    fields = error_fields(await api.get("/api/v1/sessions", params={"archive": "yes"}))
    assert fields == {"archive": "must be true or false"}


def test_archived_rows_stay_behind_row_level_security(archived, pg):
    with tenant_transaction(pg, "acme"):
        for table in ("dat_spd_session", "dat_spd_room_stats", "dat_spd_alert_event"):
            tenants = {r[0] for r in pg.execute(f"SELECT unidad_negocio_id FROM spd_archive.{table}")}
            assert tenants == {"acme"}, table
    # An archived partition named directly is out of the reader's reach, as hot partitions are.
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(pg, "acme"):
        pg.execute("SELECT count(*) FROM spd_archive.dat_spd_session_p2025_03")
    # Readers cannot change the archive.
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(pg, "acme"):
        pg.execute("DELETE FROM spd_archive.dat_spd_alert_event")
    # No tenant set: nothing at all.
    with pg.transaction():
        pg.execute("SET LOCAL ROLE spidi_reader")
        assert pg.execute("SELECT count(*) FROM spd_archive.dat_spd_session").fetchone()[0] == 0
