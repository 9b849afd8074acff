"""Alert rules in the REST API: ``/api/v1/alert-rules[/{id}]`` (``dat_spd_alert_rule``), their
fields, rendering, checking, handlers and routes (``ALERT_RULE_ROUTES``). Observers read, admins
write; the evaluator loads the rules within ``alert_rules_refresh_s``.

Rules are checked in two steps: each field on its own by the route's body (``validation``), then
the rule as a whole here (scope and its target, kind with threshold or CEL expressions, channels),
with the messages of ``alerting.rules``, every mistake of a step in one answer. A rule's room is
given by id, its room type by code (``roomType``, like a room's ``type``; one of the tenant's own
types); the response shows both the code and the id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from aiohttp import web

from .. import roles
from ..alerting import formats, rules, slo
from ..alerting.egress import EgressPolicy
from ..history.sql import alerts, room_types, rooms, slos
from .params import OFFSET, iso, page, page_limit
from .problems import field_error, invalid, not_found
from .routing import Call, Route, json_response
from .service import Api, audit
from .validation import Body, Choice, Field, FieldError, Flag, Integer, Text, Uuid

# API scope -> dat_spd_alert_rule.scope, and back.
SCOPES = {"room": "room", "roomType": "room_type", "tenant": "tenant"}
API_SCOPES = {v: k for k, v in SCOPES.items()}
DEFAULT_CHANNELS = [{"type": "in_app"}]
MAX_CHANNELS = 20
MAX_FOR_SECONDS = 86_400

# -- fields these operations need beyond ``validation``'s -----------------------------------------


@dataclass(frozen=True)
class Number(Field):
    """A finite JSON number (integer or not, never a boolean) greater than 0."""

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise FieldError("must be a number")
        if value <= 0:
            raise FieldError("must be a positive number")
        return float(value)

    def base_schema(self) -> dict:
        return {"type": "number", "exclusiveMinimum": 0}


@dataclass(frozen=True)
class Channels(Field):
    """A list of notification channels: its items are checked with the rest of the rule."""

    def check(self, value: Any) -> list:
        if not isinstance(value, list):
            raise FieldError("must be a list of channel objects")
        if len(value) > MAX_CHANNELS:
            raise FieldError(f"must have at most {MAX_CHANNELS} channels")
        return value

    def base_schema(self) -> dict:
        channel = {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": list(rules.CHANNEL_TYPES)},
                "url": {
                    "type": "string",
                    "description": "webhook (signed alert JSON), slack (incoming webhook URL), teams "
                    "(workflow webhook URL): required; pagerduty: optional, default "
                    f"{formats.PAGERDUTY_EVENTS_URL}. An http:// or https:// URL of a public address "
                    "(others only as the operator's webhook_allowed_networks allow)",
                },
                "routingKey": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9]{32}$",
                    "description": "pagerduty: the integration key of an Events API v2 integration",
                },
                "to": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "email: recipients (default: the server's smtp_to)",
                },
            },
        }
        return {
            "type": "array",
            "maxItems": MAX_CHANNELS,
            "items": channel,
            "description": "Where notifications go. Callers without spidi:admin read them masked: a URL "
            f"as its scheme and host followed by /{MASK}, a routing key as {MASK} and its last 4 characters",
        }


@dataclass(frozen=True)
class AnomalyTypes(Field):
    """A non-empty list of anomaly flag types (each one once)."""

    def check(self, value: Any) -> list:
        if not isinstance(value, list) or not value:
            raise FieldError(f"must be a non-empty list of {', '.join(rules.ANOMALY_TYPES)}")
        unknown = sorted({str(v) for v in value if v not in rules.ANOMALY_TYPES})
        if unknown:
            raise FieldError(f"unknown type(s) {', '.join(unknown)}; known: {', '.join(rules.ANOMALY_TYPES)}")
        if len(set(value)) != len(value):
            raise FieldError("must name each type once")
        return value

    def base_schema(self) -> dict:
        return {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "enum": list(rules.ANOMALY_TYPES)},
        }


RULE_ID = Uuid("id", "rule_id", "Alert rule id", required=True)
_METRICS = ", ".join(rules.VARIABLES)

_RULE_FIELDS = (
    Text("name", "name", "Display name, shown in alerts and notifications", required=True, max_length=256),
    Choice(
        "scope",
        "scope",
        "What the rule watches: one room (roomId), every room of a room type (roomType), "
        "or every room of the tenant",
        required=True,
        values=tuple(SCOPES),
    ),
    Uuid(
        "roomId", "room_id", "scope room: the room, one stored for this tenant (/api/v1/rooms)", nullable=True
    ),
    Text(
        "roomType",
        "room_type",
        "scope roomType: the code of one of the tenant's room types (/api/v1/room-types)",
        nullable=True,
        max_length=64,
    ),
    Choice(
        "kind",
        "kind",
        "capacity (utilization > threshold), latency (avgLatencyMs > threshold), heartbeat "
        "(oldestHeartbeatAgeS > threshold: a session silent that long; with share, at least that share "
        "of the online sessions), heartbeat_rate (staleSessions > 0 || heartbeatRateDrop > threshold), "
        "anomaly (a flag of anomalyTypes at robust z-score > threshold), "
        "custom (expression) or slo_burn (the error-budget burn rate of the SLO sloId over two windows, "
        "burnPolicy page: burnRate1h > threshold && burnRate5m > threshold; ticket: burnRate6h and burnRate30m)",
        required=True,
        values=rules.KINDS,
    ),
    Number(
        "threshold",
        "threshold",
        "Built-in kinds only; null or left out: the kind's default. capacity: a "
        "utilization ratio in (0, 1], default 0.8; latency: ms, default 500; heartbeat: seconds of "
        "silence, default 60; heartbeat_rate: a ratio in (0, 1], default 0.5; anomaly: the robust z-score "
        "a rate must exceed (sensitivity: lower flags more), default anomaly_z_threshold (3.5). The alert "
        "resolves below threshold x (1 - alert_hysteresis) (anomaly: once no flag is left). slo_burn: the "
        "burn-rate factor both windows must exceed",
        nullable=True,
    ),
    AnomalyTypes(
        "anomalyTypes",
        "anomaly_types",
        "anomaly only: the flag types that fire the rule; null or left out: every type",
        nullable=True,
    ),
    Number(
        "share",
        "share",
        "heartbeat only: fire when at least this share (0, 1] of the room's online sessions has been "
        "silent longer than threshold (silentShare >= share; resolves below share x (1 - "
        "alert_hysteresis)); null or left out: when any one session has",
        nullable=True,
    ),
    Text(
        "expression",
        "expression",
        f"custom only: a CEL expression over the room's metrics ({_METRICS}) that "
        "must evaluate to a boolean, e.g. online > 900 && avgLatencyMs > 300",
        nullable=True,
        max_length=rules.MAX_EXPRESSION,
    ),
    Text(
        "resolveExpression",
        "resolve_expression",
        "custom only: the CEL expression that resolves a firing "
        "alert (hysteresis); default: the expression no longer holds",
        nullable=True,
        max_length=rules.MAX_EXPRESSION,
    ),
    Uuid(
        "sloId",
        "slo_id",
        "slo_burn only: the SLO watched, one of the tenant's (/api/v1/slos); the rule's scope picks the "
        "rooms, of those the SLO covers, each evaluated on its own heartbeats",
        nullable=True,
    ),
    Choice(
        "burnPolicy",
        "burn_policy",
        "slo_burn only: page (1 h and 5 m windows, default threshold 14.4) or ticket (6 h and 30 m, "
        "default 6); default page",
        nullable=True,
        values=tuple(slo.BURN_POLICIES),
    ),
    Choice("severity", "severity", "Severity of its alerts", values=rules.SEVERITIES, default="warning"),
    Integer(
        "forSeconds",
        "for_seconds",
        "Seconds the condition must hold before the alert fires (pending until then); default 0",
        minimum=0,
        maximum=MAX_FOR_SECONDS,
    ),
    Channels("channels", "channels", 'Notification channels; default [{"type": "in_app"}] (dashboards only)'),
    Flag("enabled", "enabled", "Whether the rule is evaluated; default true"),
)
RULE_CREATE = Body("AlertRuleCreate", "A new alert rule", _RULE_FIELDS)
RULE_PATCH = Body(
    "AlertRulePatch",
    "The fields of an alert rule to change. A new kind or threshold writes the expressions again; a "
    "new scope drops the target of the old one (give the new one's)",
    _RULE_FIELDS,
    partial=True,
)

RULE_LIST_QUERY = (
    Choice("kind", "kind", "Only rules of this kind", values=rules.KINDS),
    Flag("enabled", "enabled", "Only enabled (true) or disabled (false) rules"),
    Uuid("roomId", "room_id", "Only rules of scope room for this room"),
    page_limit(50, 500),
    OFFSET,
)


# -- rendering ---------------------------------------------------------------------------------


# A channel's secret parts: who holds a Slack, Teams or webhook URL, or a PagerDuty routing key,
# can post into that channel, so callers without ``roles.VIEW_SECRETS`` see them masked.
MASK = "***"


def masked_channel(channel: dict) -> dict:
    """``channel`` with its secrets masked: a URL keeps its scheme and host (where alerts go) and
    loses its path and query; a routing key keeps its last 4 characters."""
    out = dict(channel)
    url = out.get("url")
    if isinstance(url, str):
        try:
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port
        except ValueError:  # stored before a check refused it: show nothing of it
            out["url"] = MASK
        else:
            host = f"[{host}]" if ":" in host else host
            out["url"] = f"{parts.scheme}://{host}{f':{port}' if port else ''}/{MASK}"
    key = out.get("routingKey")
    if isinstance(key, str):
        out["routingKey"] = MASK + key[-4:]
    return out


def rule_json(row: dict, secrets: bool = True) -> dict:
    """An alert rule as the API shows it, with the expressions the evaluator runs; without
    ``secrets`` its channels are masked (``masked_channel``)."""
    channels = row["channels"]
    if not secrets and channels:
        channels = [masked_channel(c) if isinstance(c, dict) else c for c in channels]
    return {
        "id": row["id"],
        "name": row["name"],
        "scope": API_SCOPES[row["scope"]],
        "roomId": row["room_id"],
        "roomType": row["room_type"],
        "roomTypeId": row["room_type_id"],
        "kind": row["kind"],
        "threshold": row["threshold"],
        "share": row["share"],
        "anomalyTypes": list(rules.anomaly_types_of(row["expression"])) if row["kind"] == "anomaly" else None,
        "expression": row["expression"],
        "resolveExpression": row["resolve_expression"],
        "severity": row["severity"],
        "forSeconds": row["for_seconds"],
        "channels": channels,
        "enabled": row["enabled"],
        "sloId": row["slo_id"],
        "burnPolicy": row["burn_policy"],
        "createdAt": iso(row["created_at"]),
        "createdBy": row["created_by"],
        "updatedAt": iso(row["updated_at"]),
        "updatedBy": row["updated_by"],
    }


# -- checking a rule as a whole ------------------------------------------------------------------


def scope_columns(
    conn: psycopg.Connection, tenant: str, body: dict, current: dict | None, errors: list[dict]
) -> dict[str, Any]:
    """The scope columns (scope, room_id, room_type_id) to write for ``body`` over ``current`` (None:
    a new row), as alert rules and SLOs take them; each mistake appended to ``errors``.

    The target must agree with the scope: a room of the tenant's (row-level security lets it see
    only those) for scope room, one of its room types by code for scope roomType.
    """
    given = body.__contains__
    cur = current or {}
    out: dict[str, Any] = {}
    scope = SCOPES[body["scope"]] if given("scope") else cur["scope"]
    if given("scope"):
        out["scope"] = scope
    # The scope's target: the one given (checked), else the stored one while the scope stays.
    room_id = room_type_id = None
    if scope == "room":
        room_id = body["room_id"] if given("room_id") else cur.get("room_id")
        if room_id is None:
            errors.append(field_error("body", "roomId", "is required when scope is room"))
        elif given("room_id") and not rooms.exists(conn, tenant, room_id):
            errors.append(
                field_error(
                    "body",
                    "roomId",
                    f"no room {room_id} is stored for this tenant "
                    "(rooms are created with POST /api/v1/rooms)",
                )
            )
    if scope == "room_type":
        if body.get("room_type") is not None:
            try:
                room_type_id = room_types.id_for_code(conn, tenant, body["room_type"])
            except room_types.UnknownRoomTypeError as exc:
                errors.append(field_error("body", "roomType", str(exc)))
        elif given("room_type") or cur.get("room_type_id") is None:
            errors.append(field_error("body", "roomType", "is required when scope is roomType"))
        else:
            room_type_id = cur["room_type_id"]
    for name, key, owner in (("roomId", "room_id", "room"), ("roomType", "room_type", "room_type")):
        if scope != owner and body.get(key) is not None:
            errors.append(
                field_error(
                    "body", name, f"only with scope {API_SCOPES[owner]} (scope is {API_SCOPES[scope]})"
                )
            )
    if current is None or given("scope") or given("room_id") or given("room_type"):
        out["room_id"], out["room_type_id"] = room_id, room_type_id

    return out


def rule_columns(
    conn: psycopg.Connection,
    tenant: str,
    body: dict,
    current: dict | None,
    hysteresis: float,
    egress: EgressPolicy | None = None,
    default_z: float | None = None,
) -> dict[str, Any]:
    """The ``dat_spd_alert_rule`` columns to write for ``body``: a new rule (``current`` None), or
    the changes of a PATCH merged over the stored ``current``. Problem listing every mistake.

    Runs in the request's tenant transaction: a rule's room must be one the tenant's row-level
    security lets it see, and the rule's target must agree with its scope. With ``egress``, a
    channel's URL (webhook, slack, teams, pagerduty) must not literally be an address it refuses (the sender checks the
    resolved addresses again at send time: that is the real guard).
    """
    given = body.__contains__
    cur = current or {}
    errors: list[dict] = []
    out: dict[str, Any] = {k: body[k] for k in ("name", "severity", "for_seconds", "enabled") if given(k)}

    out.update(scope_columns(conn, tenant, body, current, errors))
    if current is None or any(
        given(k)
        for k in (
            "kind",
            "threshold",
            "share",
            "anomaly_types",
            "expression",
            "resolve_expression",
            "slo_id",
            "burn_policy",
        )
    ):
        kind = body["kind"] if given("kind") else cur["kind"]
        # The stored threshold, share or expressions count only while the kind stays: another
        # kind's mean nothing to this one.
        keep = current is not None and kind == cur["kind"]
        threshold, share = body.get("threshold"), body.get("share")
        expression, resolve = body.get("expression"), body.get("resolve_expression")
        if keep and kind != "custom" and not given("threshold"):
            threshold = cur["threshold"]
        if keep and not given("share"):
            share = cur.get("share")
        slo_id, policy = body.get("slo_id"), body.get("burn_policy")
        if keep and not given("slo_id"):
            slo_id = cur.get("slo_id")
        if keep and not given("burn_policy"):
            policy = cur.get("burn_policy")
        if kind == "slo_burn":
            policy = policy or "page"
            if slo_id is None:
                errors.append(field_error("body", "sloId", "is required when kind is slo_burn"))
            elif not slos.exists(conn, tenant, slo_id):
                errors.append(
                    field_error("body", "sloId", f"no SLO {slo_id} is stored for this tenant (/api/v1/slos)")
                )
        elif slo_id is not None:
            errors.append(field_error("body", "sloId", "applies to the slo_burn kind only"))
        if keep and kind == "slo_burn" and policy != cur.get("burn_policy") and not given("threshold"):
            threshold = None  # another policy: its own default factor
        types = body.get("anomaly_types")
        if keep and kind == "anomaly" and not given("anomaly_types"):
            types = list(rules.anomaly_types_of(cur["expression"]))
        if keep and kind == "custom":
            expression = body["expression"] if given("expression") else cur["expression"]
            resolve = body["resolve_expression"] if given("resolve_expression") else cur["resolve_expression"]
        try:
            fire, back, value = rules.make_rule_expressions(
                kind,
                threshold,
                expression,
                resolve,
                hysteresis,
                share,
                burn_policy=policy,
                anomaly_types=types,
                default_z=default_z,
            )
        except rules.AlertRuleError as exc:
            errors.append(field_error("body", exc.field, exc.message))
        else:
            out.update(
                kind=kind,
                expression=fire,
                resolve_expression=back,
                threshold=value,
                share=None if share is None else float(share),
                slo_id=slo_id if kind == "slo_burn" else None,
                burn_policy=policy if kind == "slo_burn" else None,
            )

    if given("channels"):
        try:
            out["channels"] = rules.check_channels(body["channels"])
        except rules.AlertRuleError as exc:
            errors.append(field_error("body", exc.field, exc.message))
        else:
            for i, channel in enumerate(out["channels"]):
                problem = egress.url_problem(channel["url"]) if egress and "url" in channel else None
                if problem is not None:
                    errors.append(field_error("body", f"channels[{i}].url", problem))
    if current is None:
        out.setdefault("severity", "warning")
        out.setdefault("for_seconds", 0)
        out.setdefault("channels", [dict(c) for c in DEFAULT_CHANNELS])
        out.setdefault("enabled", True)
    if errors:
        raise invalid(errors)
    return out


# -- alert rules -------------------------------------------------------------------------------


async def list_rules(api: Api, call: Call) -> web.Response:
    """GET /api/v1/alert-rules: a page of the tenant's rules, filtered."""
    q, tenant = call.query, call.claims.tenant
    rows, total = await api.db(
        tenant,
        lambda c: alerts.list_rules(
            c,
            tenant,
            kind=q["kind"],
            enabled=q["enabled"],
            room_id=q["room_id"],
            limit=q["limit"],
            offset=q["offset"],
        ),
    )
    secrets = api.may(call.claims, roles.VIEW_SECRETS)
    return json_response(page([rule_json(r, secrets) for r in rows], total, q))


async def create_rule(api: Api, call: Call) -> web.Response:
    """POST /api/v1/alert-rules: check the rule as a whole, store it; the evaluator loads it within
    ``alert_rules_refresh_s``."""
    b, claims = call.body, call.claims
    hysteresis = api.host.settings.alert_hysteresis
    egress = EgressPolicy.from_settings(api.host.settings)
    default_z = api.host.settings.anomaly_z_threshold

    def work(conn):
        columns = rule_columns(conn, claims.tenant, b, None, hysteresis, egress, default_z)
        return alerts.create_rule(conn, claims.tenant, columns, actor=claims.user_id)

    row = await api.db(claims.tenant, work)
    # Channels are left out of the log: a webhook URL or a PagerDuty routing key is a secret.
    audit(
        "alert_rule_created",
        claims,
        rule_id=row["id"],
        rule_name=row["name"],
        kind=row["kind"],
        scope=row["scope"],
        expression=row["expression"],
    )
    return json_response(rule_json(row), 201, {"Location": f"/api/v1/alert-rules/{row['id']}"})


async def get_rule(api: Api, call: Call) -> web.Response:
    """GET /api/v1/alert-rules/{id}."""
    rule_id, tenant = call.path["rule_id"], call.claims.tenant
    row = await api.db(tenant, lambda c: alerts.get_rule(c, tenant, rule_id))
    if row is None:
        raise not_found("alert rule", rule_id)
    return json_response(rule_json(row, api.may(call.claims, roles.VIEW_SECRETS)))


async def patch_rule(api: Api, call: Call) -> web.Response:
    """PATCH /api/v1/alert-rules/{id}: the fields given, checked with the stored rest."""
    rule_id, claims = call.path["rule_id"], call.claims
    hysteresis = api.host.settings.alert_hysteresis
    egress = EgressPolicy.from_settings(api.host.settings)
    default_z = api.host.settings.anomaly_z_threshold

    def work(conn):
        before = alerts.get_rule(conn, claims.tenant, rule_id)
        if before is None:
            return None, None
        changes = rule_columns(conn, claims.tenant, call.body, before, hysteresis, egress, default_z)
        return before, alerts.update_rule(conn, claims.tenant, rule_id, changes, actor=claims.user_id)

    before, after = await api.db(claims.tenant, work)
    if after is None:
        raise not_found("alert rule", rule_id)
    old, new = rule_json(before), rule_json(after)
    changed = sorted(k for k in new if old[k] != new[k] and k not in ("updatedAt", "updatedBy"))
    audit("alert_rule_updated", claims, rule_id=rule_id, changed=changed)
    return json_response(new)


async def delete_rule(api: Api, call: Call) -> web.Response:
    """DELETE /api/v1/alert-rules/{id}: soft delete; its events stay in the history."""
    rule_id, claims = call.path["rule_id"], call.claims
    deleted = await api.db(
        claims.tenant,
        lambda c: alerts.delete_rule(c, claims.tenant, rule_id, actor=claims.user_id),
    )
    if not deleted:
        raise not_found("alert rule", rule_id)
    audit("alert_rule_deleted", claims, rule_id=rule_id)
    return web.Response(status=204)


_RULES = "/api/v1/alert-rules"

ALERT_RULE_ROUTES: tuple[Route, ...] = (
    Route("GET", _RULES, list_rules, "listAlertRules", "List the tenant's alert rules", "alert-rules", roles.OBSERVE,
          query=RULE_LIST_QUERY, response="AlertRuleList"),
    Route("POST", _RULES, create_rule, "createAlertRule", "Create an alert rule", "alert-rules", roles.ADMINISTER,
          body=RULE_CREATE, status=201, response="AlertRule",
          description="Expressions are compiled at once: a malformed CEL expression, an unknown metric or a "
                      "non-boolean result is a validation error naming the field, with the parser's message. "
                      "The evaluator picks the rule up within alert_rules_refresh_s."),
    Route("GET", _RULES + "/{id}", get_rule, "getAlertRule", "Get an alert rule", "alert-rules", roles.OBSERVE,
          path_params=(RULE_ID,), response="AlertRule", problems=(404,)),
    Route("PATCH", _RULES + "/{id}", patch_rule, "updateAlertRule", "Change fields of an alert rule",
          "alert-rules", roles.ADMINISTER, path_params=(RULE_ID,), body=RULE_PATCH, response="AlertRule",
          problems=(404,)),
    Route("DELETE", _RULES + "/{id}", delete_rule, "deleteAlertRule", "Delete an alert rule (soft)",
          "alert-rules", roles.ADMINISTER, path_params=(RULE_ID,), status=204, problems=(404,),
          description="Its events stay in the history."),
)  # fmt: skip
