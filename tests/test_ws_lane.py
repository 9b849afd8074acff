"""The fast-lane hook of the WebSocket stream: ``WsStream.set_lane(lane, conn_key)``.

Run for every pairing of the two stream builds and the two lane builds (the C stream calls the C
lane in C, and any other lane through ``offer``).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spidi_core.frames_py import serialize_frame_py
from spidi_core.lane_py import HeartbeatLanePy
from spidi_core.ws_py import WsStreamPy, encode_text_py
from spidi_server.stores.events import LATENCY_BUCKETS_MS

from .test_ws_frames import BINARY, CONT, PING, TEXT, frame

try:
    from spidi_core._lane_c import HeartbeatLaneC
    from spidi_core._ws_c import WsStreamC
except ImportError:  # extensions not built
    HeartbeatLaneC = WsStreamC = None

NEEDS_C = pytest.mark.skipif(WsStreamC is None, reason="spidi_core extensions not built (run `make build`)")
PAIRS = [
    pytest.param((WsStreamPy, HeartbeatLanePy), id="py-py"),
    pytest.param((WsStreamC, HeartbeatLaneC), id="c-c", marks=NEEDS_C),
    pytest.param((WsStreamC, HeartbeatLanePy), id="cstream-pylane", marks=NEEDS_C),
    pytest.param((WsStreamPy, HeartbeatLaneC), id="pystream-clane", marks=NEEDS_C),
]
SID = "s-0123456789abcdef"
CONN = 41


def heartbeat(receipt: str | None = None, latency: int = 42, sid: str = SID) -> bytes:
    body = b'{"sessionId":"%s","latencyMs":%d}' % (sid.encode(), latency)
    receipt_line = b"" if receipt is None else b"receipt:%s\n" % receipt.encode()
    return b"SEND\ndestination:/app/heartbeat\n%scontent-length:%d\n\n%s\x00" % (
        receipt_line,
        len(body),
        body,
    )


def receipt_frame(receipt: str) -> bytes:
    return encode_text_py(serialize_frame_py("RECEIPT", {"receipt-id": receipt}))


def build(pair, ready: bool = True):
    Stream, Lane = pair
    lane = Lane(LATENCY_BUCKETS_MS, 1000)
    lane.open(CONN, 0.0, 0.0, time.monotonic())
    lane.set_ready(CONN, ready)
    lane.add_session(SID, CONN, 1, 0, time.monotonic())
    stream = Stream(65536)
    stream.set_lane(lane, CONN)
    return stream, lane


@pytest.fixture(params=PAIRS)
def pair(request):
    return request.param


def test_a_heartbeat_is_answered_by_the_lane(pair):
    stream, lane = build(pair)
    assert stream.feed(frame(TEXT, heartbeat("hb-1"))) == []
    assert stream.take_output() == receipt_frame("hb-1")
    assert stream.feed(frame(TEXT, heartbeat())) == []
    assert stream.take_output() == b""  # no receipt asked: nothing to send
    assert lane.stats(SID)[2] == 2
    assert lane.take_counters()[3] == 2
    assert stream.buffered == 0


def test_several_heartbeats_in_one_chunk_and_across_chunks(pair):
    stream, lane = build(pair)
    data = frame(TEXT, heartbeat("a")) + frame(TEXT, heartbeat("b")) + frame(TEXT, heartbeat("c"))
    assert stream.feed(data[:7]) == []
    assert stream.feed(data[7:60]) == []
    assert stream.feed(data[60:]) == []
    assert stream.take_output() == receipt_frame("a") + receipt_frame("b") + receipt_frame("c")
    assert lane.stats(SID)[2] == 3


def test_nothing_overtakes_a_message_already_handed_to_python(pair):
    stream, lane = build(pair)
    other = b"SUBSCRIBE\nid:0\ndestination:/topic/x\n\n\x00"
    # A heartbeat after a message for Python goes to Python too, behind it.
    assert stream.feed(frame(TEXT, other) + frame(TEXT, heartbeat("late"))) == [other, heartbeat("late")]
    assert stream.take_output() == b""
    assert lane.stats(SID)[2] == 0
    # Before it, the lane answers: the receipt is written before Python sees the other message.
    assert stream.feed(frame(TEXT, heartbeat("early")) + frame(TEXT, other)) == [other]
    assert stream.take_output() == receipt_frame("early")
    # Each feed starts afresh.
    assert stream.feed(frame(TEXT, heartbeat("next"))) == []
    assert stream.take_output() == receipt_frame("next")


def test_control_frames_keep_their_place_in_the_output(pair):
    stream, _ = build(pair)
    assert stream.feed(frame(PING, b"p1") + frame(TEXT, heartbeat("r")) + frame(PING, b"p2")) == []
    assert stream.take_output() == (
        frame(10, b"p1", mask=None) + receipt_frame("r") + frame(10, b"p2", mask=None)
    )


def test_only_single_frame_text_messages_are_offered(pair):
    stream, lane = build(pair)
    body = heartbeat("r")
    assert stream.feed(frame(BINARY, body)) == [body]
    fragments = frame(TEXT, body[:10], fin=False) + frame(CONT, body[10:])
    assert stream.feed(fragments) == [body]
    assert stream.take_output() == b""
    assert lane.stats(SID)[2] == 0


def test_what_the_lane_refuses_goes_to_python(pair):
    stream, lane = build(pair, ready=False)
    assert stream.feed(frame(TEXT, heartbeat("r"))) == [heartbeat("r")]
    lane.set_ready(CONN, True)
    unknown = heartbeat("r", sid="nobody")
    assert stream.feed(frame(TEXT, unknown)) == [unknown]
    stream.set_lane(None, 0)
    assert stream.feed(frame(TEXT, heartbeat("r"))) == [heartbeat("r")]
    assert stream.take_output() == b""
    assert lane.stats(SID)[2] == 0


def test_no_lane_once_the_stream_is_closing(pair):
    stream, lane = build(pair)
    stream.close(1001, "going away")
    closing = stream.take_output()
    assert stream.feed(frame(TEXT, heartbeat("r"))) == []
    assert stream.take_output() == b""
    assert lane.stats(SID)[2] == 0
    assert closing.startswith(b"\x88")


def test_a_large_text_message_is_not_offered(pair):
    stream, lane = build(pair)
    big = heartbeat("r")[:-1] + b" " * 2000 + b"\x00"
    assert stream.feed(frame(TEXT, big)) == [big]
    assert lane.stats(SID)[2] == 0


@pytest.mark.skipif(WsStreamC is None, reason="spidi_core extensions not built")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(
        st.sampled_from(["hb", "hb-r", "other", "ping", "frag", "bad-hb"]),
        max_size=8,
    ),
    cut=st.integers(0, 400),
)
def test_the_builds_agree_on_mixed_traffic(parts, cut):
    pieces = {
        "hb": frame(TEXT, heartbeat()),
        "hb-r": frame(TEXT, heartbeat("r-9")),
        "other": frame(TEXT, b"UNSUBSCRIBE\nid:0\n\n\x00"),
        "ping": frame(PING, b"x"),
        "frag": frame(TEXT, heartbeat()[:5], fin=False) + frame(CONT, heartbeat()[5:]),
        "bad-hb": frame(TEXT, heartbeat(latency=3_600_000)),
    }
    data = b"".join(pieces[p] for p in parts)
    outcomes = []
    for Stream, Lane in ((WsStreamPy, HeartbeatLanePy), (WsStreamC, HeartbeatLaneC)):
        stream, lane = build((Stream, Lane))
        messages = stream.feed(data[:cut]) + stream.feed(data[cut:])
        outcomes.append((messages, stream.take_output(), lane.stats(SID)[1:], lane.take_counters()))
    assert outcomes[0] == outcomes[1]
