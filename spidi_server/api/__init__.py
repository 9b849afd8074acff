"""The operators' REST API under /api/v1 on the ops port, and its OpenAPI document.

Modules: ``handlers`` (rooms, room types, sessions), ``alerts`` (alert rules and events),
``params`` (the paging and time-range fields and helpers both share), ``routing`` (the table's
shape and the per-request wrapper), ``validation`` (input rules that also render as JSON Schema),
``problems`` (RFC 9457 errors), ``service`` (auth, tenant-scoped PostgreSQL, live reads, and
``ApiHost``: what the API needs from the node), ``openapi``. ``ROUTES``, here, is the one table.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from . import openapi
from .alerts import ALERT_ROUTES
from .handlers import ROOM_ROUTES
from .problems import problem_middleware
from .routing import Route, endpoint
from .service import Api, ApiHost

# Every route of the API: what is registered and what the OpenAPI document describes.
ROUTES: tuple[Route, ...] = ROOM_ROUTES + ALERT_ROUTES


def register_api(app: web.Application, host: ApiHost) -> Api:
    """Add the REST routes, the OpenAPI document and the problem middleware to the ops application.

    Every route comes from ``ROUTES``, the table the OpenAPI document is built from. The
    PostgreSQL pool (created on first use) is closed when the application is cleaned up.
    """
    api = Api(host)
    api.openapi = orjson.dumps(openapi.build(ROUTES))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, endpoint(api, route), name=route.operation_id)
    app.middlewares.append(problem_middleware)
    app.on_cleanup.append(api.close)
    return api
