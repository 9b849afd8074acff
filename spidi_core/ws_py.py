"""RFC 6455 WebSocket framing, server side, pure-Python reference.

This module is the specification: ``_ws_c.pyx`` must behave identically, message for message,
close code for close code and reason for reason. Keep it clear first and reasonably fast second.

A ``WsStream`` serves one accepted connection after the HTTP upgrade handshake. Bytes from the
socket go in through ``feed``, which returns the complete data messages (text and binary payloads
alike, as bytes); frames the stream must send (pongs, close frames) come out of ``take_output``.
No I/O happens here.

Frames are checked as soon as their header is complete, before their payload arrives, in this
order (the first violation fails the connection; the close code is in brackets):

1. the opcode is one of 0, 1, 2, 8, 9, 10 (1002 ``invalid opcode``);
2. the MASK bit is set (1002 ``unmasked frame``);
3. a 64-bit length has its most significant bit clear (1002 ``frame length too large``);
4. a control frame carries at most 125 bytes (1002 ``control frame too long``); a data frame
   keeps the message, counting the fragments already held, within ``max_message``
   (1009 ``message too big``);
5. the RSV bits are clear: no extension is negotiated (1002 ``reserved bits set``);
6. a control frame has FIN (1002 ``fragmented control frame``);
7. a continuation frame continues a fragmented message (1002 ``unexpected continuation frame``)
   and a text or binary frame does not interrupt one (1002 ``expected a continuation frame``).

Once the payload is complete: a text message's bytes must be valid UTF-8 (1007 ``invalid UTF-8``),
checked fragment by fragment and failing at the first fragment that proves the text invalid; a
close frame's payload is empty, or a code and a UTF-8 reason (length 1: 1002 ``close frame too
short``; reason not UTF-8: 1007 ``invalid UTF-8 in close reason``; code not one a peer may send:
1002 ``invalid close code``), and a close in the middle of a fragmented message fails with 1002
``incomplete fragmented message`` (as the websockets library does). This order follows the
websockets library's parser, which ``fuzzing/fuzz_ws.py`` compares us with.

Failing the connection (``error`` set) queues our close frame with that code and reason (unless
our close was already sent) and moves to CLOSED. A ping is answered with a pong carrying the same
payload while OPEN; pongs are ignored. The peer's close is answered with a close echoing its code
(1000 when it gave none) and moves to CLOSED. After ``close()`` (CLOSING) frames are still parsed
and checked, but data messages are dropped and pings are not answered. In CLOSED every further
``feed`` returns ``[]``. Messages completed before a failure in the same ``feed`` are returned.

The heartbeat fast lane (``set_lane(lane, conn_key)``, ``lane_py``): while a lane is set, a complete
single-frame text message is first offered to it, as long as no message has yet been returned in
the same ``feed`` (so no reply overtakes the reply to an earlier message). A message the lane takes
is not returned; the RECEIPT it answers with (if any) is queued as a text frame, in order with the
pongs, for ``take_output``, which the transport writes before handing the messages to Python.
"""

import codecs

__all__ = ["CLOSED", "CLOSING", "OPEN", "WsStreamPy", "encode_close_py", "encode_frames_py", "encode_text_py"]

# Stream states.
OPEN = 0
CLOSING = 1  # our close frame is queued; waiting for the peer's
CLOSED = 2  # both closes seen, or we failed the connection

_OP_CONT = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA
_OPCODES = frozenset((_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG))

# Close codes a peer may put on the wire (RFC 6455 7.4.1 and the IANA registry); 3000-4999 too.
_PEER_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

_NO_STATUS = 1005  # "the peer gave no code": never sent on the wire
_MAX_CLOSE_REASON = 123  # 125 bytes of control payload minus the 2-byte code

_utf8_decode = codecs.utf_8_decode


def _valid_close_code(code: int) -> bool:
    return code in _PEER_CLOSE_CODES or 3000 <= code < 5000


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (one big-integer XOR: no per-byte loop);
    masking and unmasking are the same operation."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _utf8_step(tail: bytes, chunk: bytes, final: bool) -> bytes | None:
    """Validate the next piece of a text message; return the incomplete trailing sequence (to
    prepend to the next piece) or None when the text is already proven invalid.

    CPython's decoder leaves ED A0..BF (a UTF-16 surrogate, never valid) pending until its third
    byte; the C build's DFA rejects it at the second, so the reference does too.
    """
    data = tail + chunk if tail else chunk
    try:
        _, used = _utf8_decode(data, "strict", final)
    except UnicodeDecodeError:
        return None
    rest = data[used:]
    if len(rest) >= 2 and rest[0] == 0xED and rest[1] >= 0xA0:
        return None
    return rest


def _header(opcode: int, length: int) -> bytes:
    """A server frame's header: FIN set, no mask."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


def encode_text_py(payload: bytes) -> bytes:
    """One unmasked text frame with FIN set carrying ``payload``."""
    return _header(_OP_TEXT, len(payload)) + payload


def encode_frames_py(chunks: list[bytes]) -> bytes:
    """Each chunk as one text frame, concatenated, so a batch costs one ``transport.write``."""
    return b"".join([_header(_OP_TEXT, len(chunk)) + chunk for chunk in chunks])


def encode_close_py(code: int, reason: str) -> bytes:
    """A close frame with ``code`` and ``reason`` (UTF-8, cut at a character boundary to fit 123
    bytes); code 1005 ("no status") gives an empty close frame."""
    if code == _NO_STATUS:
        return b"\x88\x00"
    raw = reason.encode("utf-8")
    if len(raw) > _MAX_CLOSE_REASON:
        raw = raw[:_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    payload = code.to_bytes(2, "big") + raw
    return bytes((0x80 | _OP_CLOSE, len(payload))) + payload


class WsStreamPy:
    """RFC 6455 server-side frame stream of one connection (pure-Python reference).

    ``feed(data)`` returns the data messages completed; ``take_output()`` the frames to send.
    ``state`` is OPEN (0), CLOSING (1) or CLOSED (2); ``error`` the (code, reason) we failed the
    connection with; ``peer_close`` the peer's (code, reason), 1005 when its close had no code.
    """

    __slots__ = (
        "max_message",
        "state",
        "peer_close",
        "error",
        "_buf",
        "_out",
        "_frag_op",
        "_frag",
        "_frag_size",
        "_utf8_tail",
        "_lane",
        "_conn_key",
    )

    def __init__(self, max_message: int):
        if max_message < 0:
            raise ValueError("max_message must be >= 0")
        self.max_message = max_message
        self.state = OPEN
        self.peer_close: tuple[int, str] | None = None
        self.error: tuple[int, str] | None = None
        self._buf = b""  # bytes of an incomplete frame
        self._out: bytearray | None = None  # frames queued for the peer
        self._frag_op = 0  # opcode of the fragmented message in progress, 0 = none
        self._frag: list[bytes] | None = None  # its payloads so far
        self._frag_size = 0
        self._utf8_tail = b""  # its incomplete trailing UTF-8 sequence (text only)
        self._lane = None  # the heartbeat fast lane (set_lane)
        self._conn_key = 0

    @property
    def buffered(self) -> int:
        """Bytes held for a partial frame or a fragmented message (0 when idle)."""
        return len(self._buf) + self._frag_size

    def set_lane(self, lane, conn_key: int) -> None:
        """Offer each complete single-frame text message to ``lane`` (a HeartbeatLane; None to
        stop) for connection ``conn_key`` first, while no message has yet been returned in the
        same ``feed`` call; a message the lane takes is not returned, its receipt (if any) is
        queued as a text frame for ``take_output``."""
        self._lane = lane
        self._conn_key = conn_key

    def take_output(self) -> bytes:
        """The frames queued since the last call (pongs, close frames, lane receipts), b"" if none."""
        out = self._out
        if out is None:
            return b""
        self._out = None
        return bytes(out)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake: queue our close frame; the stream becomes CLOSING."""
        if self.state != OPEN:
            return
        self._queue(encode_close_py(code, reason))
        self.state = CLOSING

    def feed(self, data: bytes) -> list[bytes]:
        """Consume bytes from the peer; return the data messages they complete, in order."""
        if self.state == CLOSED:
            return []
        buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = 0
        messages: list[bytes] = []
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            if opcode not in _OPCODES:
                self._fail(1002, "invalid opcode")
                break
            if not b1 & 0x80:
                self._fail(1002, "unmasked frame")
                break
            length = b1 & 0x7F
            head = 6
            if length == 126:
                head = 8
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                head = 14
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                if length >> 63:
                    self._fail(1002, "frame length too large")
                    break
            control = opcode >= _OP_CLOSE
            if control:
                if length > 125:
                    self._fail(1002, "control frame too long")
                    break
            elif self._frag_size + length > self.max_message:
                self._fail(1009, "message too big")
                break
            if b0 & 0x70:
                self._fail(1002, "reserved bits set")
                break
            fin = b0 & 0x80
            if control:
                if not fin:
                    self._fail(1002, "fragmented control frame")
                    break
            elif opcode == _OP_CONT:
                if not self._frag_op:
                    self._fail(1002, "unexpected continuation frame")
                    break
            elif self._frag_op:
                self._fail(1002, "expected a continuation frame")
                break
            end = pos + head + length
            if end > n:
                break
            payload = apply_mask(buf[pos + head : end], buf[pos + head - 4 : pos + head])
            pos = end
            if control:
                if opcode == _OP_PING:
                    if self.state == OPEN:
                        self._queue(_header(_OP_PONG, length) + payload)
                elif opcode == _OP_CLOSE:
                    self._on_close(payload)
                    break
            elif fin and opcode != _OP_CONT:
                if opcode == _OP_TEXT and not payload.isascii() and _utf8_step(b"", payload, True) is None:
                    self._fail(1007, "invalid UTF-8")
                    break
                self._message(messages, payload, opcode == _OP_TEXT)
            else:
                if opcode != _OP_CONT:
                    self._frag_op = opcode
                    self._frag = []
                if self._frag_op == _OP_TEXT:
                    tail = _utf8_step(self._utf8_tail, payload, bool(fin))
                    if tail is None:
                        self._fail(1007, "invalid UTF-8")
                        break
                    self._utf8_tail = tail
                self._frag.append(payload)
                self._frag_size += length
                if fin:
                    message = b"".join(self._frag)
                    self._end_fragments()
                    self._message(messages, message, False)
            if self.state == CLOSED:
                break
        if self.state == CLOSED:
            self._buf = b""
            self._end_fragments()
        else:
            self._buf = buf[pos:] if pos < n else b""
        return messages

    def _message(self, messages: list[bytes], payload: bytes, single_text: bool) -> None:
        """A data message is complete (``single_text``: one unfragmented text frame).

        The one place a message leaves the stream: the Cython build's fast-lane hook sits here.
        """
        if self.state != OPEN:
            return
        # The fast lane only while nothing went to Python in this feed: replies keep their order
        # (the transport writes take_output() before handing the messages on).
        if single_text and self._lane is not None and not messages:
            receipt = self._lane.offer(self._conn_key, payload)
            if receipt is not None:
                if receipt:
                    self._queue(encode_text_py(receipt))
                return
        messages.append(payload)

    def _on_close(self, payload: bytes) -> None:
        """The peer's close frame: check it, answer it, end the stream."""
        if not payload:
            code, reason = _NO_STATUS, ""
        elif len(payload) == 1:
            self._fail(1002, "close frame too short")
            return
        else:
            code = int.from_bytes(payload[:2], "big")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in close reason")
                return
            if not _valid_close_code(code):
                self._fail(1002, "invalid close code")
                return
        self.peer_close = (code, reason)
        if self._frag_op:
            self._fail(1002, "incomplete fragmented message")
            return
        if self.state == OPEN:
            self._queue(encode_close_py(1000 if code == _NO_STATUS else code, ""))
        self.state = CLOSED

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection: queue our close (unless already sent) and stop reading."""
        self.error = (code, reason)
        if self.state == OPEN:
            self._queue(encode_close_py(code, reason))
        self.state = CLOSED

    def _end_fragments(self) -> None:
        self._frag_op = 0
        self._frag = None
        self._frag_size = 0
        self._utf8_tail = b""

    def _queue(self, frame: bytes) -> None:
        if self._out is None:
            self._out = bytearray(frame)
        else:
            self._out += frame
