"""Alerts in the REST API: the evaluator's transitions, their acknowledgement, the open alerts now;
their fields, rendering, handlers and routes (``ALERT_ROUTES``).

    /api/v1/alerts[/{id}]               the evaluator's transitions (``dat_spd_alert_event``), newest first
    /api/v1/alerts/{id}/acknowledge     admin; monitors too when ``monitors_may_acknowledge`` is on
    /api/v1/alerts/active               the tenant's open alerts now, from Redis (what /topic/alerts
                                        starts with), for clients without STOMP

The rules that raise them are in ``alert_rules``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiohttp import web

from .. import roles
from ..alerting import rules
from ..alerting.feed import publish_acknowledgement
from ..history.sql import alerts
from ..stores import keys
from .params import ARCHIVE, FROM, OFFSET, TO, iso, page, page_limit
from .problems import field_error, invalid, not_found
from .routing import Call, Route, json_response
from .service import Api, audit
from .validation import Choice, Uuid

EVENT_STATES = ("pending", "firing", "resolved")
# The keys of an open alert as the API shows it: the ALERT message contract (alerting/__init__.py)
# without its "type", and the acknowledgement publish_acknowledgement adds.
ACTIVE_ALERT_KEYS = (
    "alertId",
    "episodeId",
    "ruleId",
    "ruleName",
    "kind",
    "severity",
    "expression",
    "threshold",
    "state",
    "previousState",
    "tenant",
    "roomId",
    "roomCode",
    "value",
    "since",
    "at",
    "metrics",
    "acknowledgedBy",
    "acknowledgedAt",
)

ALERT_ID = Uuid(
    "id", "alert_id", "Alert id: an event's id (an ALERT message's alertId or episodeId)", required=True
)
ALERT_LIST_QUERY = (
    Choice("state", "state", "Only transitions to this state", values=EVENT_STATES),
    Uuid("roomId", "room_id", "Only alerts of this room"),
    Uuid("ruleId", "rule_id", "Only alerts of this rule"),
    Choice("severity", "severity", "Only alerts of this severity", values=rules.SEVERITIES),
    FROM.but(description=FROM.description + "; default: no lower bound"),
    TO.but(description="End of the range (exclusive), ISO 8601; default: no upper bound"),
    page_limit(100, 1000),
    OFFSET,
    ARCHIVE,
)


def event_json(row: dict) -> dict:
    """An alert event (one transition of an alert) as the API shows it."""
    return {
        "id": row["id"],
        "ruleId": row["rule_id"],
        "ruleName": row["rule_name"],
        "roomId": row["room_id"],
        "roomCode": row["room_code"],
        "state": row["state"],
        "kind": row["kind"],
        "severity": row["severity"],
        "value": row["value"],
        "at": iso(row["at"]),
        "details": row["details"],
        "acknowledgedBy": row["acknowledged_by"],
        "acknowledgedAt": iso(row["acknowledged_at"]),
    }


def active_json(raw: dict) -> dict:
    """An open alert from Redis as the API shows it: the contract's keys, whatever else is stored."""
    return {key: raw.get(key) for key in ACTIVE_ALERT_KEYS}


async def list_alerts(api: Api, call: Call) -> web.Response:
    """GET /api/v1/alerts: the tenant's alert events, newest first."""
    q, tenant = call.query, call.claims.tenant
    start, end = q["from"], q["to"]
    if start is not None and start >= (end or datetime.now(UTC)):
        limit = end or datetime.now(UTC)
        raise invalid(
            [field_error("query", "from", f"must be before to ({iso(start)} is not before {iso(limit)})")]
        )
    rows, total = await api.db(
        tenant,
        lambda c: alerts.list_events(
            c,
            tenant,
            state=q["state"],
            room_id=q["room_id"],
            rule_id=q["rule_id"],
            severity=q["severity"],
            start=start,
            end=end,
            limit=q["limit"],
            offset=q["offset"],
            archive=q["archive"],
        ),
    )
    return json_response(page([event_json(r) for r in rows], total, q))


async def get_alert(api: Api, call: Call) -> web.Response:
    """GET /api/v1/alerts/{id}."""
    alert_id, tenant = call.path["alert_id"], call.claims.tenant
    row = await api.db(tenant, lambda c: alerts.get_event(c, tenant, alert_id, archive=call.query["archive"]))
    if row is None:
        raise not_found("alert", alert_id)
    return json_response(event_json(row))


async def acknowledge_alert(api: Api, call: Call) -> web.Response:
    """POST /api/v1/alerts/{id}/acknowledge: record who acknowledged it, and tell every dashboard.

    Idempotent: once acknowledged, a call answers 200 with the first acknowledgement's who and
    when, unchanged, and publishes it again (so a publication lost to a Redis outage after the row
    was stored is made good by retrying).
    """
    alert_id, claims = call.path["alert_id"], call.claims
    row, acknowledged_now = await api.db(
        claims.tenant, lambda c: alerts.acknowledge_event(c, claims.tenant, alert_id, actor=claims.user_id)
    )
    if row is None:
        raise not_found("alert", alert_id)
    if acknowledged_now:
        audit("alert_acknowledged", claims, alert_id=alert_id, rule_id=row["rule_id"], room_id=row["room_id"])
    at_ms = int(row["acknowledged_at"].timestamp() * 1000)
    redis = api.host.store.redis
    await api.live(
        publish_acknowledgement(
            redis, claims.tenant, row["rule_id"], row["room_id"], alert_id, row["acknowledged_by"], at_ms
        )
    )
    return json_response(event_json(row))


async def active_alerts(api: Api, call: Call) -> web.Response:
    """GET /api/v1/alerts/active: the tenant's open (pending, firing) alerts from Redis, newest first."""
    raw = await api.live(api.host.store.redis.hvals(keys.alerts_active(call.claims.tenant)))
    items = []
    for value in raw:
        try:
            alert = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue  # not ours to repair; the evaluator rewrites it on the next transition
        if isinstance(alert, dict):
            items.append(active_json(alert))
    items.sort(key=lambda a: (a["since"] or 0, a["at"] or 0), reverse=True)
    return json_response({"items": items})


_ALERTS = "/api/v1/alerts"
_ACK_NOTE = (
    "Idempotent: an alert "
    "acknowledged already answers 200 with the first acknowledgement (who, when) unchanged. Publishes "
    "ALERT_ACK on /topic/alerts (again on a repeat)."
)

ALERT_ROUTES: tuple[Route, ...] = (
    Route("GET", _ALERTS, list_alerts, "listAlerts", "Alert history (the evaluator's transitions)", "alerts",
          roles.OBSERVE, query=ALERT_LIST_QUERY, response="AlertList",
          description="One item per transition (pending, firing, resolved), newest first."),
    # Before /alerts/{id}, which would take "active" for an id.
    Route("GET", _ALERTS + "/active", active_alerts, "listActiveAlerts", "Open alerts now (from Redis)",
          "alerts", roles.OBSERVE, response="ActiveAlerts",
          description="The tenant's pending and firing alerts, newest first: what a /topic/alerts "
                      "subscription starts with."),
    Route("GET", _ALERTS + "/{id}", get_alert, "getAlert", "Get an alert event", "alerts", roles.OBSERVE,
          path_params=(ALERT_ID,), query=(ARCHIVE,), response="Alert", problems=(404,)),
    Route("POST", _ALERTS + "/{id}/acknowledge", acknowledge_alert, "acknowledgeAlert", "Acknowledge an alert",
          "alerts", roles.ACKNOWLEDGE, path_params=(ALERT_ID,), response="Alert", problems=(404,), description=_ACK_NOTE),
)  # fmt: skip
