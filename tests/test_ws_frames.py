"""RFC 6455 server-side framing: every case runs against the pure reference and the Cython build."""

import os
from itertools import pairwise
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spidi_core.ws_py import (
    CLOSED,
    CLOSING,
    OPEN,
    WsStreamPy,
    encode_close_py,
    encode_frames_py,
    encode_text_py,
)

try:
    from spidi_core._ws_c import WsStreamC, encode_close_c, encode_frames_c, encode_text_c
except ImportError:  # extension not built
    WsStreamC = encode_close_c = encode_frames_c = encode_text_c = None

PY = SimpleNamespace(
    name="py",
    Stream=WsStreamPy,
    encode_text=encode_text_py,
    encode_frames=encode_frames_py,
    encode_close=encode_close_py,
)
C = SimpleNamespace(
    name="c",
    Stream=WsStreamC,
    encode_text=encode_text_c,
    encode_frames=encode_frames_c,
    encode_close=encode_close_c,
)
NEEDS_C = pytest.mark.skipif(WsStreamC is None, reason="spidi_core._ws_c not built (run `make build`)")
IMPLS = [pytest.param(PY, id="py"), pytest.param(C, id="c", marks=NEEDS_C)]

HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
MASK = b"\x37\xfa\x21\x3d"
HEARTBEAT = (
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\ncontent-length:45\n\n"
    b'{"sessionId":"s-0123456789abcdef","latencyMs":42}\x00'
)


@pytest.fixture(params=IMPLS)
def impl(request):
    """The implementation under test: ``.Stream`` and the three encoders."""
    return request.param


def frame(opcode, payload=b"", *, fin=True, rsv=0, mask=MASK, width=None):
    """A client frame (masked unless ``mask`` is None); ``width`` forces the 7/16/64-bit length."""
    n = len(payload)
    if width is None:
        width = 7 if n < 126 else 16 if n < 65536 else 64
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if mask is not None else 0
    if width == 7:
        head = bytes((b0, mbit | n))
    elif width == 16:
        head = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    return code.to_bytes(2, "big") + reason


def server_frame(opcode, payload):
    """A server frame as the stream writes it (FIN, unmasked)."""
    return frame(opcode, payload, mask=None)


def outcome(stream, chunks):
    """Everything observable after feeding ``chunks``."""
    messages = []
    for chunk in chunks:
        messages += stream.feed(chunk)
    return messages, stream.take_output(), stream.state, stream.error, stream.peer_close, stream.buffered


def feed_all(impl, data, max_message=1 << 20):
    return outcome(impl.Stream(max_message), [data])


def failure(impl, data, max_message=1 << 20):
    """Feed ``data`` in one chunk; the (code, reason) the stream failed with, checking its close frame."""
    stream = impl.Stream(max_message)
    stream.feed(data)
    assert stream.state == CLOSED
    assert stream.error is not None
    code, reason = stream.error
    assert stream.take_output().endswith(impl.encode_close(code, reason))
    assert stream.feed(frame(TEXT, b"after")) == []
    assert stream.take_output() == b""
    return stream.error


# --------------------------------------------------------------------------------------------
# Data messages and lengths


def test_text_and_binary_messages(impl):
    data = frame(TEXT, HEARTBEAT) + frame(BINARY, b"\x00\xff\x80") + frame(TEXT, b"")
    assert feed_all(impl, data) == ([HEARTBEAT, b"\x00\xff\x80", b""], b"", OPEN, None, None, 0)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 125, 126, 127, 1023, 1024, 1025, 65535, 65536, 70001])
def test_lengths_7_16_and_64_bit(impl, size):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert feed_all(impl, frame(BINARY, payload))[0] == [payload]


@pytest.mark.parametrize("width", [7, 16, 64])
def test_non_minimal_length_encodings_are_accepted(impl, width):
    assert feed_all(impl, frame(TEXT, b"hi", width=width))[0] == [b"hi"]


def test_masks_of_every_phase(impl):
    # The C build unmasks 8 bytes at a time: payload lengths around that stride, odd masks.
    for mask in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04", b"\x80\x7f\x00\xaa"):
        for n in range(0, 40):
            payload = bytes((i * 37 + 11) % 256 for i in range(n))
            assert feed_all(impl, frame(BINARY, payload, mask=mask))[0] == [payload], (mask, n)


def test_messages_before_a_failure_are_returned(impl):
    data = frame(TEXT, b"one") + frame(TEXT, b"two") + frame(3, b"bad") + frame(TEXT, b"three")
    messages, output, state, error, _, _ = feed_all(impl, data)
    assert messages == [b"one", b"two"]
    assert (state, error) == (CLOSED, (1002, "invalid opcode"))
    assert output == impl.encode_close(1002, "invalid opcode")


# --------------------------------------------------------------------------------------------
# Header checks


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_unknown_opcodes_fail_1002(impl, opcode):
    assert failure(impl, frame(opcode, b"x")) == (1002, "invalid opcode")


def test_unmasked_client_frame_fails_1002(impl):
    assert failure(impl, frame(TEXT, b"hello", mask=None)) == (1002, "unmasked frame")


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING])
def test_rsv_bits_without_extension_fail_1002(impl, rsv, opcode):
    assert failure(impl, frame(opcode, b"x", rsv=rsv)) == (1002, "reserved bits set")


def test_64_bit_length_with_top_bit_fails_1002(impl):
    head = bytes((0x82, 0xFF)) + (1 << 63 | 5).to_bytes(8, "big")
    assert failure(impl, head) == (1002, "frame length too large")


def test_checks_happen_on_the_header_before_the_payload(impl):
    # A declared 1 MB frame over a 1 KB cap is refused from its 10 header bytes alone.
    head = bytes((0x82, 0xFF)) + (1 << 20).to_bytes(8, "big")
    assert failure(impl, head, max_message=1024) == (1009, "message too big")
    assert failure(impl, bytes((0x89, 0xFE, 0x00, 0x7E))) == (1002, "control frame too long")


def test_check_order_follows_the_reference(impl):
    # Invalid opcode beats a missing mask; the size cap beats RSV bits (as websockets).
    assert failure(impl, frame(3, b"x", mask=None)) == (1002, "invalid opcode")
    assert failure(impl, frame(BINARY, b"x" * 20, rsv=0x40), max_message=10) == (1009, "message too big")
    assert failure(impl, frame(PING, b"x" * 126, rsv=0x40)) == (1002, "control frame too long")


# --------------------------------------------------------------------------------------------
# Size caps


def test_message_at_the_cap_passes_one_byte_over_fails_1009(impl):
    assert feed_all(impl, frame(BINARY, b"a" * 100), max_message=100)[0] == [b"a" * 100]
    assert failure(impl, frame(BINARY, b"a" * 101), max_message=100) == (1009, "message too big")


def test_fragmented_message_over_the_cap_fails_1009(impl):
    stream = impl.Stream(100)
    assert stream.feed(frame(TEXT, b"a" * 60, fin=False)) == []
    assert stream.buffered == 60
    assert stream.feed(frame(CONT, b"b" * 40, fin=False)) == []
    assert stream.feed(frame(CONT, b"c", fin=True)) == []
    assert stream.error == (1009, "message too big")
    assert stream.buffered == 0


def test_control_frames_do_not_count_against_the_message_cap(impl):
    data = frame(TEXT, b"a" * 10, fin=False) + frame(PING, b"p" * 125) + frame(CONT, b"b" * 10)
    messages, output, *_ = feed_all(impl, data, max_message=20)
    assert messages == [b"a" * 10 + b"b" * 10]
    assert output == server_frame(PONG, b"p" * 125)


# --------------------------------------------------------------------------------------------
# Fragmentation and control frames


def test_fragmented_text_with_control_frames_between(impl):
    data = (
        frame(TEXT, b"SEND\n", fin=False)
        + frame(PING, b"are you there")
        + frame(CONT, b"destination:/a\n\n", fin=False)
        + frame(PONG, b"unsolicited")
        + frame(CONT, b"body\x00", fin=True)
        + frame(BINARY, b"next")
    )
    messages, output, state, error, _, buffered = feed_all(impl, data)
    assert messages == [b"SEND\ndestination:/a\n\nbody\x00", b"next"]
    assert output == server_frame(PONG, b"are you there")
    assert (state, error, buffered) == (OPEN, None, 0)


def test_fragmented_binary_with_empty_fragments(impl):
    data = frame(BINARY, b"", fin=False) + frame(CONT, b"\x00\x01", fin=False) + frame(CONT, b"")
    assert feed_all(impl, data)[0] == [b"\x00\x01"]


def test_continuation_without_a_start_fails_1002(impl):
    assert failure(impl, frame(CONT, b"x")) == (1002, "unexpected continuation frame")


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_data_frame_inside_a_fragmented_message_fails_1002(impl, opcode):
    data = frame(TEXT, b"a", fin=False) + frame(opcode, b"b")
    assert failure(impl, data) == (1002, "expected a continuation frame")


def test_ping_answered_with_the_same_payload_pong_ignored(impl):
    stream = impl.Stream(1024)
    assert stream.feed(frame(PING, b"") + frame(PONG, b"x") + frame(PING, b"\x00\xff" * 62 + b"!")) == []
    assert stream.take_output() == server_frame(PONG, b"") + server_frame(PONG, b"\x00\xff" * 62 + b"!")
    assert stream.take_output() == b""


def test_control_frame_over_125_bytes_fails_1002(impl):
    assert failure(impl, frame(PING, b"x" * 126)) == (1002, "control frame too long")
    assert failure(impl, frame(CLOSE, close_payload(1000, b"x" * 124))) == (1002, "control frame too long")


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frame_fails_1002(impl, opcode):
    assert failure(impl, frame(opcode, b"", fin=False)) == (1002, "fragmented control frame")


# --------------------------------------------------------------------------------------------
# Closing handshake


def test_peer_close_is_echoed_and_ends_the_stream(impl):
    stream = impl.Stream(1024)
    assert stream.feed(frame(TEXT, b"last") + frame(CLOSE, close_payload(1001, "bientôt".encode()))) == [
        b"last"
    ]
    assert stream.take_output() == server_frame(CLOSE, close_payload(1001))
    assert (stream.state, stream.peer_close, stream.error) == (CLOSED, (1001, "bientôt"), None)
    assert stream.feed(frame(TEXT, b"after") + frame(PING, b"p")) == []
    assert stream.take_output() == b""


def test_empty_peer_close_means_1005_and_is_answered_1000(impl):
    stream = impl.Stream(1024)
    stream.feed(frame(CLOSE))
    assert stream.peer_close == (1005, "")
    assert stream.take_output() == impl.encode_close(1000, "")


def test_close_frame_of_one_byte_fails_1002(impl):
    assert failure(impl, frame(CLOSE, b"\x03")) == (1002, "close frame too short")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_close_codes_a_peer_may_not_send_fail_1002(impl, code):
    assert failure(impl, frame(CLOSE, close_payload(code))) == (1002, "invalid close code")


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
)
def test_close_codes_a_peer_may_send_are_echoed(impl, code):
    stream = impl.Stream(1024)
    stream.feed(frame(CLOSE, close_payload(code, b"why")))
    assert (stream.peer_close, stream.error) == ((code, "why"), None)
    assert stream.take_output() == impl.encode_close(code, "")


def test_close_reason_not_utf8_fails_1007(impl):
    assert failure(impl, frame(CLOSE, close_payload(1000, b"ok\xc3("))) == (
        1007,
        "invalid UTF-8 in close reason",
    )
    # The reason is checked before the code, as websockets does.
    assert failure(impl, frame(CLOSE, close_payload(999, b"\xff"))) == (1007, "invalid UTF-8 in close reason")


def test_close_in_the_middle_of_a_fragmented_message_fails_1002(impl):
    data = frame(TEXT, b"half", fin=False) + frame(CLOSE, close_payload(1000))
    assert failure(impl, data) == (1002, "incomplete fragmented message")


def test_our_close_then_the_peers(impl):
    stream = impl.Stream(1024)
    stream.close(1001, "going away")
    assert stream.state == CLOSING
    assert stream.take_output() == impl.encode_close(1001, "going away")
    stream.close(1000, "again")  # only one close frame is ever sent
    assert stream.take_output() == b""
    # Data after our close is dropped, pings are no longer answered; the peer's close ends it.
    assert stream.feed(frame(TEXT, b"late") + frame(PING, b"p")) == []
    assert stream.feed(frame(CLOSE, close_payload(1000))) == []
    assert (stream.state, stream.peer_close, stream.error) == (CLOSED, (1000, ""), None)
    assert stream.take_output() == b""


def test_failure_while_closing_sends_no_second_close(impl):
    stream = impl.Stream(1024)
    stream.close(1000, "")
    stream.take_output()
    stream.feed(frame(TEXT, b"x", mask=None))
    assert (stream.state, stream.error) == (CLOSED, (1002, "unmasked frame"))
    assert stream.take_output() == b""


# --------------------------------------------------------------------------------------------
# UTF-8

VALID_TEXT = "aé€𝄞 z\u07ff\u0800\uffff\U00010000\U0010ffff".encode()
INVALID_TEXT = [
    b"\x80",  # lone continuation
    b"\xc0\xaf",  # overlong
    b"\xc1\xbf",
    b"\xe0\x80\xaf",  # overlong 3-byte
    b"\xed\xa0\x80",  # surrogate
    b"\xed\xbf\xbf",
    b"\xf0\x80\x80\xaf",  # overlong 4-byte
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xce\xba\xe1",  # truncated at the end of the message
    b"\xe2\x82",
    b"a\xc3(b",
]


def test_valid_text_split_at_every_byte_boundary(impl):
    for cut in range(len(VALID_TEXT) + 1):
        data = frame(TEXT, VALID_TEXT[:cut], fin=False) + frame(CONT, VALID_TEXT[cut:])
        assert feed_all(impl, data)[:4] == ([VALID_TEXT], b"", OPEN, None), cut
    assert feed_all(impl, frame(TEXT, VALID_TEXT))[0] == [VALID_TEXT]


@pytest.mark.parametrize("bad", INVALID_TEXT)
def test_invalid_text_fails_1007_however_split(impl, bad):
    text = b"ok " + bad + b" end" if bad not in (b"\xce\xba\xe1", b"\xe2\x82") else b"ok " + bad
    assert failure(impl, frame(TEXT, text)) == (1007, "invalid UTF-8")
    for cut in range(len(text) + 1):
        for third in (cut, (cut + len(text)) // 2):
            data = frame(TEXT, text[:cut], fin=False) + frame(CONT, text[cut:third], fin=False)
            data += frame(CONT, text[third:])
            assert failure(impl, data) == (1007, "invalid UTF-8"), (cut, third)
    # Binary messages are not text: the same bytes pass.
    assert feed_all(impl, frame(BINARY, text))[0] == [text]


def test_invalid_text_fails_at_the_fragment_that_proves_it(impl):
    # The surrogate is refused as soon as ED A0 is seen, before the message's last fragment.
    for first in (b"ok\xed\xa0", b"\xf4\x90", b"\xe0\x80", b"\xc0"):
        stream = impl.Stream(1024)
        stream.feed(frame(TEXT, first, fin=False))
        assert stream.error == (1007, "invalid UTF-8"), first
    # A sequence that may still complete waits for the next fragment.
    for first in (b"ok\xed\x9f", b"\xf4\x8f", b"\xe0\xa0", b"\xc2"):
        stream = impl.Stream(1024)
        stream.feed(frame(TEXT, first, fin=False))
        assert stream.error is None, first


# --------------------------------------------------------------------------------------------
# Chunking: the outcome depends on the bytes, never on how they were split

MIXED = (
    frame(TEXT, HEARTBEAT)
    + frame(PING, b"ping!")
    + frame(TEXT, "déjà ".encode(), fin=False)
    + frame(PONG, b"")
    + frame(CONT, "vu €".encode(), fin=False)
    + frame(CONT, b"!")
    + frame(BINARY, bytes(range(200)))
    + frame(TEXT, b"x" * 300, width=64)
    + frame(CLOSE, close_payload(1000, b"done"))
)


def test_multi_frame_input_split_at_every_byte_boundary(impl):
    whole = feed_all(impl, MIXED)
    assert whole[0] == [HEARTBEAT, "déjà vu €!".encode(), bytes(range(200)), b"x" * 300]
    assert whole[2:5] == (CLOSED, None, (1000, "done"))
    for cut in range(len(MIXED) + 1):
        assert outcome(impl.Stream(1 << 20), [MIXED[:cut], MIXED[cut:]]) == whole, cut


def test_multi_frame_input_fed_one_byte_at_a_time(impl):
    stream = impl.Stream(1 << 20)
    chunks = [MIXED[i : i + 1] for i in range(len(MIXED))]
    assert outcome(stream, chunks) == feed_all(impl, MIXED)


def test_buffered_counts_partial_frames_and_fragments(impl):
    stream = impl.Stream(1024)
    one = frame(TEXT, HEARTBEAT)
    assert stream.feed(one[:10]) == []
    assert stream.buffered == 10
    assert stream.feed(one[10:] + one[:3]) == [HEARTBEAT]
    assert stream.buffered == 3
    assert stream.feed(one[3:]) == [HEARTBEAT]
    assert stream.buffered == 0
    stream.feed(frame(BINARY, b"abc", fin=False))
    assert stream.buffered == 3
    stream.feed(frame(CONT, b"de"))
    assert stream.buffered == 0


def test_a_big_chunk_after_a_partial_frame(impl):
    # The C build tops its buffer up to the held frame's end only, then parses the rest in place.
    one = frame(TEXT, HEARTBEAT)
    stream = impl.Stream(1 << 20)
    assert stream.feed(one[:1]) == []
    assert stream.feed(one[1:] + one * 100 + one[:-1]) == [HEARTBEAT] * 101
    assert stream.buffered == len(one) - 1


@HYPOTHESIS
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from([TEXT, BINARY, CONT, CLOSE, PING, PONG, 3]),
            st.binary(max_size=140) | st.text(max_size=40).map(str.encode),
            st.booleans(),
            st.sampled_from([0, 0, 0, 0x40]),
            st.sampled_from([None, 7, 16, 64]),
        ),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=4),
    max_message=st.sampled_from([0, 5, 64, 1 << 20]),
)
def test_builds_agree_on_random_streams(frames, cuts, max_message):
    if WsStreamC is None:
        pytest.skip("spidi_core._ws_c not built")
    data = b""
    for opcode, payload, fin, rsv, width in frames:
        if width == 7 and len(payload) > 125:
            width = None
        data += frame(opcode, payload, fin=fin, rsv=rsv, width=width)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in pairwise(points)]
    assert outcome(WsStreamC(max_message), chunks) == outcome(WsStreamPy(max_message), chunks)


# --------------------------------------------------------------------------------------------
# Encoders


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_encode_text_header_forms(impl, size):
    payload = b"s" * size
    assert impl.encode_text(payload) == server_frame(TEXT, payload)


def test_encode_frames_is_the_concatenation(impl):
    chunks = [b"", b"MESSAGE\n\n\x00", b"r" * 126, b"z" * 70000]
    assert impl.encode_frames(chunks) == b"".join(impl.encode_text(c) for c in chunks)
    assert impl.encode_frames([]) == b""


def test_encode_close(impl):
    assert impl.encode_close(1000, "") == b"\x88\x02\x03\xe8"
    assert impl.encode_close(4000, "né") == server_frame(CLOSE, close_payload(4000, "né".encode()))
    assert impl.encode_close(1005, "ignored") == b"\x88\x00"
    # A long reason is cut to 123 bytes at a character boundary: 61 two-byte characters fit.
    long = impl.encode_close(1008, "é" * 100)
    assert long == server_frame(CLOSE, close_payload(1008, "é".encode() * 61))


@NEEDS_C
def test_encoders_agree_across_builds():
    for chunks in ([b"a"], [b"x" * 125, b"y" * 126, b""], [bytes(range(256)) * 300]):
        assert encode_frames_c(chunks) == encode_frames_py(chunks)
        assert encode_text_c(chunks[0]) == encode_text_py(chunks[0])
    for code, reason in ((1000, ""), (1011, "boom"), (3001, "€" * 50), (1005, "")):
        assert encode_close_c(code, reason) == encode_close_py(code, reason)


@NEEDS_C
def test_the_exported_build_follows_the_switch():
    import spidi_core

    turned_off = os.environ.get("SPIDI_NO_EXTENSIONS", "") in ("1", "true", "yes")
    assert spidi_core.WsStream is (WsStreamPy if turned_off else WsStreamC)
    assert spidi_core.encode_frames is (encode_frames_py if turned_off else encode_frames_c)
