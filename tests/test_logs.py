"""logs.py: the JSON line of an event, its timestamp text cached per second, and the logging
switches ``configure`` turns off (what the JSON line never shows)."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from spidi_server import logs


@pytest.fixture
def configured():
    """``logs.configure`` into a buffer; the process-wide logging state put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging._srcfile, logging.logThreads, logging.logProcesses)
    saved_mp = logging.logMultiprocessing
    buffer = io.StringIO()
    logs.configure("info", buffer)
    yield buffer
    root.handlers[:], level, logging._srcfile, logging.logThreads, logging.logProcesses = saved
    root.setLevel(level)
    logging.logMultiprocessing = saved_mp


def test_an_event_is_one_json_line_with_its_fields(configured):
    log = logging.getLogger("spidi.test")
    logs.event(log, "session_started", tenant="t1", client_info={"ip": "10.0.0.1"}, n=3)
    logs.event(log, "hidden", logging.DEBUG, n=4)  # below the level: nothing
    (line,) = configured.getvalue().splitlines()
    record = json.loads(line)
    assert record.pop("ts").endswith("Z")
    assert record == {
        "level": "info",
        "logger": "spidi.test",
        "event": "session_started",
        "tenant": "t1",
        "client_info": {"ip": "10.0.0.1"},
        "n": 3,
    }
    # What the line never shows is not collected either (the logging HOWTO's optimizations).
    assert logging._srcfile is None and not logging.logThreads and not logging.logProcesses


def test_the_timestamp_follows_each_records_own_second():
    formatter = logs.JsonFormatter()
    base = time.time()
    for offset in (0.0, 0.25, 1.5, 1.75, 3600.0, 0.5):  # cached within a second, redone across
        record = logging.LogRecord("spidi.test", logging.INFO, "", 0, "e", (), None)
        record.created = base + offset
        record.msecs = (record.created - int(record.created)) * 1000
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        assert json.loads(formatter.format(record))["ts"] == f"{expected}.{int(record.msecs):03d}Z"
