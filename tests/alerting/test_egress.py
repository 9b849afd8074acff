"""The webhook address policy (SSRF guard): refused hosts get nothing, allowed ones are served.

Every connection these tests make stays on loopback: refused addresses are refused before any
connection, and the names resolved are ``localhost`` or served by a static resolver.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import time

import pytest

from spidi_server.alerting.egress import EgressPolicy, EgressRefused, PolicyResolver, literal_address
from spidi_server.alerting.hooks import RoomHooks, _Batch
from spidi_server.alerting.notify import Notifier, WebhookSender
from spidi_server.errors import ConfigError
from spidi_server.metrics import NodeMetrics

from .receivers import WebhookReceiver


@pytest.fixture
def metrics() -> NodeMetrics:
    return NodeMetrics()


def count(metrics: NodeMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(f"spidi_{name}_total", labels) or 0.0


def strict(settings, **extra):
    """``settings`` with the default policy (no loopback), short timers, retries that would show."""
    base = {
        "webhook_allowed_networks": [],
        "webhook_allowed_hosts": [],
        "webhook_retries": 3,
        "webhook_backoff_s": 0.05,
        "webhook_timeout_s": 0.5,
    }
    return dataclasses.replace(settings, **{**base, **extra}).validate()


def refused_log(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "webhook_refused"]


# -- the policy, without sockets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("cafe.de", None),
        ("hooks.example.com", None),
        ("127.0.0.1 evil", None),
    ],
)
def test_literal_addresses_in_every_form_a_socket_accepts(host, address):
    assert literal_address(host) == (ipaddress.ip_address(address) if address else None)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("fd12::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),  # reserved, and listed as not globally reachable
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_the_default_policy_refuses_every_non_public_address(address, kind):
    reason = EgressPolicy().refusal(ipaddress.ip_address(address))
    assert (reason is None) if kind is None else reason.startswith(f"{kind} address "), reason


def test_allowed_networks_and_hosts_let_through_what_they_name():
    policy = EgressPolicy.from_settings(
        dataclasses.make_dataclass(
            "S", [("webhook_allowed_networks", list), ("webhook_allowed_hosts", list)]
        )(["10.20.0.0/16", "127.0.0.0/8"], ["Hooks.Internal."])
    )
    assert policy.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.21.0.1")) == "private address 10.21.0.1"
    assert policy.host_allowed("hooks.internal") and not policy.host_allowed("other.internal")
    assert policy.url_problem("http://hooks.internal/x") is None
    assert policy.url_problem("http://10.21.0.1/x").startswith(
        "points at a refused private address 10.21.0.1"
    )
    assert policy.url_problem("ftp://example.com/") == "must be an http:// or https:// URL with a host"
    assert policy.refusal_of_host("999.1.2.3") == "unreadable address 999.1.2.3"
    assert policy.refusal_of_host("hooks.example.com") is None  # a name: checked once resolved


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "webhook_allowed_networks",
            ["10.0.0.1/8"],
            "webhook_allowed_networks: '10.0.0.1/8' is not a network",
        ),
        ("webhook_allowed_networks", ["intranet"], "webhook_allowed_networks: 'intranet' is not a network"),
        ("webhook_allowed_hosts", ["http://x"], "webhook_allowed_hosts: 'http://x' is not a host name"),
        ("webhook_allowed_hosts", [""], "webhook_allowed_hosts: '' is not a host name"),
    ],
)
def test_bad_allow_lists_are_config_errors(settings, field, value, message):
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(settings, **{field: value}).validate()
    assert str(info.value).startswith(message)


class StaticResolver:
    """DNS answers given by the test (the names never reach a real DNS server)."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.answers[host]
        ]

    async def close(self):
        pass


async def test_the_resolver_returns_only_checked_addresses():
    answers = {"mixed.test": ["10.9.9.9", "127.0.0.1", "8.8.8.8"], "metadata.test": ["169.254.169.254"]}
    policy = EgressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    resolver = PolicyResolver(policy, StaticResolver(answers))
    kept = await resolver.resolve("mixed.test", 443)
    assert [r["host"] for r in kept] == ["127.0.0.1", "8.8.8.8"]
    with pytest.raises(EgressRefused) as info:
        await resolver.resolve("metadata.test", 80)
    assert info.value.reason == "link-local address 169.254.169.254"
    allowed = PolicyResolver(
        EgressPolicy(allowed_hosts=frozenset({"metadata.test"})), StaticResolver(answers)
    )
    assert [r["host"] for r in await allowed.resolve("metadata.test")] == ["169.254.169.254"]


# -- the sender against real receivers -----------------------------------------------------------


async def test_a_loopback_receiver_is_refused_unless_allowed(settings, aredis, metrics, receiver, caplog):
    notifier = Notifier(strict(settings), aredis, metrics)
    with caplog.at_level(logging.WARNING, logger="spidi.alerting.notify"):
        notifier.notify(
            {"state": "firing", "ruleId": "r", "roomId": "a", "alertId": "1"},
            [{"type": "webhook", "url": receiver.url}],
        )
        assert await notifier.wait(5)
    await notifier.close()
    assert receiver.requests == []
    assert count(metrics, "alert_notifications", channel="webhook", outcome="refused") == 1
    assert count(metrics, "alert_notifications", channel="webhook", outcome="sent") == 0
    assert count(metrics, "webhook_retries", purpose="alert") == 0  # permanent: not retried
    [refused] = refused_log(caplog)
    assert refused.host == "127.0.0.1" and refused.reason == "loopback address 127.0.0.1"
    assert "not-for-logs" not in str(refused.__dict__)  # the URL's query is not logged
    [failed] = [r for r in caplog.records if r.getMessage() == "alert_notification_failed"]
    assert failed.error == "refused: loopback address 127.0.0.1" and failed.attempts == 1

    for allow in ({"webhook_allowed_networks": ["127.0.0.0/8"]}, {"webhook_allowed_hosts": ["127.0.0.1"]}):
        sender = WebhookSender(strict(settings, **allow), metrics)
        result = await sender.post(receiver.url, {"x": 1})
        await sender.close()
        assert result.ok and not result.refused, (allow, result)
    assert len(receiver.delivered) == 2


async def test_a_name_resolving_to_loopback_is_refused_after_resolution(settings, metrics, receiver, caplog):
    url = f"http://localhost:{receiver.port}/hook"
    sender = WebhookSender(strict(settings), metrics)
    with caplog.at_level(logging.WARNING, logger="spidi.alerting.notify"):
        result = await sender.post(url, {"x": 1})
    await sender.close()
    assert result.refused and not result.ok and result.attempts == 1, result
    assert result.error.startswith("refused: loopback address ")
    assert receiver.requests == []
    assert refused_log(caplog)[0].host == "localhost"
    sender = WebhookSender(strict(settings, webhook_allowed_hosts=["localhost"]), metrics)
    result = await sender.post(url, {"x": 1})
    await sender.close()
    assert result.ok and len(receiver.delivered) == 1


@pytest.mark.parametrize(
    "host", ["[::ffff:127.0.0.1]", "0x7f000001", "2130706433", "0177.0.0.1", "127.1", "[::ffff:7f00:1]"]
)
async def test_other_spellings_of_loopback_are_refused(settings, metrics, receiver, host):
    sender = WebhookSender(strict(settings), metrics)
    result = await sender.post(f"http://{host}:{receiver.port}/hook", {"x": 1})
    await sender.close()
    assert result.refused and result.attempts == 1 and "loopback address 127.0.0.1" in result.error, result
    assert receiver.requests == []


async def test_the_metadata_address_is_refused_without_a_connection(settings, metrics):
    # A connection attempt would time out (0.5 s) and be retried: one quick attempt shows none was made.
    sender = WebhookSender(strict(settings), metrics)
    started = time.monotonic()
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fe80::1]/",
    ):
        result = await sender.post(url, {"x": 1})
        assert result.refused and result.attempts == 1 and result.status is None, result
    await sender.close()
    assert result.error == "refused: link-local address fe80::1"
    assert time.monotonic() - started < 0.5
    assert count(metrics, "webhook_retries", purpose="alert") == 0


async def test_a_redirect_to_a_refused_address_is_not_followed(settings, metrics, receiver):
    # The receiver is allowed by name (127.0.0.1); its redirect goes to a loopback name that is not.
    target = await WebhookReceiver().start()
    try:
        receiver.status = 302, {"Location": f"http://localhost:{target.port}/stolen"}
        sender = WebhookSender(strict(settings, webhook_allowed_hosts=["127.0.0.1"]), metrics)
        result = await sender.post(receiver.url, {"x": 1})
        await sender.close()
    finally:
        await target.stop()
    assert not result.ok and result.status == 302 and result.attempts == 1, result
    assert len(receiver.requests) == 1 and target.requests == []


async def test_room_hooks_to_a_refused_address_count_as_refused(settings, aredis, metrics, receiver, caplog):
    s = dataclasses.replace(
        strict(settings), history=True, room_hooks_url=receiver.url, room_hooks_events=["member_joined"]
    ).validate()
    hooks = RoomHooks(s, aredis, metrics, "hooks-egress")
    batch = _Batch(tenant="default", room_code="lobby", ids=["1-0"])
    batch.joins.append({"sessionId": "s1", "at": 1})
    with caplog.at_level(logging.WARNING):
        await hooks._flush("room-1", batch)
        await hooks.sender.close()
    assert receiver.requests == []
    assert count(metrics, "room_hooks", event="member_joined", outcome="refused") == 1
    assert count(metrics, "webhook_retries", purpose="hook") == 0
    [failed] = [r for r in caplog.records if r.getMessage() == "room_hook_failed"]
    assert failed.error == "refused: loopback address 127.0.0.1"
