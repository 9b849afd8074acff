"""W3C Trace Context for the REST API: the ``traceparent`` a caller sends, and the trace id of
each request.

A request whose ``traceparent`` is valid (version ``00``, a 32-hex trace-id and a 16-hex
parent-id, neither all zeros, 2-hex flags; https://www.w3.org/TR/trace-context/#traceparent-header)
joins the caller's trace; any other value, or none, gets a new trace id: a malformed header is
ignored, never refused (the specification's rule for a receiver). The answer carries
``traceresponse: 00-<trace-id>-<span-id>-<flags>`` (Trace Context Level 2), the span being the
request as this server handled it, so a caller without a tracer learns the id to search the logs
for. While the handler runs, ``logs.trace_id`` holds the trace id: every log line of the request
carries it, and the rows its PostgreSQL writes touch record it (``Api.db``).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from aiohttp import web

from .. import logs

TRACEPARENT = "traceparent"
TRACERESPONSE = "traceresponse"

# Lower-case hex only, as the specification requires; version ff is forbidden. A future version
# (01..fe) may append fields after a '-': its first four fields are read as version 00's.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


class Trace(NamedTuple):
    """The trace a request belongs to: its id, the caller's span (None: a new trace), the flags."""

    trace_id: str
    parent_id: str | None
    flags: str

    def response_header(self, span_id: str) -> str:
        """The ``traceresponse`` value naming this server's span ``span_id`` of the trace."""
        return f"00-{self.trace_id}-{span_id}-{self.flags}"


def parse_traceparent(value: str | None) -> Trace | None:
    """The trace a ``traceparent`` value names, or None when it is absent or invalid."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None  # ff is invalid; version 00 has exactly four fields
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    return Trace(trace_id, parent_id, flags)


def new_span_id() -> str:
    """A random 16-hex span (parent-id) id, never all zeros."""
    while True:
        span = os.urandom(8).hex()
        if span != _ZERO_PARENT:
            return span


def request_trace(value: str | None) -> Trace:
    """The trace of a request with this ``traceparent`` header: the caller's, or a new one
    (random trace id, not sampled) when the header is absent or invalid."""
    trace = parse_traceparent(value)
    if trace is not None:
        return trace
    while True:
        trace_id = os.urandom(16).hex()
        if trace_id != _ZERO_TRACE:
            return Trace(trace_id, None, "00")


@web.middleware
async def trace_middleware(request: web.Request, handler):
    """Under ``/api/``: the request's trace in ``logs.trace_id`` while it is handled, and
    ``traceresponse`` on its answer, whatever the answer (the problem middleware, inside this
    one, has turned errors into responses already)."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    trace = request_trace(request.headers.get(TRACEPARENT))
    token = logs.trace_id.set(trace.trace_id)
    try:
        response = await handler(request)
    finally:
        logs.trace_id.reset(token)
    response.headers[TRACERESPONSE] = trace.response_header(new_span_id())
    return response
