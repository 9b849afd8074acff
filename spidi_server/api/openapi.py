"""The OpenAPI 3.1 document of the REST API, built from the route table that also registers it,
and the route that serves it (``OPENAPI_ROUTES``).

Parameters and request bodies come from the routes' ``validation`` fields (the objects that check
requests); response bodies from the schemas below, which mirror the resource modules' renderers
(``rooms.room_json``, ``alerts.event_json``, ...; the API tests compare real responses with them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__, roles
from ..alerting import rules, slo
from ..presence.liveness import GRADES
from ..stores.events import BREAKDOWN_DIMENSIONS
from .problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPES, problem_type
from .routing import Call, Route

if TYPE_CHECKING:
    from .service import Api

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_NINT = {"type": ["integer", "null"]}
_NNUM = {"type": ["number", "null"]}
_NUM = {"type": "number"}
_TS = {"type": "string", "format": "date-time"}
_NTS = {"type": ["string", "null"], "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}
_NUUID = {"type": ["string", "null"], "format": "uuid"}
_EPOCH_MS = {"type": "integer", "description": "epoch milliseconds"}


def _obj(properties: dict, description: str = "", optional: tuple[str, ...] = ()) -> dict:
    required = [k for k in properties if k not in optional]
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if description:
        out["description"] = description
    return out


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict:
    return _obj(
        {"items": {"type": "array", "items": _ref(item)}, "total": _INT, "limit": _INT, "offset": _INT},
        f"A page of {item} items; total counts every match",
    )


_IP_NOTE = "the client's address; absent unless the caller's roles may see IP addresses (see the operation)"
_LIVE_SESSION = {
    "sessionId": _UUID,
    "userId": _STR,
    "clientId": _STR,
    "device": _NSTR,
    "os": _NSTR,
    "appVersion": _STR,
    "ip": {**_NSTR, "description": _IP_NOTE},
    "latencyMs": {**_NNUM, "description": "last reported latency; null before the first heartbeat"},
    "connectedAt": _EPOCH_MS,
    "lastHeartbeatAt": _EPOCH_MS,
    "liveness": {
        "type": "string",
        "enum": list(GRADES),
        "description": "live: last heartbeat within 1.5 heartbeat intervals; late: within 2; at_risk: older",
    },
}

_ROOM = {
    "id": _UUID,
    "code": _STR,
    "name": _NSTR,
    "type": {**_NSTR, "description": "room type code"},
    "capacity": {
        **_INT,
        "description": "in force: the room's, else its type's default, else the server's",
    },
    "ttlSeconds": {
        **_NINT,
        "description": "seconds its live state is kept once empty; null: room_empty_ttl_s",
    },
    "status": {"type": "string", "enum": ["active", "disabled"]},
    "attributes": {"type": "object", "additionalProperties": _NSTR},
    "createdAt": _TS,
    "createdBy": _STR,
    "updatedAt": _TS,
    "updatedBy": _STR,
}
_NOT_STORED = "null for a room that is not stored"
_LIVE_FIGURE = "live, every node's sessions (as in /topic/rooms); null while Redis cannot be reached"

RESPONSE_SCHEMAS: dict[str, dict] = {
    "Room": _obj(_ROOM),
    "RoomListItem": _obj(
        {
            **_ROOM,
            "createdAt": {**_NTS, "description": _NOT_STORED},
            "createdBy": {**_NSTR, "description": _NOT_STORED},
            "updatedAt": {**_NTS, "description": _NOT_STORED},
            "updatedBy": {**_NSTR, "description": _NOT_STORED},
            "stored": {
                "type": "boolean",
                "description": "false: a configured room, or one auto-created by a HELLO (it is gone once "
                "empty for room_empty_ttl_s)",
            },
            "online": {**_NINT, "description": "sessions; " + _LIVE_FIGURE},
            "users": {**_NINT, "description": "distinct users; " + _LIVE_FIGURE},
            "peak": {**_NINT, "description": "most sessions this hour (UTC); " + _LIVE_FIGURE},
            "avgLatencyMs": {**_NNUM, "description": "mean last reported latency; " + _LIVE_FIGURE},
        },
        "A room of the tenant in the list: stored, configured or auto-created, with its live figures",
    ),
    "RoomList": _page("RoomListItem"),
    "RoomType": _obj(
        {
            "id": _UUID,
            "code": _STR,
            "name": _STR,
            "defaultCapacity": _NINT,
            "createdAt": _TS,
            "createdBy": _STR,
            "updatedAt": _TS,
            "updatedBy": _STR,
        }
    ),
    "RoomTypeList": _page("RoomType"),
    "LiveSession": _obj(_LIVE_SESSION, "A roster entry, as in ROOM_ROSTER (docs/protocol.md)", ("ip",)),
    "LiveSessions": _obj({"items": {"type": "array", "items": _ref("LiveSession")}}),
    "ReconcileReport": _obj(
        {
            "roomId": _UUID,
            "checkedAt": _EPOCH_MS,
            "repair": {"type": "boolean"},
            "redis": {**_INT, "description": "sessions in the room's Redis roster"},
            "nodes": {**_INT, "description": "sessions a live node holds (or handed over)"},
            "history": {**_NINT, "description": "sessions open in PostgreSQL; null without history"},
            "differences": {
                "type": "array",
                "items": _obj(
                    {
                        "sessionId": _UUID,
                        "kind": {
                            "type": "string",
                            "enum": [
                                "ghost",
                                "missing_in_redis",
                                "open_in_history_only",
                                "missing_in_history",
                            ],
                        },
                        "detail": _STR,
                        "action": {
                            "type": "string",
                            "enum": [
                                "ended",
                                "reassert_requested",
                                "ended_in_history",
                                "started_in_history",
                                "none",
                            ],
                        },
                        "nodeId": _NSTR,
                    }
                ),
            },
        },
        "The room's Redis roster, the nodes' sessions and history compared",
    ),
    "UserLiveSession": _obj({**_LIVE_SESSION, "roomId": _UUID, "roomCode": _STR}, optional=("ip",)),
    "UserLiveSessions": _obj({"items": {"type": "array", "items": _ref("UserLiveSession")}}),
    "Session": _obj(
        {
            "sessionId": _UUID,
            "roomId": {**_UUID, "type": ["string", "null"]},
            "roomCode": _NSTR,
            "userId": _NSTR,
            "clientId": _NSTR,
            "device": _NSTR,
            "os": _NSTR,
            "appVersion": _NSTR,
            "ip": {**_NSTR, "description": _IP_NOTE},
            "nodeId": _NSTR,
            "startedAt": _TS,
            "endedAt": {**_NTS, "description": "null while the session is live"},
            "endReason": {**_NSTR, "description": "leave, timeout, disconnect or shutdown; null while live"},
            "heartbeatCount": _INT,
            "latencyAvgMs": _NNUM,
            "latencyMinMs": _NNUM,
            "latencyMaxMs": _NNUM,
            "lastHeartbeatAt": _NTS,
        },
        "A stored session (history)",
        ("ip",),
    ),
    "SessionList": _page("Session"),
    "AttendanceExport": _obj(
        {
            "export": _obj(
                {
                    "version": {**_INT, "description": "1"},
                    "format": {"type": "string", "enum": ["json"]},
                    "tenant": _STR,
                    "roomId": _UUID,
                    "from": _TS,
                    "to": _TS,
                    "archive": {"type": "boolean", "description": "archived sessions were read too"},
                    "generatedAt": _TS,
                    "seq": {**_INT, "description": "the tenant's exports counted from 1"},
                    "prevHash": {
                        **_NSTR,
                        "description": "hash of the tenant's export seq - 1; null for seq 1",
                    },
                    "keyId": {**_STR, "description": "first 8 bytes of SHA-256 of the public key, hex"},
                    "rowCount": _INT,
                    "rows": {
                        "type": "array",
                        "items": _obj(
                            {
                                "sessionId": _UUID,
                                "userId": _NSTR,
                                "clientId": _NSTR,
                                "device": _NSTR,
                                "os": _NSTR,
                                "appVersion": _NSTR,
                                "ip": _NSTR,
                                "startedAt": _TS,
                                "endedAt": {**_NTS, "description": "null while the session is open"},
                                "endReason": _NSTR,
                                "heartbeatCount": _INT,
                                "latencyAvgMs": _NNUM,
                                "latencyMinMs": _NNUM,
                                "latencyMaxMs": _NNUM,
                            }
                        ),
                    },
                },
                "What is signed: its RFC 8785 canonical form",
            ),
            "signature": _obj(
                {
                    "alg": {"type": "string", "enum": ["Ed25519"]},
                    "keyId": _STR,
                    "value": {**_STR, "description": "base64 Ed25519 signature"},
                }
            ),
            "hash": {**_STR, "description": "hex SHA-256 of the signed bytes: the next export's prevHash"},
        },
        "A signed attendance export (docs/operations.md, Signed attendance exports)",
    ),
    "AttendanceCsv": {
        "type": "string",
        "description": "Line 1: # spidi-signature: ed25519 <keyId> <base64 signature>; line 2: "
        "# spidi-export v1 <metadata JSON>; then RFC 4180 CSV with a header row. The signature covers "
        "every byte after line 1.",
    },
    "ExportPublicKey": _obj(
        {
            "algorithm": {"type": "string", "enum": ["Ed25519"]},
            "keyId": _STR,
            "publicKey": {**_STR, "description": "base64 of the 32 raw bytes"},
            "pem": {**_STR, "description": "SubjectPublicKeyInfo PEM"},
        }
    ),
    "PastRosterEntry": _obj(
        {
            "sessionId": _UUID,
            "userId": _NSTR,
            "clientId": _NSTR,
            "device": _NSTR,
            "os": _NSTR,
            "appVersion": _NSTR,
            "ip": {**_NSTR, "description": _IP_NOTE},
            "startedAt": _TS,
            "endedAt": {**_NTS, "description": "null while history holds it open (it may end after at)"},
            "endReason": _NSTR,
            "lastHeartbeatAt": _NTS,
        },
        "A session in the room at the instant asked (from session history)",
        ("ip",),
    ),
    "PastRoster": _obj(
        {
            "roomId": _UUID,
            "at": _TS,
            "archive": {"type": "boolean", "description": "whether archived history was read too"},
            "items": {"type": "array", "items": _ref("PastRosterEntry"), "description": "oldest first"},
        }
    ),
    "RoomTimeline": _obj(
        {
            "roomId": _UUID,
            "from": _TS,
            "to": _TS,
            "stepSeconds": {"type": "number", "description": "time between instants"},
            "archive": {"type": "boolean", "description": "whether archived history was read too"},
            "points": {
                "type": "array",
                "items": _obj(
                    {
                        "ts": {**_TS, "description": "the instant"},
                        "online": {**_INT, "description": "sessions in the room at that instant"},
                    }
                ),
                "description": "one per instant from, from + step, ... before to",
            },
        }
    ),
    "StatsPoint": _obj(
        {
            "ts": {**_TS, "description": "start of the bucket"},
            "onlineAvg": {"type": "number", "description": "time-weighted sessions online"},
            "onlineMax": _INT,
            "joins": _INT,
            "leaves": _INT,
            "timeouts": _INT,
            "disconnects": _INT,
            "latencyAvgMs": _NNUM,
            "latencyP95Ms": _NNUM,
        }
    ),
    "RoomStats": _obj(
        {
            "roomId": _UUID,
            "bucket": {"type": "string", "enum": ["1m", "1h", "1d"]},
            "from": _TS,
            "to": _TS,
            "points": {
                "type": "array",
                "items": _ref("StatsPoint"),
                "description": "buckets with activity only, oldest first",
            },
        }
    ),
    "RoomAnomalies": _obj(
        {
            "roomId": _UUID,
            "from": _TS,
            "to": _TS,
            "items": {"type": "array", "items": _ref("Anomaly"), "description": "oldest first"},
        }
    ),
    "Anomaly": _obj(
        {
            "id": _UUID,
            "roomId": _UUID,
            "roomCode": _NSTR,
            "ruleId": {**_NUUID, "description": "the rule that raised it"},
            "flag": {
                "type": "string",
                "enum": list(rules.ANOMALY_TYPES),
                "description": "join_storm, leave_storm (per-minute rate far above the hour-of-week baseline), "
                "latency_spike (last minute's p95 likewise), mass_disconnect (one group's abnormal ends), "
                "flapping (one client's reconnects)",
            },
            "metric": {
                **_STR,
                "description": "joinsPerMin, leavesPerMin, latencyP95Ms, abnormalEndsPerMin or reconnects",
            },
            "group": {
                **_NSTR,
                "description": "mass_disconnect: appVersion=..., os=... or ip=<prefix /24 or /48>; "
                "flapping: <userId>/<clientId>; null otherwise",
            },
            "value": {"type": "number", "description": "the metric when the flag rose"},
            "baselineMedian": {**_NNUM, "description": "median of the metric at this hour of week"},
            "baselineMad": {**_NNUM, "description": "median absolute deviation of it"},
            "baselineMinutes": {**_NINT, "description": "the minutes the baseline stands on"},
            "z": {**_NNUM, "description": "robust z-score (value - median) / (1.4826 x MAD)"},
            "threshold": {**_NNUM, "description": "the rule's z-score (flapping: its reconnect count)"},
            "startedAt": _TS,
            "endedAt": {**_NTS, "description": "when it cleared; null while raised"},
        }
    ),
    "AlertRule": _obj(
        {
            "id": _UUID,
            "name": _STR,
            "scope": {"type": "string", "enum": ["room", "roomType", "tenant"]},
            "roomId": {**_NUUID, "description": "scope room: the room"},
            "roomType": {**_NSTR, "description": "scope roomType: the room type's code"},
            "roomTypeId": {**_NUUID, "description": "scope roomType: the room type's id"},
            "kind": {"type": "string", "enum": list(rules.KINDS)},
            "threshold": {
                **_NNUM,
                "description": "built-in kinds: the threshold in force (heartbeat: seconds of silence); custom: null",
            },
            "share": {
                **_NNUM,
                "description": "heartbeat: the share of online sessions that must be silent; null: any one "
                "session (and every other kind)",
            },
            "anomalyTypes": {
                "type": ["array", "null"],
                "items": {"type": "string", "enum": list(rules.ANOMALY_TYPES)},
                "description": "anomaly: the flag types that fire it; null for every other kind",
            },
            "expression": {
                **_STR,
                "description": "the CEL expression that fires (built-ins: written from threshold)",
            },
            "resolveExpression": {
                **_NSTR,
                "description": "the CEL expression that resolves a firing alert; null: once the expression no longer holds",
            },
            "severity": {"type": "string", "enum": list(rules.SEVERITIES)},
            "forSeconds": _INT,
            "channels": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "type": _STR,
                        "url": _STR,
                        "routingKey": _STR,
                        "to": {"type": "array", "items": _STR},
                    },
                    "required": ["type"],
                },
            },
            "enabled": {"type": "boolean"},
            "sloId": {**_NUUID, "description": "slo_burn: the SLO watched; null for every other kind"},
            "burnPolicy": {
                "type": ["string", "null"],
                "enum": [*slo.BURN_POLICIES, None],
                "description": "slo_burn: page (1 h and 5 m windows) or ticket (6 h and 30 m); null for every other kind",
            },
            "createdAt": _TS,
            "createdBy": _STR,
            "updatedAt": _TS,
            "updatedBy": _STR,
        }
    ),
    "AlertRuleList": _page("AlertRule"),
    "Slo": _obj(
        {
            "id": _UUID,
            "name": _STR,
            "scope": {"type": "string", "enum": ["room", "roomType", "tenant"]},
            "roomId": {**_NUUID, "description": "scope room: the room"},
            "roomType": {**_NSTR, "description": "scope roomType: the room type's code"},
            "roomTypeId": {**_NUUID, "description": "scope roomType: the room type's id"},
            "objective": {"type": "string", "enum": list(slo.OBJECTIVES)},
            "thresholdMs": {"type": "number", "description": "a bound of the latency histogram, ms"},
            "percentile": {
                **_NNUM,
                "description": "objective percentile: the percentile (95 for p95); else null",
            },
            "target": {
                "type": "number",
                "description": "the share of heartbeats that must be <= thresholdMs (percentile / 100 for "
                "objective percentile)",
            },
            "windowDays": _INT,
            "createdAt": _TS,
            "createdBy": _STR,
            "updatedAt": _TS,
            "updatedBy": _STR,
        },
        "A latency SLO (dat_spd_slo)",
    ),
    "SloList": _page("Slo"),
    "SloStatus": _obj(
        {
            "sloId": _UUID,
            "roomId": {**_NUUID, "description": "the one room counted; null: every room of the SLO's scope"},
            "at": {**_TS, "description": "the end (exclusive) of every window"},
            "target": _NUM,
            "thresholdMs": _NUM,
            "windowDays": _INT,
            "good": {**_INT, "description": "heartbeats <= thresholdMs over the SLO window"},
            "total": {**_INT, "description": "heartbeats with a latency over the SLO window"},
            "compliance": {
                **_NNUM,
                "description": "good / total over the SLO window; null without heartbeats",
            },
            "errorBudgetRemaining": {
                **_NUM,
                "description": "share of the window's error budget left: 1 - (1 - compliance) / (1 - target); "
                "negative when overspent, 1 without heartbeats",
            },
            "met": {
                "type": ["boolean", "null"],
                "description": "compliance >= target; null without heartbeats",
            },
            "burnRates": {
                "type": "object",
                "description": "burn rate by window (5m, 30m, 1h, 6h, 3d): (1 - compliance) / (1 - target); "
                "null without heartbeats",
                "additionalProperties": _NNUM,
            },
            "windows": {
                "type": "array",
                "description": "each window, shortest first: the burn-rate windows and the SLO's own",
                "items": _obj(
                    {
                        "window": _STR,
                        "seconds": _INT,
                        "good": _INT,
                        "total": _INT,
                        "compliance": _NNUM,
                        "burnRate": _NNUM,
                    }
                ),
            },
            "breakdown": {
                "type": ["object", "null"],
                "description": "with ?breakdown=appVersion|os: the same figures per client group, the "
                "most overspent first and other last; null otherwise",
                "properties": {
                    "dimension": {"type": "string", "enum": list(BREAKDOWN_DIMENSIONS)},
                    "groups": {"type": "array", "items": _ref("SloGroupStatus")},
                },
                "required": ["dimension", "groups"],
            },
        },
        "An SLO's compliance, error budget and burn rates (docs/operations.md, SLOs)",
    ),
    "SloGroupStatus": _obj(
        {
            "value": {
                **_NSTR,
                "description": 'the app version or OS; "" for clients that sent no os; null for other',
            },
            "other": {
                "type": "boolean",
                "description": "the values beyond the top N of their room minutes (settings.slo_breakdown_top_n)",
            },
            "good": _INT,
            "total": _INT,
            "compliance": _NNUM,
            "errorBudgetRemaining": _NUM,
            "met": {"type": ["boolean", "null"]},
            "burnRates": {"type": "object", "additionalProperties": _NNUM},
            "windows": {"type": "array", "items": {"type": "object"}},
        },
        "One breakdown group's SLO figures, computed as the whole scope's",
    ),
    "Alert": _obj(
        {
            "id": {
                **_UUID,
                "description": "the event's id: an ALERT message's alertId (episodeId for the first)",
            },
            "ruleId": _UUID,
            "ruleName": {**_NSTR, "description": "the rule's name now (kept when the rule is deleted)"},
            "roomId": _NUUID,
            "roomCode": _NSTR,
            "state": {"type": "string", "enum": ["pending", "firing", "resolved"]},
            "kind": _NSTR,
            "severity": _NSTR,
            "value": {**_NNUM, "description": "the built-in kind's metric at the transition; custom: null"},
            "at": {**_TS, "description": "time of the transition"},
            "details": {
                "type": ["object", "null"],
                "description": "what the evaluator recorded (metrics, ...)",
            },
            "acknowledgedBy": {**_NSTR, "description": "subject of the token that acknowledged it"},
            "acknowledgedAt": _NTS,
        },
        "One transition of an alert (dat_spd_alert_event)",
    ),
    "AlertList": _page("Alert"),
    "ActiveAlert": _obj(
        {
            "alertId": {**_UUID, "description": "the last transition's event id"},
            "episodeId": {
                **_UUID,
                "description": "the event that opened the episode: the one to acknowledge",
            },
            "ruleId": _UUID,
            "ruleName": _STR,
            "kind": _STR,
            "severity": _STR,
            "expression": _STR,
            "threshold": _NNUM,
            "state": {"type": "string", "enum": ["pending", "firing"]},
            "previousState": _STR,
            "tenant": _STR,
            "roomId": _UUID,
            "roomCode": _STR,
            "value": _NNUM,
            "since": {**_EPOCH_MS, "description": "epoch ms the condition started to hold"},
            "at": {**_EPOCH_MS, "description": "epoch ms of the last transition"},
            "metrics": {"type": "object", "description": "the room's metrics the rule saw"},
            "acknowledgedBy": _NSTR,
            "acknowledgedAt": {**_NINT, "description": "epoch ms; null until acknowledged"},
        },
        "An open alert, as in /topic/alerts' ALERTS snapshot (docs/protocol.md)",
    ),
    "ActiveAlerts": _obj({"items": {"type": "array", "items": _ref("ActiveAlert")}}),
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string", "enum": [problem_type(slug) for slug in PROBLEM_TYPES]},
            "title": _STR,
            "status": _INT,
            "detail": _STR,
            "instance": {**_STR, "description": "the request path"},
            "errors": {
                "type": "array",
                "description": "validation problems only: one entry per invalid input",
                "items": _obj(
                    {
                        "in": {"type": "string", "enum": ["path", "query", "body"]},
                        "field": _STR,
                        "message": _STR,
                    }
                ),
            },
        },
        "required": ["type", "title", "status", "detail", "instance"],
    },
    "OpenApiDocument": {"type": "object", "description": "this document"},
}

_PROBLEM_RESPONSES = {
    400: ("BadRequest", "Invalid input (errors lists each field) or malformed JSON"),
    401: ("Unauthorized", "Missing, malformed, expired or badly signed token"),
    403: ("Forbidden", "The token's roles do not allow this"),
    404: ("NotFound", "No such resource for the caller's tenant"),
    409: ("Conflict", "Duplicate code, or still in use"),
    503: ("Unavailable", "A backing store is not configured or cannot be reached"),
}


def _problem_response(status: int) -> dict:
    name, description = _PROBLEM_RESPONSES[status]
    out: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _ref("Problem")}},
    }
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"schema": _STR, "description": 'Bearer realm="spidi", ...'}}
    return out


def _parameters(route: Route) -> list[dict]:
    out = []
    for where, fields in (("path", route.path_params), ("query", route.query)):
        for field in fields:
            schema = field.schema()
            description = schema.pop("description")
            out.append(
                {
                    "name": field.name,
                    "in": where,
                    "required": where == "path" or field.required,
                    "description": description,
                    "schema": schema,
                }
            )
    return out


def _operation(route: Route, schemas: dict, policy: roles.Policy) -> dict:
    who = policy.describe(route.access) if route.access else "none (public)"
    roles_note = f"Roles: {who}."
    if route.ip_addresses:
        roles_note += f" IP addresses (ip) only for: {policy.describe(roles.VIEW_IP)}."
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": (route.description + "\n\n" if route.description else "") + roles_note,
        "tags": [route.tag],
        "security": [{"bearerAuth": []}] if route.access else [],
    }
    params = _parameters(route)
    if params:
        op["parameters"] = params
    if route.body is not None:
        schemas[route.body.schema_name] = route.body.schema()
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.body.schema_name)}},
        }
    success: dict[str, Any] = {"description": {200: "OK", 201: "Created", 204: "No content"}[route.status]}
    if route.response:
        success["content"] = {"application/json": {"schema": _ref(route.response)}}
    for media_type, schema_name in route.also:
        success.setdefault("content", {})[media_type] = {"schema": _ref(schema_name)}
    if route.status == 201:
        success["headers"] = {"Location": {"schema": _STR, "description": "URL of the new resource"}}
    statuses = set(route.problems)
    if params or route.body is not None:
        statuses.add(400)
    if route.access:
        statuses |= {401, 403, 503}
    responses = {str(route.status): success}
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{_PROBLEM_RESPONSES[status][0]}"}
    op["responses"] = responses
    return op


def build(routes: tuple[Route, ...] | list[Route], policy: roles.Policy = roles.DEFAULT) -> dict:
    """The OpenAPI document of ``routes``, each operation's roles as ``policy`` has them."""
    schemas = dict(RESPONSE_SCHEMAS)
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas, policy)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Spidi operators' API",
            "version": __version__,
            "description": "Rooms, room types, live sessions, history, alert rules, alerts and latency SLOs of the "
            "caller's tenant. "
            "Authenticate with the same JWT as the WebSocket: Authorization: Bearer <jwt>. "
            "Errors are RFC 9457 problem details (application/problem+json).",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "rooms"},
            {"name": "room-types"},
            {"name": "sessions"},
            {"name": "alert-rules"},
            {"name": "alerts"},
            {"name": "slos"},
            {"name": "meta"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas,
            "responses": {
                name: _problem_response(status) for status, (name, _) in _PROBLEM_RESPONSES.items()
            },
        },
    }


async def openapi_document(api: Api, call: Call) -> web.Response:
    """GET /api/openapi.json: the document built from ``api.ROUTES`` at registration."""
    return web.Response(body=api.openapi, content_type="application/json")


OPENAPI_ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/openapi.json", openapi_document, "getOpenApi", "This OpenAPI document", "meta",
          None, response="OpenApiDocument"),
)  # fmt: skip
