"""The heartbeat lane: every test runs against the pure reference and the Cython build.

The lane may only take a message the full path (the STOMP parser, then
``protocol.payloads.heartbeat``) would take, and must record it exactly as the full path would:
the near-miss table below must all go to the full path, and ``test_lane_differential`` checks, for
generated and mutated frames, that whenever the lane answers the full path reads the same
session, latency and receipt, and that the two builds agree.
"""

from __future__ import annotations

import json
import time

import hiredis
import pytest
from hypothesis import HealthCheck, settings

from spidi_core.errors import FrameError
from spidi_core.frames_py import FrameParserPy, serialize_frame_py
from spidi_core.lane_py import HeartbeatLanePy
from spidi_server.errors import AppError
from spidi_server.protocol import payloads
from spidi_server.stores.events import LATENCY_BUCKETS_MS

try:
    from spidi_core._frames_c import serialize_frame_c
    from spidi_core._lane_c import HeartbeatLaneC
except ImportError:  # extension not built
    HeartbeatLaneC = serialize_frame_c = None

NEEDS_C = pytest.mark.skipif(HeartbeatLaneC is None, reason="spidi_core._lane_c not built (run `make build`)")
IMPLS = [pytest.param(HeartbeatLanePy, id="py"), pytest.param(HeartbeatLaneC, id="c", marks=NEEDS_C)]
HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TTL_REFRESH_MS = 1000
SID = "3f2c9a6e-1b7d-4c1e-9a0f-5d2b8e7c6a41"
OTHER_SID = "s-other"


@pytest.fixture(params=IMPLS)
def Lane(request):
    return request.param


def packed(*rows) -> tuple:
    """What ``take_beats`` gives for one room's (session, ms, latency or None) rows, written out
    here independently of ``lane_py.pack_beats``: RESP bulk strings, the ZADD's score/member and
    the HSET's field/value pairs."""

    def bulk(value) -> bytes:
        data = str(value).encode()
        return b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n"

    with_latency = [(sid, latency) for sid, _, latency in rows if latency is not None]
    return (
        len(rows),
        b"".join(bulk(ms) + bulk(sid) for sid, ms, _ in rows),
        len(with_latency),
        b"".join(bulk(sid) + bulk(latency) for sid, latency in with_latency),
    )


def stomp(command: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """A frame as clients write it: headers in the given order, no escaping."""
    lines = [command, *(f"{k}:{v}" for k, v in headers), "", ""]
    return "\n".join(lines).encode() + body + b"\0"


def loadgen_frame(sid: str = SID, latency=12, receipt: str | None = None) -> bytes:
    """benchmarks/loadgen.py's heartbeat (json.dumps with compact separators, content-length last)."""
    body = json.dumps({"sessionId": sid, "latencyMs": latency}, separators=(",", ":")).encode()
    headers = [("destination", "/app/heartbeat"), ("content-type", "application/json")]
    if receipt is not None:
        headers.append(("receipt", receipt))
    headers.append(("content-length", str(len(body))))
    return stomp("SEND", headers, body)


def stompjs_frame(sid: str = SID, latency=12, receipt: str | None = None) -> bytes:
    """@stomp/stompjs' client.publish({destination, headers: {receipt}, body: JSON.stringify(...)}):
    the user's headers, then destination, then content-length (it adds one for a non-empty body)."""
    body = json.dumps({"sessionId": sid, "latencyMs": latency}, separators=(",", ":")).encode()
    headers = [("receipt", receipt)] if receipt is not None else []
    headers += [("destination", "/app/heartbeat"), ("content-length", str(len(body)))]
    return stomp("SEND", headers, body)


def new_lane(Lane, rate: float = 0.0, burst: float = 0.0):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    now = time.monotonic()
    lane.open(1, rate, burst, now)
    lane.set_ready(1, True)
    lane.open(2, 0.0, 0.0, now)
    lane.set_ready(2, True)
    lane.add_session(SID, 1, 10, 1_000, now)
    lane.add_session(OTHER_SID, 2, 10, 1_000, now)
    return lane


def full_path(message: bytes):
    """What the full path makes of one message: a ``payloads.Heartbeat``, or a string saying why not."""
    try:
        frames = FrameParserPy().feed(message)
    except FrameError as exc:
        return f"frame error {exc.reason}"
    if len(frames) != 1:
        return f"{len(frames)} frames"
    frame = frames[0]
    if frame.command != "SEND" or frame.headers.get("destination") != "/app/heartbeat":
        return "not a heartbeat"
    try:
        return payloads.heartbeat(frame.body, frame.headers.get("receipt"))
    except AppError as exc:
        return f"refused: {exc}"


def receipt_of(receipt: str | None) -> bytes:
    return b"" if receipt is None else serialize_frame_py("RECEIPT", {"receipt-id": receipt})


# -- accepted ------------------------------------------------------------------------------------

ACCEPTED = [
    pytest.param(loadgen_frame(), SID, 12, None, id="loadgen"),
    pytest.param(loadgen_frame(receipt="hb-17"), SID, 12, "hb-17", id="loadgen-receipt"),
    pytest.param(stompjs_frame(receipt="r.A_z-9"), SID, 12, "r.A_z-9", id="stompjs-receipt"),
    pytest.param(stompjs_frame(latency=0), SID, 0, None, id="stompjs-zero"),
    pytest.param(loadgen_frame(latency=12.5), SID, 12.5, None, id="float"),
    pytest.param(loadgen_frame(latency=3599999.999), SID, 3599999.999, None, id="just-below-max"),
    pytest.param(stomp("SEND", [("destination", "/app/heartbeat")], b'{"sessionId":"%s","latencyMs":7}' % SID.encode()),
                 SID, 7, None, id="no-content-length"),
    pytest.param(stomp("SEND", [("destination", "/app/heartbeat"), ("content-type", "application/json;charset=utf-8")],
                       b' { "latencyMs" : 0.10 , "sessionId" : "%s" } ' % SID.encode()),
                 SID, 0.1, None, id="spaces-and-key-order"),
    pytest.param(loadgen_frame(receipt="x" * 64), SID, 12, "x" * 64, id="receipt-64"),
]  # fmt: skip


@pytest.mark.parametrize("message, sid, latency, receipt", ACCEPTED)
def test_accepted_heartbeats_answer_as_the_full_path(Lane, message, sid, latency, receipt):
    lane = new_lane(Lane)
    expected = full_path(message)
    assert (expected.session_id, expected.latency_ms, expected.receipt) == (sid, latency, receipt)

    answer = lane.offer(1, message)

    assert answer == receipt_of(receipt)
    if receipt is not None and serialize_frame_c is not None:
        assert answer == serialize_frame_c("RECEIPT", {"receipt-id": receipt})
    stats = lane.stats(sid)
    assert stats[1:] == (latency, 1, float(latency), latency, latency, 1)
    assert type(stats[1]) is type(latency) and type(stats[4]) is type(latency)
    heartbeats, latency_sum, hist, handled = lane.take_counters()
    assert (heartbeats, latency_sum, sum(hist), handled) == (1, float(latency), 1, 1)


# -- refused: each goes to the full path ---------------------------------------------------------

BODY = b'{"sessionId":"%s","latencyMs":12}' % SID.encode()


def with_body(body: bytes, length: bool = True) -> bytes:
    headers = [("destination", "/app/heartbeat")]
    if length:
        headers.append(("content-length", str(len(body))))
    return stomp("SEND", headers, body)


def with_headers(*headers: tuple[str, str], body: bytes = BODY) -> bytes:
    return stomp("SEND", list(headers), body)


DEST = ("destination", "/app/heartbeat")
GOOD = loadgen_frame(receipt="r1")
NEAR_MISSES = {
    "other destination": with_headers(("destination", "/app/hello")),
    "destination prefix": with_headers(("destination", "/app/heartbeat2")),
    "no destination": with_headers(("content-type", "application/json")),
    "escaped destination": with_headers(("destination", "/app\\cheartbeat")),
    "escape in receipt": with_headers(DEST, ("receipt", "r\\c1")),
    "colon in receipt": with_headers(DEST, ("receipt", "r:1")),
    "space in receipt": with_headers(DEST, ("receipt", "r 1")),
    "empty receipt": with_headers(DEST, ("receipt", "")),
    "receipt of 65": with_headers(DEST, ("receipt", "x" * 65)),
    "unknown header": with_headers(DEST, ("x-trace", "1")),
    "header name case": with_headers(("Destination", "/app/heartbeat")),
    "repeated destination": with_headers(DEST, DEST),
    "repeated receipt": with_headers(DEST, ("receipt", "a"), ("receipt", "a")),
    "repeated content-type": with_headers(DEST, ("content-type", "application/json"), ("content-type", "application/json")),
    "other content-type": with_headers(DEST, ("content-type", "text/plain")),
    "content-type with space": with_headers(DEST, ("content-type", "application/json; charset=utf-8")),
    "content-length short": with_headers(DEST, ("content-length", str(len(BODY) - 1))),
    "content-length long": with_headers(DEST, ("content-length", str(len(BODY) + 1))),
    "content-length leading zero": with_headers(DEST, ("content-length", "0" + str(len(BODY)))),
    "content-length not digits": with_headers(DEST, ("content-length", "4x")),
    "content-length empty": with_headers(DEST, ("content-length", "")),
    "CRLF line ends": GOOD.replace(b"\n", b"\r\n"),
    "CR in a header": GOOD.replace(b"/app/heartbeat\n", b"/app/heartbeat\r\n"),
    "lowercase command": b"send" + GOOD[4:],
    "other command": b"SENDX" + GOOD[4:],
    "leading EOL": b"\n" + GOOD,
    "trailing EOL": GOOD + b"\n",
    "trailing bytes": GOOD + b"x",
    "two frames": GOOD + GOOD,
    "no NUL": GOOD[:-1],
    "no blank line": b"SEND\ndestination:/app/heartbeat\n" + BODY + b"\0",
    "header without colon": GOOD.replace(b"content-type:", b"content-type"),
    "too long": with_headers(DEST, body=b'{"sessionId":"%s","latencyMs":1%s}' % (SID.encode(), b" " * 1000)),
    "NaN latency": with_body(b'{"sessionId":"%s","latencyMs":NaN}' % SID.encode()),
    "negative latency": with_body(b'{"sessionId":"%s","latencyMs":-1}' % SID.encode()),
    "negative zero": with_body(b'{"sessionId":"%s","latencyMs":-0}' % SID.encode()),
    "latency at max": with_body(b'{"sessionId":"%s","latencyMs":3600000}' % SID.encode()),
    "float latency at max": with_body(b'{"sessionId":"%s","latencyMs":3600000.0}' % SID.encode()),
    "latency rounding to max": with_body(b'{"sessionId":"%s","latencyMs":3599999.99999999999}' % SID.encode()),
    "huge latency": with_body(b'{"sessionId":"%s","latencyMs":123456789}' % SID.encode()),
    "exponent": with_body(b'{"sessionId":"%s","latencyMs":1e3}' % SID.encode()),
    "leading zero latency": with_body(b'{"sessionId":"%s","latencyMs":012}' % SID.encode()),
    "trailing dot": with_body(b'{"sessionId":"%s","latencyMs":1.}' % SID.encode()),
    "leading dot": with_body(b'{"sessionId":"%s","latencyMs":.5}' % SID.encode()),
    "fraction of 18": with_body(b'{"sessionId":"%s","latencyMs":1.123456789012345678}' % SID.encode()),
    "string latency": with_body(b'{"sessionId":"%s","latencyMs":"12"}' % SID.encode()),
    "boolean latency": with_body(b'{"sessionId":"%s","latencyMs":true}' % SID.encode()),
    "null latency": with_body(b'{"sessionId":"%s","latencyMs":null}' % SID.encode()),
    "missing latency": with_body(b'{"sessionId":"%s"}' % SID.encode()),
    "missing session": with_body(b'{"latencyMs":12}'),
    "unknown session": loadgen_frame(sid="nobody"),
    "session of another connection": loadgen_frame(sid=OTHER_SID),
    "empty session": loadgen_frame(sid=""),
    "numeric session": with_body(b'{"sessionId":12,"latencyMs":12}'),
    "escaped session": with_body(b'{"sessionId":"3f2c9a6e\\u002d1b7d","latencyMs":12}'),
    "non-ASCII session": with_body('{"sessionId":"é","latencyMs":12}'.encode()),
    "extra key": with_body(b'{"sessionId":"%s","latencyMs":12,"x":1}' % SID.encode()),
    "repeated key": with_body(b'{"sessionId":"%s","sessionId":"%s","latencyMs":12}' % (SID.encode(), SID.encode())),
    "repeated latency": with_body(b'{"sessionId":"%s","latencyMs":12,"latencyMs":12}' % SID.encode()),
    "tab in body": with_body(b'{"sessionId":"%s",\t"latencyMs":12}' % SID.encode()),
    "trailing comma": with_body(b'{"sessionId":"%s","latencyMs":12,}' % SID.encode()),
    "array body": with_body(b'["%s",12]' % SID.encode()),
    "nested object": with_body(b'{"sessionId":{"id":"%s"},"latencyMs":12}' % SID.encode()),
    "text after the object": with_body(BODY + b"x"),
    "two objects": with_body(BODY + BODY),
    "empty body": with_body(b"", length=False),
}  # fmt: skip


@pytest.mark.parametrize("message", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_near_misses_take_the_full_path(Lane, message):
    lane = new_lane(Lane)
    assert lane.offer(1, message) is None
    assert lane.take_counters()[0] == 0
    assert lane.stats(SID)[2] == 0
    assert lane.pending() == 0


def test_not_ready_unknown_connection_and_detached_sessions(Lane):
    lane = new_lane(Lane)
    lane.set_ready(1, False)
    assert lane.offer(1, GOOD) is None
    assert lane.offer(99, GOOD) is None
    lane.set_ready(1, True)
    lane.detach(SID)
    assert lane.offer(1, GOOD) is None
    lane.attach(SID, 2)  # resumed on connection 2
    assert lane.offer(1, GOOD) is None
    assert lane.offer(2, GOOD) == receipt_of("r1")
    lane.close(2)
    assert lane.offer(2, GOOD) is None
    with pytest.raises(KeyError):
        lane.last_received(2)


def test_rate_limit_shares_the_bucket_with_the_full_path(Lane):
    lane = new_lane(Lane, rate=0.001, burst=3)  # practically no refill during the test
    assert lane.offer(1, GOOD) == receipt_of("r1")
    assert lane.charge(1, time.monotonic(), 1) is True  # a full-path frame takes the second token
    assert lane.offer(1, GOOD) == receipt_of("r1")
    before = lane.last_received(1)
    assert lane.offer(1, GOOD) is None  # no token left: the full path answers (and refuses)
    assert lane.last_received(1) == before  # the lane changed nothing
    assert lane.charge(1, time.monotonic(), 1) is False
    assert lane.take_counters()[3] == 2


def test_charge_is_the_full_paths_token_bucket(Lane):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.open(5, 10.0, 2.0, 100.0)
    assert lane.charge(5, 100.0, 0) is True  # a message of bare EOLs still costs one token
    assert lane.charge(5, 100.0, 1) is True
    assert lane.charge(5, 100.0, 1) is False
    assert lane.last_received(5) == 100.0
    assert lane.charge(5, 100.25, 1) is True  # 2.5 tokens refilled, capped at the burst of 2
    assert lane.charge(5, 100.25, 3) is False
    lane.open(6, 0.0, 0.0, 100.0)  # rate 0: no limit
    assert all(lane.charge(6, 100.0, 50) for _ in range(10))
    assert lane.last_received(6) == 100.0


def test_receipt_bytes_are_the_serializers(Lane):
    lane = new_lane(Lane)
    for receipt in ("a", "hb-1", "message-12345", "R_1.2-3", "z" * 64):
        expected = serialize_frame_py("RECEIPT", {"receipt-id": receipt})
        assert lane.offer(1, loadgen_frame(receipt=receipt)) == expected
        assert lane.offer(1, stompjs_frame(receipt=receipt)) == expected
    assert lane.offer(1, loadgen_frame()) == b""


# -- figures and the take_* methods --------------------------------------------------------------


def test_beat_records_like_presence(Lane):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 1, 7, 5_000, 50.0)
    assert lane.stats("a") == (5_000, None, 0, 0.0, None, None, 0)
    assert lane.last_beat("a") == 50.0
    lane.beat("a", 20, 5_100, 51.0)
    lane.beat("a", 7.5, 5_200, 52.0)
    lane.beat("a", 30, 5_300, 53.0)
    lane.beat("a", 7.5, 5_400, 54.0)
    stats = lane.stats("a")
    assert stats == (5_400, 7.5, 4, 65.0, 7.5, 30, 4)
    assert type(stats[5]) is int and type(stats[4]) is float
    assert lane.last_beat("a") == 54.0
    assert lane.stats("nobody") is None and lane.last_beat("nobody") is None
    with pytest.raises(KeyError):
        lane.beat("nobody", 1, 1, 1.0)
    latency_sum, count, hist = lane.take_room_sample(7)
    assert (latency_sum, count) == (65.0, 4)
    assert hist[LATENCY_BUCKETS_MS.index(10)] == 2 and hist[LATENCY_BUCKETS_MS.index(50)] == 1
    assert lane.take_room_sample(7) == (0.0, 0, [0] * (len(LATENCY_BUCKETS_MS) + 1))
    heartbeats, total, hist, handled = lane.take_counters()
    assert (heartbeats, total, sum(hist), handled) == (4, 65.0, 4, 0)


def test_histogram_bounds_are_bisect_left(Lane):
    lane = Lane((5, 10), TTL_REFRESH_MS)
    lane.add_session("a", 1, 1, 0, 0.0)
    for latency in (0, 5, 5.0000001, 10, 10.5, 3_599_999):
        lane.beat("a", latency, 1, 1.0)
    assert lane.take_room_sample(1)[2] == [2, 2, 2]


def test_group_histograms_per_dimension_and_slot(Lane):
    lane = Lane((5, 10), 1000)
    lane.add_session("a", 1, 7, 0, 0.0)
    lane.add_session("b", 1, 7, 0, 0.0)
    lane.add_session("c", 1, 8, 0, 0.0)
    lane.set_groups("a", 3, 0)
    lane.set_groups("b", 1, -1)  # no group in the second dimension
    lane.beat("a", 4, 1, 0.1)
    lane.beat("a", None, 2, 0.2)  # no latency: no group counts either
    lane.beat("b", 50, 3, 0.3)
    lane.beat("c", 6, 4, 0.4)  # never given groups: the room's histogram only
    lane.remove_session("a")  # what it counted stays until the take (presence keeps its slot till then)
    assert lane.take_room_groups(7) == [(0, 1, [0, 0, 1]), (0, 3, [1, 0, 0]), (1, 0, [1, 0, 0])]
    assert lane.take_room_groups(7) == lane.take_room_groups(8) == lane.take_room_groups(99) == []
    assert lane.take_room_sample(7)[2] == [1, 0, 1]  # the room's own histogram is apart
    lane.set_groups("b", 0, 255)
    lane.beat("b", 7, 5, 0.5)
    assert lane.take_room_groups(7) == [(0, 0, [0, 1, 0]), (1, 255, [0, 1, 0])]
    lane.add_session("b", 1, 7, 0, 0.0)  # a session added again starts without groups
    lane.beat("b", 7, 6, 0.6)
    assert lane.take_room_groups(7) == []
    for bad in ((1,), (1, 2, 3), (256, 0), (0, -2)):
        with pytest.raises(ValueError):
            lane.set_groups("b", *bad)
    with pytest.raises(KeyError):
        lane.set_groups("nobody", 0, 0)


def test_take_beats_are_zadd_and_hset_arguments(Lane):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    for sid, room in (("a", 1), ("b", 2), ("c", 1)):
        lane.add_session(sid, 0, room, 0, 0.0)
    lane.beat("c", 3, 1_000, 1.0)
    lane.beat("b", 0.1, 1_001, 1.0)
    lane.beat("a", 1e-05, 1_002, 1.0)
    lane.beat("c", 12.0, 1_003, 1.0)  # newest wins, keeping c's place
    assert lane.pending() == 3
    beats = lane.take_beats()
    assert beats == {1: packed(("c", 1_003, 12.0), ("a", 1_002, 1e-05)), 2: packed(("b", 1_001, 0.1))}
    assert list(beats) == [1, 2]
    assert beats[1].count == 2 and beats[1].latencies_count == 2
    # Behind a command's head they are the command Redis parses (hiredis reads it as a reply).
    count, members, nlat, latencies = beats[1]
    reader = hiredis.Reader()
    reader.feed(b"*%d\r\n$4\r\nZADD\r\n$6\r\nonline\r\n$2\r\nXX\r\n" % (3 + 2 * count) + members)
    reader.feed(b"*%d\r\n$4\r\nHSET\r\n$7\r\nlatency\r\n" % (2 + 2 * nlat) + latencies)
    assert reader.gets() == [b"ZADD", b"online", b"XX", b"1003", b"c", b"1002", b"a"]
    assert reader.gets() == [b"HSET", b"latency", b"c", b"12.0", b"a", b"1e-05"]
    assert lane.pending() == 0 and lane.take_beats() == {}


def test_watched_rooms_beats_are_taken_apart(Lane):
    """The flusher sends the watched rooms' beats at once (roster updates ride on them) and the
    others' at the slower heartbeat interval: the rest stays pending, order and newest kept."""
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    for sid, room in (("a", 1), ("b", 2), ("c", 3), ("d", 2)):
        lane.add_session(sid, 0, room, 0, 0.0)
    lane.set_watched(2, True)
    lane.beat("a", 1, 1_000, 1.0)
    lane.beat("b", 2, 1_001, 1.0)
    lane.beat("c", 3, 1_002, 1.0)
    lane.beat("d", 4, 1_003, 1.0)
    assert (lane.pending(), lane.pending_watched()) == (4, 2)
    assert lane.take_beats(watched_only=True) == {2: packed(("b", 1_001, 2), ("d", 1_003, 4))}
    assert (lane.pending(), lane.pending_watched()) == (2, 0)
    assert lane.take_beats(watched_only=True) == {}
    lane.beat("a", 5, 1_004, 1.0)  # newest wins, keeping a's place
    lane.beat("b", 6, 1_005, 1.0)
    assert (lane.pending(), lane.pending_watched()) == (3, 1)
    lane.remove_session("b")
    assert (lane.pending(), lane.pending_watched()) == (2, 0)
    lane.set_watched(3, True)  # a room watched with a beat already pending
    assert lane.pending_watched() == 1
    lane.set_watched(3, False)
    assert lane.pending_watched() == 0
    beats = lane.take_beats()
    assert beats == {1: packed(("a", 1_004, 5)), 3: packed(("c", 1_002, 3))} and list(beats) == [1, 3]
    assert (lane.pending(), lane.pending_watched()) == (0, 0)


def test_removed_session_takes_its_pending_work_with_it(Lane):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 0, 1, 0, 0.0)
    lane.add_session("b", 0, 1, 0, 0.0)
    lane.set_watched(1, True)
    lane.beat("a", 1, 5_000, 1.0)
    lane.beat("b", 2, 5_000, 1.0)
    lane.remove_session("a")
    lane.remove_session("a")  # twice is harmless
    assert lane.pending() == 1
    assert lane.take_ttl_due() == ["b"]
    assert lane.take_updated(1) == ["b"]
    assert lane.take_beats() == {1: packed(("b", 5_000, 2))}
    lane.add_session("a", 0, 1, 0, 0.0)  # a new record, nothing carried over
    assert lane.stats("a") == (0, None, 0, 0.0, None, None, 0)
    lane.beat("b", 2, 5_001, 1.0)
    lane.remove_session("b")
    assert lane.take_beats() == {}  # the room had no other beat: gone from the batch


def test_ttl_refresh_due_at_most_once_per_period(Lane):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 0, 1, 10_000, 0.0)
    lane.beat("a", 1, 10_500, 1.0)
    lane.beat("a", 1, 11_000, 1.0)  # not more than 1000 ms after the join
    assert lane.take_ttl_due() == []
    lane.beat("a", 1, 11_001, 1.0)
    lane.beat("a", 1, 11_500, 1.0)
    assert lane.take_ttl_due() == ["a"]
    lane.beat("a", 1, 12_001, 1.0)
    assert lane.take_ttl_due() == []
    lane.beat("a", 1, 12_002, 1.0)
    assert lane.take_ttl_due() == ["a"]


def test_updated_only_for_watched_rooms(Lane):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 0, 1, 0, 0.0)
    lane.add_session("b", 0, 2, 0, 0.0)
    lane.beat("a", 1, 1, 1.0)
    assert lane.take_updated(1) == []
    lane.set_watched(1, True)
    lane.beat("b", 1, 1, 1.0)
    lane.beat("a", 1, 1, 1.0)
    lane.beat("a", 1, 1, 1.0)
    assert lane.take_updated(1) == ["a"]
    assert lane.take_updated(1) == [] and lane.take_updated(2) == [] and lane.take_updated(99) == []
    lane.beat("a", 1, 1, 1.0)
    lane.set_watched(1, False)
    assert lane.take_updated(1) == []


def test_grade_hands_back_the_sessions_whose_grade_moved(Lane):
    # Ages at 10.0: a 0.5 s, b 1.6 s, c 9 s; late after 1.5 s, at risk after 2 s.
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 0, 1, 0, 9.5)
    lane.add_session("b", 0, 1, 0, 8.4)
    lane.add_session("c", 0, 2, 0, 1.0)
    assert lane.session_count() == 3
    live, late, at_risk, moved = lane.grade(10.0, 1.5, 2.0)
    assert (live, late, at_risk) == (1, 1, 1) and sorted(moved) == [("b", 1), ("c", 2)]
    assert lane.grade(10.0, 1.5, 2.0) == (1, 1, 1, [])  # nothing moved: nothing handed back
    lane.beat("c", 3, 11_000, 11.0)  # beats are ages again
    assert sorted(lane.grade(11.2, 1.5, 2.0)[3]) == [("a", 1), ("b", 2), ("c", 0)]
    # A watched room's beating sessions are live as take_updated hands them over (its caller
    # marks them live): grading them live again reports nothing.
    lane.set_watched(1, True)
    lane.beat("a", 1, 12_000, 12.0)
    assert lane.take_updated(1) == ["a"]
    assert lane.grade(12.1, 1.5, 2.0) == (2, 0, 1, [])
    # A session added again starts live; a removed one is neither counted nor handed back.
    lane.add_session("b", 0, 1, 0, 12.1)
    lane.remove_session("c")
    assert lane.session_count() == 2
    assert lane.grade(12.2, 1.5, 2.0) == (2, 0, 0, [])


def test_beat_without_latency_counts_but_samples_nothing(Lane):
    # A heartbeat without latencyMs (the full path hands the lane None): the session is alive
    # and one heartbeat more, every latency figure stays as it was; 0 is a sample like any other.
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 1, 7, 5_000, 50.0)
    lane.beat("a", None, 5_100, 51.0)
    assert lane.stats("a") == (5_100, None, 1, 0.0, None, None, 0)
    # No latency written: Redis keeps the session's last one (none yet)
    assert (
        lane.take_beats() == {7: packed(("a", 5_100, None))} == {7: (1, b"$4\r\n5100\r\n$1\r\na\r\n", 0, b"")}
    )
    assert lane.take_room_sample(7) == (0.0, 0, [0] * (len(LATENCY_BUCKETS_MS) + 1))
    heartbeats, latency_sum, hist, _ = lane.take_counters()
    assert (heartbeats, latency_sum, sum(hist)) == (1, 0.0, 0)
    lane.beat("a", 40, 5_200, 52.0)
    lane.beat("a", None, 5_300, 53.0)  # the pending beat keeps the latency it had
    assert lane.stats("a") == (5_300, 40, 3, 40.0, 40, 40, 1)
    assert lane.last_beat("a") == 53.0
    assert lane.take_beats() == {7: packed(("a", 5_300, 40))}
    latency_sum, count, _ = lane.take_room_sample(7)
    assert (latency_sum, count) == (40.0, 1)
    lane.beat("a", 0, 5_400, 54.0)  # a 0 ms sample is a sample
    assert lane.stats("a") == (5_400, 0, 4, 40.0, 0, 40, 2)
    assert lane.take_beats() == {7: packed(("a", 5_400, 0))}
    latency_sum, count, hist = lane.take_room_sample(7)
    assert (latency_sum, count, hist[0]) == (0.0, 1, 1)


def test_lane_beats_fill_the_same_figures(Lane):
    lane = new_lane(Lane)
    lane.set_watched(10, True)
    before = time.time() * 1000
    lane.offer(1, loadgen_frame(latency=40))
    lane.beat(SID, 60, 2_000_000_000_000, 1.0)
    lane.offer(1, loadgen_frame(latency=2.25))
    stats = lane.stats(SID)
    assert stats[1:] == (2.25, 3, 102.25, 2.25, 60, 3)
    assert before - 1 <= stats[0] <= time.time() * 1000
    assert lane.take_updated(10) == [SID]
    assert lane.take_ttl_due() == [SID]
    assert lane.take_beats() == {10: packed((SID, stats[0], "2.25"))}
    assert lane.take_counters()[0::3] == (3, 2)


def test_the_stores_format_for_float_latencies(Lane):
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 0, 1, 0, 0.0)
    for latency in (0.1, 1e-05, 123456.789, 3599999.9999999995, 5.0, 0.0, 1 / 3):
        lane.beat("a", latency, 1, 1.0)
        assert lane.take_beats() == {1: packed(("a", 1, latency))}


def test_the_stores_format_for_integers(Lane):
    """Times and integer latencies written digit by digit, as the f-string writes them."""
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS)
    lane.add_session("a", 0, 1, 0, 0.0)
    for now_ms in (0, 7, 10, 99, 100, 1_767_000_000_123, 9_223_372_036_854_775_807, -1, -1_000):
        for latency in (0, 9, 10, 305, 3_599_999):
            lane.beat("a", latency, now_ms, 1.0)
            assert lane.take_beats() == {1: packed(("a", now_ms, latency))}


LONGEST_LINE = max(len(line) for line in GOOD.split(b"\n\n")[0].split(b"\n"))


@pytest.mark.parametrize(
    "limits",
    [
        {"max_frame_size": len(GOOD) - 1},
        {"max_headers": 3},
        {"max_header_line": LONGEST_LINE - 1},
        {"max_header_line": 3},
    ],
    ids=["frame-size", "headers", "header-line", "command-line"],
)
def test_frames_beyond_the_parser_limits_take_the_full_path(Lane, limits):
    with pytest.raises(FrameError):
        FrameParserPy(**{"max_frame_size": 65536, "max_headers": 64, "max_header_line": 8192, **limits}).feed(
            GOOD
        )
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS, **limits)
    lane.open(1, 0.0, 0.0, 0.0)
    lane.set_ready(1, True)
    lane.add_session(SID, 1, 10, 0, 0.0)
    assert lane.offer(1, GOOD) is None
    exact = {
        "max_frame_size": len(GOOD),
        "max_headers": 4,
        "max_header_line": LONGEST_LINE,
    }
    lane = Lane(LATENCY_BUCKETS_MS, TTL_REFRESH_MS, **exact)
    lane.open(1, 0.0, 0.0, 0.0)
    lane.set_ready(1, True)
    lane.add_session(SID, 1, 10, 0, 0.0)
    assert len(FrameParserPy(**exact).feed(GOOD)) == 1
    assert lane.offer(1, GOOD) == receipt_of("r1")
