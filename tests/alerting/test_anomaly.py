"""Anomaly statistics and the anomaly rule kind, without I/O: robust z-scores against a baseline,
the floors that keep a calm room quiet, grouping of abnormal ends, flapping, and the rule's
expressions written from its flag types."""

from __future__ import annotations

import pytest

from spidi_server.alerting import rules
from spidi_server.alerting.anomaly import (
    Baseline,
    Recent,
    Sensitivity,
    Stat,
    counts,
    drop_groups,
    flags,
    ip_prefix,
    robust_z,
)

CALM = Baseline(
    minutes=180,
    latency_minutes=180,
    joins=Stat(2.0, 1.0),
    leaves=Stat(2.0, 1.0),
    drops=Stat(0.0, 0.0),
    latency_p95=Stat(40.0, 5.0),
)
FLAT_ZERO = Baseline(180, 0, Stat(0.0, 0.0), Stat(0.0, 0.0), Stat(0.0, 0.0), None)
SENS = Sensitivity(z=3.5, min_excess=10, latency_min_excess_ms=100.0, flap_reconnects=5)


def test_robust_z_uses_the_scaled_mad_with_a_floor():
    assert robust_z(12.0, Stat(2.0, 1.0)) == pytest.approx(10 / 1.4826)
    assert robust_z(2.0, Stat(0.0, 0.0)) == 2.0  # MAD 0: the scale is the floor, not a division by 0
    assert robust_z(50.0, Stat(40.0, 0.0), floor=5.0) == 2.0


def test_a_flat_zero_baseline_does_not_flag_two_joins_but_flags_a_storm():
    assert flags(FLAT_ZERO, Recent(joins=2), SENS, rules.ANOMALY_TYPES) == []
    assert flags(FLAT_ZERO, Recent(joins=9), SENS, rules.ANOMALY_TYPES) == []  # z 9 > 3.5, excess 9 < 10
    (storm,) = flags(FLAT_ZERO, Recent(joins=10), SENS, rules.ANOMALY_TYPES)
    assert storm.to_json() == {
        "flag": "join_storm",
        "metric": "joinsPerMin",
        "value": 10.0,
        "group": None,
        "baselineMedian": 0.0,
        "baselineMad": 0.0,
        "baselineMinutes": 180,
        "z": 10.0,
        "threshold": 3.5,
    }


def test_sensitivity_is_the_rules_z_threshold():
    recent = Recent(joins=14, leaves=2)  # z = 12 / 1.4826 = 8.09
    assert [f.flag for f in flags(CALM, recent, SENS, ["join_storm", "leave_storm"])] == ["join_storm"]
    assert flags(CALM, recent, Sensitivity(z=9.0), ["join_storm"]) == []
    assert flags(CALM, recent, SENS, ["leave_storm"]) == []  # only the types asked for


def test_latency_spike_needs_its_own_excess_in_ms():
    assert flags(CALM, Recent(latency_p95=120.0), SENS, ["latency_spike"]) == []  # +80 ms < 100
    (spike,) = flags(CALM, Recent(latency_p95=400.0), SENS, ["latency_spike"])
    assert spike.metric == "latencyP95Ms" and spike.median == 40.0 and spike.mad == 5.0
    assert spike.z == pytest.approx(360 / (1.4826 * 5))


def test_without_a_baseline_storms_are_not_judged_but_mass_disconnects_and_flapping_are():
    recent = Recent(
        joins=500, drops={"appVersion=2.0": 12, "os=iOS": 3}, reconnects={"u1/web": 6, "u2/web": 5}
    )
    found = flags(None, recent, SENS, rules.ANOMALY_TYPES)
    assert [(f.flag, f.group, f.value) for f in found] == [
        ("mass_disconnect", "appVersion=2.0", 12.0),
        ("flapping", "u1/web", 6.0),  # more than 5 reconnects; u2's 5 are not more
    ]
    assert (found[0].median, found[0].mad, found[0].minutes) == (0.0, 0.0, 0)  # judged against zero


def test_abnormal_ends_are_grouped_by_app_version_os_and_ip_prefix():
    groups = drop_groups(
        [
            ("2.0", "iOS", "203.0.113.7", 3),
            ("2.0", "Android", "203.0.113.200", 2),
            ("1.9", None, "2001:db8:1:2::5", 4),
            (None, "iOS", "not an address", 1),
        ]
    )
    assert groups == {
        "appVersion=2.0": 5,
        "appVersion=1.9": 4,
        "os=iOS": 4,
        "os=Android": 2,
        "ip=203.0.113.0/24": 5,
        "ip=2001:db8:1::/48": 4,
    }
    assert ip_prefix("::ffff:10.1.2.3") == "10.1.2.0/24" and ip_prefix(None) is None


def test_counts_are_the_rules_cel_metrics():
    found = flags(None, Recent(drops={"os=iOS": 20, "ip=10.0.0.0/24": 20}), SENS, ["mass_disconnect"])
    assert counts(found, ["mass_disconnect", "flapping"], rules.ANOMALY_VARIABLES) == {
        "massDisconnects": 2,
        "flappingClients": 0,
    }


def test_anomaly_rule_expressions_come_from_its_types_and_threshold():
    fire, resolve, z = rules.make_rule_expressions(
        "anomaly", None, None, None, 0.1, None, anomaly_types=["flapping", "join_storm"], default_z=3.5
    )
    assert (fire, resolve, z) == (
        "joinStorms + flappingClients > 0",
        "joinStorms + flappingClients == 0",
        3.5,
    )
    rule = rules.AlertRule("r", "t", "n", "anomaly", fire, resolve, threshold=z).compile()
    assert rule.anomaly_types == ("join_storm", "flapping")
    values = {**rules._SAMPLE, "joinStorms": 1, "flappingClients": 2}
    assert rule.fires(values) and rule.value(values) == 3.0
    assert rules.make_rule_expressions("anomaly", 5, None, None, 0.1)[0] == (
        "joinStorms + leaveStorms + latencySpikes + massDisconnects + flappingClients > 0"
    )
    custom = rules.AlertRule("c", "t", "n", "custom", "massDisconnects > 0 && online > 100").compile()
    assert custom.anomaly_types == ("mass_disconnect",)


@pytest.mark.parametrize(
    ("kind", "threshold", "types", "default_z", "field", "message"),
    [
        ("anomaly", None, ["storm"], 3.5, "anomalyTypes", "must be a non-empty list"),
        ("anomaly", None, [], 3.5, "anomalyTypes", "must be a non-empty list"),
        ("latency", None, ["flapping"], 3.5, "anomalyTypes", "applies to the anomaly kind only"),
        ("anomaly", -1, None, 3.5, "threshold", "must be a positive number"),
        ("anomaly", None, None, None, "threshold", "needs a z-score threshold"),
    ],
)
def test_bad_anomaly_rules_are_refused_with_the_field(kind, threshold, types, default_z, field, message):
    with pytest.raises(rules.AlertRuleError) as err:
        rules.make_rule_expressions(
            kind, threshold, None, None, 0.1, None, anomaly_types=types, default_z=default_z
        )
    assert err.value.field == field and message in err.value.message
