"""Rules and their lifecycle, without I/O: CEL compilation, built-in expressions, hysteresis, `for`."""

from __future__ import annotations

import pytest

from spidi_server.alerting.lifecycle import FIRING, INACTIVE, PENDING, RESOLVED, AlertState, step
from spidi_server.alerting.rules import (
    VARIABLES,
    AlertRule,
    AlertRuleError,
    check_channels,
    compile_expression,
    make_rule_expressions,
)


def metrics(**values) -> dict:
    base = {
        name: (0.0 if kind == "double" else "" if kind == "string" else 0)
        for name, (kind, _) in VARIABLES.items()
    }
    base.update(values)
    return base


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("online > 900 &&", "Syntax error"),  # the CEL parser's own message reaches the operator
        ("online >", "Syntax error"),
        ("onlne > 3", "unknown metric(s) onlne"),
        ("online + 1", "must evaluate to a boolean"),
        ("roomCode + 1 > 2", "cannot be evaluated"),
        ("", "non-empty"),
        ("__import__('os').system('true')", "Undefined variable or function"),  # no Python eval
    ],
)
def test_bad_expressions_are_refused_with_the_reason(text, fragment):
    with pytest.raises(AlertRuleError) as err:
        compile_expression(text)
    assert fragment in err.value.message
    assert err.value.field == "expression"


def test_custom_expression_evaluates_over_room_metrics():
    fire, resolve, threshold = make_rule_expressions(
        "custom", None, "online > 900 && avgLatencyMs > 300", None, 0.1
    )
    rule = AlertRule("r", "t", "busy and slow", "custom", fire, resolve, threshold).compile()
    assert rule.fires(metrics(online=901, avgLatencyMs=301.0))
    assert not rule.fires(metrics(online=901, avgLatencyMs=300.0))
    assert not rule.fires(metrics(online=900, avgLatencyMs=999.0))
    assert rule.value(metrics()) is None
    # Without a resolve expression a custom rule resolves when its condition no longer holds.
    assert rule.resolves(metrics(online=10)) and not rule.resolves(metrics(online=901, avgLatencyMs=400.0))


@pytest.mark.parametrize(
    ("kind", "threshold", "firing", "hovering", "resolved"),
    [
        ("capacity", None, {"utilization": 0.81}, {"utilization": 0.75}, {"utilization": 0.71}),
        ("latency", 200, {"avgLatencyMs": 201.0}, {"avgLatencyMs": 190.0}, {"avgLatencyMs": 179.0}),
        (
            "heartbeat_rate",
            None,
            {"heartbeatRateDrop": 0.6},
            {"heartbeatRateDrop": 0.47},
            {"heartbeatRateDrop": 0.4},
        ),
        ("heartbeat_rate", None, {"staleSessions": 1}, {"staleSessions": 1, "heartbeatRateDrop": 0.0}, {}),
        # ADR-0001's heartbeat rule: any one session silent longer than 60 s (default).
        (
            "heartbeat",
            None,
            {"oldestHeartbeatAgeS": 60.5},
            {"oldestHeartbeatAgeS": 55.0},
            {"oldestHeartbeatAgeS": 53.0},
        ),
    ],
)
def test_builtin_kinds_fire_above_and_resolve_below_the_hysteresis_band(
    kind, threshold, firing, hovering, resolved
):
    fire, resolve, stored = make_rule_expressions(kind, threshold, None, None, 0.1)
    rule = AlertRule("r", "t", kind, kind, fire, resolve, stored).compile()
    assert rule.fires(metrics(**firing))
    assert not rule.resolves(metrics(**hovering))  # inside the band: stays firing
    assert rule.resolves(metrics(**resolved)) and not rule.fires(metrics(**resolved))


def test_heartbeat_rule_with_a_share_fires_when_that_share_is_silent():
    fire, resolve, stored = make_rule_expressions("heartbeat", 5, None, None, 0.1, share=0.5)
    assert fire == "oldestHeartbeatAgeS > 5.0 && silentShare >= 0.5"
    assert resolve == "silentShare < 0.45"
    rule = AlertRule("r", "t", "half silent", "heartbeat", fire, resolve, stored, share=0.5).compile()
    assert rule.silence_s(60.0) == 5.0  # its silentShare counts 5 s of silence, not the default
    one_of_four = metrics(online=4, oldestHeartbeatAgeS=9.0, silentShare=0.25)
    assert not rule.fires(one_of_four)  # one silent session of four is not half of them
    half = metrics(online=4, oldestHeartbeatAgeS=9.0, silentShare=0.5)
    assert rule.fires(half) and rule.value(half) == 0.5  # the share is the reported figure
    assert not rule.resolves(metrics(silentShare=0.45)) and rule.resolves(metrics(silentShare=0.25))
    # Without a share: any one session, and the oldest age is the figure.
    plain = AlertRule("r", "t", "any", "heartbeat", *make_rule_expressions("heartbeat", 5, None, None, 0.1))
    plain.compile()
    assert plain.fires(one_of_four) and plain.value(one_of_four) == 9.0
    # Other rules count silence at alert_stale_heartbeat_s.
    assert AlertRule("r", "t", "c", "capacity", "true").silence_s(60.0) == 60.0


def test_share_is_checked():
    for bad in (0, 1.5, -0.1, True, "half"):
        with pytest.raises(AlertRuleError) as err:
            make_rule_expressions("heartbeat", None, None, None, 0.1, share=bad)
        assert err.value.field == "share"
    with pytest.raises(AlertRuleError, match="heartbeat kind only") as err:
        make_rule_expressions("heartbeat_rate", None, None, None, 0.1, share=0.5)
    assert err.value.field == "share"
    assert make_rule_expressions("heartbeat", None, None, None, 0.1, share=1)[0].endswith(">= 1.0")


def test_builtin_defaults_and_threshold_checks():
    assert make_rule_expressions("capacity", None, None, None, 0.1)[0] == "utilization > 0.8"
    assert make_rule_expressions("latency", None, None, None, 0.1)[0] == "avgLatencyMs > 500.0"
    assert make_rule_expressions("heartbeat", None, None, None, 0.1) == (
        "oldestHeartbeatAgeS > 60.0",
        "oldestHeartbeatAgeS < 54.0",
        60.0,
    )
    assert make_rule_expressions("heartbeat", 90, None, None, 0.1)[2] == 90.0  # seconds, not a ratio
    assert make_rule_expressions("heartbeat_rate", None, None, None, 0.1)[2] == 0.5
    with pytest.raises(AlertRuleError, match="ratio"):
        make_rule_expressions("heartbeat_rate", 2, None, None, 0.1)
    with pytest.raises(AlertRuleError, match="ratio"):
        make_rule_expressions("capacity", 80, None, None, 0.1)
    with pytest.raises(AlertRuleError, match="positive"):
        make_rule_expressions("latency", -1, None, None, 0.1)
    with pytest.raises(AlertRuleError) as err:
        make_rule_expressions("capacity", None, "online > 1", None, 0.1)
    assert err.value.field == "expression"
    with pytest.raises(AlertRuleError, match="required"):
        make_rule_expressions("custom", None, None, None, 0.1)
    with pytest.raises(AlertRuleError) as err:
        make_rule_expressions("custom", None, "online > 1", "online <", 0.1)
    assert err.value.field == "resolveExpression"


def test_channels_are_validated():
    ok = [
        {"type": "in_app"},
        {"type": "webhook", "url": "https://hooks.example/x"},
        {"type": "email", "to": ["a@b.c"]},
    ]
    assert check_channels(ok) == ok
    for bad, field in [
        ({"type": "sms"}, "channels[0]"),
        ({"type": "webhook", "url": "ftp://x"}, "channels[0].url"),
        ({"type": "email", "to": ["not-an-address"]}, "channels[0].to"),
        ({"type": "in_app", "url": "https://x"}, "channels[0]"),
    ]:
        with pytest.raises(AlertRuleError) as err:
            check_channels([bad])
        assert err.value.field == field
    with pytest.raises(AlertRuleError):
        check_channels({"type": "in_app"})


def test_lifecycle_for_duration_and_pending_that_goes_away():
    alert = AlertState()
    assert step(alert, True, False, 2000, 1000) == PENDING and alert.since_ms == 1000
    assert step(alert, True, False, 2000, 2500) is None  # held 1.5 s of 2
    assert step(alert, True, False, 2000, 3000) == FIRING and alert.since_ms == 1000
    assert step(alert, True, False, 2000, 4000) is None
    assert step(alert, False, False, 2000, 5000) is None  # not firing any more, but not resolved yet
    assert step(alert, False, True, 2000, 6000) == RESOLVED and alert.state == INACTIVE
    # A condition that does not last the `for` duration never fires.
    assert step(alert, True, False, 2000, 7000) == PENDING
    assert step(alert, False, False, 2000, 8000) == RESOLVED and alert.state == INACTIVE
    # for = 0: straight to firing.
    assert step(alert, True, False, 0, 9000) == FIRING


def test_lifecycle_state_round_trips_through_json():
    alert = AlertState(FIRING, 1, 2, "e", "tenant-a", "lobby")
    assert AlertState.from_json(alert.to_json()) == alert
