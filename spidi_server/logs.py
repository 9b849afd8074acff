"""Structured logs: one JSON object per line, one line per event (never per heartbeat).

The fields are the ADR's: ``timestamp`` (UTC, ms), ``level`` (upper case: INFO, WARNING...),
``logger``, ``event`` and, where the line is about one, ``trace_id``, ``user_id``, ``room_id``,
``client_info``, then the event's own fields. ``trace_id`` comes from the call's fields or else
from :data:`trace_id` (a context variable: the REST API sets it per request from its W3C
``traceparent``, so every line a request logs carries the request's trace id).
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from contextvars import ContextVar

import orjson

# The trace id of the work running now (a REST request's); None outside one. Each asyncio task
# has its own copy of the context, so concurrent requests never see each other's.
trace_id: ContextVar[str | None] = ContextVar("spidi_trace_id", default=None)

_BLANK = logging.LogRecord("", 0, "", 0, "", (), None).__dict__
_STANDARD = frozenset(_BLANK) | {"message", "asctime"}
# LogRecord.__init__ sets these attributes first, always in this order; ``extra`` fields (and
# whatever a filter adds) come after them, so the formatter starts its walk there.
_FIRST_EXTRA = len(_BLANK)


class JsonFormatter(logging.Formatter):
    """Render a record as JSON: timestamp, level, logger, event/message, the context's trace id
    (unless the record names one), and every ``extra`` field."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1  # the second whose text is cached: strftime once per second, not per line
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        items = iter(record.__dict__.items())
        if type(record) is logging.LogRecord:
            items = itertools.islice(items, _FIRST_EXTRA, None)  # past the standard attributes
        fields = {key: value for key, value in items if key not in _STANDARD and not key.startswith("_")}
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.render(
            record.created, record.msecs, record.levelname, record.name, record.getMessage(), fields, exc
        )

    def render(
        self,
        created: float,
        msecs: float,
        level: str,
        logger: str,
        event: str,
        fields: dict,
        exc: str | None = None,
    ) -> str:
        """The JSON line of an event (``format`` of its record; ``JsonHandler.emit_event`` without one)."""
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        out = {
            "timestamp": f"{self._second_text}.{int(msecs):03d}Z",
            "level": level,
            "logger": logger,
            "event": event,
        }
        traced = trace_id.get()
        if traced is not None:
            out["trace_id"] = traced  # a field named trace_id (below) overrides it
        out.update(fields)
        if exc is not None:
            out["exc"] = exc
        return orjson.dumps(out, default=str).decode()


class JsonHandler(logging.StreamHandler):
    """The process's log handler (``configure``): JSON lines on a stream.

    ``emit_event`` writes an event's line without a LogRecord, for ``event`` when this handler is
    the only one its logger reaches and nothing filters: a record costs ~5 µs of a line's ~11
    (a line per connect is on the connect path), and nothing else would read it.
    """

    def __init__(self, stream=None):
        super().__init__(stream)
        self.setFormatter(JsonFormatter())

    def emit_event(self, logger: logging.Logger, level: int, name: str, fields: dict) -> None:
        """The line ``emit`` would write for ``logger.log(level, name, extra=fields)``."""
        created = time.time()
        msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
        self.acquire()
        try:
            self.stream.write(
                self.formatter.render(created, msecs, logging.getLevelName(level), logger.name, name, fields)
                + self.terminator
            )
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(
                logger.makeRecord(logger.name, level, "(unknown file)", 0, name, (), None, extra=fields)
            )
        finally:
            self.release()


# _plain's answers by the fields' names: a call site names the same fields every time.
_PLAIN: dict[tuple[str, ...], bool] = {}
_PLAIN_MAX = 1024


def _plain(fields: dict) -> bool:
    """Whether every field reaches the line as given: none is a LogRecord attribute (``extra``
    refuses those) nor starts with an underscore (the formatter leaves those out)."""
    names = tuple(fields)
    plain = _PLAIN.get(names)
    if plain is None:
        plain = _STANDARD.isdisjoint(names) and not any(key[:1] == "_" for key in names)
        if len(_PLAIN) >= _PLAIN_MAX:
            _PLAIN.clear()
        _PLAIN[names] = plain
    return plain


def _sole_handler(logger: logging.Logger, level: int) -> JsonHandler | None:
    """The ``JsonHandler`` a record of ``logger`` at ``level`` would reach, if it is the only
    handler on the way and no logger or handler on the way filters or is disabled; else None."""
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if found is not None or type(handler) is not JsonHandler:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if found is None or found.filters or level < found.level or type(found.formatter) is not JsonFormatter:
        return None
    return found


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
    handler = JsonHandler(stream or sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The websockets library logs every failed handshake at INFO or above; keep it to warnings.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log one event with its fields as JSON keys; ``trace_id`` from the context unless given.

    The trace id goes on the record itself (not only on its JSON text), so a handler formatting
    it later, elsewhere (a queue, pytest's caplog), still has it. When ``configure``'s handler is
    the only one the line would reach, it writes the same line without making the record
    (``JsonHandler.emit_event``).
    """
    if logger.isEnabledFor(level):
        if "trace_id" not in fields:
            traced = trace_id.get()
            if traced is not None:
                fields["trace_id"] = traced
        handler = _sole_handler(logger, level)
        if handler is not None and _plain(fields):
            handler.emit_event(logger, level, name, fields)
        else:
            logger.log(level, name, extra=fields)
