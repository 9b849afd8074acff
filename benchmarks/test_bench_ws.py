"""Micro benchmarks of the WebSocket frame decoder and encoders, Cython build vs pure reference.

Each group holds the same workload for both implementations, so pytest-benchmark's relative
column reads directly as the speed-up. Run with ``make bench`` or
``pytest benchmarks/test_bench_ws.py --benchmark-only``.
"""

import pytest

from spidi_core.ws_py import WsStreamPy, encode_frames_py, encode_text_py

try:
    from spidi_core._ws_c import WsStreamC, encode_frames_c, encode_text_c
except ImportError:  # extension not built
    WsStreamC = encode_frames_c = encode_text_c = None

NEEDS_C = pytest.mark.skipif(WsStreamC is None, reason="spidi_core._ws_c not built (run `make build`)")
STREAMS = [pytest.param(WsStreamC, id="c", marks=NEEDS_C), pytest.param(WsStreamPy, id="py")]
FRAMERS = [pytest.param(encode_frames_c, id="c", marks=NEEDS_C), pytest.param(encode_frames_py, id="py")]
TEXTERS = [pytest.param(encode_text_c, id="c", marks=NEEDS_C), pytest.param(encode_text_py, id="py")]

# The client heart-beat as a browser sends it: one masked text frame around a 129-byte STOMP SEND.
HEARTBEAT = (
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\ncontent-length:45\n\n"
    b'{"sessionId":"s-0123456789abcdef","latencyMs":42}\x00'
)
MASK = b"\x9c\x2e\x51\x07"


def client_frame(payload: bytes) -> bytes:
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


FRAME = client_frame(HEARTBEAT)
assert len(FRAME) == 8 + len(HEARTBEAT)

# 100 heart-beats as they come off a socket: 1460-byte segments, frames cut anywhere.
STREAM = FRAME * 100
SEGMENTS = [STREAM[i : i + 1460] for i in range(0, len(STREAM), 1460)]

# A fan-out batch: 20 MESSAGE frames of ~200 bytes, framed for one transport.write.
MESSAGES = [
    b"MESSAGE\ndestination:/topic/presence.team-42\nsubscription:sub-0\n\n" + b"x" * 130 + b"\x00"
] * 20


@pytest.mark.benchmark(group="ws feed: one masked heartbeat frame (137 bytes) per feed")
@pytest.mark.parametrize("stream_cls", STREAMS)
def test_feed_heartbeat_frame(benchmark, stream_cls):
    stream = stream_cls(65536)
    messages = benchmark(stream.feed, FRAME)
    assert messages == [HEARTBEAT]
    assert stream.buffered == 0


@pytest.mark.benchmark(group="ws feed: 100 heartbeat frames in 1460-byte segments")
@pytest.mark.parametrize("stream_cls", STREAMS)
def test_feed_segmented_stream(benchmark, stream_cls):
    stream = stream_cls(65536)

    def run():
        count = 0
        for segment in SEGMENTS:
            count += len(stream.feed(segment))
        return count

    assert benchmark(run) == 100


@pytest.mark.benchmark(group="ws encode: 20 MESSAGE frames batched into one write")
@pytest.mark.parametrize("encode_frames", FRAMERS)
def test_encode_frames_batch(benchmark, encode_frames):
    assert len(benchmark(encode_frames, MESSAGES)) == sum(len(m) + 4 for m in MESSAGES)


@pytest.mark.benchmark(group="ws encode: one RECEIPT text frame")
@pytest.mark.parametrize("encode_text", TEXTERS)
def test_encode_receipt(benchmark, encode_text):
    receipt = b"RECEIPT\nreceipt-id:hb-12345\n\n\x00"
    assert benchmark(encode_text, receipt)[2:] == receipt
