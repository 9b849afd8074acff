"""Differential fuzzing of the heartbeat lane's ``offer``: the Cython build against the reference.

Each input becomes a token bucket, cut points and messages (random bytes, or mutations of real
heartbeats). The messages are offered in turn on one connection to a ``HeartbeatLanePy`` and a
``HeartbeatLaneC`` set up alike; the two must give the same answer to every message and end with
the same figures, and neither may raise. Whenever the lane takes a message, the full path (the
STOMP parser and ``protocol.payloads.heartbeat``) must read the same session, latency and receipt
from it: the lane never accepts what the full path would refuse or read otherwise.

    python -m fuzzing.fuzz_lane --seconds 60            # atheris (coverage-guided) if installed,
    python -m fuzzing.fuzz_lane --engine hypothesis     # else hypothesis (random + mutation)

A failure leaves the input under build/fuzz-lane/crashes/ (atheris) or prints it (hypothesis); turn
it into a row of the near-miss table in tests/test_lane.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hiredis

from fuzzing import engine

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "fuzz-lane"

SID = "3f2c9a6e-1b7d-4c1e-9a0f-5d2b8e7c6a41"
OTHER = "s-2"
BUCKETS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000)

# Real heartbeats the mutations start from: benchmarks/loadgen.py's, @stomp/stompjs', and variants.
SEEDS = [
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\ncontent-length:67\n\n"
    b'{"sessionId":"3f2c9a6e-1b7d-4c1e-9a0f-5d2b8e7c6a41","latencyMs":12}\x00',
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\nreceipt:hb-7\ncontent-length:69\n\n"
    b'{"sessionId":"3f2c9a6e-1b7d-4c1e-9a0f-5d2b8e7c6a41","latencyMs":12.5}\x00',
    b"SEND\nreceipt:message-3\ndestination:/app/heartbeat\ncontent-length:66\n\n"
    b'{"sessionId":"3f2c9a6e-1b7d-4c1e-9a0f-5d2b8e7c6a41","latencyMs":0}\x00',
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json;charset=utf-8\n\n"
    b' { "latencyMs" : 3599999.25 , "sessionId" : "3f2c9a6e-1b7d-4c1e-9a0f-5d2b8e7c6a41" } \x00',
    b'SEND\ndestination:/app/heartbeat\n\n{"sessionId":"s-2","latencyMs":1}\x00',
]


def _impls():
    from spidi_core.lane_py import HeartbeatLanePy

    try:
        from spidi_core._lane_c import HeartbeatLaneC
    except ImportError:
        sys.exit("spidi_core._lane_c is not built: run `make build` first")
    return HeartbeatLanePy, HeartbeatLaneC


def full_path(message: bytes):
    """The full path's reading of one message: a Heartbeat, or None when it is not one it takes."""
    from spidi_core.errors import FrameError
    from spidi_core.frames_py import FrameParserPy
    from spidi_server.errors import AppError
    from spidi_server.protocol import payloads

    try:
        frames = FrameParserPy().feed(message)
        message.decode("utf-8")
    except (FrameError, UnicodeDecodeError):
        return None
    if len(frames) != 1 or frames[0].command != "SEND":
        return None
    frame = frames[0]
    if frame.headers.get("destination") != "/app/heartbeat":
        return None
    try:
        return payloads.heartbeat(frame.body, frame.headers.get("receipt"))
    except AppError:
        return None


def decode_input(data: bytes) -> tuple[float, float, list[bytes]]:
    """Bucket (first byte: unlimited, or a burst of 0-3 barely refilled), cut points (next byte:
    how many, then one byte each), then the bytes cut into messages."""
    head = data[:2].ljust(2, b"\x00")
    rate, burst = (0.0, 0.0) if head[0] < 128 else (1e-9, float(head[0] % 4))
    ncuts = head[1] % 4
    cuts = list(data[2 : 2 + ncuts])
    stream = data[2 + ncuts :]
    points = sorted({0, len(stream), *(c * 7 % (len(stream) + 1) for c in cuts)})
    return rate, burst, [stream[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def _lane(cls, rate: float, burst: float):
    lane = cls(BUCKETS, 1000)
    now = time.monotonic()
    lane.open(1, rate, burst, now)
    lane.set_ready(1, True)
    lane.open(2, 0.0, 0.0, now)
    lane.add_session(SID, 1, 3, 0, now)
    lane.add_session(OTHER, 2, 3, 0, now)
    lane.set_groups(SID, 2, 0)  # the SLO breakdown's group histograms, filled on the fast path
    lane.set_watched(3, True)
    return lane


def _figures(lane):
    beats = {}
    for room, packed in lane.take_beats().items():
        reader = hiredis.Reader()
        reader.feed(b"*%d\r\n%s" % (2 * packed.count, packed.members))
        reader.feed(b"*%d\r\n%s" % (2 * packed.latencies_count, packed.latencies))
        beats[room] = (reader.gets()[1::2], reader.gets())
    return (
        lane.stats(SID)[1:],
        lane.stats(OTHER)[1:],
        beats,  # the wall-clock ms column left out: the two lanes ran a moment apart
        lane.take_ttl_due(),
        lane.take_updated(3),
        lane.take_room_sample(3),
        lane.take_room_groups(3),
        lane.take_counters(),
    )


def check(data: bytes) -> None:
    """The property: raises AssertionError (or anything else) on a disagreement."""
    lane_py, lane_c = _impls()
    rate, burst, messages = decode_input(data)
    py, c = _lane(lane_py, rate, burst), _lane(lane_c, rate, burst)
    for message in messages:
        answer = py.offer(1, message)
        assert c.offer(1, message) == answer, f"lanes disagree on {message!r}"
        if answer is not None:
            heard = full_path(message)
            assert heard is not None, f"the lane took what the full path refuses: {message!r}"
            assert heard.session_id == SID, message
            latency = py.stats(SID)[1]
            assert latency == heard.latency_ms and type(latency) is type(heard.latency_ms), message
            expected = (
                b"" if heard.receipt is None else b"RECEIPT\nreceipt-id:%s\n\n\x00" % heard.receipt.encode()
            )
            assert answer == expected, message
    assert _figures(py) == _figures(c), "lanes disagree on the figures"


# -- engines --------------------------------------------------------------------------------------


def run_atheris(seconds: int) -> int:
    corpus = {}
    for i, seed in enumerate(SEEDS):
        corpus[f"seed-{i}"] = b"\x00\x00" + seed
        corpus[f"seed-{i}-twice"] = b"\x81\x01\x40" + seed + seed
    return engine.run_atheris(check, WORK, corpus, "spidi_core.lane_py", seconds, max_len=2048)


def run_hypothesis(seconds: int) -> int:
    from hypothesis import strategies as st

    tokens = [
        b"\x00", b"\n", b"\r", b"\\", b"\\c", b":", b'"', b" ", b",", b"{", b"}", b"[", b".", b"-", b"e",
        b"0", b"9", b"3600000", b"NaN", b"\xc3\xa9", b"\xff", b"receipt:x\n", b"destination:/app/heartbeat\n",
        b"content-length:", b'"latencyMs":', b'"sessionId":', b'"s-2"', b"x" * 60,
    ]  # fmt: skip

    mutated = engine.mutated(st, SEEDS, tokens, repeat=2, edits=4, cut=8, copy=16)
    inputs = st.tuples(st.binary(min_size=2, max_size=5), st.one_of(st.binary(max_size=200), mutated))
    examples = engine.run_hypothesis(check, inputs.map(lambda pair: pair[0] + pair[1]), seconds)
    print(f"hypothesis: {examples} inputs in {seconds} s, the lanes agreed and never took a message wrongly")
    return 0


def main(argv: list[str] | None = None) -> int:
    return engine.main(argv, __doc__, "the heartbeat lane", run_atheris, run_hypothesis)


if __name__ == "__main__":
    sys.exit(main())
