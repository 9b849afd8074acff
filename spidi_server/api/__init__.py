"""The operators' REST API under /api/v1 on the ops port, and its OpenAPI document.

One module per resource, each with its fields, rendering, handlers and routes: ``rooms``,
``room_types``, ``sessions`` (live rosters, room statistics, session history, a user's sessions),
``attendance`` (signed, chained attendance exports and their public key),
``point_in_time`` (a room's roster at a past instant, its online count over time),
``alert_rules``, ``alerts`` (alert events, acknowledgement, open alerts), ``slos`` (latency SLOs
and their status). Beneath them: ``params``
(what the resources share: paging and time-range fields, the list envelope, timestamps, codes),
``routing`` (the table's shape and the per-request wrapper), ``validation`` (input rules that also
render as JSON Schema), ``problems`` (RFC 9457 errors), ``service`` (auth, tenant-scoped
PostgreSQL, live reads, the audit log, and ``ApiHost``: what the API needs from the node),
``openapi`` (the document and its route), ``tracing`` (W3C ``traceparent``: each request's trace id
in its log lines, its answer and the rows it writes). ``ROUTES``, here, is the one table.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from . import openapi
from .alert_rules import ALERT_RULE_ROUTES
from .alerts import ALERT_ROUTES
from .anomalies import ANOMALY_ROUTES
from .attendance import ATTENDANCE_ROUTES
from .point_in_time import PIT_ROUTES
from .problems import problem_middleware
from .reconcile import RECONCILE_ROUTES
from .room_types import ROOM_TYPE_ROUTES
from .rooms import ROOM_ROUTES
from .routing import Route, endpoint
from .service import Api, ApiHost
from .sessions import SESSION_ROUTES
from .slos import SLO_ROUTES
from .tracing import trace_middleware

# Every route of the API: what is registered and what the OpenAPI document describes, in this
# order (the document's, and aiohttp's matching order: /alerts/active before /alerts/{id}).
ROUTES: tuple[Route, ...] = (
    openapi.OPENAPI_ROUTES
    + ROOM_TYPE_ROUTES
    + ROOM_ROUTES
    + SESSION_ROUTES
    + ATTENDANCE_ROUTES
    + ANOMALY_ROUTES
    + PIT_ROUTES
    + RECONCILE_ROUTES
    + ALERT_RULE_ROUTES
    + ALERT_ROUTES
    + SLO_ROUTES
)


def register_api(app: web.Application, host: ApiHost) -> Api:
    """Add the REST routes, the OpenAPI document and the problem middleware to the ops application.

    Every route comes from ``ROUTES``, the table the OpenAPI document is built from. The
    PostgreSQL pool (created on first use) is closed when the application is cleaned up.
    """
    api = Api(host)
    api.openapi = orjson.dumps(openapi.build(ROUTES, host.policy))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, endpoint(api, route), name=route.operation_id)
    app.middlewares.append(trace_middleware)  # outside the problem middleware: errors are traced too
    app.middlewares.append(problem_middleware)
    app.on_cleanup.append(api.close)
    return api
