"""Structured logs: one JSON object per line, one line per event (never per heartbeat)."""

from __future__ import annotations

import logging
import sys
import time

import orjson

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as JSON: ts, level, logger, event/message, and every ``extra`` field."""

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
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
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
    """Log one event with its fields as JSON keys."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra=fields)
