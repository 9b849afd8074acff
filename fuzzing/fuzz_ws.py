"""Differential fuzzing of the WebSocket frame decoder: Cython, reference, and the websockets library.

Each input becomes a message cap, cut points and a client byte stream (a "frame script" compiled
into masked frames with fuzzed header bits, or raw bytes mutated from real frames). Three
properties must hold:

* ``WsStreamC`` and ``WsStreamPy`` agree on everything observable after every ``feed`` (messages,
  output bytes, state, error, peer close, bytes buffered), also when ``close()`` is called between
  chunks, and only ever raise nothing;
* the outcome does not depend on how the stream was split;
* the websockets library's own parser agrees: ``websockets.frames.Frame.parse`` driven by a
  ``websockets.streams.StreamReader`` (mask=True, max_size as its protocol computes it), its
  protocol's fragmentation rules, its incremental UTF-8 decoding and ``Close.parse`` give the same
  messages, the same pongs, the same peer close and the same failure close code.

Deliberate differences from websockets, normalised in the model (``WebsocketsModel``) and
documented in ``spidi_core/ws_py.py``: control frames are held to 125 bytes, not to what is left
of the message cap; a 64-bit length with its top bit set is a protocol error (1002), not "too
big"; an ED A0..BF surrogate prefix is refused at its second byte (CPython's decoder waits for
the third). Spidi checks a frame's header before its payload arrives, so when it has failed and
the model still waits for that frame, the model is handed exactly the bytes it waits for.

    python -m fuzzing.fuzz_ws --seconds 60            # atheris (coverage-guided) if installed,
    python -m fuzzing.fuzz_ws --engine hypothesis     # else hypothesis (random + mutation)

A failure leaves the input under build/fuzz-ws/crashes/ (atheris) or prints it (hypothesis); turn
it into a regression test in tests/test_ws_frames.py.
"""

from __future__ import annotations

import codecs
import sys
from itertools import pairwise
from pathlib import Path

from fuzzing import engine

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "fuzz-ws"

CAPS = (0, 1, 5, 16, 125, 126, 200, 1000, 1024, 1025, 4096, 65535, 65536, 70000)
_OPCODES = (1, 1, 2, 0, 0, 9, 10, 8)  # script opcodes: data frames and fragments most often
_HEARTBEAT = (
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\ncontent-length:45\n\n"
    b'{"sessionId":"s-0123456789abcdef","latencyMs":42}\x00'
)


def mask_frame(
    b0: int, payload: bytes, mask: bytes = b"\x8e\x21\x04\xf7", width: int = 0, masked: bool = True
) -> bytes:
    """A client frame: first byte ``b0``, ``payload`` masked with ``mask``; ``width`` 16 or 64
    forces a longer length encoding than needed."""
    n = len(payload)
    mbit = 0x80 if masked else 0
    if width == 64 or n >= 65536:
        head = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    elif width == 16 or n >= 126:
        head = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | n))
    if not masked:
        return head + payload
    # Masked here, not with spidi_core's reference: inputs built by the code under test could
    # hide its own mistake (and importing it now would keep atheris from instrumenting it).
    key = (mask * (n // 4 + 1))[:n]
    body = (
        (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
        if n
        else b""
    )
    return head + mask + body


# Real streams the mutations start from.
SEEDS = [
    mask_frame(0x81, _HEARTBEAT),
    mask_frame(0x81, _HEARTBEAT) * 3,
    mask_frame(0x01, "héllo ".encode()) + mask_frame(0x89, b"ping") + mask_frame(0x80, "wörld €".encode()),
    mask_frame(0x82, bytes(range(256)) * 2, width=64) + mask_frame(0x8A, b""),
    mask_frame(0x81, b"x" * 130) + mask_frame(0x88, (1000).to_bytes(2, "big") + b"bye"),
    mask_frame(0x02, b"ab") + mask_frame(0x00, b"cd") + mask_frame(0x80, b"ef") + mask_frame(0x88, b""),
    mask_frame(0x81, "𝄞 \U0010ffff".encode(), width=16) + mask_frame(0x88, (4001).to_bytes(2, "big")),
]


def compile_script(script: bytes) -> bytes:
    """Turn fuzz bytes into frames: per frame a header byte (opcode from a table, FIN, and now and
    then RSV bits or an invalid opcode), a length byte (width, mask bit, length), a mask key and the
    payload. Most frames are well-formed, so the fuzzer gets past the first header."""
    out = bytearray()
    i = 0
    n = len(script)
    while i + 2 <= n:
        hb, spec = script[i], script[i + 1]
        i += 2
        opcode = _OPCODES[hb & 7]
        fin = 0x80 if hb & 0x08 else 0
        if hb >> 4 == 0xF:
            b0 = fin | ((hb & 0x07) << 4) | opcode  # RSV bits
        elif hb >> 4 == 0xE:
            b0 = fin | (3 + (hb & 7))  # an unknown opcode (3..7, 10 stays valid)
        else:
            b0 = fin | opcode
        width = (0, 0, 16, 64)[spec >> 6]
        length = spec & 0x3F
        if length == 0x3F and i < n:  # a longer payload: past 125, 126 and the 1 KB stack buffer
            length = 63 + script[i] * 5
            i += 1
        mask = script[i : i + 4].ljust(4, b"\x00")
        i += 4
        payload = script[i : i + length]
        i += length
        masked = spec & 0x3F != 0x3E  # length byte 0x3E: an unmasked frame
        frame = mask_frame(b0, payload.ljust(length, b"a"), mask, width, masked)
        if len(payload) < length:  # the script ran out: the stream ends mid-frame
            frame = frame[: len(frame) - (length - len(payload))]
        out += frame
    return bytes(out)


def decode_input(data: bytes) -> tuple[int, list[int], int, bytes]:
    """Cap (byte 0), flags and cuts (byte 1: how many cuts, script or raw, when to call close()),
    the cut bytes, then the script or stream."""
    head = data[:2].ljust(2, b"\x00")
    cap = CAPS[head[0] % len(CAPS)]
    ncuts = head[1] & 7
    cuts = list(data[2 : 2 + ncuts])
    body = data[2 + ncuts :]
    stream = compile_script(body) if head[1] & 8 else body
    close_after = (head[1] >> 4) & 3  # 0: never; k: after chunk k-1
    points = sorted({0, len(stream), *(c * 13 % (len(stream) + 1) for c in cuts)})
    return cap, points, close_after, stream


def spidi_outcome(stream_cls, cap: int, chunks: list[bytes], close_after: int = 0):
    """Everything observable, after every chunk."""
    stream = stream_cls(cap)
    steps = []
    for i, chunk in enumerate(chunks):
        messages = stream.feed(chunk)
        if close_after and i == close_after - 1:
            stream.close(1001, "going away")
        steps.append(
            (messages, stream.take_output(), stream.state, stream.error, stream.peer_close, stream.buffered)
        )
    return steps


def server_frames(output: bytes) -> list[tuple[int, bytes]]:
    """Split the stream's output (unmasked server frames) into (opcode, payload)."""
    frames = []
    i = 0
    while i < len(output):
        opcode, n = output[i] & 0x0F, output[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = int.from_bytes(output[i : i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(output[i : i + 8], "big"), i + 8
        frames.append((opcode, output[i : i + n]))
        i += n
    return frames


class WebsocketsModel:
    """The websockets library's server-side reading of a byte stream, as Spidi's stream reports it."""

    def __init__(self, cap: int):
        from websockets.streams import StreamReader

        self.cap = cap
        self.reader = StreamReader()
        self.parser = None  # the Frame.parse coroutine of the frame being read
        self.want = 0  # bytes it waits for
        self.last_read = b""
        self.current_size: int | None = None  # as websockets' protocol: size of the fragmented message
        self.parts: list[bytes] = []
        self.decoder = None
        self.messages: list[bytes] = []
        self.pongs: list[bytes] = []
        self.error: int | None = None
        self.peer_close: tuple[int, str] | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or self.peer_close is not None

    def _read_exact(self, n: int):
        self.want = n
        data = yield from self.reader.read_exact(n)
        self.last_read = bytes(data)
        return data

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.reader.feed_data(data)
        self._pump()

    def waiting(self) -> int:
        """Bytes the model still needs to finish the frame it is reading (0 when between frames)."""
        if self.parser is None or self.done:
            return 0
        return self.want - len(self.reader.buffer)

    def _pump(self) -> None:
        from websockets.exceptions import PayloadTooBig, ProtocolError
        from websockets.frames import Frame

        while not self.done:
            if self.parser is None:
                if not self.reader.buffer:
                    return
                control = self.reader.buffer[0] & 0x0F >= 8
                # websockets' protocol passes what is left of max_size; control frames: 125.
                budget = 125 if control else self.cap - (self.current_size or 0)
                self.parser = Frame.parse(self._read_exact, mask=True, max_size=budget)
                self.control = control
            try:
                next(self.parser)
                return  # waiting for more bytes
            except StopIteration as done:
                frame = done.value
            except PayloadTooBig:
                top_bit = len(self.last_read) == 8 and self.last_read[0] & 0x80
                self.error = 1002 if self.control or top_bit else 1009
                return
            except ProtocolError:
                self.error = 1002
                return
            self.parser = None
            try:
                self._recv_frame(frame)
            except ProtocolError:
                self.error = 1002
            except UnicodeDecodeError:
                self.error = 1007

    def _recv_frame(self, frame) -> None:
        """websockets' Protocol.recv_frame, then its message assembler's UTF-8 decoding."""
        from websockets.exceptions import ProtocolError
        from websockets.frames import Close, Opcode

        data = bytes(frame.data)
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            if self.current_size is not None:
                raise ProtocolError("expected a continuation frame")
            self.parts = []
            self.decoder = codecs.getincrementaldecoder("utf-8")() if frame.opcode is Opcode.TEXT else None
            if not frame.fin:
                self.current_size = len(data)
        elif frame.opcode is Opcode.CONT:
            if self.current_size is None:
                raise ProtocolError("unexpected continuation frame")
            if frame.fin:
                self.current_size = None
            else:
                self.current_size += len(data)
        elif frame.opcode is Opcode.PING:
            self.pongs.append(data)
            return
        elif frame.opcode is Opcode.PONG:
            return
        else:
            close = Close.parse(data)
            self.peer_close = (int(close.code), close.reason)  # recorded first, as websockets does
            if self.current_size is not None:
                raise ProtocolError("incomplete fragmented message")
            return
        if self.decoder is not None:
            self.decoder.decode(data, frame.fin)
            pending = self.decoder.getstate()[0]
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                raise UnicodeDecodeError("utf-8", pending, 0, 2, "surrogate")  # see the module docstring
        self.parts.append(data)
        if frame.fin:
            self.messages.append(b"".join(self.parts))


def check(data: bytes) -> None:
    """The properties: raises AssertionError (or anything else) on a disagreement."""
    from spidi_core.ws_py import CLOSED, WsStreamPy

    try:
        from spidi_core._ws_c import WsStreamC
    except ImportError:
        sys.exit("spidi_core._ws_c is not built: run `make build` first")

    cap, points, close_after, stream = decode_input(data)
    chunks = [stream[a:b] for a, b in pairwise(points)]
    if close_after:
        ref = spidi_outcome(WsStreamPy, cap, chunks, close_after)
        assert ref == spidi_outcome(WsStreamC, cap, chunks, close_after), "builds disagree after close()"
    ref = spidi_outcome(WsStreamPy, cap, chunks)
    fast = spidi_outcome(WsStreamC, cap, chunks)
    assert ref == fast, f"builds disagree\n  py: {ref!r}\n  c:  {fast!r}"
    whole = spidi_outcome(WsStreamPy, cap, [stream])[-1] if stream else None
    if whole is not None:
        messages = [m for step in ref for m in step[0]]
        output = b"".join(step[1] for step in ref)
        assert (messages, output, *ref[-1][2:]) == (whole[0], whole[1], *whole[2:]), "depends on the split"

    messages = [m for step in ref for m in step[0]]
    frames = server_frames(b"".join(step[1] for step in ref))
    state, error, peer_close = (ref[-1][2], ref[-1][3], ref[-1][4]) if ref else (0, None, None)

    model = WebsocketsModel(cap)
    for chunk in chunks:
        model.feed(chunk)
    if error is not None and model.waiting():
        model.feed(bytes(model.waiting()))  # see the module docstring
    if error is not None and model.waiting():  # the mask key came first, then the payload
        model.feed(bytes(model.waiting()))
    expect = f"\n  spidi: {messages!r} {error!r} {peer_close!r}\n  websockets: {model.messages!r} {model.error!r} {model.peer_close!r}"
    assert messages == model.messages, "messages differ from websockets" + expect
    assert [p for op, p in frames if op == 0xA] == model.pongs, "pongs differ from websockets" + expect
    assert (error[0] if error else None) == model.error, "failure differs from websockets" + expect
    assert peer_close == model.peer_close, "peer close differs from websockets" + expect
    closes = [p for op, p in frames if op == 0x8]
    if error is not None:
        assert state == CLOSED and closes[-1][:2] == error[0].to_bytes(2, "big"), (
            "no close frame with the error code"
        )
    elif peer_close is not None:
        echoed = 1000 if peer_close[0] == 1005 else peer_close[0]
        assert state == CLOSED and closes == [echoed.to_bytes(2, "big")], "the peer's close was not echoed"
    else:
        assert closes == [], "a close frame without a reason"


# -- engines --------------------------------------------------------------------------------------


def run_atheris(seconds: int) -> int:
    corpus = {f"seed-{i}": b"\x0b\x02\x11\x45" + seed for i, seed in enumerate(SEEDS)}
    corpus["script"] = b"\x0b\x0a\x00\x00" + b"\x09\x05abcdhello\x0d\x02abcdhi"
    return engine.run_atheris(check, WORK, corpus, "spidi_core.ws_py", seconds)


def run_hypothesis(seconds: int) -> int:
    from hypothesis import strategies as st

    payloads = st.one_of(
        st.binary(max_size=70),
        st.text(max_size=30).map(str.encode),
        st.sampled_from(
            [_HEARTBEAT, b"\xed\xa0\x80", b"\xf4\x90", b"\xe2\x82", b"\xc3", b"\x03\xe8", b"\x03"]
        ),
        st.binary(min_size=120, max_size=1400),
        st.text(min_size=100, max_size=400).map(str.encode),
        st.integers(1000, 1338).map(lambda n: "é".encode() * (n // 2)),
    )

    @st.composite
    def script(draw):
        out = bytearray()
        for _ in range(draw(st.integers(0, 8))):
            payload = draw(payloads)
            hb = draw(st.integers(0, 255)) if draw(st.integers(0, 9)) == 0 else draw(st.integers(0, 15))
            width = draw(st.integers(0, 3)) << 6
            if len(payload) >= 63:
                payload = payload[: 63 + 255 * 5]
                k = (len(payload) - 63) // 5
                payload = payload[: 63 + k * 5]
                out += bytes((hb, width | 0x3F, k))
            else:
                out += bytes((hb, width | len(payload)))
            out += draw(st.binary(min_size=4, max_size=4)) + payload
        return bytes(out)

    tokens = [
        b"\x81",
        b"\x01",
        b"\x80",
        b"\x00",
        b"\x88",
        b"\x89",
        b"\x8a",
        b"\xfe",
        b"\xff",
        b"\x7f",
        b"\x00\x00",
    ]

    mutated = engine.mutated(st, SEEDS, tokens, repeat=1, edits=6, cut=8, copy=32)

    @st.composite
    def inputs(draw):
        cuts = draw(st.lists(st.integers(0, 255), max_size=7))
        cap = draw(st.integers(0, 255))
        flags = len(cuts) | (draw(st.integers(0, 3)) << 4)
        if draw(st.booleans()):
            return bytes((cap, flags | 8, *cuts)) + draw(script())
        return bytes((cap, flags, *cuts)) + draw(st.one_of(mutated, st.binary(max_size=200)))

    examples = engine.run_hypothesis(check, inputs(), seconds, max_examples=300)
    print(f"hypothesis: {examples} inputs in {seconds} s, the builds and websockets agree")
    return 0


def main(argv: list[str] | None = None) -> int:
    return engine.main(argv, __doc__, "the WebSocket frame decoder", run_atheris, run_hypothesis)


if __name__ == "__main__":
    sys.exit(main())
