"""Differential fuzzing of the STOMP codec: the Cython parser against the pure reference.

Each input becomes parser limits, cut points and a byte stream (random, or a mutation of real
frames). The stream is fed, split at the cut points, to ``FrameParserPy`` and ``FrameParserC``;
the two must agree on everything observable (frames per call, heart-beats, bytes buffered, the
error reason) and may only ever raise ``FrameError``. Every frame parsed must also survive a
serialize/parse round trip through both serializers.

    python -m fuzzing.fuzz_codec --seconds 60            # atheris (coverage-guided) if installed,
    python -m fuzzing.fuzz_codec --engine hypothesis     # else hypothesis (random + mutation)

A failure leaves the input under build/fuzz/crashes/ (atheris) or prints it (hypothesis); turn it
into a regression test in tests/test_codec.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fuzzing import engine

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "fuzz"

# Real frames the mutations start from.
SEEDS = [
    b"CONNECT\naccept-version:1.2\nhost:spidi\nheart-beat:10000,10000\nAuthorization:Bearer a.b.c\n\n\x00",
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\ncontent-length:28\n\n"
    b'{"sid":"s-01234567","ms":42}\x00',
    b"SUBSCRIBE\r\nid:0\r\ndestination:/topic/rooms/lobby/roster\r\nreceipt:r-1\r\n\r\n\x00\n\n",
    b'SEND\ndestination:/app/hello\n\n{"roomCode":"lobby"}\x00',
    b"MESSAGE\nweird\\cname:multi\\nline\\\\\ncontent-length:4\n\nab\x00c\x00",
    b"\n\r\n\nDISCONNECT\nreceipt:bye\n\n\x00",
    b"STOMP\naccept-version:1.0,1.1,1.2\nhost:x\n\n\x00UNSUBSCRIBE\nid:0\n\n\x00",
]


def _impls():
    from spidi_core.frames_py import FrameParserPy, serialize_frame_py

    try:
        from spidi_core._frames_c import FrameParserC, serialize_frame_c
    except ImportError:
        sys.exit("spidi_core._frames_c is not built: run `make build` first")
    return FrameParserPy, FrameParserC, serialize_frame_py, serialize_frame_c


def decode_input(data: bytes) -> tuple[dict, list[int], bytes]:
    """Limits (first 3 bytes), cut points (next byte: how many, then one byte each), the stream."""
    head = data[:3].ljust(3, b"\x00")
    limits = {
        # Mostly the production limits; small ones often, so every limit path is reached.
        "max_frame_size": (head[0] % 120) + 1 if head[0] < 160 else 65536,
        "max_headers": head[1] % 6 if head[1] < 128 else 64,
        "max_header_line": head[2] % 40 if head[2] < 128 else 8192,
    }
    ncuts = data[3] % 8 if len(data) > 3 else 0
    cuts = list(data[4 : 4 + ncuts])
    stream = data[4 + ncuts :]
    points = sorted({0, len(stream), *(c * 7 % (len(stream) + 1) for c in cuts)})
    return limits, points, stream


def outcome(parser_cls, limits: dict, chunks: list[bytes], frame_error):
    parser = parser_cls(**limits)
    results = []
    try:
        for chunk in chunks:
            results.append(parser.feed(chunk))
    except frame_error as exc:
        return results, parser.heartbeats, exc.reason, str(exc)
    return results, parser.heartbeats, parser.buffered, None


def check(data: bytes) -> None:
    """The property: raises AssertionError (or anything but FrameError) on a disagreement."""
    from spidi_core.errors import FrameError
    from spidi_core.frame import Frame

    parser_py, parser_c, ser_py, ser_c = _impls()
    limits, points, stream = decode_input(data)
    chunks = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]
    ref = outcome(parser_py, limits, chunks, FrameError)
    fast = outcome(parser_c, limits, chunks, FrameError)
    assert ref == fast, f"parsers disagree\n  py: {ref!r}\n  c:  {fast!r}"
    whole = outcome(parser_py, limits, [stream], FrameError)
    assert (whole[1], whole[2]) == (ref[1], ref[2]), "outcome depends on how the stream was split"
    for frames in ref[0]:
        for frame in frames:
            raw_py = ser_py(frame.command, frame.headers, frame.body)
            assert ser_c(frame.command, frame.headers, frame.body) == raw_py, "serializers disagree"
            again = parser_py(
                max_frame_size=len(raw_py) + 1,
                max_headers=len(frame.headers) + 1,
                max_header_line=len(raw_py),
            ).feed(raw_py)
            headers = dict(frame.headers)
            if frame.body and "content-length" not in headers:
                headers["content-length"] = str(len(frame.body))
            assert again == [Frame(frame.command, headers, frame.body)], f"round trip of {frame!r}"


# -- engines --------------------------------------------------------------------------------------


def run_atheris(seconds: int) -> int:
    corpus = {
        f"seed-{i}-{limits.hex()}": limits + b"\x02\x05\x11" + seed
        for i, seed in enumerate(SEEDS)
        for limits in (b"\xff\xff\xff", b"\x10\x02\x08")
    }
    # Coverage of the reference guides the search.
    return engine.run_atheris(check, WORK, corpus, "spidi_core.frames_py", seconds)


def run_hypothesis(seconds: int) -> int:
    from hypothesis import strategies as st

    tokens = [
        b"SEND",
        b"CONNECT",
        b"MESSAGE",
        b":",
        b"\\",
        b"\\n",
        b"\\c",
        b"\\t",
        b"\x00",
        b"\n",
        b"\r\n",
        b"\r",
        b"content-length:",
        b"0",
        b"12",
        b"-1",
        b"\xff",
        b"\xc3\xa9",
        b"\xc3",
        b"x" * 50,
    ]
    mutated = engine.mutated(st, SEEDS, tokens, repeat=3, edits=8, cut=16, copy=32)
    inputs = st.tuples(st.binary(min_size=4, max_size=12), st.one_of(st.binary(max_size=300), mutated))
    examples = engine.run_hypothesis(check, inputs.map(lambda pair: pair[0] + pair[1]), seconds)
    print(f"hypothesis: {examples} inputs in {seconds} s, no disagreement, only FrameError raised")
    return 0


def main(argv: list[str] | None = None) -> int:
    return engine.main(argv, __doc__, "the STOMP codec", run_atheris, run_hypothesis)


if __name__ == "__main__":
    sys.exit(main())
