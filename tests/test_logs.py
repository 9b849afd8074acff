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


def test_the_direct_line_is_the_records_line(configured):
    """With ``configure``'s handler alone on the way, ``event`` writes its line without a
    LogRecord (``JsonHandler.emit_event``): the same JSON, key for key and in the same order, as
    the formatter makes of the record ``logger.log`` would make."""
    log = logging.getLogger("spidi.test.direct")
    fields = {
        "tenant": "t1",
        "trace_id": "c1",
        "session_id": "s1",
        "client_info": {"ip": "10.0.0.1", "os": None},
        "n": 3,
    }
    root = logging.getLogger()
    handler = root.handlers[0]
    kept = root.handlers[1:]  # pytest's own (log capture) while the test runs: not in production
    root.handlers[1:] = []
    try:
        assert logs._sole_handler(log, logging.INFO) is handler
        logs.event(log, "session_started", **fields)
    finally:
        root.handlers[1:] = kept
    direct = configured.getvalue().splitlines()[-1]
    record = log.makeRecord(
        log.name, logging.INFO, "(unknown file)", 0, "session_started", (), None, extra=fields
    )
    expected = handler.format(record)
    # The timestamps differ by the time between the two calls: compare the rest as text (order kept).
    assert direct.split(",", 1)[1] == expected.split(",", 1)[1]
    assert list(json.loads(direct)) == ["timestamp", "level", "logger", "event", *fields]


def test_records_are_made_whenever_something_else_could_read_them(configured):
    """Another handler (pytest's caplog, a queue), a filter, or a field a record refuses or the
    line leaves out: ``event`` goes through ``logger.log`` as before, so whoever reads the record
    has it, and a field named like a record attribute still raises."""
    log = logging.getLogger("spidi.test.records")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    log.addHandler(keep)
    try:
        assert logs._sole_handler(log, logging.INFO) is None
        logs.event(log, "with_a_reader", n=1)
    finally:
        log.removeHandler(keep)
    assert [(r.getMessage(), r.n) for r in seen] == [("with_a_reader", 1)]
    log.addFilter(lambda record: record.getMessage() != "filtered")
    try:
        assert logs._sole_handler(log, logging.INFO) is None
        logs.event(log, "filtered", n=2)
    finally:
        log.filters.clear()
    logs.event(log, "hidden_field", _private=1, shown=2)
    with pytest.raises(KeyError):
        logs.event(log, "reserved_field", module="x")
    lines = [json.loads(line) for line in configured.getvalue().splitlines()]
    assert [(line["event"], line.get("n"), line.get("shown")) for line in lines] == [
        ("with_a_reader", 1, None),
        ("hidden_field", None, 2),
    ]
    assert "_private" not in lines[-1]
