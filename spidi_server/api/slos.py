"""Latency SLOs in the REST API: ``/api/v1/slos[/{id}]`` (``dat_spd_slo``) and
``/api/v1/slos/{id}/status``, their fields, rendering, checking, handlers and routes
(``SLO_ROUTES``). Observers read, admins write; built like the alert rules (``alert_rules``),
whose scope checks they share.

An SLO's SLI, its two objective forms and the error-budget arithmetic are ``alerting.slo``'s; the
status reads the room statistics' latency histograms (``history.sql.slos.sli_counts``), and with
``?breakdown=appVersion|os`` the same figures per client app version or OS (the SLO breakdown the
nodes sample, ``presence/breakdown.py``), each group computed as the whole (``figures``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from aiohttp import web

from .. import roles
from ..alerting import slo
from ..history.sql import slos
from ..history.sql.common import ConflictError
from ..stores.events import BREAKDOWN_DIMENSIONS, LATENCY_BUCKETS_MS
from .alert_rules import API_SCOPES, SCOPES, Number, scope_columns
from .params import OFFSET, iso, page, page_limit
from .problems import Problem, field_error, invalid, not_found
from .routing import Call, Route, json_response
from .service import Api, audit, audit_diff
from .validation import Body, Choice, Integer, Text, Timestamp, Uuid

SLO_ID = Uuid("id", "slo_id", "SLO id", required=True)
_BOUNDS = ", ".join(str(b) for b in LATENCY_BUCKETS_MS)

_SLO_FIELDS = (
    Text("name", "name", "Display name", required=True, max_length=256),
    Choice(
        "scope",
        "scope",
        "Whose heartbeats count: one room's (roomId), those of every room of a room type (roomType), "
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
        "objective",
        "objective",
        "percentile: 'p<percentile> client latency <= thresholdMs' (e.g. p95 <= 150 ms), counted as "
        "'at least percentile % of heartbeats <= thresholdMs'; share: 'the share of heartbeats <= "
        "thresholdMs is at least target' (e.g. 0.99)",
        required=True,
        values=slo.OBJECTIVES,
    ),
    Number(
        "thresholdMs",
        "threshold_ms",
        f"The latency threshold, ms: one of the histogram's bucket bounds ({_BOUNDS}), so the share "
        "under it is exact",
        required=True,
    ),
    Number(
        "percentile",
        "percentile",
        "objective percentile only: the percentile in (0, 100), e.g. 95",
        nullable=True,
    ),
    Number(
        "target",
        "target",
        "objective share only: the share of heartbeats in (0, 1), e.g. 0.99",
        nullable=True,
    ),
    Integer(
        "windowDays",
        "window_days",
        f"The rolling window the objective holds over, days; default {slo.DEFAULT_WINDOW_DAYS}",
        minimum=1,
        maximum=slo.MAX_WINDOW_DAYS,
    ),
)
SLO_CREATE = Body("SloCreate", "A new latency SLO", _SLO_FIELDS)
SLO_PATCH = Body(
    "SloPatch",
    "The fields of an SLO to change. A new objective takes its own percentile or target; a new scope "
    "drops the target of the old one (give the new one's)",
    _SLO_FIELDS,
    partial=True,
)
SLO_LIST_QUERY = (
    Uuid("roomId", "room_id", "Only SLOs of scope room for this room"),
    page_limit(50, 500),
    OFFSET,
)
STATUS_QUERY = (
    Uuid(
        "roomId",
        "room_id",
        "Only this room's heartbeats (one the SLO covers); default: every room of the SLO's scope",
    ),
    Timestamp("at", "at", "The windows end here (exclusive), ISO 8601; default now"),
    Choice(
        "breakdown",
        "breakdown",
        "Also the figures per client app version or per OS (the field breakdown): the values with the "
        "most heartbeats of each room minute (settings.slo_breakdown_top_n), the rest as other",
        values=BREAKDOWN_DIMENSIONS,
    ),
)


def slo_json(row: dict) -> dict:
    """An SLO as the API shows it; ``target`` is the SLI's share in both objective forms."""
    return {
        "id": row["id"],
        "name": row["name"],
        "scope": API_SCOPES[row["scope"]],
        "roomId": row["room_id"],
        "roomType": row["room_type"],
        "roomTypeId": row["room_type_id"],
        "objective": row["objective"],
        "thresholdMs": row["threshold_ms"],
        "percentile": row["percentile"],
        "target": row["target"],
        "windowDays": row["window_days"],
        "createdAt": iso(row["created_at"]),
        "createdBy": row["created_by"],
        "updatedAt": iso(row["updated_at"]),
        "updatedBy": row["updated_by"],
    }


def slo_columns(conn: psycopg.Connection, tenant: str, body: dict, current: dict | None) -> dict[str, Any]:
    """The ``dat_spd_slo`` columns to write for ``body``: a new SLO (``current`` None) or a PATCH
    merged over the stored ``current``. Problem listing every mistake."""
    given = body.__contains__
    cur = current or {}
    errors: list[dict] = []
    out: dict[str, Any] = {k: body[k] for k in ("name", "window_days") if given(k)}
    out.update(scope_columns(conn, tenant, body, current, errors))
    if given("threshold_ms"):
        try:
            slo.bucket_count(body["threshold_ms"])
        except slo.SloError as exc:
            errors.append(field_error("body", exc.field, exc.message))
        else:
            out["threshold_ms"] = float(body["threshold_ms"])
    if current is None or any(given(k) for k in ("objective", "percentile", "target")):
        objective = body["objective"] if given("objective") else cur["objective"]
        # The stored percentile or target counts only while the objective stays.
        keep = current is not None and objective == cur["objective"]
        percentile, target = body.get("percentile"), body.get("target")
        if keep and objective == "percentile" and not given("percentile"):
            percentile = cur["percentile"]
        if keep and objective == "share" and not given("target"):
            target = cur["target"]
        try:
            share = slo.objective_target(objective, percentile, target)
        except slo.SloError as exc:
            errors.append(field_error("body", exc.field, exc.message))
        else:
            out.update(objective=objective, percentile=percentile, target=share)
    if current is None:
        out.setdefault("window_days", slo.DEFAULT_WINDOW_DAYS)
    if errors:
        raise invalid(errors)
    return out


# -- handlers --------------------------------------------------------------------------------


async def list_slos(api: Api, call: Call) -> web.Response:
    """GET /api/v1/slos: a page of the tenant's SLOs."""
    q, tenant = call.query, call.claims.tenant
    rows, total = await api.db(
        tenant,
        lambda c: slos.list_slos(c, tenant, room_id=q["room_id"], limit=q["limit"], offset=q["offset"]),
    )
    return json_response(page([slo_json(r) for r in rows], total, q))


async def create_slo(api: Api, call: Call) -> web.Response:
    """POST /api/v1/slos."""
    claims = call.claims

    def work(conn):
        columns = slo_columns(conn, claims.tenant, call.body, None)
        return slos.create_slo(conn, claims.tenant, columns, actor=claims.user_id)

    row = await api.db(claims.tenant, work)
    audit(
        "slo_created",
        claims,
        slo_id=row["id"],
        slo_name=row["name"],
        scope=row["scope"],
        target=row["target"],
    )
    return json_response(slo_json(row), 201, {"Location": f"/api/v1/slos/{row['id']}"})


async def get_slo(api: Api, call: Call) -> web.Response:
    """GET /api/v1/slos/{id}."""
    slo_id, tenant = call.path["slo_id"], call.claims.tenant
    row = await api.db(tenant, lambda c: slos.get_slo(c, tenant, slo_id))
    if row is None:
        raise not_found("SLO", slo_id)
    return json_response(slo_json(row))


async def patch_slo(api: Api, call: Call) -> web.Response:
    """PATCH /api/v1/slos/{id}: the fields given, checked with the stored rest."""
    slo_id, claims = call.path["slo_id"], call.claims

    def work(conn):
        before = slos.get_slo(conn, claims.tenant, slo_id)
        if before is None:
            return None, None
        changes = slo_columns(conn, claims.tenant, call.body, before)
        return before, slos.update_slo(conn, claims.tenant, slo_id, changes, actor=claims.user_id)

    before, after = await api.db(claims.tenant, work)
    if after is None:
        raise not_found("SLO", slo_id)
    new = slo_json(after)
    # No secrets in an SLO: the audit line carries the old and new values.
    audit("slo_updated", claims, slo_id=slo_id, changes=audit_diff(slo_json(before), new))
    return json_response(new)


async def delete_slo(api: Api, call: Call) -> web.Response:
    """DELETE /api/v1/slos/{id}: soft delete; refused while an alert rule watches it."""
    slo_id, claims = call.path["slo_id"], call.claims
    try:
        deleted = await api.db(
            claims.tenant, lambda c: slos.delete_slo(c, claims.tenant, slo_id, actor=claims.user_id)
        )
    except ConflictError as exc:
        raise Problem("conflict", str(exc)) from None
    if not deleted:
        raise not_found("SLO", slo_id)
    audit("slo_deleted", claims, slo_id=slo_id)
    return web.Response(status=204)


def figures(row: dict, counts: dict[str, tuple[int, int]]) -> dict:
    """Compliance, budget and burn rates of an SLO's heartbeats (the whole scope's, or one
    breakdown group's) from their (good, total) per window label (``status_windows``)."""
    target = row["target"]
    window = f"{row['window_days']}d"
    whole = slo.Counts(*counts[window])
    windows = []
    for label, seconds in status_windows(row["window_days"]):
        c = slo.Counts(*counts[label])
        windows.append(
            {
                "window": label,
                "seconds": seconds,
                "good": c.good,
                "total": c.total,
                "compliance": slo.compliance(c),
                "burnRate": slo.burn_rate(c, target) if c.total else None,
            }
        )
    return {
        "good": whole.good,
        "total": whole.total,
        "compliance": slo.compliance(whole),
        "errorBudgetRemaining": slo.budget_remaining(whole, target),
        "met": None if not whole.total else slo.compliance(whole) >= target,
        "burnRates": {w["window"]: w["burnRate"] for w in windows if w["window"] in slo.BURN_WINDOWS},
        "windows": windows,
    }


def status_json(
    row: dict,
    counts: dict[str, tuple[int, int]],
    at: datetime,
    room_id: str | None,
    breakdown: str | None = None,
    groups: dict[str | None, dict[str, tuple[int, int]]] | None = None,
) -> dict:
    """An SLO's status: its figures over the scope (``counts``), and with ``breakdown`` those of
    each group (``groups``: value, None for other -> counts): the most overspent first, other last."""
    out = {
        "sloId": row["id"],
        "roomId": room_id,
        "at": iso(at),
        "target": row["target"],
        "thresholdMs": row["threshold_ms"],
        "windowDays": row["window_days"],
        **figures(row, counts),
        "breakdown": None,
    }
    if breakdown is not None:
        items = [
            {"value": value, "other": value is None, **figures(row, c)} for value, c in (groups or {}).items()
        ]
        items.sort(key=lambda g: (g["other"], g["errorBudgetRemaining"], g["value"] or ""))
        out["breakdown"] = {"dimension": breakdown, "groups": items}
    return out


def status_windows(window_days: int) -> list[tuple[str, int]]:
    """The windows a status reports: the burn-rate windows and the SLO's own (by label, seconds)."""
    out = dict(slo.BURN_WINDOWS)
    out[f"{window_days}d"] = window_days * 86_400
    return sorted(out.items(), key=lambda item: item[1])


async def slo_status(api: Api, call: Call) -> web.Response:
    """GET /api/v1/slos/{id}/status: compliance, budget and burn rates, read off the histograms."""
    slo_id, tenant, q = call.path["slo_id"], call.claims.tenant, call.query
    at = q["at"] or datetime.now(UTC)

    def work(conn):
        row = slos.get_slo(conn, tenant, slo_id)
        if row is None:
            return None, (None, None)
        if q["room_id"] is not None and not slos.room_in_scope(conn, row, q["room_id"]):
            raise invalid([field_error("query", "roomId", f"room {q['room_id']} is not in this SLO's scope")])
        query = {
            "tenant": tenant,
            "scope": row["scope"],
            "room_id": row["room_id"],
            "room_type_id": row["room_type_id"],
            "buckets": slo.bucket_count(row["threshold_ms"]),
            "now": at,
            "windows": status_windows(row["window_days"]),
            "only_room": q["room_id"],
        }
        counts = slos.sli_counts(conn, **query)
        groups = None
        if q["breakdown"] is not None:
            groups = slos.sli_counts(conn, **query, breakdown=q["breakdown"])
        return row, (counts[None], groups)

    row, (counts, groups) = await api.db(tenant, work)
    if row is None:
        raise not_found("SLO", slo_id)
    return json_response(status_json(row, counts, at, q["room_id"], q["breakdown"], groups))


_SLOS = "/api/v1/slos"

SLO_ROUTES: tuple[Route, ...] = (
    Route("GET", _SLOS, list_slos, "listSlos", "List the tenant's latency SLOs", "slos", roles.OBSERVE,
          query=SLO_LIST_QUERY, response="SloList"),
    Route("POST", _SLOS, create_slo, "createSlo", "Create a latency SLO", "slos", roles.ADMINISTER,
          body=SLO_CREATE, status=201, response="Slo",
          description="thresholdMs must be a bound of the latency histogram; a percentile objective "
                      "(p95 <= 150 ms) is stored as its share (95 % of heartbeats <= 150 ms)."),
    Route("GET", _SLOS + "/{id}", get_slo, "getSlo", "Get a latency SLO", "slos", roles.OBSERVE,
          path_params=(SLO_ID,), response="Slo", problems=(404,)),
    Route("PATCH", _SLOS + "/{id}", patch_slo, "updateSlo", "Change fields of a latency SLO", "slos",
          roles.ADMINISTER, path_params=(SLO_ID,), body=SLO_PATCH, response="Slo", problems=(404,)),
    Route("DELETE", _SLOS + "/{id}", delete_slo, "deleteSlo", "Delete a latency SLO (soft)", "slos",
          roles.ADMINISTER, path_params=(SLO_ID,), status=204, problems=(404, 409),
          description="Refused (409) while an alert rule of kind slo_burn watches it."),
    Route("GET", _SLOS + "/{id}/status", slo_status, "getSloStatus",
          "A latency SLO's compliance, error budget and burn rates", "slos", roles.OBSERVE,
          path_params=(SLO_ID,), query=STATUS_QUERY, response="SloStatus", problems=(404,),
          description="Counted from the room statistics' latency histograms (minutes written by the "
                      "history writer): each window is [at - length, at). breakdown=appVersion|os adds "
                      "the same figures per client app version or OS."),
)  # fmt: skip
