"""The operators' REST API under /api/v1 on the ops port, and its OpenAPI document.

Modules: ``handlers`` (operations and the route table), ``routing`` (the table's shape and the
per-request wrapper), ``validation`` (input rules that also render as JSON Schema), ``problems``
(RFC 9457 errors), ``service`` (auth, tenant-scoped PostgreSQL, live reads), ``openapi``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from . import openapi
from .handlers import ROUTES
from .problems import problem_middleware
from .routing import endpoint
from .service import Api

if TYPE_CHECKING:
    from ..node import Node


def register_api(app: web.Application, node: Node) -> Api:
    """Add the REST routes, the OpenAPI document and the problem middleware to the ops application.

    Every route comes from ``handlers.ROUTES``, the table the OpenAPI document is built from. The
    PostgreSQL pool (created on first use) is closed when the application is cleaned up.
    """
    api = Api(node)
    api.openapi = orjson.dumps(openapi.build(ROUTES))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, endpoint(api, route), name=route.operation_id)
    app.middlewares.append(problem_middleware)
    app.on_cleanup.append(api.close)
    return api
