"""Alert notifications against real things on loopback: an HTTP receiver, an SMTP server, Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import logging
import time
import uuid

import orjson
import pytest

from spidi_server.alerting.notify import Notifier, WebhookSender, email_subject, sign, verify_signature
from spidi_server.metrics import NodeMetrics
from spidi_server.stores import keys

from .receivers import Inbox, WebhookReceiver, free_port, self_signed, start_smtp

SECRET = "s3cret-key"


@pytest.fixture
def metrics() -> NodeMetrics:
    return NodeMetrics()


def count(metrics: NodeMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(f"spidi_{name}_total", labels) or 0.0


def make_alert(rule="rule-1", room="room-1", state="firing", previous="pending", **extra) -> dict:
    now = int(time.time() * 1000)
    alert = {
        "type": "ALERT",
        "alertId": str(uuid.uuid4()),
        "episodeId": str(uuid.uuid4()),
        "ruleId": rule,
        "ruleName": "Full rooms",
        "kind": "capacity",
        "severity": "critical",
        "expression": "utilization > 0.8",
        "threshold": 0.8,
        "state": state,
        "previousState": previous,
        "tenant": "default",
        "roomId": room,
        "roomCode": "lobby",
        "value": 0.93,
        "since": now - 65_000,
        "at": now,
        "metrics": {"online": 93, "capacity": 100, "utilization": 0.93, "avgLatencyMs": 41.5},
    }
    alert.update(extra)
    return alert


def make_notifier(settings, aredis, metrics, **overrides) -> Notifier:
    base = {
        "webhook_secret": SECRET,
        "webhook_backoff_s": 0.05,
        "webhook_retries": 3,
        "alert_rate_limit_s": 0,
    }
    base.update(overrides)
    return Notifier(dataclasses.replace(settings, **base).validate(), aredis, metrics)


# -- webhooks ------------------------------------------------------------------------------------


async def test_webhook_is_signed_and_the_signature_verifies(settings, aredis, metrics, receiver):
    notifier = make_notifier(settings, aredis, metrics)
    alert = make_alert()
    notifier.notify(alert, [{"type": "in_app"}, {"type": "webhook", "url": receiver.url}])
    assert await notifier.wait(5)
    await notifier.close()

    [request] = receiver.requests
    h = request.headers
    assert request.json == alert
    assert h["Content-Type"] == "application/json" and h["User-Agent"] == "spidi"
    assert h["X-Spidi-Event"] == "alert" and uuid.UUID(h["X-Spidi-Delivery"])
    assert abs(int(h["X-Spidi-Timestamp"]) - time.time()) < 5
    assert h["X-Spidi-Signature"] == sign(SECRET, h["X-Spidi-Timestamp"], request.body)
    assert verify_signature(SECRET, h["X-Spidi-Timestamp"], request.body, h["X-Spidi-Signature"])
    assert verify_signature(
        SECRET, h["X-Spidi-Timestamp"], request.body, h["X-Spidi-Signature"], max_age_s=30
    )
    # Altered body, timestamp, secret or header: refused.
    assert not verify_signature(SECRET, h["X-Spidi-Timestamp"], request.body + b" ", h["X-Spidi-Signature"])
    altered = request.body.replace(b'"critical"', b'"info"')
    assert altered != request.body
    assert not verify_signature(SECRET, h["X-Spidi-Timestamp"], altered, h["X-Spidi-Signature"])
    ts = int(h["X-Spidi-Timestamp"])
    assert not verify_signature(SECRET, ts + 1, request.body, h["X-Spidi-Signature"])
    assert not verify_signature("other", ts, request.body, h["X-Spidi-Signature"])
    assert not verify_signature(SECRET, ts, request.body, None)
    assert not verify_signature(SECRET, ts, request.body, "sha256=00")
    assert not verify_signature(SECRET, ts, request.body, h["X-Spidi-Signature"], max_age_s=30, now=ts + 3600)
    assert count(metrics, "alert_notifications", channel="webhook", outcome="sent") == 1
    assert count(metrics, "webhook_retries", purpose="alert") == 0


async def test_no_signature_header_without_a_secret(settings, aredis, metrics, receiver):
    notifier = make_notifier(settings, aredis, metrics, webhook_secret="")
    notifier.notify(make_alert(), [{"type": "webhook", "url": receiver.url}])
    assert await notifier.wait(5)
    await notifier.close()
    [request] = receiver.requests
    assert "X-Spidi-Signature" not in request.headers
    assert not verify_signature("", request.headers["X-Spidi-Timestamp"], request.body, "sha256=x")


async def test_503_twice_then_200_is_delivered_on_the_third_attempt(settings, aredis, metrics, receiver):
    receiver.plan = [503, 503]
    notifier = make_notifier(settings, aredis, metrics)
    notifier.notify(make_alert(), [{"type": "webhook", "url": receiver.url}])
    assert await notifier.wait(5)
    await notifier.close()
    assert [r.status for r in receiver.requests] == [503, 503, 200]
    assert len({r.headers["X-Spidi-Delivery"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    for r in receiver.requests:  # each attempt signed with its own timestamp
        assert verify_signature(
            SECRET, r.headers["X-Spidi-Timestamp"], r.body, r.headers["X-Spidi-Signature"]
        )
    # Exponential backoff: 0.05 s, then 0.1 s (+ jitter).
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095
    assert count(metrics, "webhook_retries", purpose="alert") == 2
    assert count(metrics, "alert_notifications", channel="webhook", outcome="sent") == 1
    assert count(metrics, "alert_notifications", channel="webhook", outcome="failed") == 0


async def test_429_honours_retry_after(settings, aredis, metrics, receiver):
    receiver.plan = [(429, {"Retry-After": "1"})]
    notifier = make_notifier(settings, aredis, metrics)
    notifier.notify(make_alert(), [{"type": "webhook", "url": receiver.url}])
    assert await notifier.wait(5)
    await notifier.close()
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95  # not the 0.05 s backoff
    assert count(metrics, "webhook_retries", purpose="alert") == 1


async def test_receiver_down_then_up_gets_the_retried_delivery(settings, aredis, metrics):
    port = free_port()
    notifier = make_notifier(settings, aredis, metrics, webhook_backoff_s=0.2, webhook_retries=5)
    notifier.notify(make_alert(), [{"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}])
    await asyncio.sleep(0.3)  # the first attempt was refused, a retry is waiting
    assert count(metrics, "webhook_retries", purpose="alert") >= 1
    server = await WebhookReceiver().start(port)
    try:
        assert await notifier.wait(5)
        assert len(server.requests) == 1 and server.requests[0].ok
    finally:
        await notifier.close()
        await server.stop()
    assert count(metrics, "alert_notifications", channel="webhook", outcome="sent") == 1


async def test_400_is_not_retried_and_counts_failed(settings, aredis, metrics, receiver, caplog):
    receiver.status = 400
    notifier = make_notifier(settings, aredis, metrics)
    with caplog.at_level(logging.WARNING, logger="spidi.alerting.notify"):
        notifier.notify(make_alert(), [{"type": "webhook", "url": receiver.url}])
        assert await notifier.wait(5)
    await notifier.close()
    assert len(receiver.requests) == 1
    assert count(metrics, "alert_notifications", channel="webhook", outcome="failed") == 1
    assert count(metrics, "webhook_retries", purpose="alert") == 0
    [failed] = [r for r in caplog.records if r.getMessage() == "webhook_failed"]
    assert failed.status == 400 and failed.attempt == 1 and failed.host == "127.0.0.1"
    assert failed.will_retry is False
    text = " ".join(str(r.__dict__) for r in caplog.records)
    assert SECRET not in text and "not-for-logs" not in text  # no secret, no URL query


async def test_timeouts_are_retried_then_given_up(settings, aredis, metrics, receiver):
    receiver.delay = 0.5
    notifier = make_notifier(settings, aredis, metrics, webhook_timeout_s=0.1, webhook_retries=1)
    notifier.notify(make_alert(), [{"type": "webhook", "url": receiver.url}])
    assert await notifier.wait(5)
    await notifier.close()
    assert count(metrics, "webhook_retries", purpose="alert") == 1
    assert count(metrics, "alert_notifications", channel="webhook", outcome="failed") == 1


async def test_webhook_sender_reports_each_delivery(settings, metrics, receiver):
    sender = WebhookSender(dataclasses.replace(settings, webhook_retries=0), metrics)
    result = await sender.post(receiver.url, {"event": "room_vacated"}, event="room_vacated", purpose="hook")
    assert result.ok and result.attempts == 1 and result.status == 200
    assert receiver.requests[0].headers["X-Spidi-Event"] == "room_vacated"
    receiver.status = 500
    result = await sender.post(receiver.url, b'{"x":1}', event="member_left", purpose="hook")
    assert not result.ok and result.status == 500 and result.attempts == 1 and result.error == "HTTP 500"
    await sender.close()


# -- rate limit ----------------------------------------------------------------------------------


async def poll(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    """Await ``predicate()`` (a coroutine function) until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return bool(await predicate())


def resolved_of(alert: dict) -> dict:
    """The resolve of ``alert``'s episode."""
    return make_alert(
        rule=alert["ruleId"],
        room=alert["roomId"],
        state="resolved",
        previous="firing",
        episodeId=alert["episodeId"],
    )


async def test_rate_limit_is_per_rule_and_counts_episodes(settings, aredis, metrics, receiver, caplog):
    notifier = make_notifier(settings, aredis, metrics, alert_rate_limit_s=60)
    hook = [{"type": "in_app"}, {"type": "webhook", "url": receiver.url}]
    first = make_alert(room="room-a")
    notifier.notify(first, hook)
    assert await notifier.wait(5)
    second = make_alert(room="room-b")  # another episode of the rule, in the window
    with caplog.at_level(logging.INFO, logger="spidi.alerting.notify"):
        notifier.notify(second, hook)
        notifier.notify(make_alert(rule="rule-2", room="room-a"), hook)  # another rule: its own window
        assert await notifier.wait(5)
        notifier.notify(resolved_of(second), hook)  # its firing was not sent: nor is its end
        notifier.notify(resolved_of(first), hook)  # closes what was sent, window or not
        assert await notifier.wait(5)
    await notifier.close()
    delivered = [(r.json["ruleId"], r.json["roomId"], r.json["state"]) for r in receiver.requests]
    assert sorted(delivered) == [
        ("rule-1", "room-a", "firing"),
        ("rule-1", "room-a", "resolved"),
        ("rule-2", "room-a", "firing"),
    ]
    assert count(metrics, "alert_notifications", channel="webhook", outcome="suppressed") == 2
    assert count(metrics, "alert_notifications", channel="in_app", outcome="suppressed") == 0
    assert count(metrics, "alert_notifications", channel="webhook", outcome="sent") == 3
    assert [r.getMessage() for r in caplog.records].count("alert_notification_suppressed") == 2
    # The window is one Redis key per rule, holding the episode that took it.
    key = keys.alert_notified("rule-1")
    assert (await aredis.get(key)).decode() == first["episodeId"]
    assert 55_000 < await aredis.pttl(key) <= 60_000
    assert await aredis.exists(keys.alert_notified("rule-1", "room-a")) == 0
    assert await aredis.exists(keys.alert_episode_notified(first["episodeId"])) == 0  # resolved: gone
    assert await aredis.exists(keys.alert_episode_notified(second["episodeId"])) == 0  # never set


async def test_after_the_window_the_next_episode_is_notified_and_tells_what_was_suppressed(
    settings, aredis, metrics, receiver
):
    notifier = make_notifier(settings, aredis, metrics, alert_rate_limit_s=0.4)
    slack = WebhookReceiver()
    await slack.start()
    hook = [{"type": "webhook", "url": receiver.url}, {"type": "slack", "url": slack.url}]
    try:
        for room in ("room-a", "room-b", "room-c"):  # one sent, two suppressed
            notifier.notify(make_alert(room=room), hook)
            assert await notifier.wait(5)
        assert len(receiver.requests) == 1
        assert await poll(lambda: _gone(aredis, keys.alert_notified("rule-1")))
        third = make_alert(room="room-a")
        notifier.notify(third, hook)
        assert await notifier.wait(5)
        await notifier.close()
    finally:
        await slack.stop()
    assert [r.json["alertId"] for r in receiver.requests][-1] == third["alertId"]
    assert len(receiver.requests) == len(slack.requests) == 2
    assert "2 more alert episodes of this rule were not notified" not in str(slack.requests[0].json)
    assert "2 more alert episodes of this rule were not notified" in str(slack.requests[1].json)
    assert await aredis.exists(keys.alert_suppressed("rule-1")) == 0  # told: the count starts again
    assert count(metrics, "alert_notifications", channel="slack", outcome="suppressed") == 2


async def _gone(aredis, key: str) -> bool:
    return await aredis.exists(key) == 0


async def test_rate_limit_per_room_when_the_setting_asks(settings, aredis, metrics, receiver):
    notifier = make_notifier(settings, aredis, metrics, alert_rate_limit_s=60, alert_rate_limit_per_room=True)
    hook = [{"type": "webhook", "url": receiver.url}]
    notifier.notify(make_alert(room="room-a"), hook)
    notifier.notify(make_alert(room="room-b"), hook)  # another room: its own window
    assert await notifier.wait(5)
    notifier.notify(make_alert(room="room-a"), hook)  # the same rule and room: suppressed
    assert await notifier.wait(5)
    await notifier.close()
    assert sorted(r.json["roomId"] for r in receiver.requests) == ["room-a", "room-b"]
    assert await aredis.exists(keys.alert_notified("rule-1", "room-a")) == 1
    assert await aredis.exists(keys.alert_notified("rule-1")) == 0
    assert count(metrics, "alert_notifications", channel="webhook", outcome="suppressed") == 1


async def test_rate_limit_is_shared_by_notifiers(settings, aredis, metrics, receiver):
    """Two processes (or an evaluator and its successor) share the window through Redis."""
    one = make_notifier(settings, aredis, metrics, alert_rate_limit_s=60)
    two = make_notifier(settings, aredis, metrics, alert_rate_limit_s=60)
    hook = [{"type": "webhook", "url": receiver.url}, {"type": "email", "to": ["ops@example.com"]}]
    first = make_alert()
    one.notify(first, hook[:1])
    assert await one.wait(5)
    two.notify(make_alert(room="room-2"), hook)
    assert await two.wait(5)
    two.notify(resolved_of(first), hook[:1])  # the successor closes what the first one sent
    assert await two.wait(5)
    await one.close()
    await two.close()
    assert [r.json["state"] for r in receiver.requests] == ["firing", "resolved"]
    assert count(metrics, "alert_notifications", channel="webhook", outcome="suppressed") == 1
    assert count(metrics, "alert_notifications", channel="email", outcome="suppressed") == 1


async def test_no_external_channel_takes_no_slot_and_pending_never_notifies(
    settings, aredis, metrics, receiver
):
    notifier = make_notifier(settings, aredis, metrics, alert_rate_limit_s=60)
    notifier.notify(make_alert(), [{"type": "in_app"}])  # nothing to send: no slot taken
    hook = [{"type": "webhook", "url": receiver.url}]
    notifier.notify(make_alert(state="pending", previous="inactive"), hook)
    notifier.notify(make_alert(state="resolved", previous="pending"), hook)  # never fired
    assert await notifier.wait(5)
    assert await aredis.exists(keys.alert_notified("rule-1")) == 0
    notifier.notify(make_alert(), hook)
    assert await notifier.wait(5)
    await notifier.close()
    assert len(receiver.requests) == 1


async def test_without_redis_the_notification_is_sent(settings, metrics, receiver):
    """A duplicate is better than a lost alert: a Redis that cannot be asked lets everything out."""
    import redis.asyncio as aioredis

    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    notifier = make_notifier(settings, dead, metrics, alert_rate_limit_s=60)
    hook = [{"type": "webhook", "url": receiver.url}]
    first = make_alert()
    notifier.notify(first, hook)
    notifier.notify(make_alert(room="room-2"), hook)
    assert await notifier.wait(10)
    notifier.notify(resolved_of(first), hook)
    assert await notifier.wait(10)
    await notifier.close()
    await dead.aclose()
    assert sorted(r.json["state"] for r in receiver.requests) == ["firing", "firing", "resolved"]


async def test_rate_limit_off_sends_everything(settings, aredis, metrics, receiver):
    notifier = make_notifier(settings, aredis, metrics, alert_rate_limit_s=0)
    hook = [{"type": "webhook", "url": receiver.url}]
    notifier.notify(make_alert(), hook)
    notifier.notify(make_alert(state="resolved", previous="firing"), hook)
    assert await notifier.wait(5)
    await notifier.close()
    assert sorted(r.json["state"] for r in receiver.requests) == ["firing", "resolved"]


async def test_close_waits_then_cancels(settings, aredis, metrics, receiver):
    receiver.delay = 1.0
    notifier = make_notifier(settings, aredis, metrics)
    notifier.notify(make_alert(), [{"type": "webhook", "url": receiver.url}])
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await notifier.close(0.2)
    assert time.monotonic() - started < 0.8
    assert not notifier._tasks
    notifier.notify(make_alert(), [{"type": "webhook", "url": receiver.url}])  # closed: dropped
    assert not notifier._tasks


# -- email ---------------------------------------------------------------------------------------


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def smtp_settings(port: int, **extra) -> dict:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_to": ["oncall@example.com"],
        "smtp_timeout_s": 5,
        "smtp_from": "spidi@example.com",
        **extra,
    }


async def test_email_plain_smtp(settings, aredis, metrics):
    inbox = Inbox()
    controller = await start_smtp(inbox)
    try:
        notifier = make_notifier(settings, aredis, metrics, **smtp_settings(controller.port))
        alert = make_alert()
        notifier.notify(
            alert, [{"type": "email", "to": ["a@example.com", "b@example.com"]}, {"type": "email"}]
        )
        assert await notifier.wait(10)
        await notifier.close()
    finally:
        await asyncio.to_thread(controller.stop)
    assert sorted(rcpt for _, rcpts, _ in inbox.messages for rcpt in rcpts) == [
        "a@example.com",
        "b@example.com",
        "oncall@example.com",
    ]
    sender, _, raw = inbox.messages[0]
    assert sender == "spidi@example.com"
    msg = parse(raw)
    assert msg["Subject"] == "[Spidi] FIRING critical: Full rooms in lobby" == email_subject(alert)
    assert msg["From"] == "spidi@example.com" and msg["Message-ID"]
    text = msg.get_body(("plain",)).get_content()
    for fragment in (
        "FIRING (critical): Full rooms in room lobby",
        "was pending",
        "0.93 (threshold 0.8)",
        "utilization > 0.8",
        "avgLatencyMs",
        "41.5",
        alert["episodeId"],
    ):
        assert fragment in text, fragment
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(alert["since"] // 1000))
    assert f"Since:      {since}" in text
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "alert.json"
    assert orjson.loads(attachment.get_content()) == alert
    assert count(metrics, "alert_notifications", channel="email", outcome="sent") == 2


async def test_email_resolved_subject(settings, aredis, metrics):
    inbox = Inbox()
    controller = await start_smtp(inbox)
    try:
        notifier = make_notifier(settings, aredis, metrics, **smtp_settings(controller.port))
        notifier.notify(
            make_alert(state="resolved", previous="firing", severity="warning"), [{"type": "email"}]
        )
        assert await notifier.wait(10)
        await notifier.close()
    finally:
        await asyncio.to_thread(controller.stop)
    assert parse(inbox.messages[0][2])["Subject"] == "[Spidi] RESOLVED warning: Full rooms in lobby"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_email_over_tls_with_login(settings, aredis, metrics, tmp_path, mode):
    server_ctx, client_ctx = self_signed(tmp_path)
    inbox = Inbox()
    if mode == "starttls":
        tls = {"tls_context": server_ctx, "require_starttls": True}
    else:  # aiosmtpd counts only STARTTLS as TLS for AUTH; this connection is TLS from its first byte
        tls = {"ssl_context": server_ctx, "auth_require_tls": False}
    controller = await start_smtp(inbox, authenticator=inbox.authenticate, auth_required=True, **tls)
    try:
        s = dataclasses.replace(
            settings,
            alert_rate_limit_s=0,
            **smtp_settings(controller.port, smtp_tls=mode, smtp_user="spidi", smtp_password="pw"),
        ).validate()
        notifier = Notifier(s, aredis, metrics, smtp_ssl_context=client_ctx)
        notifier.notify(make_alert(), [{"type": "email"}])
        assert await notifier.wait(10)
        await notifier.close()
    finally:
        await asyncio.to_thread(controller.stop)
    assert len(inbox.messages) == 1 and inbox.logins == ["spidi"]
    assert count(metrics, "alert_notifications", channel="email", outcome="sent") == 1


async def test_email_untrusted_certificate_fails_without_retry(settings, aredis, metrics, tmp_path):
    server_ctx, _ = self_signed(tmp_path)
    inbox = Inbox()
    controller = await start_smtp(inbox, tls_context=server_ctx, require_starttls=True)
    try:
        notifier = make_notifier(
            settings, aredis, metrics, **smtp_settings(controller.port, smtp_tls="starttls")
        )
        notifier.email_retry_delay_s = 5.0  # a retry would show in the run time
        started = time.monotonic()
        notifier.notify(make_alert(), [{"type": "email"}])
        assert await notifier.wait(10)
        assert time.monotonic() - started < 4
        await notifier.close()
    finally:
        await asyncio.to_thread(controller.stop)
    assert inbox.messages == []
    assert count(metrics, "alert_notifications", channel="email", outcome="failed") == 1


async def test_email_transient_failure_is_retried_once(settings, aredis, metrics):
    inbox = Inbox()
    inbox.fail_next = 1
    controller = await start_smtp(inbox)
    try:
        notifier = make_notifier(settings, aredis, metrics, **smtp_settings(controller.port))
        notifier.email_retry_delay_s = 0.05
        notifier.notify(make_alert(), [{"type": "email"}])
        assert await notifier.wait(10)
        inbox.fail_next = 2  # fails twice: given up after the one retry
        notifier.notify(make_alert(rule="rule-2"), [{"type": "email"}])
        assert await notifier.wait(10)
        await notifier.close()
    finally:
        await asyncio.to_thread(controller.stop)
    assert len(inbox.messages) == 1
    assert count(metrics, "alert_notifications", channel="email", outcome="sent") == 1
    assert count(metrics, "alert_notifications", channel="email", outcome="failed") == 1


async def test_email_without_smtp_host_fails_and_logs_once(settings, aredis, metrics, caplog):
    notifier = make_notifier(settings, aredis, metrics, smtp_host="", smtp_to=["oncall@example.com"])
    with caplog.at_level(logging.WARNING, logger="spidi.alerting.notify"):
        notifier.notify(make_alert(), [{"type": "email"}])
        notifier.notify(make_alert(rule="rule-2"), [{"type": "email"}])
        assert await notifier.wait(5)
    await notifier.close()
    assert count(metrics, "alert_notifications", channel="email", outcome="failed") == 2
    assert [r.getMessage() for r in caplog.records].count("email_not_configured") == 1


async def test_email_server_down_counts_failed(settings, aredis, metrics):
    notifier = make_notifier(settings, aredis, metrics, **smtp_settings(free_port()))
    notifier.email_retry_delay_s = 0.05
    notifier.notify(make_alert(), [{"type": "email"}])
    assert await notifier.wait(10)
    await notifier.close()
    assert count(metrics, "alert_notifications", channel="email", outcome="failed") == 1
