"""RFC 9457 problem details: every error of the REST API is ``application/problem+json``.

Handlers raise :class:`Problem`; the route wrapper (``routing.py``) turns it into a response, and
``problem_middleware`` does the same for what aiohttp itself answers under ``/api/`` (no such
path, method not allowed, body too large), so a client never has to parse two error formats.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

log = logging.getLogger("spidi.api")

PROBLEM_CONTENT_TYPE = "application/problem+json"
API_PREFIX = "/api/"

# slug -> (status, title). The ``type`` member is ``urn:spidi:problem:<slug>``: stable, and it
# names the kind of problem whatever the status or the detail text.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "validation-error": (400, "The request is not valid"),
    "malformed-json": (400, "The request body is not valid JSON"),
    "unauthorized": (401, "Authentication required"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflict"),
    "payload-too-large": (413, "Request body too large"),
    "internal-error": (500, "Internal server error"),
    "unavailable": (503, "Service unavailable"),
}


def problem_type(slug: str) -> str:
    """The ``type`` URI of a problem kind."""
    return f"urn:spidi:problem:{slug}"


class Problem(Exception):
    """An API error with its problem-details body. ``errors`` lists field-level messages."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.slug = slug
        self.status, self.title = PROBLEM_TYPES[slug]
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def body(self, instance: str) -> dict:
        """The problem+json document."""
        out = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors is not None:
            out["errors"] = self.errors
        return out

    def response(self, request: web.Request) -> web.Response:
        """The HTTP response for ``request``."""
        return web.Response(
            body=orjson.dumps(self.body(request.path)),
            status=self.status,
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def invalid(errors: list[dict], detail: str | None = None) -> Problem:
    """A validation problem listing ``errors`` ({"in", "field", "message"} each)."""
    if detail is None:
        first = errors[0]
        detail = (
            f"{first['field']}: {first['message']}" if len(errors) == 1 else f"{len(errors)} invalid fields"
        )
    return Problem("validation-error", detail, errors=errors)


def field_error(where: str, field: str, message: str) -> dict:
    """One entry of a validation problem's ``errors``."""
    return {"in": where, "field": field, "message": message}


def not_found(what: str, ident: str) -> Problem:
    """The 404 problem of a resource that does not exist (or not for the caller's tenant)."""
    return Problem("not-found", f"no {what} {ident}")


_AIOHTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}


@web.middleware
async def problem_middleware(request: web.Request, handler):
    """Answer aiohttp's own errors under /api/ as problem details too; leave other paths alone."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        slug = _AIOHTTP_SLUGS.get(exc.status)
        if slug is None:
            raise
        headers = {}
        if exc.status == 405:
            allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}"
        elif exc.status == 404:
            detail = f"no API resource at {request.path}"
        else:
            detail = exc.text or PROBLEM_TYPES[slug][1]
        return Problem(slug, detail, headers=headers).response(request)
