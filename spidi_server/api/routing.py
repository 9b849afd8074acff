"""The route table's shape, and the wrapper that runs one operation of it.

A :class:`Route` is everything about an operation: method and path, who may call it, its
parameters and body (``validation`` fields), its success status and response schema. The same
table registers the aiohttp routes and builds the OpenAPI document (``openapi.py``), so the two
cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .problems import Problem, invalid
from .validation import Body, Field, parse_params

if TYPE_CHECKING:
    from ..auth import Claims
    from .service import Api

log = logging.getLogger("spidi.api")


@dataclass
class Call:
    """One request, validated: the caller's claims and the checked path, query and body values."""

    request: web.Request
    claims: Claims | None
    path: dict[str, Any]
    query: dict[str, Any]
    body: dict[str, Any] | None


Handler = Callable[["Api", Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RequestInfo:
    """What the audit log needs of the request a handler is serving (``service.audit``)."""

    method: str
    path: str
    body_fields: tuple[str, ...]  # the body fields the caller gave, by wire name (camelCase)


# Set around each handler call (each aiohttp request runs in a task of its own, so a context
# variable is per request): ``service.audit`` reads it, so every write's audit line names the
# request and the fields given without every handler passing them along.
current_request: ContextVar[RequestInfo | None] = ContextVar("spidi_api_request", default=None)


@dataclass(frozen=True)
class Route:
    """One operation of the API."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    access: str | None  # the roles action it needs (roles.OBSERVE, roles.ADMINISTER, ...), None: public
    path_params: tuple[Field, ...] = ()
    query: tuple[Field, ...] = ()
    body: Body | None = None
    status: int = 200
    response: str | None = None  # name of the success body's schema in the OpenAPI components
    also: tuple[tuple[str, str], ...] = ()  # other success media types: (media type, schema name)
    problems: tuple[int, ...] = ()  # statuses beyond those every operation of its kind may answer
    description: str = ""
    ip_addresses: bool = False  # the answer holds clients' IP addresses: only for roles.VIEW_IP


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (orjson: datetimes already rendered by the handlers)."""
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def endpoint(api: Api, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of ``route``: authenticate, validate, run; every failure as a problem."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            claims = api.authenticate(request, route.access) if route.access else None
            # Path, query and body are checked together so one answer lists every mistake.
            errors: list[dict] = []
            values: dict[str, Any] = {}
            for name, check in (
                ("path", lambda: parse_params(route.path_params, request.match_info, "path", strict=False)),
                ("query", lambda: parse_params(route.query, request.query, "query", strict=True)),
            ):
                try:
                    values[name] = check()
                except Problem as problem:
                    errors += problem.errors or []
            body = None
            if route.body is not None:
                raw = await request.read()
                try:
                    body = route.body.parse(raw)
                except Problem as problem:
                    if problem.slug != "validation-error":
                        raise  # malformed JSON: there are no fields to report on
                    errors += problem.errors or []
            if errors:
                raise invalid(errors)
            given = tuple(f.name for f in route.body.fields if f.key in body) if body is not None else ()
            scope = current_request.set(RequestInfo(request.method, request.path, given))
            try:
                return await route.handler(api, Call(request, claims, values["path"], values["query"], body))
            finally:
                current_request.reset(scope)
        except Problem as problem:
            return problem.response(request)
        except web.HTTPException:
            raise  # e.g. 413 from request.read(): the problem middleware renders it
        except Exception:
            log.exception("api: %s %s failed", request.method, request.path)
            return Problem("internal-error", "the server failed to answer; see its log").response(request)

    handle.__name__ = route.operation_id
    return handle
