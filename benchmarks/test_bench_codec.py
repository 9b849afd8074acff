"""Micro benchmarks of the STOMP codec, Cython build vs pure reference.

Each group holds the same workload for both implementations, so pytest-benchmark's relative
column reads directly as the speed-up. Run with ``make bench`` or
``pytest benchmarks/test_bench_codec.py --benchmark-only``.
"""

import pytest

from spidi_core.frame import Frame
from spidi_core.frames_py import FrameParserPy, serialize_frame_py

try:
    from spidi_core._frames_c import FrameParserC, serialize_frame_c
except ImportError:  # extension not built
    FrameParserC = serialize_frame_c = None

NEEDS_C = pytest.mark.skipif(FrameParserC is None, reason="spidi_core._frames_c not built (run `make build`)")
PARSERS = [pytest.param(FrameParserC, id="c", marks=NEEDS_C), pytest.param(FrameParserPy, id="py")]
SERIALIZERS = [
    pytest.param(serialize_frame_c, id="c", marks=NEEDS_C),
    pytest.param(serialize_frame_py, id="py"),
]

# The client heart-beat the server sees most: 110 bytes.
HEARTBEAT_BODY = b'{"sid":"s-01234567","ms":42}'
HEARTBEAT_FRAME = (
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\ncontent-length:%d\n\n%s\x00"
    % (len(HEARTBEAT_BODY), HEARTBEAT_BODY)
)
assert len(HEARTBEAT_FRAME) == 110

# The presence update the server fans out most.
MESSAGE_HEADERS = {
    "destination": "/topic/presence.team-42",
    "message-id": "m-000123456",
    "subscription": "sub-0",
    "content-type": "application/json",
}
MESSAGE_BODY = b'{"userId":"u-0123456789","status":"online","ts":1717171717123}'

# 100 heart-beats as they come off a socket: 1460-byte segments, frames cut anywhere.
STREAM = HEARTBEAT_FRAME * 100
SEGMENTS = [STREAM[i : i + 1460] for i in range(0, len(STREAM), 1460)]


@pytest.mark.benchmark(group="parse: one 110-byte heartbeat SEND frame per feed")
@pytest.mark.parametrize("parser_cls", PARSERS)
def test_parse_heartbeat_frame(benchmark, parser_cls):
    parser = parser_cls()
    frames = benchmark(parser.feed, HEARTBEAT_FRAME)
    assert len(frames) == 1 and isinstance(frames[0], Frame)
    assert frames[0].body == HEARTBEAT_BODY


@pytest.mark.benchmark(group="parse: 100 heartbeat frames in 1460-byte segments")
@pytest.mark.parametrize("parser_cls", PARSERS)
def test_parse_segmented_stream(benchmark, parser_cls):
    parser = parser_cls()

    def run():
        count = 0
        for segment in SEGMENTS:
            count += len(parser.feed(segment))
        return count

    assert benchmark(run) == 100


@pytest.mark.benchmark(group="serialize: MESSAGE frame, 4 headers + JSON body")
@pytest.mark.parametrize("serialize", SERIALIZERS)
def test_serialize_message_frame(benchmark, serialize):
    data = benchmark(serialize, "MESSAGE", MESSAGE_HEADERS, MESSAGE_BODY)
    assert data.endswith(MESSAGE_BODY + b"\x00")
