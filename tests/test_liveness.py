"""Liveness grades: live, late, at risk — in roster entries and deltas, ROOM_METRICS and /metrics.

A real node on the test Redis with a short heartbeat interval (2 s, so late after 3 s and at risk
after 4 s: the late window outlasts the once-a-second grading) and a long timeout; real WebSocket clients whose heartbeats the test times.
"""

from __future__ import annotations

import asyncio
import random
import time
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from spidi_core import HeartbeatLaneC, HeartbeatLanePy
from spidi_server.presence.liveness import AT_RISK, LATE, LIVE, Grader, grade, thresholds_ms
from spidi_server.stores.events import LATENCY_BUCKETS_MS

from .conftest import token_for
from .stomp_client import connected

INTERVAL_MS = 2000


def test_grade_thresholds_are_one_and_a_half_and_two_intervals():
    assert thresholds_ms(15_000) == (22_500, 30_000)
    assert [grade(age, 15_000) for age in (0, 22_500, 22_501, 30_000, 30_001, 10**9)] == [
        LIVE,
        LIVE,
        LATE,
        LATE,
        AT_RISK,
        AT_RISK,
    ]


def test_grader_reports_changes_only():
    beats = {"a": 100.0, "b": 98.9, "c": 90.0}  # ages at 100.5: 0.5, 1.6 and 10.5 intervals
    sessions = [SimpleNamespace(session_id=s, grade=LIVE, room=None) for s in beats]
    changed = []
    grader = Grader(1000, beats.get, changed.append)
    assert grader.run(sessions, now=100.5) == {LIVE: 1, LATE: 1, AT_RISK: 1}
    assert [(s.session_id, s.grade) for s in changed] == [("b", LATE), ("c", AT_RISK)]
    assert grader.run(sessions, now=100.5) == {LIVE: 1, LATE: 1, AT_RISK: 1}
    assert len(changed) == 2  # nothing moved: nothing reported
    assert grader.run(sessions, now=102.5)[AT_RISK] == 3
    assert [s.grade for s in sessions] == [AT_RISK] * 3


LANES = [pytest.param(HeartbeatLanePy, id="py")] + (
    [pytest.param(HeartbeatLaneC, id="c")] if HeartbeatLaneC is not None else []
)


@pytest.mark.parametrize("Lane", LANES)
def test_run_lane_agrees_with_run(Lane):
    # Two copies of the same sessions, one graded by ``run`` (every session looked at), the other
    # by ``run_lane`` (the lane's walk): beats, watched-room updates (marked live as
    # presence.beats does), joins, ends and a session the lane lacks (the fallback) all along.
    rng = random.Random(15)
    lane = Lane(LATENCY_BUCKETS_MS, 1000)
    lane.set_watched(0, True)
    copies: list[dict] = [{}, {}]
    changed: list[list] = [[], []]
    graders = [Grader(1000, lane.last_beat, changed[i].append) for i in range(2)]
    now = 100.0
    for step in range(400):
        now += rng.random() * 0.6
        who = rng.randrange(40)
        sid = f"s{who}"
        action = rng.random()
        if action < 0.15 and sid not in copies[0]:
            lane.add_session(sid, who, who % 3, step, now)
            for sessions in copies:
                sessions[sid] = SimpleNamespace(session_id=sid, grade=LIVE, room=who % 3)
        elif action < 0.2 and sid in copies[0]:
            lane.remove_session(sid)
            for sessions in copies:
                del sessions[sid]
        elif action < 0.25:
            for updated in lane.take_updated(0):
                for sessions in copies:
                    sessions[updated].grade = LIVE  # it just beat
        elif action < 0.27 and sid not in copies[0]:
            for sessions in copies:  # held here, unknown to the lane: graded by run alone
                sessions[sid] = SimpleNamespace(session_id=sid, grade=LIVE, room=None)
        elif sid in copies[0] and lane.stats(sid) is not None:
            lane.beat(sid, 7, step, now)
        expected = graders[0].run(copies[0].values(), now)
        assert graders[1].run_lane(lane, copies[1], now) == expected
        assert {s: x.grade for s, x in copies[0].items()} == {s: x.grade for s, x in copies[1].items()}
        assert sorted(x.session_id for x in changed[0]) == sorted(x.session_id for x in changed[1])
        changed[0].clear()
        changed[1].clear()
    assert len(copies[0]) > 10


async def _next_update(mon, topic: str, sid: str, timeout: float = 8.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        delta = await mon.json(topic, max(0.01, deadline - time.monotonic()))
        for entry in delta.get("updated", ()):
            if entry["sessionId"] == sid:
                return entry


async def _metrics_until(mon, topic: str, want: dict, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = await mon.json(topic, max(0.01, deadline - time.monotonic()), type_="ROOM_METRICS")
        if all(m.get(k) == v for k, v in want.items()):
            return m


def _gauge(node, grade_name: str) -> float:
    for line in generate_latest(node.metrics.registry).decode().splitlines():
        if line.startswith(f'spidi_sessions_liveness{{grade="{grade_name}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no spidi_sessions_liveness for {grade_name}")


async def test_a_silent_session_goes_late_then_at_risk_and_back_live(node_factory):
    node = await node_factory(heartbeat_interval_ms=INTERVAL_MS, heartbeat_timeout_ms=60_000)
    roster, metrics = "/topic/rooms/grades/roster", "/topic/rooms/grades/metrics"
    mon = await connected(node.ws_url, token_for(node.settings, "mon", "spidi:monitor"))
    await mon.subscribe(roster)
    await mon.json(roster)
    await mon.subscribe(metrics)
    await mon.json(metrics)
    user = await connected(node.ws_url, token_for(node.settings, "ann", "spidi:user"))
    sid = (await user.hello("grades"))["sessionId"]
    joined = await mon.json(roster)
    assert [(e["sessionId"], e["liveness"]) for e in joined["joined"]] == [(sid, LIVE)]

    # Silent: late after 1.5 intervals, at risk after 2, each an `updated` delta.
    assert (await _next_update(mon, roster, sid))["liveness"] == LATE
    assert (await _next_update(mon, roster, sid))["liveness"] == AT_RISK
    m = await _metrics_until(mon, metrics, {"atRisk": 1})
    assert (m["online"], m["late"]) == (1, 0)
    assert _gauge(node, AT_RISK) == 1 and _gauge(node, LIVE) == 0

    # A newcomer's snapshot grades from Redis's last heartbeat.
    mon2 = await connected(node.ws_url, token_for(node.settings, "mon2", "spidi:monitor"))
    await mon2.subscribe(roster)
    assert [e["liveness"] for e in (await mon2.json(roster))["users"]] == [AT_RISK]

    # A heartbeat makes it live again at once (the roster update of the beat says so).
    await user.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 12})
    update = await _next_update(mon, roster, sid)
    assert (update["liveness"], update["latencyMs"]) == (LIVE, 12)
    await _metrics_until(mon, metrics, {"atRisk": 0, "late": 0})
    for c in (mon, mon2, user):
        await c.close()


async def test_beating_sessions_stay_live(node_factory):
    node = await node_factory(heartbeat_interval_ms=INTERVAL_MS, heartbeat_timeout_ms=60_000)
    users = [await connected(node.ws_url, token_for(node.settings, f"u{i}", "spidi:user")) for i in range(3)]
    sids = [(await u.hello("steady"))["sessionId"] for u in users]
    deadline = time.monotonic() + 4.5  # past the at-risk age of their join
    while time.monotonic() < deadline:
        for u, sid in zip(users, sids, strict=True):
            await u.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 5})
        await asyncio.sleep(INTERVAL_MS / 2000)  # the clients beat twice per interval
    node.presence.grade_sessions()
    assert (_gauge(node, LIVE), _gauge(node, LATE), _gauge(node, AT_RISK)) == (3, 0, 0)
    for u in users:
        await u.close()
