"""presence.sessions: HELLO, HEARTBEAT, LEAVE, close, expiry — against a real hot store."""

from __future__ import annotations

import time

import pytest

from spidi_server.errors import (
    BadRequestError,
    ForbiddenError,
    RoomFullError,
    RoomNotFoundError,
    UnknownSessionError,
)
from spidi_server.protocol import destinations as dest
from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

LOBBY = room_id_for("default", "lobby")


async def join(presence, client, room: str = "lobby", **fields) -> dict:
    payload = {"roomCode": room, "clientId": "tablet", "appVersion": "1.0", **fields}
    await presence.hello(client, payload)
    (welcome,) = [m for m in client.messages(dest.USER_SESSION) if m["type"] == "WELCOME"]
    return welcome


async def test_hello_welcomes_and_writes_the_session_to_redis(presence, client_factory, store, redis_sync):
    client = client_factory()
    welcome = await join(presence, client)
    sid = welcome["sessionId"]
    assert welcome["roomId"] == LOBBY and welcome["resumed"] is False
    assert welcome["heartbeatIntervalMs"] == presence.settings.heartbeat_interval_ms
    session = presence.sessions[sid]
    assert session in client.sessions and session.client is client and sid in presence.rooms[LOBBY].sessions
    assert presence.holds(sid)
    await store.flush()
    assert redis_sync.zscore(keys.room_online(LOBBY), sid) is not None
    assert redis_sync.hget(keys.session(LOBBY, sid), "clientId") == "tablet"


async def test_hello_needs_the_join_role_before_its_body_is_read(presence, client_factory):
    monitor = client_factory("mon", "spidi:monitor")
    with pytest.raises(ForbiddenError, match="HELLO needs role spidi:user or spidi:admin"):
        await presence.hello(monitor, {"roomCode": "not a code!"})


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"clientId": "t", "appVersion": "1"}, "roomCode must be 1-64 characters"),
        ({"roomCode": "lobby", "appVersion": "1"}, "clientId must be a non-empty string of at most 128"),
        ({"roomCode": "lobby", "clientId": "t", "appVersion": "1", "os": ""}, "os must be a non-empty"),
        (
            {"roomCode": "lobby", "clientId": "t", "appVersion": "1", "resumeSessionId": 7},
            "resumeSessionId must be a string",
        ),
    ],
)
async def test_a_bad_hello_is_refused_and_leaves_nothing(presence, client_factory, payload, message):
    client = client_factory()
    with pytest.raises(BadRequestError, match=message):
        await presence.hello(client, payload)
    assert not presence.sessions and not presence.rooms and not client.sessions


async def test_unknown_room_and_full_room(presence_factory, client_factory):
    presence = presence_factory(rooms={"small": 1}, auto_create_rooms=False)
    with pytest.raises(RoomNotFoundError, match="room 'nowhere' does not exist"):
        await presence.hello(client_factory(), {"roomCode": "nowhere", "clientId": "t", "appVersion": "1"})
    await join(presence, client_factory(), "small")
    with pytest.raises(RoomFullError, match=r"room 'small' is full \(1 sessions\)"):
        await join(presence, client_factory("bob"), "small")
    assert len(presence.sessions) == 1


async def test_heartbeat_updates_the_session_and_redis(presence, client_factory, store, redis_sync):
    client = client_factory()
    sid = (await join(presence, client))["sessionId"]
    presence.heartbeat(client, sid, 12.0)
    presence.heartbeat(client, sid, 30.0)
    session = presence.sessions[sid]
    assert (session.heartbeats, session.latency_ms, session.latency_min, session.latency_max) == (
        2,
        30.0,
        12.0,
        30.0,
    )
    room = presence.rooms[LOBBY]
    presence.sample_rooms()  # the room's latencies gather in the lane until sampled
    assert room.sample.latency_count == 2 and sum(room.sample.hist) == 2
    await store.flush()
    assert float(redis_sync.hget(keys.room_latency(LOBBY), sid)) == 30.0


async def test_heartbeat_and_leave_only_from_the_sessions_own_connection(presence, client_factory):
    owner, other = client_factory(), client_factory("bob")
    sid = (await join(presence, owner))["sessionId"]
    with pytest.raises(UnknownSessionError, match=f"no session '{sid}' on this connection"):
        presence.heartbeat(other, sid, 1.0)
    with pytest.raises(UnknownSessionError, match="no session 'nope' on this connection"):
        presence.leave(owner, "nope")
    with pytest.raises(UnknownSessionError):
        presence.leave(other, sid)
    assert sid in presence.sessions


async def test_leave_ends_the_session_everywhere(presence, client_factory, store, redis_sync):
    client = client_factory()
    sid = (await join(presence, client))["sessionId"]
    presence.leave(client, sid)
    assert sid not in presence.sessions and not client.sessions
    assert LOBBY not in presence.rooms  # idle: dropped
    assert client.messages(dest.USER_SESSION) == []  # a LEAVE is not told SESSION_ENDED
    await store.flush()
    assert redis_sync.zscore(keys.room_online(LOBBY), sid) is None


async def test_abrupt_close_keeps_the_session_for_the_grace_period_then_resume(presence, client_factory):
    first = client_factory(ip="10.0.0.1")
    sid = (await join(presence, first))["sessionId"]
    presence.client_closed(first, clean=False)
    assert presence.sessions[sid].client is None
    second = client_factory(ip="10.0.0.2")
    welcome = await join(presence, second, resumeSessionId=sid)
    assert welcome["sessionId"] == sid and welcome["resumed"] is True
    assert presence.sessions[sid].client is second and presence.sessions[sid].ip == "10.0.0.2"


async def test_a_foreign_resume_id_starts_a_new_session(presence, client_factory):
    sid = (await join(presence, client_factory("ann")))["sessionId"]
    welcome = await join(presence, client_factory("bob"), resumeSessionId=sid)
    assert welcome["sessionId"] != sid and welcome["resumed"] is False


async def test_clean_close_ends_with_disconnect(presence, client_factory):
    client = client_factory()
    sid = (await join(presence, client))["sessionId"]
    presence.client_closed(client, clean=True)
    assert sid not in presence.sessions
    assert presence.metrics.sessions_ended.labels(reason="disconnect")._value.get() == 1


async def test_expiry_timeout_then_disconnect_after_grace(presence, client_factory):
    live, gone = client_factory("ann"), client_factory("bob")
    silent = (await join(presence, live))["sessionId"]
    closed = (await join(presence, gone))["sessionId"]
    presence.client_closed(gone, clean=False)
    later = time.monotonic() + max(presence.lifecycle.timeout_s, presence.lifecycle.grace_s) + 1
    assert presence.expire(later) == 2
    assert not presence.sessions
    assert {"type": "SESSION_ENDED", "sessionId": silent, "reason": "timeout"} in live.messages(
        dest.USER_SESSION
    )
    ended = presence.metrics.sessions_ended
    assert (
        ended.labels(reason="timeout")._value.get() == 1
        and ended.labels(reason="disconnect")._value.get() == 1
    )
    assert closed not in presence.sessions


async def test_end_all_and_live_sessions(presence, client_factory):
    client = client_factory()
    sids = {(await join(presence, client, room))["sessionId"] for room in ("a", "b")}
    live = list(presence.live_sessions())
    assert {s.session_id for s in live} == sids and all(s.ttl_s == presence.session_ttl_s for s in live)
    presence.end_all()
    assert not presence.sessions and not presence.rooms
    assert list(presence.live_sessions()) == []


# -- liveness without a wheel touch per heartbeat ----------------------------------------------


async def test_a_session_that_keeps_beating_is_not_expired_one_that_stops_is(presence, client_factory):
    client = client_factory()
    sid = (await join(presence, client))["sessionId"]
    lane, timeout = presence.lane, presence.lifecycle.timeout_s
    start = time.monotonic()
    # Beats (at the times the lane would stamp them) every third of the timeout, for three
    # timeouts: the wheel's armed deadline passes again and again, and is re-armed each time.
    t = start
    for _ in range(9):
        t += timeout / 3
        lane.beat(sid, 5.0, int(time.time() * 1000), t)
        presence.expire(t + 0.05)
        assert sid in presence.sessions
    last = t
    presence.expire(last + timeout - 0.15)  # silent, but its last beat is not a timeout old yet
    assert sid in presence.sessions
    presence.expire(last + timeout + 0.1)  # within timeout + one tick of the wheel
    assert sid not in presence.sessions
    assert {"type": "SESSION_ENDED", "sessionId": sid, "reason": "timeout"} in client.messages(
        dest.USER_SESSION
    )


async def test_a_closed_connection_ends_after_the_grace_period_whatever_its_last_beat(
    presence_factory, client_factory
):
    presence = presence_factory(grace_period_ms=2_000)
    client = client_factory()
    sid = (await join(presence, client))["sessionId"]
    presence.heartbeat(client, sid, 3.0)
    presence.client_closed(client, clean=False)
    # A beat a moment ago would keep a connected session a whole timeout longer; not this one.
    presence.expire(time.monotonic() + 2.2)
    assert sid not in presence.sessions
    assert presence.metrics.sessions_ended.labels(reason="disconnect")._value.get() == 1


async def test_a_ttl_refresh_is_due_once_per_half_timeout(presence, client_factory, store, redis_sync):
    client = client_factory()
    sid = (await join(presence, client))["sessionId"]
    await store.flush()
    key = keys.session(LOBBY, sid)
    started = presence.sessions[sid].connected_at
    half = presence.settings.heartbeat_timeout_ms // 2
    redis_sync.expire(key, 5)
    presence.lane.beat(sid, 3.0, started + half - 1, time.monotonic())  # not due yet
    assert await store.flush()
    assert 0 < redis_sync.ttl(key) <= 5
    presence.lane.beat(sid, 3.0, started + half + 1, time.monotonic())  # due: renewed
    assert await store.flush()
    assert redis_sync.ttl(key) > 5
    redis_sync.expire(key, 5)
    presence.lane.beat(sid, 3.0, started + half + 2, time.monotonic())  # renewed a moment ago
    assert await store.flush()
    assert 0 < redis_sync.ttl(key) <= 5
