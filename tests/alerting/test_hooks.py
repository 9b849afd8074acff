"""Room lifecycle hooks next to a real node: real WebSocket clients, the real Redis stream, an HTTP receiver."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import pytest

from spidi_server.alerting.hooks import GROUP, RoomHooks, _Batch, drop_hooks_group, ensure_hooks_group
from spidi_server.errors import ConfigError
from spidi_server.metrics import NodeMetrics
from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings
from spidi_server.stores import events

from ..conftest import token_for
from ..stomp_client import connected
from .receivers import wait_for

LOBBY = room_id_for("default", "lobby")


def hook_settings(settings, receiver, **extra):
    base = {
        "room_hooks_url": receiver.url,
        "webhook_backoff_s": 0.1,
        "webhook_retries": 5,
        "webhook_secret": "k",
    }
    return dataclasses.replace(settings, **{**base, **extra}).validate()


async def start_node(node_factory):
    # The node's own evaluator stays off: these tests run RoomHooks themselves.
    return await node_factory(alerting=False, grace_period_ms=0)


async def join(node, sub: str, client_id: str, **extra):
    client = await connected(node.ws_url, token_for(node.settings, sub, "spidi:user"))
    welcome = await client.hello("lobby", client_id, **extra)
    return client, welcome["sessionId"]


async def leave(client, session_id: str) -> None:
    await client.app("/app/leave", {"sessionId": session_id}, receipt="bye")
    await client.next(command="RECEIPT")
    await client.close()


def posted(receiver, event: str | None = None) -> list[dict]:
    """Bodies of the POSTs the receiver accepted (2xx), optionally of one event."""
    return [r.json for r in receiver.delivered if event is None or r.json["event"] == event]


def members(receiver, event: str) -> list[str]:
    return [m["sessionId"] for body in posted(receiver, event) for m in body["members"]]


async def pending(aredis) -> int:
    return (await aredis.xpending(events.STREAM, GROUP))["pending"]


async def test_room_lifecycle_hooks(node_factory, settings, aredis, receiver):
    node = await start_node(node_factory)
    metrics = NodeMetrics()
    hooks = RoomHooks(hook_settings(settings, receiver), aredis, metrics, "hooks-a")
    await hooks.start()
    try:
        alice, sid_a = await join(node, "alice", "phone", device="Pixel", os="Android")
        assert await wait_for(lambda: len(posted(receiver)) >= 2)
        occupied, joined = posted(receiver)
        assert occupied["event"] == "room_occupied" and occupied["online"] == 1
        assert (occupied["tenant"], occupied["roomId"], occupied["roomCode"]) == ("default", LOBBY, "lobby")
        assert isinstance(occupied["at"], int) and isinstance(occupied["sentAt"], int)
        assert joined["event"] == "member_joined" and joined["roomCode"] == "lobby"
        [member] = joined["members"]
        assert member == {
            "sessionId": sid_a,
            "userId": "alice",
            "clientId": "phone",
            "device": "Pixel",
            "os": "Android",
            "appVersion": "1.0.0",
            "at": member["at"],
        }
        first = receiver.delivered[-1]
        assert first.headers["X-Spidi-Event"] == "member_joined" and first.headers["X-Spidi-Signature"]

        # Three joins within a second: batched, not one POST each.
        others = [await join(node, name, f"c-{name}") for name in ("bob", "carol", "dave")]
        assert await wait_for(lambda: len(members(receiver, "member_joined")) == 4)
        later = posted(receiver, "member_joined")[1:]
        assert len(later) <= 2 and max(len(b["members"]) for b in later) >= 2
        assert sorted(members(receiver, "member_joined")) == sorted([sid_a] + [sid for _, sid in others])

        # Leaves: a LEAVE and a dropped connection (no grace period here), then the last ones.
        await leave(*others[0])
        await others[1][0].close()
        assert await wait_for(lambda: len(members(receiver, "member_left")) == 2)
        left = {m["sessionId"]: m for body in posted(receiver, "member_left") for m in body["members"]}
        assert left[others[0][1]]["reason"] == "leave" and left[others[1][1]]["reason"] == "disconnect"
        assert left[others[0][1]]["userId"] == "bob"  # from the session_started this instance saw
        assert not posted(receiver, "room_vacated")
        await leave(*others[2])
        await leave(alice, sid_a)
        assert await wait_for(lambda: posted(receiver, "room_vacated"))
        assert len(members(receiver, "member_left")) == 4
        assert [b["event"] for b in posted(receiver)][-2:] == ["member_left", "room_vacated"]
        vacated = posted(receiver, "room_vacated")[0]
        assert vacated["online"] == 0 and vacated["roomCode"] == "lobby"
        assert len(posted(receiver, "room_occupied")) == 1

        # Never more than one POST per room and event type within a second.
        times: dict[str, list[float]] = {}
        for r in receiver.delivered:
            times.setdefault(r.json["event"], []).append(r.at)
        for event, at in times.items():
            gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
            assert all(gap >= 0.9 for gap in gaps), (event, gaps)
        assert await wait_for(
            lambda: (
                metrics.registry.get_sample_value(
                    "spidi_room_hooks_total", {"event": "room_vacated", "outcome": "sent"}
                )
                == 1
            )
        )
        sent = metrics.registry.get_sample_value(
            "spidi_room_hooks_total", {"event": "member_joined", "outcome": "sent"}
        )
        assert sent == len(posted(receiver, "member_joined"))
        assert await pending(aredis) == 0  # every entry acknowledged, samples and checkpoints too
    finally:
        await hooks.stop()


@pytest.mark.parametrize("successor", ["other-node", "same-node"])
async def test_a_successor_sends_what_was_not_acknowledged_and_nothing_twice(
    node_factory, settings, aredis, receiver, successor, caplog
):
    caplog.set_level(logging.INFO, logger="spidi.alerting.hooks")
    node = await start_node(node_factory)
    metrics = NodeMetrics()
    s = hook_settings(settings, receiver)
    first = RoomHooks(s, aredis, metrics, "node-1")
    await first.start()
    alice, sid_a = await join(node, "alice", "a")
    assert await wait_for(lambda: sid_a in members(receiver, "member_joined"))
    assert await wait_for(lambda: first._held == set())  # acknowledged

    receiver.status = 503  # the receiver breaks: the next batch is retried, then its sender stops
    bob, sid_b = await join(node, "bob", "b")
    assert await wait_for(lambda: any(r.status == 503 for r in receiver.requests))
    await first.stop(timeout=0)
    assert await pending(aredis) == 1  # bob's session_started, read and not acknowledged
    receiver.status = 200

    # A failover: another node claims the entry once idle; a restart re-reads its own at once.
    second = RoomHooks(
        s, aredis, metrics, "node-2" if successor == "other-node" else "node-1", claim_idle_s=0.5
    )
    await second.start()
    try:
        assert await wait_for(lambda: sid_b in members(receiver, "member_joined"))
        took_over = {r.getMessage() for r in caplog.records} & {"room_hooks_claimed", "room_hooks_recovered"}
        assert took_over == {"room_hooks_claimed" if successor == "other-node" else "room_hooks_recovered"}
        carol, sid_c = await join(node, "carol", "c")  # and it reads new events too
        assert await wait_for(lambda: sid_c in members(receiver, "member_joined"))
        counts = Counter(members(receiver, "member_joined"))
        assert counts == {sid_a: 1, sid_b: 1, sid_c: 1}
        assert len(posted(receiver, "room_occupied")) == 1  # the successor saw the room occupied already
        assert await wait_for(lambda: second._held == set())
        assert await pending(aredis) == 0
        for client, sid in ((alice, sid_a), (bob, sid_b), (carol, sid_c)):
            await leave(client, sid)
        assert await wait_for(lambda: posted(receiver, "room_vacated"))
    finally:
        await second.stop()


async def test_hooks_off_drops_the_group(settings, aredis):
    """A group nobody reads would hold back the writer's stream trimming forever."""
    await ensure_hooks_group(aredis)
    await ensure_hooks_group(aredis)  # idempotent
    assert [g["name"] for g in await aredis.xinfo_groups(events.STREAM)] == [GROUP.encode()]
    hooks = RoomHooks(settings, aredis, NodeMetrics(), "n")  # room_hooks_url empty
    await hooks.start()
    assert await aredis.xinfo_groups(events.STREAM) == []
    await hooks.stop()
    assert await drop_hooks_group(aredis) is False
    await aredis.delete(events.STREAM)
    assert await drop_hooks_group(aredis) is False  # no stream at all


def test_hooks_need_history(tmp_path):
    with pytest.raises(ConfigError, match="room_hooks_url needs history"):
        Settings(data_dir=str(tmp_path), room_hooks_url="http://127.0.0.1:9/h", history=False).validate()


def _member(sid: str) -> dict:
    return {
        "sessionId": sid,
        "userId": sid,
        "clientId": None,
        "device": None,
        "os": None,
        "appVersion": None,
        "at": 1,
    }


@pytest.mark.parametrize(
    "seen, joins, leaves, online, expected",
    [
        (None, 1, 0, 1, ["room_occupied", "member_joined"]),  # first sight: the first member
        (None, 3, 0, 3, ["room_occupied", "member_joined"]),
        (None, 1, 0, 2, ["member_joined"]),  # someone was there already
        (None, 0, 1, 0, ["member_left", "room_vacated"]),
        (None, 1, 1, 0, ["member_joined", "member_left"]),  # came and went within one batch
        (0, 2, 0, 2, ["room_occupied", "member_joined"]),
        (3, 1, 0, 4, ["member_joined"]),
        (2, 0, 2, 0, ["member_left", "room_vacated"]),
        (1, 1, 1, 1, ["member_joined", "member_left"]),  # emptied and refilled within one window
        (0, 1, 1, 0, ["member_joined", "member_left"]),
    ],
)
def test_occupied_and_vacated_semantics(settings, seen, joins, leaves, online, expected):
    hooks = RoomHooks(
        dataclasses.replace(settings, room_hooks_url="http://127.0.0.1:9/h"), None, NodeMetrics(), "n"
    )
    if seen is not None:
        hooks._counts["r"] = seen
    batch = _Batch(
        "default",
        "lobby",
        [_member(f"j{i}") for i in range(joins)],
        [_member(f"l{i}") for i in range(leaves)],
        [],
    )
    assert [name for name, _ in hooks.payloads("r", batch, online)] == expected
    assert hooks._counts["r"] == online


def test_only_the_configured_events_are_posted(settings):
    s = dataclasses.replace(
        settings, room_hooks_url="http://127.0.0.1:9/h", room_hooks_events=["room_vacated"]
    )
    hooks = RoomHooks(s, None, NodeMetrics(), "n")
    hooks._counts["r"] = 1
    out = hooks.payloads("r", _Batch("default", "lobby", [], [_member("x")], []), 0)
    assert [name for name, _ in out] == ["room_vacated"]
    assert out[0][1] == {
        "event": "room_vacated",
        "tenant": "default",
        "roomId": "r",
        "roomCode": "lobby",
        "online": 0,
        "at": 1,
        "sentAt": out[0][1]["sentAt"],
    }
