"""presence.subscriptions: snapshots from Redis, then deltas — against a real hot store."""

from __future__ import annotations

import pytest

from spidi_server.errors import ForbiddenError, RoomNotFoundError, UnknownDestinationError
from spidi_server.protocol import destinations as dest
from spidi_server.rooms import room_id_for

from .conftest import wait_for

LOBBY = room_id_for("default", "lobby")
ROSTER = dest.room_roster("lobby")
METRICS = dest.room_metrics("lobby")


async def subscribe(presence, client, sub_id: str, raw: str) -> None:
    client.stomp.subscriptions[sub_id] = parsed = dest.parse_subscription(raw)
    await presence.subscribe(client, sub_id, parsed)


async def joined(presence, client, room: str = "lobby") -> str:
    await presence.hello(client, {"roomCode": room, "clientId": "t", "appVersion": "1"})
    return next(s.session_id for s in client.sessions if s.room.code == room)


async def test_roster_snapshot_reads_redis(presence, client_factory, store):
    sid = await joined(presence, client_factory())
    await store.flush()
    monitor = client_factory("mon", "spidi:monitor")
    await subscribe(presence, monitor, "r", ROSTER)
    (snapshot,) = monitor.messages(ROSTER)
    assert snapshot["type"] == "ROOM_ROSTER" and snapshot["full"] is True and snapshot["seq"] == 1
    assert [u["sessionId"] for u in snapshot["users"]] == [sid]
    room = presence.rooms[LOBBY]
    assert room.watched and len(room.roster_subs) == 1 and room.pending_subs == 0


async def test_remote_changes_reach_roster_subscribers_at_once_then_one_delta_per_window(
    presence, client_factory
):
    monitor = client_factory("mon", "spidi:monitor")
    await subscribe(presence, monitor, "r", ROSTER)
    monitor.messages()
    room = presence.rooms[LOBBY]
    room.published_at = 0.0  # the snapshot's window is over: the room is quiet
    first = {"sessionId": "remote-1", "userId": "zed"}
    presence.remote_changes(LOBBY, {"n": "other", "j": [first], "l": {}, "u": []})
    # A quiet room's first change goes out as it is heard, without waiting for a turn of the loop.
    (delta,) = monitor.messages(ROSTER)
    assert delta["full"] is False and delta["joined"] == [first] and delta["left"] == [] and delta["seq"] == 2
    second = {"sessionId": "remote-2", "userId": "amy"}
    presence.remote_changes(LOBBY, {"n": "other", "j": [second], "l": {}, "u": []})
    presence.remote_changes(LOBBY, {"n": "other", "j": [], "l": {"gone": "leave"}, "u": []})
    assert monitor.messages(ROSTER) == []  # within the window: they wait for its end, together
    deltas: list = []
    assert await wait_for(lambda: deltas.extend(monitor.messages(ROSTER)) or deltas)
    (delta,) = deltas
    assert delta["joined"] == [second] and delta["seq"] == 3
    assert delta["left"] == [{"sessionId": "gone", "reason": "leave"}]


async def test_remote_changes_of_an_unobserved_room_are_ignored(presence):
    presence.remote_changes(LOBBY, {"j": [{"sessionId": "x"}], "l": {}, "u": []})
    assert LOBBY not in presence.rooms


async def test_metrics_snapshot_falls_back_to_the_local_capacity(presence, client_factory):
    monitor = client_factory("mon", "spidi:monitor")
    await subscribe(presence, monitor, "m", METRICS)
    (metrics,) = monitor.messages(METRICS)
    assert metrics["type"] == "ROOM_METRICS" and metrics["roomCode"] == "lobby"
    assert metrics["capacity"] == presence.settings.default_room_capacity and "tenant" not in metrics


async def test_tenant_rooms_snapshot(presence, client_factory, store):
    await joined(presence, client_factory())
    await store.flush()
    monitor = client_factory("mon", "spidi:monitor")
    await subscribe(presence, monitor, "t", dest.TOPIC_ROOMS)
    (rooms,) = monitor.messages(dest.TOPIC_ROOMS)
    assert rooms["type"] == "ROOMS" and [r["roomCode"] for r in rooms["rooms"]] == ["lobby"]


async def test_subscribing_needs_the_observe_role(presence, client_factory):
    user = client_factory()
    with pytest.raises(
        ForbiddenError, match=f"subscribing to {ROSTER} needs role spidi:monitor or spidi:admin"
    ):
        await subscribe(presence, user, "r", ROSTER)
    assert not presence.rooms


async def test_unknown_room_and_alerts_without_alerting(presence_factory, client_factory):
    presence = presence_factory(auto_create_rooms=False)
    monitor = client_factory("mon", "spidi:monitor")
    with pytest.raises(RoomNotFoundError, match="room 'lobby' does not exist"):
        await subscribe(presence, monitor, "r", ROSTER)
    with pytest.raises(UnknownDestinationError, match="alerting is not running on this server"):
        await subscribe(presence, monitor, "a", dest.TOPIC_ALERTS)


async def test_unsubscribe_drops_an_idle_room_and_tenant_subscriptions(presence, client_factory):
    monitor = client_factory("mon", "spidi:monitor")
    await subscribe(presence, monitor, "r", ROSTER)
    await subscribe(presence, monitor, "t", dest.TOPIC_ROOMS)
    presence.unsubscribe(monitor, "r")
    assert LOBBY not in presence.rooms and presence.subscriptions.tenant_subs
    presence.client_closed(monitor, clean=True)
    assert not presence.subscriptions.tenant_subs


async def test_publish_tenants_only_when_something_changed(presence, client_factory, store):
    monitor = client_factory("mon", "spidi:monitor")
    await subscribe(presence, monitor, "t", dest.TOPIC_ROOMS)
    monitor.messages()
    await presence.publish_tenants()
    assert len(monitor.messages(dest.TOPIC_ROOMS)) == 1  # the first publish records what was sent
    await presence.publish_tenants()
    assert monitor.messages(dest.TOPIC_ROOMS) == []
    await joined(presence, client_factory())
    await store.flush()
    await presence.publish_tenants()
    (update,) = monitor.messages(dest.TOPIC_ROOMS)
    assert [r["roomCode"] for r in update["rooms"]] == ["lobby"]
