"""RFC 6455 framing conformance: the same raw-socket cases against the native transport and the
websockets reference transport of a real node, requiring the same outcome.

Each case opens a WebSocket by hand (handshake, CONNECT), sends its frames as raw bytes, then a
ping "probe" and reads until the probe's pong or a close frame: the outcome is what came back in
order (STOMP commands, pongs, ``close:<code>``). Every case states the RFC 6455 outcome; both
transports must produce it, except where the websockets library is known to differ
(``REFERENCE_DIFFERS``, each with its reason; the test fails if the library stops differing, so
the list stays true). After a close frame the TCP connection must end, whoever closed first.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import pytest

from .conftest import token_for
from .stomp_client import encode

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 100_000  # the node's max_frame_size: messages up to 4x that are accepted


@pytest.fixture(params=["native", "websockets"])
def transport(request) -> str:
    return request.param


def frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: str | None = None,
    declared: int | None = None,
) -> bytes:
    """A client frame; ``length`` forces the 7/16/64-bit length form, ``declared`` lies about it."""
    n = len(payload) if declared is None else declared
    form = length or ("7" if n < 126 else "16" if n < 65536 else "64")
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if form == "7":
        head = struct.pack("!BB", first, mask_bit | n)
    elif form == "16":
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def begin(receipt: str = "r", **pad: str) -> bytes:
    """A STOMP frame answered with a RECEIPT and nothing else (Spidi accepts BEGIN harmlessly)."""
    return encode("BEGIN", {"transaction": "t", "receipt": receipt, **pad})


BIG = begin(**{f"x-pad{i}": "p" * 6000 for i in range(12)})  # ~72 KB: a 64-bit length
UTF8 = begin(transaction="caf\xe9")  # "café": the é is two bytes


class RawWs:
    """A WebSocket client on a bare TCP connection: frames in and out exactly as written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, token: str) -> RawWs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: v12.stomp\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        self = cls(reader, writer)
        self.send(
            frame(
                TEXT,
                encode(
                    "CONNECT",
                    {
                        "accept-version": "1.2",
                        "host": "x",
                        "heart-beat": "0,0",
                        "Authorization": f"Bearer {token}",
                    },
                ),
            )
        )
        op, payload = await self.read_frame()
        assert op == TEXT and payload.startswith(b"CONNECTED"), (op, payload[:200])
        return self

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def read_frame(self, timeout: float = 5.0) -> tuple[int | None, bytes]:
        """(opcode, payload) of the next server frame; (None, b"") at EOF."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = head[1] & 0x7F
            assert not head[1] & 0x80, "the server masked a frame"
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return head[0] & 0x0F, await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None, b""

    async def outcome(self, probe: bool = True) -> list[str]:
        """Everything the server answers to what was sent, up to a close, or (``probe``) up to
        the pong of a ping sent now (a pong may overtake replies still being made: not when a
        close is expected)."""
        if probe:
            self.send(frame(PING, b"probe"))
        out: list[str] = []
        while True:
            op, payload = await self.read_frame()
            if op is None:
                out.append("eof")
                return out
            if op == PONG:
                if payload == b"probe":
                    return out
                out.append(f"pong:{payload.decode()}")
            elif op == CLOSE:
                out.append(f"close:{struct.unpack('!H', payload[:2])[0] if payload else 1005}")
                return out
            else:
                out.append(payload.split(b"\n", 1)[0].decode())

    async def ends(self) -> None:
        """Answer the server's close and check the TCP connection then ends, nothing after the close."""
        self.send(frame(CLOSE, close_payload(1000)))
        assert await asyncio.wait_for(self._rest(), 5) == b""

    async def _rest(self) -> bytes | None:
        try:
            return await self.reader.read()
        except ConnectionResetError:
            return b""

    async def close(self) -> None:
        self.writer.close()


OPEN_CLOSED = ["close:1000"]  # the client's own close 1000 at the end of a case that left it open
R = ["RECEIPT"]


# (id, frames sent, RFC outcome). A case that leaves the connection open is then closed by the
# client: its outcome continues with the echo of that close.
CASES: list[tuple[str, list[bytes], list[str]]] = [
    ("text", [frame(TEXT, begin())], R),
    ("binary", [frame(BINARY, begin())], R),
    (
        "fragmented",
        [
            frame(TEXT, begin()[:5], fin=False),
            frame(CONT, begin()[5:20], fin=False),
            frame(CONT, begin()[20:]),
        ],
        R,
    ),
    ("empty-fragments", [frame(TEXT, b"", fin=False), frame(CONT, begin(), fin=False), frame(CONT, b"")], R),
    (
        "ping-between-fragments",
        [frame(TEXT, begin()[:5], fin=False), frame(PING, b"mid"), frame(CONT, begin()[5:])],
        ["pong:mid", "RECEIPT"],
    ),
    (
        "pong-between-fragments",
        [frame(TEXT, begin()[:5], fin=False), frame(PONG, b"x"), frame(CONT, begin()[5:])],
        R,
    ),
    ("ping", [frame(PING, b"abc")], ["pong:abc"]),
    ("ping-empty", [frame(PING)], ["pong:"]),
    ("ping-125", [frame(PING, b"p" * 125)], ["pong:" + "p" * 125]),
    ("unsolicited-pong", [frame(PONG, b"x"), frame(TEXT, begin())], R),
    ("two-messages-one-write", [frame(TEXT, begin("a")) + frame(TEXT, begin("b"))], ["RECEIPT", "RECEIPT"]),
    ("length-16", [frame(TEXT, begin(**{"x-pad": "p" * 300}))], R),
    ("length-64", [frame(TEXT, BIG)], R),
    ("length-16-not-minimal", [frame(TEXT, begin(), length="16")], R),
    ("length-64-not-minimal", [frame(TEXT, begin(), length="64")], R),
    (
        "utf8-split-across-fragments",
        [
            frame(TEXT, UTF8[: UTF8.index(b"\xc3") + 1], fin=False),
            frame(CONT, UTF8[UTF8.index(b"\xc3") + 1 :]),
        ],
        R,
    ),
    ("close-1000", [frame(CLOSE, close_payload(1000, b"bye"))], ["close:1000"]),
    ("close-empty", [frame(CLOSE)], ["close:1000"]),
    ("close-1001", [frame(CLOSE, close_payload(1001))], ["close:1001"]),
    ("close-4000", [frame(CLOSE, close_payload(4000, b"app"))], ["close:4000"]),
    ("close-3000", [frame(CLOSE, close_payload(3000))], ["close:3000"]),
    ("close-then-data", [frame(CLOSE, close_payload(1000)) + frame(TEXT, begin())], ["close:1000"]),
    # The close is answered at once: the RECEIPT of the message before it may not follow it.
    ("data-then-close", [frame(TEXT, begin()) + frame(CLOSE, close_payload(1000))], ["close:1000"]),
    ("close-1-byte", [frame(CLOSE, b"\x03")], ["close:1002"]),
    ("close-reason-not-utf8", [frame(CLOSE, close_payload(1000, b"\xff\xfe"))], ["close:1007"]),
    ("close-reason-123", [frame(CLOSE, close_payload(1000, b"r" * 123))], ["close:1000"]),
    *(
        (f"close-code-{code}", [frame(CLOSE, close_payload(code))], ["close:1002"])
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)
    ),
    ("close-fragmented", [frame(CLOSE, close_payload(1000), fin=False)], ["close:1002"]),
    # Control frames may interrupt a message, but a close there leaves it incomplete: both fail it.
    (
        "close-inside-fragmented",
        [frame(TEXT, b"BEG", fin=False), frame(CLOSE, close_payload(1000))],
        ["close:1002"],
    ),
    *((f"opcode-{op}", [frame(op, b"x")], ["close:1002"]) for op in (3, 7, 0xB, 0xF)),
    *((f"rsv-{rsv}", [frame(TEXT, begin(), rsv=rsv)], ["close:1002"]) for rsv in (1, 2, 4)),
    ("unmasked", [frame(TEXT, begin(), masked=False)], ["close:1002"]),
    ("continuation-first", [frame(CONT, begin())], ["close:1002"]),
    ("text-inside-fragmented", [frame(TEXT, b"BEG", fin=False), frame(TEXT, begin())], ["close:1002"]),
    ("ping-fragmented", [frame(PING, b"x", fin=False)], ["close:1002"]),
    ("ping-126", [frame(PING, b"p" * 126)], ["close:1002"]),
    ("length-64-top-bit", [frame(TEXT, b"", declared=1 << 63)], ["close:1002"]),
    ("invalid-utf8", [frame(TEXT, UTF8.replace(b"\xc3\xa9", b"\xe9"))], ["close:1007"]),
    (
        "invalid-utf8-in-fragment",
        [frame(TEXT, b"BEGIN\ntransaction:caf\xc3", fin=False), frame(CONT, b"(\nreceipt:r\n\n\x00")],
        ["close:1007"],
    ),
    ("utf8-truncated-at-end", [frame(TEXT, b"BEGIN\ntransaction:t\n\n\x00\xc3")], ["close:1007"]),
    ("utf8-surrogate", [frame(TEXT, b"BEGIN\ntransaction:\xed\xa0\x80\n\n\x00")], ["close:1007"]),
    ("oversize", [frame(TEXT, b"x" * (4 * MAX_FRAME + 1))], ["close:1009"]),
    ("oversize-declared", [frame(TEXT, b"", declared=4 * MAX_FRAME + 1)], ["close:1009"]),
    (
        "oversize-fragmented",
        [frame(TEXT, b"x" * (2 * MAX_FRAME), fin=False), frame(CONT, b"x" * (2 * MAX_FRAME + 1))],
        ["close:1009"],
    ),
    # The server closes: DISCONNECT is answered with its RECEIPT, then a close 1000.
    ("server-close", [frame(TEXT, encode("DISCONNECT", {"receipt": "bye"}))], ["RECEIPT", "close:1000"]),
]

# Where the websockets library (the reference transport) gives another outcome, and why.
REFERENCE_DIFFERS: dict[str, tuple[list[str], str]] = {
    "close-empty": (
        ["close:1005"],
        "echoes the empty close payload (no code) where Spidi answers 1000; RFC 6455 5.5.1 allows both",
    ),
    "length-64-top-bit": (
        ["close:1009"],
        "reads the length as unsigned and refuses it as too big; RFC 6455 5.2 makes the top bit a "
        "protocol error (1002)",
    ),
    "invalid-utf8": (
        ["ERROR", "close:1007"],
        "recv(decode=False) skips the UTF-8 check of text frames, so the STOMP codec answers an "
        "ERROR before the close; RFC 6455 8.1 fails the connection at once",
    ),
    "invalid-utf8-in-fragment": (
        ["ERROR", "close:1007"],
        "as invalid-utf8, found once the message is reassembled",
    ),
    "utf8-truncated-at-end": (["ERROR", "close:1007"], "as invalid-utf8"),
    "utf8-surrogate": (["ERROR", "close:1007"], "as invalid-utf8"),
}


@pytest.mark.parametrize("case, frames, expected", CASES, ids=[c[0] for c in CASES])
@pytest.mark.hardening(
    "hostile",
    "RFC 6455 framing by raw socket: fragments, control frames, ping/pong, close codes, bad opcodes, RSV, "
    "unmasked frames, 16/64-bit lengths, invalid UTF-8, oversize messages",
    "The RFC outcome on the native transport; the websockets reference the same but for its listed differences",
)
async def test_framing_case(node_factory, transport, case, frames, expected):
    node = await node_factory(max_frame_size=MAX_FRAME)
    if transport == "websockets" and case in REFERENCE_DIFFERS:
        expected = REFERENCE_DIFFERS[case][0]
    ws = await RawWs.open(node.transport.port, token_for(node.settings, "raw", "spidi:user"))
    try:
        for data in frames:
            ws.send(data)
        got = await ws.outcome(probe=not expected[-1].startswith("close:"))
        if not got or not got[-1].startswith("close:"):
            # Still open: the client closes, the server echoes it.
            ws.send(frame(CLOSE, close_payload(1000)))
            got += await ws.outcome()
            expected = expected + OPEN_CLOSED
        assert got == expected
        await ws.ends()
    finally:
        await ws.close()
    # Every connection is released, whoever closed it.
    for _ in range(100):
        if not node.clients and node.transport.admission.open == 0:
            break
        await asyncio.sleep(0.02)
    assert not node.clients and node.transport.admission.open == 0


@pytest.mark.parametrize("case", sorted(REFERENCE_DIFFERS))
def test_reference_differences_are_cases(case):
    """Each listed difference names a case and says why."""
    assert case in {c[0] for c in CASES} and REFERENCE_DIFFERS[case][1]
