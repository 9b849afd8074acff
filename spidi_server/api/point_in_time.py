"""A room in the past, from its session history: who was in it at an instant, and how many were
online over a range (``PIT_ROUTES``).

    /api/v1/rooms/{id}/roster?at=             the sessions in the room at ``at``
    /api/v1/rooms/{id}/timeline?from&to&step  sessions online at each instant from, from + step, ...

Both read session intervals (``history.sql.pitr``): a session is in the room from its start
(inclusive) to its end (exclusive); a session history still holds as open counts up to now while
its node keeps it alive, or up to its last heartbeat once that is older than
``writer_sweep_after_s`` (where the writer's sweep will end it). The timeline's figures are exact
counts at each instant, not maxima over the step: the roster at any of those instants has exactly
that many entries.

Time rules: nothing in the future; nothing older than ``retention_drop_days`` (that history is
gone); older than ``retention_hot_days``, the archive is read too unless ``archive=false``.
Observers' role (``roles.OBSERVE``), like the live roster; IP addresses only for
``roles.VIEW_IP``; row-level security keeps each tenant in its own rows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from aiohttp import web

from .. import roles
from ..history.sql import pitr, rooms
from .params import ARCHIVE, FROM, TO, iso, window
from .problems import field_error, invalid, not_found
from .rooms import ROOM_ID, ROOMS_PATH
from .routing import Call, Route, json_response
from .service import Api
from .sessions import stored_session_fields
from .validation import Integer, Text, Timestamp

MAX_POINTS = 10_080  # a week of minutes, as the stats endpoint's buckets
DEFAULT_POINTS = 120
TIMELINE_WINDOW = timedelta(hours=24)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_STEP = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")

AUTO_ARCHIVE = ARCHIVE.but(
    default=None,
    description="Also read archived history; default: true when the time asked is older than "
    "retention_hot_days (its sessions may have been moved there), else false",
)
ROSTER_QUERY = (
    Timestamp("at", "at", "The instant, RFC 3339 / ISO 8601; without an offset: UTC", required=True),
    AUTO_ARCHIVE,
)
TIMELINE_QUERY = (
    FROM.but(description=FROM.description + "; the first instant; default: to minus 24 h"),
    TO.but(description="End of the range (exclusive), ISO 8601; default now"),
    Text(
        "step",
        "step",
        "Time between instants: a number and s, m, h or d (30s, 1m, 5m, 1h, 1d); or give points",
        max_length=7,
        pattern=r"[1-9][0-9]{0,5}[smhd]",
        pattern_hint="a number and a unit s, m, h or d, such as 1m, 5m or 1h",
    ),
    Integer(
        "points",
        "points",
        f"Number of evenly spaced instants in [from, to), instead of step; default {DEFAULT_POINTS}"
        " (fewer when the range is under that many seconds)",
        minimum=1,
        maximum=MAX_POINTS,
    ),
    AUTO_ARCHIVE,
)


def entry_json(row: dict, with_ip: bool) -> dict:
    """A session of a past roster as the API shows it; without ``ip`` unless ``with_ip``."""
    out = {
        "sessionId": str(row["session_id"]),
        **stored_session_fields(row),
        "lastHeartbeatAt": iso(row["last_heartbeat_at"]),
    }
    if not with_ip:
        del out["ip"]
    return out


def _check_age(api: Api, field: str, when: datetime, now: datetime) -> None:
    """400 for a time in the future or older than retention_drop_days."""
    if when > now:
        raise invalid(
            [field_error("query", field, f"must not be in the future ({iso(when)} is after {iso(now)})")]
        )
    drop_days = api.host.settings.retention_drop_days
    if when < now - timedelta(days=drop_days):
        raise invalid(
            [
                field_error(
                    "query",
                    field,
                    f"is older than retention_drop_days ({drop_days} days): that history has been dropped",
                )
            ]
        )


def _archive(api: Api, given: bool | None, oldest: datetime, now: datetime) -> bool:
    """Whether to read the archive: as asked, else when ``oldest`` is older than retention_hot_days."""
    if given is not None:
        return given
    return oldest < now - timedelta(days=api.host.settings.retention_hot_days)


def _known(conn, tenant: str, room_id: str, archive: bool) -> bool:
    """Whether the tenant's PostgreSQL knows the room: stored, or in its session history (row-level
    security: another tenant's sessions are not there)."""
    return rooms.exists(conn, tenant, room_id) or pitr.has_sessions(conn, room_id, archive=archive)


def _lost_before(api: Api, now: datetime) -> datetime:
    return now - timedelta(seconds=api.host.settings.writer_sweep_after_s)


async def room_roster_at(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/roster?at=: the sessions in the room at ``at``, from history."""
    room_id, tenant, q = call.path["room_id"], call.claims.tenant, call.query
    now = datetime.now(UTC)
    at = q["at"]
    _check_age(api, "at", at, now)
    archive = _archive(api, q["archive"], at, now)
    lost_before = _lost_before(api, now)

    def work(conn):
        rows = pitr.roster_at(conn, room_id, at, lost_before, archive=archive)
        return rows, bool(rows) or _known(conn, tenant, room_id, archive)

    rows, known = await api.db(tenant, work)
    if not known and not await api.room_known_live(tenant, room_id):
        raise not_found("room", room_id)
    with_ip = api.may(call.claims, roles.VIEW_IP)
    return json_response(
        {
            "roomId": room_id,
            "at": iso(at),
            "archive": archive,
            "items": [entry_json(r, with_ip) for r in rows],
        }
    )


def _instants(q: dict, start: datetime, end: datetime) -> tuple[timedelta, int]:
    """(step, number of instants) of a timeline query; 400 past MAX_POINTS or both step and points."""
    span = end - start
    if q["step"] is not None and q["points"] is not None:
        raise invalid([field_error("query", "points", "give step or points, not both")])
    if q["step"] is not None:
        number, unit = _STEP.match(q["step"]).groups()
        step = timedelta(seconds=int(number) * _UNITS[unit])
        points = -(-span // step)  # instants start, start + step, ... before end
        if points > MAX_POINTS:
            raise invalid(
                [
                    field_error(
                        "query",
                        "step",
                        f"the range holds {points} instants of {q['step']}; at most {MAX_POINTS}:"
                        " shorten the range or use a larger step",
                    )
                ]
            )
        return step, points
    # Unasked, up to DEFAULT_POINTS but never under a second apart (a range of a few seconds).
    points = q["points"] or max(1, min(DEFAULT_POINTS, span // timedelta(seconds=1)))
    step = span / points
    if step < timedelta(seconds=1):
        raise invalid(
            [
                field_error(
                    "query", "points", f"{points} points over {span} are less than 1 s apart; ask fewer"
                )
            ]
        )
    return timedelta(microseconds=step // timedelta(microseconds=1)), points


async def room_timeline(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/timeline: sessions online at each instant of [from, to), from history."""
    room_id, tenant, q = call.path["room_id"], call.claims.tenant, call.query
    now = datetime.now(UTC)
    if q["to"] is not None:
        _check_age(api, "to", q["to"], now)
    start, end = window({**q, "to": q["to"] or now}, TIMELINE_WINDOW)
    _check_age(api, "from", start, now)
    step, points = _instants(q, start, end)
    archive = _archive(api, q["archive"], start, now)
    lost_before = _lost_before(api, now)

    def work(conn):
        counts = pitr.online_counts(conn, room_id, start, step, points, lost_before, archive=archive)
        return counts, any(counts) or _known(conn, tenant, room_id, archive)

    counts, known = await api.db(tenant, work)
    if not known and not await api.room_known_live(tenant, room_id):
        raise not_found("room", room_id)
    return json_response(
        {
            "roomId": room_id,
            "from": iso(start),
            "to": iso(end),
            "stepSeconds": step.total_seconds(),
            "archive": archive,
            "points": [{"ts": iso(start + step * k), "online": n} for k, n in enumerate(counts)],
        }
    )


PIT_ROUTES: tuple[Route, ...] = (
    Route("GET", ROOMS_PATH + "/{id}/roster", room_roster_at, "getRoomRosterAt",
          "Who was in a room at an instant (session history)", "rooms", roles.OBSERVE,
          path_params=(ROOM_ID,), query=ROSTER_QUERY, response="PastRoster", problems=(404,),
          description="Sessions with started_at <= at < end, oldest first. A session history holds as open "
          "counts while live, or up to its last heartbeat once that is older than writer_sweep_after_s. "
          "at in the future or older than retention_drop_days: 400.", ip_addresses=True),
    Route("GET", ROOMS_PATH + "/{id}/timeline", room_timeline, "getRoomTimeline",
          "Sessions online in a room over time (session history)", "rooms", roles.OBSERVE,
          path_params=(ROOM_ID,), query=TIMELINE_QUERY, response="RoomTimeline", problems=(404,),
          description="Exact counts of sessions online at the instants from, from + step, ... before to "
          f"(at most {MAX_POINTS}; more: 400), each as the roster at that instant would list them."),
)  # fmt: skip
