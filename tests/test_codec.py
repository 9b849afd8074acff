"""STOMP 1.2 frame codec: every test runs against the pure reference and the Cython build."""

import string
from itertools import pairwise
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spidi_core.errors import FrameError
from spidi_core.frame import Frame
from spidi_core.frames_py import FrameParserPy, serialize_frame_py

try:
    from spidi_core._frames_c import FrameParserC, serialize_frame_c
except ImportError:  # extension not built
    FrameParserC = serialize_frame_c = None

PY = SimpleNamespace(name="py", Parser=FrameParserPy, serialize=serialize_frame_py)
C = SimpleNamespace(name="c", Parser=FrameParserC, serialize=serialize_frame_c)
NEEDS_C = pytest.mark.skipif(FrameParserC is None, reason="spidi_core._frames_c not built (run `make build`)")
IMPLS = [pytest.param(PY, id="py"), pytest.param(C, id="c", marks=NEEDS_C)]

# The ``impl`` fixture is a stateless namespace, so sharing it across examples is safe.
HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

HEARTBEAT_BODY = b'{"sid":"s-01234567","ms":42}'
HEARTBEAT_FRAME = (
    b"SEND\ndestination:/app/heartbeat\ncontent-type:application/json\ncontent-length:28\n\n"
    + HEARTBEAT_BODY
    + b"\x00"
)
HEARTBEAT_PARSED = Frame(
    "SEND",
    {"destination": "/app/heartbeat", "content-type": "application/json", "content-length": "28"},
    HEARTBEAT_BODY,
)


@pytest.fixture(params=IMPLS)
def impl(request):
    """The implementation under test: ``.Parser`` and ``.serialize``."""
    return request.param


def parse_all(parser, chunks):
    """Feed every chunk and return all frames produced."""
    frames = []
    for chunk in chunks:
        frames += parser.feed(chunk)
    return frames


def error_reason(impl, data, **limits):
    """Feed ``data`` in one chunk and return the FrameError reason it raises."""
    with pytest.raises(FrameError) as info:
        impl.Parser(**limits).feed(data)
    return info.value.reason


# --------------------------------------------------------------------------------------------
# Parsing well-formed input


def test_single_frame(impl):
    parser = impl.Parser()
    assert parser.feed(HEARTBEAT_FRAME) == [HEARTBEAT_PARSED]
    assert parser.buffered == 0
    assert parser.heartbeats == 0


def test_several_frames_in_one_chunk(impl):
    data = HEARTBEAT_FRAME + b"MESSAGE\nid:1\n\nhello\x00" + b"RECEIPT\nreceipt-id:7\n\n\x00"
    assert impl.Parser().feed(data) == [
        HEARTBEAT_PARSED,
        Frame("MESSAGE", {"id": "1"}, b"hello"),
        Frame("RECEIPT", {"receipt-id": "7"}, b""),
    ]


def test_frame_split_at_every_byte_position(impl):
    data = HEARTBEAT_FRAME + b"\n" + b"MESSAGE\r\nid:1\r\n\r\nhello\x00\r\n"
    expected = [HEARTBEAT_PARSED, Frame("MESSAGE", {"id": "1"}, b"hello")]
    for cut in range(len(data) + 1):
        parser = impl.Parser()
        first = parser.feed(data[:cut])
        assert first + parser.feed(data[cut:]) == expected, cut
        assert parser.heartbeats == 2
        assert parser.buffered == 0


def test_frame_fed_one_byte_at_a_time(impl):
    data = HEARTBEAT_FRAME * 3
    parser = impl.Parser()
    frames = []
    for i in range(len(data)):
        frames += parser.feed(data[i : i + 1])
        assert parser.buffered == (i + 1) % len(HEARTBEAT_FRAME)
    assert frames == [HEARTBEAT_PARSED] * 3


def test_pending_frame_then_chunk_far_larger_than_limit(impl):
    # The C build tops its buffer up piecewise here: every frame must still come out.
    parser = impl.Parser(max_frame_size=200)
    assert parser.feed(HEARTBEAT_FRAME[:50]) == []
    frames = parser.feed(HEARTBEAT_FRAME[50:] + HEARTBEAT_FRAME * 50 + HEARTBEAT_FRAME[:7])
    assert frames == [HEARTBEAT_PARSED] * 51
    assert parser.buffered == 7


def test_crlf_line_endings(impl):
    data = b"SEND\r\ndestination:/a\r\ncontent-length:2\r\n\r\nhi\x00"
    assert impl.Parser().feed(data) == [Frame("SEND", {"destination": "/a", "content-length": "2"}, b"hi")]


def test_header_value_keeps_a_cr_that_is_not_before_lf(impl):
    # Only the CR of a CRLF is a line ending; 1.2 does not trim anything else.
    assert impl.Parser().feed(b"SEND\na: b \r \n\n\x00") == [Frame("SEND", {"a": " b \r "}, b"")]


def test_heartbeats_counted_between_frames(impl):
    parser = impl.Parser()
    assert parser.feed(b"\n\r\n\n") == []
    assert parser.heartbeats == 3
    assert parser.feed(b"SEND\n\n\x00\r\n\nSEND\n\n\x00\n") == [Frame("SEND", {}, b"")] * 2
    assert parser.heartbeats == 6
    assert parser.buffered == 0


def test_heartbeat_crlf_split_across_chunks(impl):
    parser = impl.Parser()
    assert parser.feed(b"\r") == []
    assert parser.heartbeats == 0
    assert parser.buffered == 1  # the CR waits for its LF
    assert parser.feed(b"\n\r") == []
    assert parser.heartbeats == 1
    assert parser.feed(b"\nSEND\n\n\x00\r") == [Frame("SEND", {}, b"")]
    assert parser.heartbeats == 2
    assert parser.feed(b"\n") == []
    assert parser.heartbeats == 3
    assert parser.buffered == 0


def test_eols_inside_a_frame_are_not_heartbeats(impl):
    parser = impl.Parser()
    parser.feed(b"SEND\na:1\n\nline\nline\r\n\x00")
    assert parser.heartbeats == 0


def test_heartbeats_is_read_only(impl):
    parser = impl.Parser()
    with pytest.raises(AttributeError):
        parser.heartbeats = 5
    with pytest.raises(AttributeError):
        parser.buffered = 5


def test_header_escapes_decoded(impl):
    data = b"MESSAGE\na\\cb\\\\:line1\\nline2\\rend\\c\n\n\x00"
    assert impl.Parser().feed(data) == [Frame("MESSAGE", {"a:b\\": "line1\nline2\rend:"}, b"")]


@pytest.mark.parametrize("command", ["CONNECT", "CONNECTED"])
def test_connect_headers_taken_literally(impl, command):
    data = command.encode() + b"\nlogin:a\\nb\npasscode:x\\q\n\n\x00"
    assert impl.Parser().feed(data) == [Frame(command, {"login": "a\\nb", "passcode": "x\\q"}, b"")]


def test_value_may_contain_colons(impl):
    assert impl.Parser().feed(b"SEND\nurl:http://x:80/\n\n\x00") == [
        Frame("SEND", {"url": "http://x:80/"}, b"")
    ]


def test_repeated_header_first_wins(impl):
    data = b"MESSAGE\nfoo:first\nfoo:second\nbar:x\nfoo:third\n\n\x00"
    assert impl.Parser().feed(data) == [Frame("MESSAGE", {"foo": "first", "bar": "x"}, b"")]


def test_repeated_content_length_first_wins(impl):
    data = b"SEND\ncontent-length:3\ncontent-length:1\n\na\x00b\x00"
    assert impl.Parser().feed(data) == [Frame("SEND", {"content-length": "3"}, b"a\x00b")]


def test_content_length_body_with_nul_inside(impl):
    data = b"SEND\ncontent-length:5\n\n\x00a\x00b\x00\x00SEND\n\n\x00"
    assert impl.Parser().feed(data) == [
        Frame("SEND", {"content-length": "5"}, b"\x00a\x00b\x00"),
        Frame("SEND", {}, b""),
    ]


def test_zero_content_length(impl):
    assert impl.Parser().feed(b"SEND\ncontent-length:0\n\n\x00") == [
        Frame("SEND", {"content-length": "0"}, b"")
    ]


def test_body_without_content_length_ends_at_first_nul(impl):
    parser = impl.Parser()
    assert parser.feed(b"SEND\n\nab\ncd\x00\nSEND\n\nx\x00") == [
        Frame("SEND", {}, b"ab\ncd"),
        Frame("SEND", {}, b"x"),
    ]
    assert parser.heartbeats == 1


def test_str_input_is_utf8_encoded(impl):
    parser = impl.Parser()
    assert parser.feed("SEND\nnom:Zoë\ncontent-length:3\n\nƒ!\x00") == [
        Frame("SEND", {"nom": "Zoë", "content-length": "3"}, "ƒ!".encode())
    ]


@pytest.mark.parametrize("wrap", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_bytes_like_input(impl, wrap):
    parser = impl.Parser()
    assert parser.feed(wrap(HEARTBEAT_FRAME[:50])) == []
    assert parser.feed(wrap(HEARTBEAT_FRAME[50:])) == [HEARTBEAT_PARSED]


def test_empty_chunk(impl):
    parser = impl.Parser()
    assert parser.feed(b"") == []
    assert parser.feed(b"SEND\n") == []
    assert parser.feed(b"") == []
    assert parser.buffered == 5


def test_utf8_header_names_and_values(impl):
    data = "MESSAGE\nclé:värde ✓\n\n\x00".encode()
    assert impl.Parser().feed(data) == [Frame("MESSAGE", {"clé": "värde ✓"}, b"")]


def test_invalid_limits_rejected(impl):
    with pytest.raises(ValueError):
        impl.Parser(max_frame_size=0)
    with pytest.raises(ValueError):
        impl.Parser(max_headers=-1)


# --------------------------------------------------------------------------------------------
# Limits


def test_frame_exactly_at_size_limit_is_accepted(impl):
    frame = b"SEND\n\n" + b"x" * 10 + b"\x00"
    assert impl.Parser(max_frame_size=len(frame)).feed(frame) == [Frame("SEND", {}, b"x" * 10)]
    assert error_reason(impl, frame, max_frame_size=len(frame) - 1) == "frame-too-large"


def test_frame_too_large_via_content_length_before_body_arrives(impl):
    parser = impl.Parser(max_frame_size=100)
    with pytest.raises(FrameError) as info:
        parser.feed(b"SEND\ncontent-length:95\n\n")  # 25 + 95 + NUL > 100
    assert info.value.reason == "frame-too-large"
    # A content-length that fits is fine.
    assert impl.Parser(max_frame_size=100).feed(b"SEND\ncontent-length:74\n\n") == []


def test_frame_too_large_via_huge_content_length(impl):
    data = b"SEND\ncontent-length:99999999999999999999999999\n\n"
    assert error_reason(impl, data) == "frame-too-large"


def test_frame_too_large_via_incomplete_body(impl):
    parser = impl.Parser(max_frame_size=100)
    assert parser.feed(b"SEND\n\n") == []
    assert parser.feed(b"x" * 94) == []  # exactly the limit held: not over it yet
    assert parser.buffered == 100
    with pytest.raises(FrameError) as info:
        parser.feed(b"x")
    assert info.value.reason == "frame-too-large"


def test_frame_too_large_via_incomplete_headers(impl):
    parser = impl.Parser(max_frame_size=100)
    parser.feed(b"SEND\n" + b"h:v\n" * 23)  # 97 bytes, no blank line yet
    with pytest.raises(FrameError) as info:
        parser.feed(b"h:vv")
    assert info.value.reason == "frame-too-large"


def test_frame_too_large_in_one_big_chunk(impl):
    # The buffer is capped: the rest of a huge chunk is never needed to refuse it.
    data = b"SEND\n\n" + b"x" * 1_000_000 + b"\x00"
    assert error_reason(impl, data, max_frame_size=1000) == "frame-too-large"


def test_heartbeats_do_not_count_towards_frame_size(impl):
    parser = impl.Parser(max_frame_size=7)
    assert parser.feed(b"\n" * 50 + b"SEND\n\n\x00" + b"\r\n" * 50) == [Frame("SEND", {}, b"")]
    assert parser.heartbeats == 100


def test_too_many_headers(impl):
    ok = b"SEND\na:1\nb:2\n\n\x00"
    assert impl.Parser(max_headers=2).feed(ok) == [Frame("SEND", {"a": "1", "b": "2"}, b"")]
    assert error_reason(impl, b"SEND\na:1\nb:2\nc:3\n\n\x00", max_headers=2) == "too-many-headers"
    # Repeats count: they cost parsing all the same.
    assert error_reason(impl, b"SEND\na:1\na:2\na:3\n\n\x00", max_headers=2) == "too-many-headers"


def test_too_many_headers_detected_before_frame_ends(impl):
    parser = impl.Parser(max_headers=1)
    with pytest.raises(FrameError) as info:
        parser.feed(b"SEND\na:1\nb:2\n")
    assert info.value.reason == "too-many-headers"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_header_line_exactly_at_limit(impl, eol):
    data = b"SEND" + eol + b"abcde:ghij" + eol + eol + b"\x00"
    assert impl.Parser(max_header_line=10).feed(data) == [Frame("SEND", {"abcde": "ghij"}, b"")]
    assert error_reason(impl, data, max_header_line=9) == "header-line-too-long"


def test_command_line_too_long(impl):
    assert error_reason(impl, b"SUBSCRIBE\n\n\x00", max_header_line=8) == "header-line-too-long"


def test_header_line_too_long_while_incomplete(impl):
    parser = impl.Parser(max_header_line=10)
    assert parser.feed(b"SEND\nabcde:ghij") == []  # 10 bytes: still fine
    assert parser.feed(b"\r") == []  # may be the CR of a CRLF
    with pytest.raises(FrameError) as info:
        parser.feed(b"x")
    assert info.value.reason == "header-line-too-long"


def test_command_line_too_long_while_incomplete(impl):
    parser = impl.Parser(max_header_line=10)
    with pytest.raises(FrameError) as info:
        parser.feed(b"ABCDEFGHIJK")
    assert info.value.reason == "header-line-too-long"


@pytest.mark.parametrize(
    ("max_frame_size", "reason"),
    [(15, "frame-too-large"), (16, "header-line-too-long"), (14, "frame-too-large")],
    ids=["same-byte", "line-first", "frame-first"],
)
def test_first_limit_crossed_wins(impl, max_frame_size, reason):
    # Byte 15 of "SEND\nabcdefghijk" is the 11th of the line: the line limit (10) breaks there,
    # and so does a 15-byte frame limit; a tie goes to frame-too-large.
    data = b"SEND\nabcdefghijk"
    assert error_reason(impl, data, max_frame_size=max_frame_size, max_header_line=10) == reason


def test_parser_stays_broken_after_error(impl):
    parser = impl.Parser()
    with pytest.raises(FrameError):
        parser.feed(b"SEND\nno-colon\n\n\x00")
    with pytest.raises(FrameError) as info:
        parser.feed(HEARTBEAT_FRAME)
    assert info.value.reason == "bad-header"


# --------------------------------------------------------------------------------------------
# Malformed frames


@pytest.mark.parametrize(
    "data",
    [
        b"SEND\na:b\\tc\n\n\x00",
        b"SEND\na:trailing\\\n\n\x00",
        b"SEND\na\\x:b\n\n\x00",
        "SEND\na:\\é\n\n\x00".encode(),
        b"MESSAGE\na:\\C\n\n\x00",
    ],
    ids=["tab", "trailing", "in-name", "non-ascii", "uppercase"],
)
def test_bad_escape(impl, data):
    assert error_reason(impl, data) == "bad-escape"


def test_missing_colon(impl):
    assert error_reason(impl, b"SEND\ndestination\n\n\x00") == "bad-header"


def test_missing_nul_after_content_length_body(impl):
    assert error_reason(impl, b"SEND\ncontent-length:2\n\nabc\x00") == "missing-nul"


@pytest.mark.parametrize("value", ["abc", "-1", "+1", "", " 1", "1 ", "1.0", "0x10", "1_0", "١"])
def test_bad_content_length(impl, value):
    data = f"SEND\ncontent-length:{value}\n\nx\x00".encode()
    assert error_reason(impl, data) == "bad-content-length"


@pytest.mark.parametrize(
    "command",
    [b"send", b"SEND1", b"SE ND", b"\rSEND", b"S\xc3\x89ND", b"\x00", b"\xff", b"SEND:"],
)
def test_bad_command(impl, command):
    assert error_reason(impl, command + b"\n\n\x00") == "bad-command"


@pytest.mark.parametrize("line", [b"a:\xff", b"\xc3:v", b"na\xc3\xa9\xff:v", b"a:\xed\xa0\x80"])
def test_invalid_utf8_in_header(impl, line):
    assert error_reason(impl, b"SEND\n" + line + b"\n\n\x00") == "bad-header"


def test_invalid_utf8_wins_over_bad_escape(impl):
    # Decoding comes first in the reference; the C build must agree.
    assert error_reason(impl, b"SEND\na\\q:\xff\n\n\x00") == "bad-header"


# --------------------------------------------------------------------------------------------
# Serializer


def test_serialize_escapes_names_and_values(impl):
    out = impl.serialize("MESSAGE", {"a:b": "c\nd\re\\f"})
    assert out == b"MESSAGE\na\\cb:c\\nd\\re\\\\f\n\n\x00"


@pytest.mark.parametrize("command", ["CONNECT", "CONNECTED"])
def test_serialize_connect_frames_not_escaped(impl, command):
    out = impl.serialize(command, {"version": "1.2", "x": "a:b\\c"})
    assert out == command.encode() + b"\nversion:1.2\nx:a:b\\c\n\n\x00"


def test_serialize_adds_content_length(impl):
    assert (
        impl.serialize("MESSAGE", {"id": "1"}, b"a\x00c") == b"MESSAGE\nid:1\ncontent-length:3\n\na\x00c\x00"
    )
    assert impl.serialize("MESSAGE", None, b"x" * 1234).startswith(b"MESSAGE\ncontent-length:1234\n\n")


def test_serialize_keeps_given_content_length(impl):
    assert impl.serialize("SEND", {"content-length": "2"}, b"hi") == b"SEND\ncontent-length:2\n\nhi\x00"


def test_serialize_empty_body_has_no_content_length(impl):
    assert impl.serialize("RECEIPT", {"receipt-id": "9"}) == b"RECEIPT\nreceipt-id:9\n\n\x00"
    assert impl.serialize("DISCONNECT") == b"DISCONNECT\n\n\x00"


def test_serialize_pairs_keep_order_and_repeats(impl):
    out = impl.serialize("MESSAGE", [("b", "1"), ("a", "2"), ("b", "3")])
    assert out == b"MESSAGE\nb:1\na:2\nb:3\n\n\x00"


def test_serialize_non_str_values_and_bytes_like_bodies(impl):
    assert impl.serialize("SEND", {"n": 5}, bytearray(b"ab")) == b"SEND\nn:5\ncontent-length:2\n\nab\x00"
    assert impl.serialize("SEND", {}, memoryview(b"ab")) == b"SEND\ncontent-length:2\n\nab\x00"
    assert impl.serialize("SEND", {}, "é") == b"SEND\ncontent-length:2\n\n\xc3\xa9\x00"


def test_serialize_utf8(impl):
    assert impl.serialize("MESSAGE", {"clé": "✓"}) == "MESSAGE\nclé:✓\n\n\x00".encode()


def test_round_trip(impl):
    headers = {"destination": "/topic/a:b", "weird\\name": "multi\nline\r", "content-type": "text/plain"}
    body = b"payload\x00with nul"
    frames = impl.Parser().feed(impl.serialize("MESSAGE", headers, body))
    assert frames == [Frame("MESSAGE", {**headers, "content-length": str(len(body))}, body)]


# --------------------------------------------------------------------------------------------
# Properties

header_text = st.text(
    alphabet=st.one_of(st.sampled_from(":\n\r\\"), st.characters(exclude_categories=("Cs",))),
    max_size=12,
)
plain_commands = st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=12).filter(
    lambda c: c not in ("CONNECT", "CONNECTED")
)


@st.composite
def frame_streams(draw):
    """Serialized frames with heart-beat EOLs around them, the expected frames and EOL count."""
    expected = []
    parts = []
    eols = 0
    for _ in range(draw(st.integers(0, 4))):
        gap = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), max_size=3))
        eols += len(gap)
        parts += gap
        command = draw(plain_commands)
        headers = draw(
            st.dictionaries(
                header_text.filter(lambda name: name != "content-length"), header_text, max_size=5
            )
        )
        body = draw(st.binary(max_size=40))
        if b"\x00" in body or draw(st.booleans()):
            data = serialize_frame_py(command, headers, body)
            if body:
                headers = {**headers, "content-length": str(len(body))}
        else:  # no content-length: the body runs to the NUL
            data = serialize_frame_py(command, headers)[:-1] + body + b"\x00"
        parts.append(data)
        expected.append(Frame(command, headers, body))
    gap = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), max_size=3))
    eols += len(gap)
    parts += gap
    return b"".join(parts), expected, eols


def split(data, cuts):
    """``data`` cut at the given offsets."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in pairwise(points)]


@HYPOTHESIS
@given(stream=frame_streams(), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_property_round_trip_any_split(impl, stream, cuts):
    data, expected, eols = stream
    parser = impl.Parser()
    assert parse_all(parser, split(data, cuts)) == expected
    assert parser.heartbeats == eols
    assert parser.buffered == 0


@NEEDS_C
@HYPOTHESIS
@given(
    command=st.one_of(plain_commands, st.sampled_from(["CONNECT", "CONNECTED"])),
    headers=st.one_of(
        st.dictionaries(header_text, header_text, max_size=5),
        st.lists(st.tuples(header_text, header_text), max_size=5),
    ),
    body=st.binary(max_size=40),
)
def test_property_serializers_agree(command, headers, body):
    assert serialize_frame_c(command, headers, body) == serialize_frame_py(command, headers, body)


def outcome(parser, chunks):
    """What feeding ``chunks`` produced: frames per call, heart-beats, buffered, error reason."""
    results = []
    try:
        for chunk in chunks:
            results.append(parser.feed(chunk))
    except FrameError as exc:
        return results, parser.heartbeats, exc.reason
    return results, parser.heartbeats, parser.buffered


EOLS = [b"\n", b"\r\n", b"\r"]
# Pieces that steer random bytes into every corner of the grammar.
TOKENS = [
    b"SEND",
    b"CONNECT",
    b"MESSAGE",
    b"send",
    b":",
    b"\\",
    b"\\n",
    b"\\c",
    b"\\t",
    b"\x00",
    b"content-length:",
    b"0",
    b"3",
    b"12",
    b"-1",
    b"a",
    b"\xff",
    b"\xc3\xa9",
    b"dest",
    b"x" * 20,
]


@st.composite
def frameish_bytes(draw):
    """Byte streams shaped like frames, with damage sprinkled in at every level."""
    eol = st.sampled_from([b"\n"] * 4 + [b"\r\n"] * 3 + [b"\r"])  # mostly well-formed
    piece = st.sampled_from(TOKENS)
    command = st.sampled_from([b"SEND", b"SEND", b"MESSAGE", b"CONNECT", b"send", b"S\xc3\x89ND"])
    out = []
    for _ in range(draw(st.integers(1, 3))):
        out += draw(st.lists(eol, max_size=2))
        out.append(draw(command))
        out.append(draw(eol))
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.integers(0, 3))
            if kind == 0:
                out.append(b"content-length:%d" % draw(st.integers(0, 12)))
            elif kind == 1:
                out += draw(st.lists(piece, max_size=3))
                out.append(draw(st.sampled_from([b":", b""])))
                out += draw(st.lists(piece, max_size=3))
            else:
                out.append(draw(st.sampled_from([b"a:1", b"dest:/q", b"a:2", b"id:\\c"])))
            out.append(draw(eol))
        out.append(draw(eol))
        out.append(draw(st.binary(max_size=14)))
        out.append(draw(st.sampled_from([b"\x00", b"\x00", b"", b"\x00\x00"])))
    return b"".join(out)


noisy_bytes = st.one_of(
    st.binary(max_size=120),
    st.lists(st.sampled_from(TOKENS + EOLS), max_size=40).map(b"".join),
    frameish_bytes(),
    frameish_bytes(),
)
limits = st.fixed_dictionaries(
    {
        "max_frame_size": st.one_of(st.integers(1, 100), st.just(65536), st.just(65536)),
        "max_headers": st.one_of(st.integers(0, 4), st.just(64), st.just(64)),
        "max_header_line": st.one_of(st.integers(0, 30), st.just(8192), st.just(8192)),
    }
)


@HYPOTHESIS
@given(data=noisy_bytes, cuts=st.lists(st.integers(min_value=0), max_size=6), limits=limits)
def test_property_outcome_independent_of_chunking(impl, data, cuts, limits):
    whole_frames, whole_beats, whole_end = outcome(impl.Parser(**limits), [data])
    split_frames, split_beats, split_end = outcome(impl.Parser(**limits), split(data, cuts))
    assert (split_beats, split_end) == (whole_beats, whole_end)
    if not isinstance(whole_end, str):  # no error: the same frames came out
        assert sum(split_frames, []) == sum(whole_frames, [])


@NEEDS_C
@HYPOTHESIS
@given(data=noisy_bytes, cuts=st.lists(st.integers(min_value=0), max_size=6), limits=limits)
def test_property_c_matches_reference_on_random_bytes(data, cuts, limits):
    chunks = split(data, cuts)
    assert outcome(FrameParserC(**limits), chunks) == outcome(FrameParserPy(**limits), chunks)
