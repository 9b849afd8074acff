"""Room statistics and session history from PostgreSQL, against rows the real writer put there."""

from __future__ import annotations

import pytest

from spidi_server.rooms import room_id_for

from ..history.helpers import FakeSession, hist_of, ms, quantile, room_sample
from .conftest import assert_problem, check_shape, create_room, write_history

T0 = ms("2026-05-04T10:00")
MIN = 60_000


@pytest.fixture
async def history(api, api_node, redis_sync):
    """Room 'hist' (stored) with samples in three minutes and sessions of two users, plus tenant acme's."""
    await create_room(api, "hist")
    s1 = FakeSession("default", "hist", "alice", T0)
    s1.beat(T0 + 10_000, 10)
    s1.beat(T0 + 20_000, 30)
    s2 = FakeSession("default", "hist", "bob", T0 + 10 * MIN, device="iPhone", os="iOS 18")
    s2.beat(T0 + 11 * MIN, 5)
    s3 = FakeSession("default", "other", "alice", T0 + 20 * MIN, node="node-b")
    foreign = FakeSession("acme", "hist", "alice", T0 + 30 * MIN)
    evs = [
        s1.started(),
        s1.ended(T0 + 5 * MIN, "leave"),
        s2.started(),
        s2.checkpoint(),
        s3.started(),
        s3.ended(T0 + 21 * MIN, "timeout"),
        foreign.started(),
        room_sample("default", "hist", T0, online=[2, 4], latencies=[10, 20, 30]),
        room_sample("default", "hist", T0 + MIN, online=[4], latencies=[100]),
        room_sample("default", "hist", T0 + 61 * MIN, "node-a", online=[1]),
        room_sample("default", "hist", T0 + 61 * MIN, "node-b", online=[2, 2]),
        room_sample("default", "ghost", T0, online=[1]),
        room_sample("acme", "hist", T0, online=[9]),
    ]
    await write_history(api_node, redis_sync, evs)
    return {"s1": s1, "s2": s2, "s3": s3}


async def test_room_stats_per_minute_and_hour(api, history):
    doc = (await api.get("/api/openapi.json", role=None)).body
    room_id = room_id_for("default", "hist")
    url = f"/api/v1/rooms/{room_id}/stats"
    window = {"from": "2026-05-04T10:00:00Z", "to": "2026-05-04T12:00:00Z"}
    reply = await api.get(url, role="monitor", params=window)
    assert reply.status == 200, reply.body
    check_shape(doc["components"]["schemas"]["RoomStats"], reply.body, doc, "stats")
    body = reply.body
    assert (body["roomId"], body["bucket"], body["from"], body["to"]) == (
        room_id,
        "1m",
        "2026-05-04T10:00:00.000Z",
        "2026-05-04T12:00:00.000Z",
    )
    # Online and latency come from the nodes' samples; joins and ends from the session events, in
    # the minute they happened (alice joins at 10:00 and leaves at 10:05, bob joins at 10:10).
    p0, p1, p_left, p_joined, p2 = body["points"]
    assert [p["ts"][11:16] for p in body["points"]] == ["10:00", "10:01", "10:05", "10:10", "11:01"]
    assert (
        p0["onlineAvg"],
        p0["onlineMax"],
        p0["joins"],
        p0["leaves"],
        p0["timeouts"],
        p0["disconnects"],
    ) == (3, 4, 1, 0, 0, 0)
    assert p0["latencyAvgMs"] == 20 and p0["latencyP95Ms"] == pytest.approx(
        quantile(hist_of([10, 20, 30]), 0.95)
    )
    assert (p1["onlineAvg"], p1["joins"], p1["latencyAvgMs"]) == (4, 0, 100)
    assert (p_left["leaves"], p_left["joins"], p_left["onlineMax"], p_left["latencyAvgMs"]) == (1, 0, 0, None)
    assert (p_joined["joins"], p_joined["leaves"]) == (1, 0)
    # Two nodes in the same minute add up: 1 + 2 sessions on average; at most 3 at once in the
    # room (1 + 2 in its first second), not one node's 2.
    assert (p2["onlineAvg"], p2["onlineMax"], p2["disconnects"], p2["latencyAvgMs"], p2["latencyP95Ms"]) == (
        3,
        3,
        0,
        None,
        None,
    )

    hourly = (await api.get(url, params={**window, "bucket": "1h"})).body
    h0, h1 = hourly["points"]
    assert h0["ts"] == "2026-05-04T10:00:00.000Z" and h1["ts"] == "2026-05-04T11:00:00.000Z"
    assert h0["onlineAvg"] == pytest.approx((3 + 4) / 60, abs=1e-3) and h0["onlineMax"] == 4
    assert (h0["joins"], h0["leaves"], h0["timeouts"], h0["latencyAvgMs"]) == (2, 1, 0, 40)
    assert h1["onlineAvg"] == pytest.approx(3 / 60, abs=1e-3) and h1["joins"] == 0

    later = (
        await api.get(url, params={"from": "2026-05-04T10:01:00+00:00", "to": "2026-05-04T11:00:00"})
    ).body
    assert [p["ts"][11:16] for p in later["points"]] == ["10:01", "10:05", "10:10"]
    # The default window is the last hour: nothing there.
    recent = (await api.get(url)).body
    assert recent["points"] == [] and recent["bucket"] == "1m"

    # A room known only from its history is still the tenant's room; other tenants get 404.
    ghost = await api.get(f"/api/v1/rooms/{room_id_for('default', 'ghost')}/stats", params=window)
    assert ghost.status == 200 and len(ghost.body["points"]) == 1
    assert_problem(await api.get(url, tenant="acme", params=window), 404, "not-found")
    assert_problem(
        await api.get(f"/api/v1/rooms/{room_id_for('default', 'never')}/stats", params=window),
        404,
        "not-found",
    )


async def test_session_history(api, history):
    doc = (await api.get("/api/openapi.json", role=None)).body
    s1, s2, s3 = history["s1"], history["s2"], history["s3"]
    window = {"from": "2026-05-04T00:00:00Z", "to": "2026-05-05T00:00:00Z"}

    async def ids(**params) -> tuple[list[str], dict]:
        reply = await api.get("/api/v1/sessions", role="admin", params={**window, **params})
        assert reply.status == 200, reply.body
        return [s["sessionId"] for s in reply.body["items"]], reply.body

    found, body = await ids()
    assert found == [s3.session_id, s2.session_id, s1.session_id]  # newest first; acme's is not there
    assert (body["total"], body["limit"], body["offset"]) == (3, 100, 0)
    check_shape(doc["components"]["schemas"]["SessionList"], body, doc, "sessions")
    first = body["items"][2]
    assert first == {
        "sessionId": s1.session_id,
        "roomId": room_id_for("default", "hist"),
        "roomCode": "hist",
        "userId": "alice",
        "clientId": "web",
        "device": "Pixel",
        "os": "Android",
        "appVersion": "1.2.3",
        "ip": "10.0.0.7",
        "nodeId": "node-a",
        "startedAt": "2026-05-04T10:00:00.000Z",
        "endedAt": "2026-05-04T10:05:00.000Z",
        "endReason": "leave",
        "heartbeatCount": 2,
        "latencyAvgMs": 20.0,
        "latencyMinMs": 10.0,
        "latencyMaxMs": 30.0,
        "lastHeartbeatAt": "2026-05-04T10:00:20.000Z",
    }
    live = body["items"][1]
    assert (live["endedAt"], live["endReason"], live["device"], live["heartbeatCount"]) == (
        None,
        None,
        "iPhone",
        1,
    )
    assert body["items"][0]["endReason"] == "timeout" and body["items"][0]["nodeId"] == "node-b"

    assert (await ids(userId="alice"))[0] == [s3.session_id, s1.session_id]
    assert (await ids(roomId=room_id_for("default", "hist")))[0] == [s2.session_id, s1.session_id]
    assert (await ids(roomId=room_id_for("default", "hist"), userId="bob"))[0] == [s2.session_id]
    page, body = await ids(limit="1", offset="1")
    assert page == [s2.session_id] and (body["total"], body["limit"], body["offset"]) == (3, 1, 1)
    assert (await ids(**{"from": "2026-05-04T10:01:00Z"}))[0] == [s3.session_id, s2.session_id]
    assert (await ids(userId="nobody"))[1]["total"] == 0
    # Without from/to: the last 24 hours, where nothing happened.
    assert (await api.get("/api/v1/sessions")).body["total"] == 0
