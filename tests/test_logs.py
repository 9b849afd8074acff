"""logs.py: the JSON line of an event (the ADR's field names), its timestamp text cached per
second, the trace id of the context, and the logging switches ``configure`` turns off (what the
JSON line never shows)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
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
    logs.event(
        log,
        "session_started",
        trace_id="c1",
        user_id="u1",
        room_id="r1",
        tenant="t1",
        client_info={"ip": "10.0.0.1"},
        n=3,
    )
    logs.event(log, "hidden", logging.DEBUG, n=4)  # below the level: nothing
    logs.event(log, "redis_unreachable", logging.WARNING, error="refused")
    started, warned = (json.loads(line) for line in configured.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", started.pop("timestamp"))
    # The ADR's names: timestamp, level in upper case, trace_id, user_id, room_id, event, client_info.
    assert started == {
        "level": "INFO",
        "logger": "spidi.test",
        "event": "session_started",
        "trace_id": "c1",
        "user_id": "u1",
        "room_id": "r1",
        "tenant": "t1",
        "client_info": {"ip": "10.0.0.1"},
        "n": 3,
    }
    assert warned["level"] == "WARNING" and "trace_id" not in warned and "ts" not in warned
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
        assert json.loads(formatter.format(record))["timestamp"] == f"{expected}.{int(record.msecs):03d}Z"


async def test_lines_carry_the_trace_id_of_their_own_task(configured):
    """``logs.trace_id`` set in a task (a REST request) names every line that task logs, and only
    its lines: concurrent tasks keep their own; a field given explicitly wins."""
    log = logging.getLogger("spidi.test")

    async def request(trace: str, hold: asyncio.Event) -> None:
        logs.trace_id.set(trace)
        logs.event(log, "before")
        await hold.wait()  # the other task runs meanwhile
        logs.event(log, "after")

    first, second = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(request("a" * 32, first))
    b = asyncio.create_task(request("b" * 32, second))
    await asyncio.sleep(0)
    second.set()
    await b
    first.set()
    await a
    logs.event(log, "outside")
    token = logs.trace_id.set("c" * 32)
    logs.event(log, "explicit", trace_id="conn-1")
    logs.trace_id.reset(token)
    lines = [json.loads(line) for line in configured.getvalue().splitlines()]
    assert [(line["event"], line.get("trace_id")) for line in lines] == [
        ("before", "a" * 32),
        ("before", "b" * 32),
        ("after", "b" * 32),
        ("after", "a" * 32),
        ("outside", None),
        ("explicit", "conn-1"),
    ]
