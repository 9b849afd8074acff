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

import argparse
import os
import sys
import time
from pathlib import Path

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
    lane.set_watched(3, True)
    return lane


def _figures(lane):
    beats = {
        room: [line.split(b" ")[::2] for line in text.split(b"\n")]
        for room, text in lane.take_beats().items()
    }
    return (
        lane.stats(SID)[1:],
        lane.stats(OTHER)[1:],
        beats,  # the wall-clock ms column left out: the two lanes ran a moment apart
        lane.take_ttl_due(),
        lane.take_updated(3),
        lane.take_room_sample(3),
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
    import atheris

    with atheris.instrument_imports():
        import spidi_core.lane_py  # noqa: F401  (coverage of the reference guides the search)

    corpus = WORK / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (WORK / "crashes").mkdir(exist_ok=True)
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed-{i}").write_bytes(b"\x00\x00" + seed)
        (corpus / f"seed-{i}-twice").write_bytes(b"\x81\x01\x40" + seed + seed)

    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        "-max_len=2048",
        f"-artifact_prefix={WORK / 'crashes'}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, check)
    atheris.Fuzz()
    return 0


def run_hypothesis(seconds: int) -> int:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    tokens = [
        b"\x00", b"\n", b"\r", b"\\", b"\\c", b":", b'"', b" ", b",", b"{", b"}", b"[", b".", b"-", b"e",
        b"0", b"9", b"3600000", b"NaN", b"\xc3\xa9", b"\xff", b"receipt:x\n", b"destination:/app/heartbeat\n",
        b"content-length:", b'"latencyMs":', b'"sessionId":', b'"s-2"', b"x" * 60,
    ]  # fmt: skip

    @st.composite
    def mutated(draw):
        data = bytearray(draw(st.sampled_from(SEEDS)) * draw(st.integers(1, 2)))
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.integers(0, 3))
            at = draw(st.integers(0, len(data)))
            if op == 0 and data:  # flip a byte
                data[at % len(data)] = draw(st.integers(0, 255))
            elif op == 1:  # insert a token
                data[at:at] = draw(st.sampled_from(tokens))
            elif op == 2:  # delete a span
                del data[at : at + draw(st.integers(1, 8))]
            else:  # duplicate a span
                data[at:at] = data[at : at + draw(st.integers(1, 16))]
        return bytes(data)

    inputs = st.tuples(st.binary(min_size=2, max_size=5), st.one_of(st.binary(max_size=200), mutated()))
    examples = 0

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def batch(pair):
        nonlocal examples
        examples += 1
        prefix, stream = pair
        check(prefix + stream)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch()
    print(f"hypothesis: {examples} inputs in {seconds} s, the lanes agreed and never took a message wrongly")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    print(f"fuzzing the heartbeat lane with {engine} for {args.seconds} s", flush=True)
    return run_atheris(args.seconds) if engine == "atheris" else run_hypothesis(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
