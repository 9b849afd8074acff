"""The SLO arithmetic (alerting/slo.py): thresholds on bucket bounds, the two objective forms, and
compliance, burn rate and budget from counts; and the reader surviving PostgreSQL being away."""

from __future__ import annotations

import logging

import pytest

from spidi_server.alerting import slo
from spidi_server.alerting.rules import AlertRule
from spidi_server.alerting.slo_reader import SloReader, slo_from_row
from spidi_server.metrics import NodeMetrics
from spidi_server.stores.events import LATENCY_BUCKETS_MS


def test_threshold_must_be_a_bucket_bound():
    assert [slo.bucket_count(b) for b in LATENCY_BUCKETS_MS] == list(range(1, len(LATENCY_BUCKETS_MS) + 1))
    assert slo.bucket_count(150.0) == LATENCY_BUCKETS_MS.index(150) + 1
    for bad in (0, 149.9, 151, 6000):
        with pytest.raises(slo.SloError) as caught:
            slo.bucket_count(bad)
        assert caught.value.field == "thresholdMs" and "5, 10, 25, 50" in caught.value.message


def test_both_objective_forms_are_one_share():
    assert slo.objective_target("percentile", 95, None) == 0.95
    assert slo.objective_target("percentile", 99.9, None) == 0.999
    assert slo.objective_target("share", None, 0.99) == 0.99
    for args, field in [
        (("percentile", None, None), "percentile"),
        (("percentile", 95, 0.9), "target"),
        (("percentile", 0, None), "percentile"),
        (("share", None, None), "target"),
        (("share", 95, 0.99), "percentile"),
        (("share", None, 1.0), "target"),
        (("median", None, 0.5), "objective"),
    ]:
        with pytest.raises(slo.SloError) as caught:
            slo.objective_target(*args)
        assert caught.value.field == field, args


def test_compliance_burn_rate_and_budget():
    c = slo.Counts(good=995, total=1000)
    assert slo.compliance(c) == 0.995 and c.bad == 5
    assert slo.burn_rate(c, 0.99) == pytest.approx(0.5)
    assert slo.budget_remaining(c, 0.99) == pytest.approx(0.5)
    over = slo.Counts(good=80, total=100)
    assert slo.burn_rate(over, 0.99) == pytest.approx(20.0)
    assert slo.budget_remaining(over, 0.99) == pytest.approx(-19.0)
    empty = slo.Counts()
    assert (slo.compliance(empty), slo.burn_rate(empty, 0.99), slo.budget_remaining(empty, 0.99)) == (
        None,
        0.0,
        1.0,
    )
    assert slo.burn_variables({"1h": over}, 0.99) == {
        "burnRate5m": 0.0,
        "burnRate30m": 0.0,
        "burnRate1h": pytest.approx(20.0),
        "burnRate6h": 0.0,
    }


ROW = {
    "slo_id": "00000000-0000-0000-0000-000000000001",
    "tenant": "default",
    "name": "fast",
    "scope": "tenant",
    "room_id": None,
    "room_type_id": None,
    "threshold_ms": 150.0,
    "target": 0.99,
    "window_days": 28,
}


def test_slo_scope_and_a_stored_threshold_off_the_bounds(caplog, settings):
    s = slo_from_row(ROW)
    assert s.covers("any-room", None) and s.buckets == 7
    room = slo_from_row({**ROW, "scope": "room", "room_id": "r1"})
    assert room.covers("r1", None) and not room.covers("r2", None)
    typed = slo_from_row({**ROW, "scope": "room_type", "room_type_id": "t1"})
    assert typed.covers("r2", "t1") and not typed.covers("r2", "t2") and not typed.covers("r2", None)
    reader = SloReader(settings, NodeMetrics(), "postgresql://unused")
    reader.load([ROW, {**ROW, "slo_id": "00000000-0000-0000-0000-000000000002", "threshold_ms": 140.0}])
    assert list(reader.slos) == [ROW["slo_id"]]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == ["slo_unusable"]


async def test_reader_survives_postgresql_away(caplog, settings):
    """Nothing listens on the DSN's port: the read fails in the background, is logged once per
    outage, and the rules keep evaluating on zeros (no figures) instead of failing the round."""
    reader = SloReader(settings, NodeMetrics(), "postgresql://spidi@127.0.0.1:9/none?connect_timeout=1")
    reader.load([ROW])
    rule = AlertRule(
        "r", "default", "burn", "slo_burn", "burnRate1h > 14.4 && burnRate5m > 14.4", slo_id=ROW["slo_id"]
    )
    for _ in range(2):
        reader._burn_read.clear()  # due again at once
        reader._budget_read = float("-inf")
        reader.refresh([rule], 1_780_000_000_000)
        await reader.settled()
    failed = [r for r in caplog.records if r.getMessage() == "slo_read_failed"]
    assert len(failed) == 1
    assert reader.variables(ROW["slo_id"], "room")["burnRate1h"] == 0.0
    assert not list(reader.metrics.slo_compliance.collect()[0].samples)
    await reader.stop(1.0)
