"""Liveness grades: how recently a session proved it is alive, against the heartbeat interval.

- ``live``: its last heartbeat is at most 1.5 intervals old (on time, jitter allowed);
- ``late``: at most 2 intervals old (one heartbeat missed or slow);
- ``at_risk``: older than that, until the timeout ends it (or its client resumes it).

A grade is in every roster entry (``liveness``) and changes as an ``updated`` delta; ROOM_METRICS
counts ``late`` and ``atRisk`` sessions room-wide (from the last heartbeats Redis holds);
``spidi_sessions_liveness{grade}`` exports this node's counts. ``Grader`` re-grades the node's
sessions once a second: time alone moves a silent session from live to late to at risk. The
node's grading walks its sessions in the heartbeat lane (``Grader.run_lane``): Python sees only
the sessions whose grade moved, not every session every second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Protocol

LIVE = "live"
LATE = "late"
AT_RISK = "at_risk"
GRADES = (LIVE, LATE, AT_RISK)
LATE_AFTER = 1.5  # intervals since the last heartbeat
AT_RISK_AFTER = 2.0


def thresholds_ms(interval_ms: float) -> tuple[float, float]:
    """(late after, at risk after): ages in ms past which a session is late / at risk."""
    return interval_ms * LATE_AFTER, interval_ms * AT_RISK_AFTER


def grade(age_ms: float, interval_ms: float) -> str:
    """The grade of a session whose last heartbeat is ``age_ms`` old."""
    late_ms, at_risk_ms = thresholds_ms(interval_ms)
    if age_ms <= late_ms:
        return LIVE
    if age_ms <= at_risk_ms:
        return LATE
    return AT_RISK


def graded(entries: list[dict], interval_ms: float, now_ms: float) -> list[dict]:
    """Roster entries read from Redis (``lastHeartbeatAt``: epoch ms) with their ``liveness``."""
    for entry in entries:
        entry["liveness"] = grade(now_ms - entry["lastHeartbeatAt"], interval_ms)
    return entries


class Graded(Protocol):
    """What ``Grader`` needs of a session."""

    session_id: str
    grade: str
    room: object


class GradingLane(Protocol):
    """What ``Grader.run_lane`` needs of the heartbeat lane (``spidi_core.HeartbeatLane``)."""

    def session_count(self) -> int: ...

    def grade(self, now: float, late_s: float, at_risk_s: float) -> tuple[int, int, int, list]: ...


class Grader:
    """Re-grades sessions from their last heartbeat (monotonic seconds, from the lane)."""

    def __init__(self, interval_ms: float, last_beat, changed):
        self.interval_ms = interval_ms
        self.last_beat = last_beat  # callable(session_id) -> monotonic seconds or None
        self.changed = changed  # callable(session): its grade changed (roster delta, metrics)

    def run(self, sessions: Iterable[Graded], now: float | None = None) -> dict[str, int]:
        """Grade every session; call ``changed`` for those whose grade moved; the counts."""
        if now is None:
            now = time.monotonic()
        late_s, at_risk_s = (t / 1000 for t in thresholds_ms(self.interval_ms))
        counts = dict.fromkeys(GRADES, 0)
        last_beat, changed = self.last_beat, self.changed
        for session in sessions:
            last = last_beat(session.session_id)
            age = now - last if last is not None else 0.0
            g = LIVE if age <= late_s else LATE if age <= at_risk_s else AT_RISK
            counts[g] += 1
            if g != session.grade:
                session.grade = g
                changed(session)
        return counts

    def run_lane(
        self, lane: GradingLane, sessions: Mapping[str, Graded], now: float | None = None
    ) -> dict[str, int]:
        """``run`` over ``sessions`` (by session id: the lane's sessions), the walk done in the lane.

        The lane keeps each session's last grade beside its last beat and hands back only the
        sessions whose grade moved, so the Python work is proportional to the changes, not to
        the sessions. It agrees with ``run`` because a session's grade changes only here and
        when it beats in a watched room (``presence.beats``, through ``take_updated``, which
        the lane marks live as well), and the lane holds exactly the node's sessions. Should
        it not (the counts differ), ``run`` grades them and the lane is brought in line.
        """
        if now is None:
            now = time.monotonic()
        late_s, at_risk_s = (t / 1000 for t in thresholds_ms(self.interval_ms))
        if lane.session_count() != len(sessions):
            counts = self.run(sessions.values(), now)
            lane.grade(now, late_s, at_risk_s)  # the same ages: its grades become these
            return counts
        live, late, at_risk, moved = lane.grade(now, late_s, at_risk_s)
        changed = self.changed
        for session_id, index in moved:
            session = sessions.get(session_id)
            g = GRADES[index]
            if session is not None and session.grade != g:
                session.grade = g
                changed(session)
        return {LIVE: live, LATE: late, AT_RISK: at_risk}
