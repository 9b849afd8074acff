"""W3C Trace Context on the REST API: a caller's ``traceparent`` is joined, answered in
``traceresponse``, carried by the request's log lines and recorded in the rows it writes (real
PostgreSQL); an invalid one is ignored (a new trace id, never an error)."""

from __future__ import annotations

import json
import logging
import re

import pytest

from spidi_server.api.tracing import parse_traceparent, request_trace
from spidi_server.logs import JsonFormatter

from .conftest import assert_problem, create_room
from .test_alerts import ALERTS, disabled_rule, insert_event

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
_RESPONSE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

INVALID = [
    "",
    "garbage",
    f"00-{TRACE.upper()}-{PARENT}-01",  # upper-case hex
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
    f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has four fields
    f"00-{TRACE[:-1]}-{PARENT}-01",  # a trace id one digit short
    f"00-{TRACE}-{PARENT}",  # no flags
    f"00_{TRACE}_{PARENT}_01",
]


def traced(reply) -> tuple[str, str, str]:
    """(trace id, span id, flags) of an answer's ``traceresponse``."""
    match = _RESPONSE.fullmatch(reply.headers.get("traceresponse", ""))
    assert match, reply.headers
    return match.groups()


def test_parse_traceparent_follows_the_specification():
    assert parse_traceparent(TRACEPARENT) == (TRACE, PARENT, "01")
    assert parse_traceparent(f" 00-{TRACE}-{PARENT}-00 ") == (TRACE, PARENT, "00")
    # A later version may add fields: its first four are read as version 00's.
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01-more") == (TRACE, PARENT, "01")
    for value in [None, *INVALID]:
        assert parse_traceparent(value) is None, value
    fresh = {request_trace(value).trace_id for value in INVALID}
    assert len(fresh) == len(INVALID) and all(re.fullmatch("[0-9a-f]{32}", t) for t in fresh)
    assert request_trace(None).parent_id is None and request_trace(TRACEPARENT).trace_id == TRACE


async def test_a_traced_write_answers_logs_and_stores_the_trace_id(api, pg, caplog):
    caplog.set_level(logging.INFO, logger="spidi")
    reply = await api.post("/api/v1/rooms", {"code": "traced"}, headers={"traceparent": TRACEPARENT})
    assert reply.status == 201, reply.body
    trace, span, flags = traced(reply)
    assert (trace, flags) == (TRACE, "01") and span != PARENT  # our span, in the caller's trace
    room_id = reply.body["id"]
    # The row the request wrote records it.
    assert pg.execute("SELECT trace_id FROM dat_spd_room WHERE id = %s", [room_id]).fetchone() == (TRACE,)
    # Every line the request logged carries it (the handler's line and the audit line).
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name.startswith("spidi.")]
    mine = [line for line in lines if line.get("trace_id") == TRACE]
    assert {line["event"] for line in mine} >= {"room_created", "audit"}, lines
    assert all(line["level"] == "INFO" and line["timestamp"].endswith("Z") for line in mine)

    # A later request of another trace stamps the row with its own; a read changes nothing.
    other = f"00-{'a' * 32}-{'b' * 16}-00"
    patched = await api.patch(f"/api/v1/rooms/{room_id}", {"name": "Traced"}, headers={"traceparent": other})
    assert patched.status == 200 and traced(patched)[0] == "a" * 32
    assert traced(await api.get(f"/api/v1/rooms/{room_id}"))[0] != "a" * 32
    assert pg.execute("SELECT trace_id FROM dat_spd_room WHERE id = %s", [room_id]).fetchone() == ("a" * 32,)


async def test_an_acknowledgement_records_its_trace_on_the_alert_event(api, pg):
    rule = await disabled_rule(api)
    event_id = insert_event(pg, rule)  # as the writer stores it: no request, no trace id
    assert pg.execute("SELECT trace_id FROM dat_spd_alert_event WHERE id = %s", [event_id]).fetchone() == (
        None,
    )
    reply = await api.post(f"{ALERTS}/{event_id}/acknowledge", headers={"traceparent": TRACEPARENT})
    assert reply.status == 200 and traced(reply)[0] == TRACE
    stored = pg.execute(
        "SELECT trace_id, acknowledged_by FROM dat_spd_alert_event WHERE id = %s", [event_id]
    ).fetchone()
    assert stored == (TRACE, "admin-of-default")
    # A write outside any request (the writer's, an operator's) leaves the request's trace in place.
    pg.execute("UPDATE dat_spd_alert_event SET details = details WHERE id = %s", [event_id])
    assert pg.execute("SELECT trace_id FROM dat_spd_alert_event WHERE id = %s", [event_id]).fetchone() == (
        TRACE,
    )
    # The rule the request created carries the trace of its own request.
    (rule_trace,) = pg.execute(
        "SELECT trace_id FROM dat_spd_alert_rule WHERE id = %s", [rule["id"]]
    ).fetchone()
    assert re.fullmatch("[0-9a-f]{32}", rule_trace) and rule_trace != TRACE


@pytest.mark.parametrize("value", INVALID[1:4])
async def test_an_invalid_traceparent_is_ignored_never_refused(api, pg, value):
    reply = await api.post("/api/v1/rooms", {"code": "untraced"}, headers={"traceparent": value})
    assert reply.status == 201, reply.body
    trace, _, flags = traced(reply)
    assert trace not in (TRACE, TRACE.upper(), "0" * 32) and flags == "00"
    row = pg.execute("SELECT trace_id FROM dat_spd_room WHERE id = %s", [reply.body["id"]]).fetchone()
    assert row == (trace,)


async def test_errors_and_untraced_requests_are_answered_with_a_trace_too(api):
    unknown = "00000000-0000-4000-8000-000000000000"
    missing = await api.get(f"/api/v1/rooms/{unknown}", headers={"traceparent": TRACEPARENT})
    assert_problem(missing, 404, "not-found")
    assert traced(missing)[0] == TRACE
    refused = await api.get("/api/v1/rooms", role=None, headers={"traceparent": TRACEPARENT})
    assert refused.status == 401 and traced(refused)[0] == TRACE
    first = traced(await api.get("/api/v1/rooms"))[0]
    second = traced(await api.get("/api/v1/rooms"))[0]
    assert first != second  # no traceparent: a trace of its own each
    room = await create_room(api, "plain")
    assert room["code"] == "plain"
    # Not the API: the probes and metrics are not traced.
    async with api.session.get(api.base + "/health/live", headers={"traceparent": TRACEPARENT}) as resp:
        assert "traceresponse" not in resp.headers
