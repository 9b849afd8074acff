"""Structured logs: one JSON object per line, one line per event (never per heartbeat).

The fields are the ADR's: ``timestamp`` (UTC, ms), ``level`` (upper case: INFO, WARNING...),
``logger``, ``event`` and, where the line is about one, ``trace_id``, ``user_id``, ``room_id``,
``client_info``, then the event's own fields. ``trace_id`` comes from the call's fields or else
from :data:`trace_id` (a context variable: the REST API sets it per request from its W3C
``traceparent``, so every line a request logs carries the request's trace id).
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar

import orjson

# The trace id of the work running now (a REST request's); None outside one. Each asyncio task
# has its own copy of the context, so concurrent requests never see each other's.
trace_id: ContextVar[str | None] = ContextVar("spidi_trace_id", default=None)

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as JSON: timestamp, level, logger, event/message, the context's trace id
    (unless the record names one), and every ``extra`` field."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1  # the second whose text is cached: strftime once per second, not per line
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "timestamp": self._timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        traced = trace_id.get()
        if traced is not None:
            out["trace_id"] = traced  # an extra trace_id (below) overrides it
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "info", stream=None) -> None:
    """Send every spidi log line, as JSON, to ``stream`` (stderr by default).

    The process logs only through ``JsonFormatter``, which never shows a record's source line,
    thread or process: the logging HOWTO's "Optimization" switches turn their collection off (a
    stack walk and three look-ups per line; a line per connect is on the connect path).
    """
    logging._srcfile = None  # no findCaller (sys._getframe walk) per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The websockets library logs every failed handshake at INFO or above; keep it to warnings.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log one event with its fields as JSON keys; ``trace_id`` from the context unless given.

    The trace id goes on the record itself (not only on its JSON text), so a handler formatting
    it later, elsewhere (a queue, pytest's caplog), still has it.
    """
    if logger.isEnabledFor(level):
        if "trace_id" not in fields:
            traced = trace_id.get()
            if traced is not None:
                fields["trace_id"] = traced
        logger.log(level, name, extra=fields)
