"""A room's anomaly flags in the REST API: ``/api/v1/rooms/{id}/anomalies`` (``dat_spd_anomaly``,
written by the alert evaluator for rules of kind ``anomaly`` and custom rules using anomaly metrics).

Each flag explains itself: the metric, its value, the room's hour-of-week baseline (median, MAD,
the minutes it stands on), the robust z-score and the rule's threshold, and the group it concerns
(``appVersion=...``, ``os=...``, ``ip=<prefix>``, ``<user>/<clientId>``). Observers read; row-level
security keeps each tenant to its own flags.
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from .. import roles
from ..history.sql import anomalies, rooms
from .params import FROM, TO, iso, page_limit, window
from .problems import not_found
from .rooms import ROOM_ID, ROOMS_PATH
from .routing import Call, Route, json_response
from .service import Api

ANOMALIES_WINDOW = timedelta(days=1)
ANOMALIES_QUERY = (
    FROM.but(description=FROM.description + "; default: to minus 24 h"),
    TO,
    page_limit(500, 5000),
)


def anomaly_json(row: dict) -> dict:
    """One stored flag as the API shows it."""
    return {
        "id": row["id"],
        "roomId": row["room_id"],
        "roomCode": row["room_code"],
        "ruleId": row["rule_id"],
        "flag": row["flag"],
        "metric": row["metric"],
        "group": row["group_key"],
        "value": row["value"],
        "baselineMedian": row["baseline_median"],
        "baselineMad": row["baseline_mad"],
        "baselineMinutes": row["baseline_minutes"],
        "z": row["z"],
        "threshold": row["threshold"],
        "startedAt": iso(row["started_at"]),
        "endedAt": iso(row["ended_at"]),
    }


async def room_anomalies(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/anomalies: the room's flags raised in [from, to) or still raised at from."""
    room_id, tenant, q = call.path["room_id"], call.claims.tenant, call.query
    start, end = window(q, ANOMALIES_WINDOW)

    def work(conn):
        rows = anomalies.list_flags(conn, tenant, room_id, start, end, q["limit"])
        return rows, bool(rows) or rooms.exists(conn, tenant, room_id)

    rows, exists = await api.db(tenant, work)
    if not exists and not await api.room_known_live(tenant, room_id):
        raise not_found("room", room_id)
    return json_response(
        {"roomId": room_id, "from": iso(start), "to": iso(end), "items": [anomaly_json(r) for r in rows]}
    )


ANOMALY_ROUTES: tuple[Route, ...] = (
    Route("GET", ROOMS_PATH + "/{id}/anomalies", room_anomalies, "listRoomAnomalies",
          "A room's anomaly flags over time", "rooms", roles.OBSERVE, path_params=(ROOM_ID,),
          query=ANOMALIES_QUERY, response="RoomAnomalies", problems=(404,),
          description="Flags raised by the alert evaluator (rules of kind anomaly) in [from, to), or "
                      "still raised at from, oldest first; at most limit."),
)  # fmt: skip
