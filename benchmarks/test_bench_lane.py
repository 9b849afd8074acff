"""Micro benchmarks of the heartbeat fast lane, Cython build vs pure reference.

* ``offer``: one heartbeat SEND (benchmarks/loadgen.py's, 116 bytes, with and without a receipt)
  recognised, recorded and answered;
* ``WsStream.feed`` with the lane set: one masked WebSocket frame in, the receipt frame out, and
  the same bytes through the full path's decoding steps for comparison (the stream hands the
  message to Python, FrameParser parses it, orjson reads the body);
* 100 heartbeats in one feed, as a busy connection's socket read delivers them.

Run with ``make bench`` or ``pytest benchmarks/test_bench_lane.py --benchmark-only``.
"""

import time

import orjson
import pytest

from benchmarks.loadgen import heartbeat_stomp, ws_frame
from spidi_core.frames_py import FrameParserPy
from spidi_core.lane_py import HeartbeatLanePy
from spidi_core.ws_py import WsStreamPy

try:
    from spidi_core._frames_c import FrameParserC
    from spidi_core._lane_c import HeartbeatLaneC
    from spidi_core._ws_c import WsStreamC
except ImportError:  # extensions not built
    FrameParserC = HeartbeatLaneC = WsStreamC = None

NEEDS_C = pytest.mark.skipif(
    HeartbeatLaneC is None, reason="spidi_core extensions not built (run `make build`)"
)
LANES = [pytest.param(HeartbeatLaneC, id="c", marks=NEEDS_C), pytest.param(HeartbeatLanePy, id="py")]
SID = "3f2c9a6e-1b7d-4c1e-9a0f-5d2b8e7c6a41"
BUCKETS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000)
HEARTBEAT = heartbeat_stomp(SID, 42)
HEARTBEAT_RECEIPT = heartbeat_stomp(SID, 42, "hb-1234")
MASK = b"\x11\x22\x33\x44"
WS_HEARTBEAT = ws_frame(HEARTBEAT_RECEIPT, 1, MASK)
WS_BATCH = ws_frame(HEARTBEAT, 1, MASK) * 100


def new_lane(cls):
    lane = cls(BUCKETS, 1000)
    lane.open(1, 100.0, 1e12, time.monotonic())  # a rate limit on, as in production, never reached
    lane.set_ready(1, True)
    lane.add_session(SID, 1, 1, 0, time.monotonic())
    return lane


@pytest.mark.benchmark(group="lane: offer one heartbeat (receipt asked)")
@pytest.mark.parametrize("cls", LANES)
def test_offer_heartbeat_with_receipt(benchmark, cls):
    lane = new_lane(cls)
    assert benchmark(lane.offer, 1, HEARTBEAT_RECEIPT) == b"RECEIPT\nreceipt-id:hb-1234\n\n\x00"


@pytest.mark.benchmark(group="lane: offer one heartbeat (no receipt)")
@pytest.mark.parametrize("cls", LANES)
def test_offer_heartbeat(benchmark, cls):
    lane = new_lane(cls)
    assert benchmark(lane.offer, 1, HEARTBEAT) == b""


STREAMS = [
    pytest.param((WsStreamC, HeartbeatLaneC), id="c-lane", marks=NEEDS_C),
    pytest.param((WsStreamPy, HeartbeatLanePy), id="py-lane"),
]


@pytest.mark.benchmark(group="lane: WsStream.feed of one masked heartbeat frame")
@pytest.mark.parametrize("pair", STREAMS)
def test_feed_with_lane(benchmark, pair):
    Stream, Lane = pair
    stream = Stream(65536)
    stream.set_lane(new_lane(Lane), 1)

    def one():
        messages = stream.feed(WS_HEARTBEAT)
        return messages, stream.take_output()

    messages, out = benchmark(one)
    assert messages == [] and out.endswith(b"RECEIPT\nreceipt-id:hb-1234\n\n\x00")


@pytest.mark.benchmark(group="lane: WsStream.feed of one masked heartbeat frame")
@NEEDS_C
def test_feed_full_path_decoding_c(benchmark):
    """The full path's decoding only (no presence, no receipt): the lane's baseline."""
    stream = WsStreamC(65536)
    parser = FrameParserC()

    def one():
        for message in stream.feed(WS_HEARTBEAT):
            for frame in parser.feed(message):
                orjson.loads(frame.body)

    benchmark(one)


@pytest.mark.benchmark(group="lane: WsStream.feed of 100 masked heartbeat frames")
@pytest.mark.parametrize("pair", STREAMS)
def test_feed_batch_with_lane(benchmark, pair):
    Stream, Lane = pair
    stream = Stream(1 << 20)
    lane = new_lane(Lane)
    stream.set_lane(lane, 1)
    assert benchmark(stream.feed, WS_BATCH) == []
    assert lane.take_counters()[3] > 0


@pytest.mark.benchmark(group="lane: WsStream.feed of 100 masked heartbeat frames")
@pytest.mark.parametrize(
    "parser_cls", [pytest.param(FrameParserC, id="c", marks=NEEDS_C), pytest.param(FrameParserPy, id="py")]
)
def test_feed_batch_full_path_decoding(benchmark, parser_cls):
    stream = (WsStreamC or WsStreamPy)(1 << 20)
    parser = parser_cls()

    def batch():
        for message in stream.feed(WS_BATCH):
            for frame in parser.feed(message):
                orjson.loads(frame.body)

    benchmark(batch)
