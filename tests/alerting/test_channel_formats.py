"""The slack, teams and pagerduty channels: each format sent to a loopback receiver that checks
it as the service would, and an alert that fires then resolves reaching PagerDuty as a trigger
then a resolve of one dedup key, through the real evaluator."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

import pytest

from spidi_server.alerting import formats
from spidi_server.alerting.notify import Notifier
from spidi_server.alerting.rules import AlertRuleError, check_channels
from spidi_server.metrics import NodeMetrics

from .receivers import FormatReceiver, pagerduty_problems, slack_problems, teams_problems, wait_for
from .test_evaluator import add_rule, alert_node, join, leave, monitor, next_alert
from .test_notify import SECRET, count, make_alert, make_notifier

ROUTING_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"  # 32 characters, like an integration key


@pytest.fixture
def metrics() -> NodeMetrics:
    return NodeMetrics()


@pytest.fixture
async def service(request):
    """A receiver checking the format named by the test's ``kind`` parameter."""
    server = await FormatReceiver(request.param).start()
    yield server
    await server.stop()


def channel_for(kind: str, server: FormatReceiver) -> dict:
    if kind == "pagerduty":
        return {"type": "pagerduty", "routingKey": ROUTING_KEY, "url": server.url}
    return {"type": kind, "url": server.url}


# -- the formats, as the services check them ------------------------------------------------------


@pytest.mark.parametrize("service", ["slack", "teams", "pagerduty"], indirect=True)
async def test_each_format_is_accepted_by_its_service_and_unsigned(settings, aredis, metrics, service):
    notifier = make_notifier(settings, aredis, metrics)
    alert = make_alert(ruleName="<!channel> full & hot")  # Slack markup must arrive escaped
    notifier.notify(alert, [{"type": "in_app"}, channel_for(service.kind, service)])
    assert await notifier.wait(5)
    await notifier.close()

    assert service.refused == []
    [body] = service.accepted
    [request] = service.requests
    # The services check their own secret (in the URL or the body): no Spidi signature headers.
    assert not any(h.startswith("X-Spidi-") for h in request.headers)
    assert request.headers["Content-Type"] == "application/json"
    assert count(metrics, "alert_notifications", channel=service.kind, outcome="sent") == 1
    if service.kind == "slack":
        # Markup is escaped where Slack reads it (text, mrkdwn), kept in plain text (the header).
        assert "&lt;!channel&gt; full &amp; hot" in body["text"]
        assert "<!channel>" not in str(body["blocks"][1:]) and "&lt;!channel" in str(body["blocks"][1])
        assert body["blocks"][0]["text"]["text"] == "FIRING critical: <!channel> full & hot in lobby"
        fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in body["blocks"][1]["fields"]}
        assert fields["*Severity*"] == "critical" and fields["*Room*"] == "lobby (tenant default)"
        assert alert["episodeId"] in str(body["blocks"][2])
    elif service.kind == "teams":
        card = body["attachments"][0]["content"]
        assert card["body"][0]["text"] == "FIRING critical: <!channel> full & hot in lobby"
        facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
        assert facts["Value"] == "0.93 (threshold 0.8)" and facts["Condition"] == "utilization > 0.8"
    else:
        assert body["routing_key"] == ROUTING_KEY and body["event_action"] == "trigger"
        assert body["dedup_key"] == alert["episodeId"]
        payload = body["payload"]
        assert payload["severity"] == "critical" and payload["component"] == "lobby"
        assert payload["group"] == "default" and payload["class"] == "capacity"
        assert payload["custom_details"]["metrics"] == alert["metrics"]


@pytest.mark.parametrize("service", ["slack", "teams", "pagerduty"], indirect=True)
async def test_a_refused_body_is_a_failed_notification_not_retried(settings, aredis, metrics, service):
    """The checking receivers do refuse: a body a service would refuse is a 400, not retried."""
    notifier = make_notifier(settings, aredis, metrics)
    result = await notifier.webhooks.post(service.url, {"text": ""}, signed=False)
    assert not result.ok and result.status == 400 and result.attempts == 1
    assert service.refused and service.accepted == []
    await notifier.close()


def test_the_checkers_name_the_missing_fields():
    assert "blocks: a list of 1 to 50 blocks" in slack_problems({"text": "x"})
    assert teams_problems({"type": "message", "attachments": [{"contentType": "text/plain"}]})[0].startswith(
        "attachments[0].contentType"
    )
    assert pagerduty_problems({"routing_key": ROUTING_KEY, "event_action": "resolve"}) == [
        "dedup_key: required to acknowledge or resolve"
    ]


@pytest.mark.parametrize(
    ("spidi", "pagerduty"),
    [("critical", "critical"), ("warning", "warning"), ("info", "info"), ("odd", "warning")],
)
def test_pagerduty_severity_mapping(spidi, pagerduty):
    event = formats.pagerduty_event(make_alert(severity=spidi), ROUTING_KEY)
    assert event["payload"]["severity"] == pagerduty
    assert pagerduty_problems(event) == []


def test_pagerduty_resolve_carries_only_what_pagerduty_reads():
    alert = make_alert(state="resolved", previous="firing")
    assert formats.pagerduty_event(alert, ROUTING_KEY) == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": alert["episodeId"],
    }


def test_long_names_are_cut_to_the_service_limits():
    alert = make_alert(ruleName="x" * 3000)
    assert slack_problems(formats.slack_message(alert)) == []
    assert pagerduty_problems(formats.pagerduty_event(alert, ROUTING_KEY)) == []
    assert teams_problems(formats.teams_message(alert)) == []


def test_suppressed_episodes_are_told_in_every_format():
    alert = make_alert()
    note = "3 more alert episodes of this rule were not notified"
    assert note in str(formats.slack_message(alert, 3))
    assert note in str(formats.teams_message(alert, 3))
    assert note in str(formats.pagerduty_event(alert, ROUTING_KEY, 3))
    assert note in formats.email_text(alert, 3)
    assert "not notified" not in str(formats.slack_message(alert))


# -- channel validation ---------------------------------------------------------------------------


def test_channel_validation():
    good = [
        {"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/x"},
        {"type": "teams", "url": "https://prod.westeurope.logic.azure.com/workflows/1/triggers/manual"},
        {"type": "pagerduty", "routingKey": ROUTING_KEY},
        {"type": "pagerduty", "routingKey": ROUTING_KEY, "url": "https://events.eu.pagerduty.com/v2/enqueue"},
    ]
    assert check_channels(good) == good
    for channel, where, message in [
        ({"type": "slack"}, "channels[0].url", "must be an http:// or https:// URL"),
        ({"type": "teams", "url": "ftp://x"}, "channels[0].url", "must be an http:// or https:// URL"),
        (
            {"type": "slack", "url": "http://:80/x"},
            "channels[0].url",
            "must be an http:// or https:// URL with a host",
        ),
        ({"type": "pagerduty"}, "channels[0].routingKey", "must be the 32-character integration key"),
        ({"type": "pagerduty", "routingKey": "short"}, "channels[0].routingKey", "must be the 32-character"),
        ({"type": "pagerduty", "routingKey": ROUTING_KEY, "url": 5}, "channels[0].url", "must be an http://"),
        (
            {"type": "slack", "url": "https://x", "to": ["a@b"]},
            "channels[0]",
            "unknown field(s) to for a slack",
        ),
        (
            {"type": "sms"},
            "channels[0]",
            "must be an object whose type is one of in_app, webhook, slack, teams",
        ),
    ]:
        with pytest.raises(AlertRuleError) as info:
            check_channels([channel])
        assert info.value.field == where and info.value.message.startswith(message), (channel, info.value)


# -- secrets and egress ---------------------------------------------------------------------------


async def test_routing_key_and_url_token_stay_out_of_the_logs(settings, aredis, metrics, caplog):
    slack = await FormatReceiver("slack").start()  # refuses the PagerDuty body: the failure logs too
    try:
        notifier = make_notifier(settings, aredis, metrics)
        with caplog.at_level(logging.DEBUG, logger="spidi"):
            notifier.notify(make_alert(), [channel_for("pagerduty", slack), channel_for("slack", slack)])
            assert await notifier.wait(5)
        await notifier.close()
    finally:
        await slack.stop()
    assert count(metrics, "alert_notifications", channel="pagerduty", outcome="failed") == 1
    assert count(metrics, "alert_notifications", channel="slack", outcome="sent") == 1
    text = " ".join(str(r.__dict__) for r in caplog.records)
    assert "alert_notification_failed" in text and "alert_notification_sent" in text
    assert ROUTING_KEY not in text and "not-for-logs" not in text and SECRET not in text


@pytest.mark.parametrize(
    "url", ["http://:80/services/T0/B0/not-for-logs", "http://127.0.0.1:99999/services/T0/B0/not-for-logs"]
)
async def test_an_invalid_url_is_logged_without_its_token(settings, aredis, metrics, caplog, url):
    """A stored URL the HTTP client cannot use fails at once; its path (the token) is not logged."""
    notifier = make_notifier(settings, aredis, metrics)
    with caplog.at_level(logging.DEBUG, logger="spidi"):
        notifier.notify(make_alert(), [{"type": "slack", "url": url}])
        assert await notifier.wait(5)
    await notifier.close()
    assert count(metrics, "alert_notifications", channel="slack", outcome="failed") == 1
    text = " ".join(str(r.__dict__) for r in caplog.records)
    assert "invalid URL" in text and "not-for-logs" not in text


async def test_pagerduty_url_obeys_the_egress_policy(settings, aredis, metrics):
    server = await FormatReceiver("pagerduty").start()
    try:
        strict = dataclasses.replace(settings, webhook_allowed_networks=[], alert_rate_limit_s=0).validate()
        notifier = Notifier(strict, aredis, metrics)
        notifier.notify(make_alert(), [channel_for("pagerduty", server)])
        assert await notifier.wait(5)
        await notifier.close()
    finally:
        await server.stop()
    assert server.requests == []
    assert count(metrics, "alert_notifications", channel="pagerduty", outcome="refused") == 1


# -- end to end: the evaluator's firing and resolve reach PagerDuty --------------------------------


async def test_alert_firing_then_resolving_reaches_pagerduty_with_one_dedup_key(pg_dsn, node_factory):
    """With the default rate limit (300 s) on: the resolve closes the incident the trigger opened."""
    pd = await FormatReceiver("pagerduty").start()
    try:
        add_rule(
            pg_dsn,
            "default",
            "capacity",
            threshold=0.0001,
            severity="critical",
            channels=[{"type": "in_app"}, {"type": "pagerduty", "routingKey": ROUTING_KEY, "url": pd.url}],
        )
        node = await alert_node(node_factory, pg_dsn)
        assert node.settings.alert_rate_limit_s == 300
        mon, _ = await monitor(node)
        clients: list = []
        sids = await join(node, "paged", 1, clients)
        firing = await next_alert(mon, "firing")
        assert await wait_for(lambda: len(pd.requests) >= 1, timeout=8)
        await leave(clients[0], sids[0])
        resolved = await next_alert(mon, "resolved")
        assert await wait_for(lambda: len(pd.requests) >= 2, timeout=8)
    finally:
        await pd.stop()
    assert pd.refused == []
    trigger, resolve = pd.accepted
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == firing["episodeId"] == resolved["episodeId"]
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["component"] == "paged"
    sent_at = datetime.fromisoformat(trigger["payload"]["timestamp"].replace("Z", "+00:00")).timestamp()
    assert abs(sent_at - firing["at"] / 1000) < 1.5


def test_every_external_channel_type_has_a_sender():
    """A type added to rules.CHANNEL_TYPES without a format would fail at send time."""
    from spidi_server.alerting.notify import CHAT_FORMATS, EXTERNAL_CHANNELS

    assert set(EXTERNAL_CHANNELS) == set(CHAT_FORMATS) | {"webhook", "pagerduty", "email"}
