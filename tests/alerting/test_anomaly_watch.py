"""The evaluator's anomaly reads and stored flags against a real PostgreSQL, with sessions written
by the writer: flags stored when they rise, carried on by a new leader, ended when they clear."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from psycopg.rows import dict_row

from spidi_server.alerting.anomaly_watch import AnomalyWatch
from spidi_server.alerting.readings import RoomRef
from spidi_server.alerting.rules import AlertRule, make_rule_expressions
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for

from ..history.helpers import (
    FakeSession,
    hist_of,
    ms,
    push,
    quantile,
    room_sample,
    running_writer,
    wait_for,
    written,
)
from .test_evaluator import add_rule

T = ms("2026-03-02T12:00")
WEEK_MS = 7 * 86_400_000


def stored(dsn: str) -> list[dict]:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT flag, group_key, value, started_at, ended_at, room_code FROM dat_spd_anomaly ORDER BY flag, group_key"
        ).fetchall()


async def test_flags_rise_carry_over_to_a_new_leader_and_clear(settings, redis_sync, pg_dsn):
    settings = dataclasses.replace(
        settings,
        postgres_dsn=pg_dsn,
        writer_flush_interval_s=0.1,
        anomaly_min_excess=5,
        anomaly_flap_reconnects=3,
    ).validate()
    # A client reconnecting 4 times (5 sessions, each left cleanly), then 6 sessions of app 2.0 dropped at once.
    flappy = [FakeSession("acme", "hall", "flappy", T + i * 1000, client_id="web") for i in range(5)]
    dropped = [FakeSession("acme", "hall", f"u{i}", T + 10_000 + i, app_version="2.0") for i in range(6)]
    evs = [s.started() for s in flappy + dropped]
    evs += [s.ended(T + 1000 * i + 500) for i, s in enumerate(flappy)]
    evs += [s.ended(T + 30_000, "disconnect") for s in dropped]
    with running_writer(settings):
        push(redis_sync, evs)
        wait_for(lambda: written(redis_sync) == len(evs))
    rule_id = add_rule(pg_dsn, "acme", "anomaly", threshold=3.5)
    fire, resolve, _ = make_rule_expressions("anomaly", 3.5, None, None, 0.1)
    rule = AlertRule(rule_id, "acme", "r", "anomaly", fire, resolve, threshold=3.5).compile()
    room = RoomRef(room_id_for("acme", "hall"), "acme", "hall")
    targets = {rule_id: [room]}

    watch = AnomalyWatch(settings, pg_dsn)
    found = (await watch.evaluate([rule], targets, {}, T + 40_000))[(rule_id, room.room_id)]
    assert found.counts == {
        "joinStorms": 0,
        "leaveStorms": 0,
        "latencySpikes": 0,
        "massDisconnects": 3,  # appVersion=2.0, os=Android and ip=10.0.0.0/24: six each
        "flappingClients": 1,
    }
    rows = stored(pg_dsn)
    assert [(r["flag"], r["group_key"], r["value"], r["ended_at"]) for r in rows] == [
        ("flapping", "flappy/web", 4.0, None),
        ("mass_disconnect", "appVersion=2.0", 6.0, None),
        ("mass_disconnect", "ip=10.0.0.0/24", 6.0, None),
        ("mass_disconnect", "os=Android", 6.0, None),
    ]
    assert all(r["room_code"] == "hall" and r["started_at"].timestamp() * 1000 == T + 40_000 for r in rows)
    await watch.close()

    # A new leader sees the same flags: it carries them on rather than raising them again.
    successor = AnomalyWatch(settings, pg_dsn)
    await successor.evaluate([rule], targets, {}, T + 45_000)
    assert stored(pg_dsn) == rows
    await successor.close()

    # Eleven minutes later the drops are out of the last minute and the reconnects out of the window.
    later = AnomalyWatch(settings, pg_dsn)
    found = (await later.evaluate([rule], targets, {}, T + 660_000))[(rule_id, room.room_id)]
    assert sum(found.counts.values()) == 0 and found.flags == []
    assert {r["ended_at"].timestamp() * 1000 for r in stored(pg_dsn)} == {T + 660_000}
    await later.close()

    # Raised again, then the rule is gone (deleted, disabled): its flags end with it.
    again = AnomalyWatch(settings, pg_dsn)
    await again.evaluate([rule], targets, {}, T + 40_000)
    assert sum(r["ended_at"] is None for r in stored(pg_dsn)) == 4
    assert await again.evaluate([], {}, {}, T + 41_000) == {}
    rows = stored(pg_dsn)
    assert len(rows) == 8 and all(r["ended_at"] is not None for r in rows)
    await again.close()

    # Row-level security: a tenant's reader sees its own flags only (no tenant condition here).
    with psycopg.connect(pg_dsn) as conn:
        for tenant, expected in (("acme", 8), ("other", 0)):
            with tenant_transaction(conn, tenant) as tx:
                assert tx.execute("SELECT count(*) FROM dat_spd_anomaly").fetchone()[0] == expected


async def test_latency_spike_against_the_hour_of_week_p95(settings, redis_sync, pg_dsn):
    settings = dataclasses.replace(settings, postgres_dsn=pg_dsn, writer_flush_interval_s=0.1).validate()
    calm, slow = [20.0] * 20, [900.0] * 20
    evs = [
        room_sample("acme", "stage", T - week * WEEK_MS + m * 60_000, latencies=calm)
        for week in (1, 2)
        for m in range(60)
    ]
    evs += [
        room_sample("acme", "stage", T, latencies=calm),
        room_sample("acme", "stage", T + 60_000, latencies=slow),
    ]
    with running_writer(settings):
        push(redis_sync, evs)
        wait_for(lambda: written(redis_sync) == len(evs))
    rule_id = add_rule(pg_dsn, "acme", "anomaly", threshold=3.5)
    fire, resolve, _ = make_rule_expressions(
        "anomaly", 3.5, None, None, 0.1, None, anomaly_types=["latency_spike"]
    )
    rule = AlertRule(rule_id, "acme", "r", "anomaly", fire, resolve, threshold=3.5).compile()
    room = RoomRef(room_id_for("acme", "stage"), "acme", "stage")

    async def spikes(now_ms: int) -> list:
        watch = AnomalyWatch(settings, pg_dsn)
        try:
            return (await watch.evaluate([rule], {rule_id: [room]}, {}, now_ms))[
                (rule_id, room.room_id)
            ].flags
        finally:
            await watch.close()

    (spike,) = await spikes(T + 150_000)  # 12:02:30: the last complete minute is 12:01, the slow one
    assert (spike.flag, spike.metric, spike.minutes) == ("latency_spike", "latencyP95Ms", 120)
    assert spike.value == pytest.approx(quantile(hist_of(slow), 0.95))
    assert (spike.median, spike.mad) == (pytest.approx(quantile(hist_of(calm), 0.95)), 0.0)
    # 12:03:10, the samples of 12:02 not in yet: 12:01 still counts, the spike does not blink off.
    assert [f.flag for f in await spikes(T + 190_000)] == ["latency_spike"]
    assert await spikes(T + 250_000) == []  # 12:04:10: nothing measured in the last two minutes
