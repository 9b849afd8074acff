"""A room in the past: GET /api/v1/rooms/{id}/roster?at= and /timeline, against a session history
the real writer wrote from time-shifted events (session_started / checkpoint / ended through the
Redis stream), in real PostgreSQL under row-level security.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from spidi_server.history.retention import apply_retention
from spidi_server.history.sql import pitr
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for

from ..history.helpers import FakeSession, ms
from .conftest import assert_problem, check_shape, create_room, error_fields, write_history

T0 = ms("2026-11-02T10:00")
MIN = 60_000
ROOM = room_id_for("default", "pit")
ROSTER = f"/api/v1/rooms/{ROOM}/roster"
TIMELINE = f"/api/v1/rooms/{ROOM}/timeline"


def at(offset_ms: int) -> str:
    """RFC 3339 of T0 + offset_ms."""
    return datetime.fromtimestamp((T0 + offset_ms) / 1000, UTC).isoformat(timespec="milliseconds")


@pytest.fixture
async def history(api, api_node, redis_sync):
    """Room 'pit' of tenant default:

    alice   [T0, T0+10m)            leave
    bob     [T0+5m, T0+20m)         timeout, on an iPhone from 10.9.9.9
    carol   [T0+10m, ...)           open, last heartbeat T0+30m: long silent, so in until T0+30m
    dave    [T0+15m, ...)           open, heartbeating now: in until now
    eve     [T0+21m, T0+22m)        between two 5-minute instants

    and acme's room 'pit' (another room: ids carry the tenant) with one session.
    """
    await create_room(api, "pit")
    await create_room(api, "pit", tenant="acme")
    alice = FakeSession("default", "pit", "alice", T0)
    bob = FakeSession("default", "pit", "bob", T0 + 5 * MIN, device="iPhone", os="iOS 18", ip="10.9.9.9")
    carol = FakeSession("default", "pit", "carol", T0 + 10 * MIN)
    carol.beat(T0 + 30 * MIN, 12)
    dave = FakeSession("default", "pit", "dave", T0 + 15 * MIN)
    dave.beat(int(time.time() * 1000) - 5_000, 8)
    eve = FakeSession("default", "pit", "eve", T0 + 21 * MIN)
    foreign = FakeSession("acme", "pit", "mallory", T0)
    evs = [
        alice.started(),
        alice.ended(T0 + 10 * MIN, "leave"),
        bob.started(),
        bob.ended(T0 + 20 * MIN, "timeout"),
        carol.started(),
        carol.checkpoint(),
        dave.started(),
        dave.checkpoint(),
        eve.started(),
        eve.ended(T0 + 22 * MIN, "leave"),
        foreign.started(),
        foreign.ended(T0 + 60 * MIN, "leave"),
    ]
    await write_history(api_node, redis_sync, evs)
    return {"bob": bob}


async def users_at(api, offset_ms: int, **kw) -> list[str]:
    reply = await api.get(ROSTER, params={"at": at(offset_ms)}, **kw)
    assert reply.status == 200, reply.body
    return [e["userId"] for e in reply.body["items"]]


async def test_roster_at_instants_and_boundaries(api, history):
    assert await users_at(api, -1) == []
    assert await users_at(api, 0) == ["alice"]  # a start is in
    assert await users_at(api, 5 * MIN) == ["alice", "bob"]
    assert await users_at(api, 10 * MIN - 1) == ["alice", "bob"]
    assert await users_at(api, 10 * MIN) == ["bob", "carol"]  # an end is out, a start at it in
    assert await users_at(api, 20 * MIN - 1) == ["bob", "carol", "dave"]
    assert await users_at(api, 20 * MIN) == ["carol", "dave"]
    assert await users_at(api, 21 * MIN + 30_000) == ["carol", "dave", "eve"]
    # carol never ended in history, but her last heartbeat is long past: she counts up to it,
    # as the writer's sweep will end her (node_lost at that heartbeat).
    assert await users_at(api, 30 * MIN - 1) == ["carol", "dave"]
    assert await users_at(api, 30 * MIN) == ["dave"]
    # dave is still heartbeating: in until now.
    now = datetime.now(UTC) - timedelta(seconds=1)
    reply = await api.get(ROSTER, params={"at": now.isoformat()})
    assert [e["userId"] for e in reply.body["items"]] == ["dave"]
    assert reply.body["items"][0]["endedAt"] is None and reply.body["items"][0]["endReason"] is None


async def test_roster_entries_and_ip_by_role(api, history):
    doc = (await api.get("/api/openapi.json", role=None)).body
    reply = await api.get(ROSTER, params={"at": at(6 * MIN)})
    check_shape(doc["components"]["schemas"]["PastRoster"], reply.body, doc, "roster")
    assert (reply.body["roomId"], reply.body["at"], reply.body["archive"]) == (
        ROOM,
        "2026-11-02T10:06:00.000Z",
        False,
    )
    bob = reply.body["items"][1]
    assert bob == {
        "sessionId": history["bob"].session_id,
        "userId": "bob",
        "clientId": "web",
        "device": "iPhone",
        "os": "iOS 18",
        "appVersion": "1.2.3",
        "ip": "10.9.9.9",
        "startedAt": "2026-11-02T10:05:00.000Z",
        "endedAt": "2026-11-02T10:20:00.000Z",
        "endReason": "timeout",
        "lastHeartbeatAt": "2026-11-02T10:05:00.000Z",
    }
    monitor = await api.get(ROSTER, role="monitor", params={"at": at(6 * MIN)})
    assert monitor.status == 200
    check_shape(doc["components"]["schemas"]["PastRoster"], monitor.body, doc, "roster")
    assert [e["userId"] for e in monitor.body["items"]] == ["alice", "bob"]
    assert all("ip" not in e for e in monitor.body["items"])
    assert "IP addresses (ip) only for" in doc["paths"]["/api/v1/rooms/{id}/roster"]["get"]["description"]
    # A client's role does not read rosters.
    assert_problem(await api.get(ROSTER, role="user", params={"at": at(0)}), 403, "forbidden")


async def test_tenant_isolation(api, history, pg):
    # acme's admin: default's room is no room of theirs, whatever the instant.
    assert_problem(await api.get(ROSTER, tenant="acme", params={"at": at(6 * MIN)}), 404, "not-found")
    assert_problem(
        await api.get(TIMELINE, tenant="acme", params={"from": at(0), "to": at(MIN)}), 404, "not-found"
    )
    # Its own room of the same code holds its own session only.
    acme = f"/api/v1/rooms/{room_id_for('acme', 'pit')}/roster"
    reply = await api.get(acme, tenant="acme", params={"at": at(6 * MIN)})
    assert [e["userId"] for e in reply.body["items"]] == ["mallory"]
    assert_problem(await api.get(acme, params={"at": at(6 * MIN)}), 404, "not-found")
    # Beneath the 404, row-level security: as acme, default's sessions are not there at all.
    with tenant_transaction(pg, "acme"):
        lost_before = datetime.now(UTC)
        assert pitr.roster_at(pg, ROOM, datetime.fromisoformat(at(6 * MIN)), lost_before, archive=True) == []
        start = datetime.fromisoformat(at(0))
        assert (
            pitr.online_counts(pg, ROOM, start, timedelta(minutes=5), 8, lost_before, archive=True) == [0] * 8
        )
    with tenant_transaction(pg, "default"):
        assert len(pitr.roster_at(pg, ROOM, datetime.fromisoformat(at(6 * MIN)), lost_before)) == 2
    # An unknown room is a 404 too.
    unknown = f"/api/v1/rooms/{room_id_for('default', 'never')}/roster"
    assert_problem(await api.get(unknown, params={"at": at(0)}), 404, "not-found")


async def test_timeline_counts_are_exact_at_each_instant(api, history):
    doc = (await api.get("/api/openapi.json", role=None)).body
    window = {"from": at(0), "to": at(40 * MIN)}
    reply = await api.get(TIMELINE, role="monitor", params={**window, "step": "5m"})
    assert reply.status == 200, reply.body
    check_shape(doc["components"]["schemas"]["RoomTimeline"], reply.body, doc, "timeline")
    body = reply.body
    assert (body["from"], body["to"], body["stepSeconds"], body["archive"]) == (
        "2026-11-02T10:00:00.000Z",
        "2026-11-02T10:40:00.000Z",
        300.0,
        False,
    )
    assert [p["ts"][11:16] for p in body["points"]] == [f"10:{m:02d}" for m in range(0, 40, 5)]
    # eve (10:21 to 10:22) is at none of the instants: counts, not maxima over the step.
    assert [p["online"] for p in body["points"]] == [1, 2, 2, 3, 2, 2, 1, 1]
    # The same instants asked as a number of points.
    by_points = await api.get(TIMELINE, role="monitor", params={**window, "points": "8"})
    assert by_points.body["points"] == body["points"]
    # Each count is the size of the roster at that instant; at minute resolution eve shows.
    minutes = (await api.get(TIMELINE, params={**window, "step": "1m"})).body["points"]
    assert len(minutes) == 40 and minutes[21]["online"] == 3 and minutes[22]["online"] == 2
    for point in minutes[::7]:
        roster = await api.get(ROSTER, params={"at": point["ts"]})
        assert len(roster.body["items"]) == point["online"], point
    # Before anything and up to now: dave is still in.
    day = await api.get(TIMELINE, params={"from": at(-60 * MIN), "step": "1h"})
    assert (
        day.status == 200 and day.body["points"][0]["online"] == 0 and day.body["points"][-1]["online"] == 1
    )


async def test_bad_input(api, history):
    assert error_fields(await api.get(ROSTER)) == {"at": "is required"}
    assert "ISO 8601" in error_fields(await api.get(ROSTER, params={"at": "yesterday"}))["at"]
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert error_fields(await api.get(ROSTER, params={"at": future}))["at"].startswith(
        "must not be in the future"
    )
    assert (
        "retention_drop_days"
        in error_fields(await api.get(ROSTER, params={"at": "2020-01-01T00:00:00Z"}))["at"]
    )
    assert error_fields(await api.get(ROSTER, params={"at": at(0), "archive": "maybe"})) == {
        "archive": "must be true or false"
    }

    assert (
        "must be before to"
        in error_fields(await api.get(TIMELINE, params={"from": at(MIN), "to": at(0)}))["from"]
    )
    assert error_fields(await api.get(TIMELINE, params={"to": future}))["to"].startswith(
        "must not be in the future"
    )
    assert "1m, 5m or 1h" in error_fields(await api.get(TIMELINE, params={"step": "5x"}))["step"]
    too_many = error_fields(
        await api.get(TIMELINE, params={"from": at(0), "to": at(30 * 1440 * MIN), "step": "1m"})
    )
    assert too_many == {
        "step": "the range holds 43200 instants of 1m; at most 10080: shorten the range or use a larger step"
    }
    assert error_fields(await api.get(TIMELINE, params={"points": "20000"})) == {
        "points": "must be an integer from 1 to 10080"
    }
    both = error_fields(await api.get(TIMELINE, params={"step": "1m", "points": "5"}))
    assert both == {"points": "give step or points, not both"}
    dense = error_fields(await api.get(TIMELINE, params={"from": at(0), "to": at(MIN), "points": "100"}))
    assert "less than 1 s apart" in dense["points"]
    assert "unknown parameter" in error_fields(await api.get(TIMELINE, params={"at": at(0)}))["at"]


async def test_archived_history_is_read_when_older_than_hot(api, api_node, redis_sync, pg):
    """A session of March 2025, archived by retention: read automatically for an `at` older than
    retention_hot_days, not with archive=false; the timeline over it likewise."""
    await create_room(api, "pit")
    old = FakeSession("default", "pit", "olga", ms("2025-03-10T10:00"))
    await write_history(api_node, redis_sync, [old.started(), old.ended(ms("2025-03-10T11:00"), "leave")])
    report = apply_retention(pg, hot_days=90, drop_days=730, now=datetime(2026, 11, 30, tzinfo=UTC))
    assert "dat_spd_session_p2025_03" in report.archived
    params = {"at": "2025-03-10T10:30:00Z"}
    auto = await api.get(ROSTER, params=params)
    assert auto.status == 200 and auto.body["archive"] is True
    assert [e["userId"] for e in auto.body["items"]] == ["olga"]
    assert (await api.get(ROSTER, params={**params, "archive": "false"})).body["items"] == []
    hot_only = await api.get(ROSTER, params={"at": at(0), "archive": "true"})
    assert hot_only.body["archive"] is True and hot_only.body["items"] == []
    window = {"from": "2025-03-10T09:00:00Z", "to": "2025-03-10T12:00:00Z", "step": "1h"}
    line = await api.get(TIMELINE, params=window)
    assert [p["online"] for p in line.body["points"]] == [0, 1, 0] and line.body["archive"] is True
    # Row-level security holds in the archive too: acme's admin sees no such room.
    assert_problem(await api.get(ROSTER, tenant="acme", params=params), 404, "not-found")
