# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""RFC 6455 WebSocket framing, server side: Cython build of ``ws_py`` (the specification).

Same behaviour as the reference, message for message and close code for close code; only the
mechanics differ. Headers are read from the caller's bytes in place; only an incomplete frame's
bytes are copied, into a malloc'd buffer grown on demand and freed as soon as the stream is
idle again. Payloads are unmasked 8 bytes at a time with a 64-bit mask, a small message straight
onto the stack (so the fast lane can look at it without a Python object), and text is checked
with a UTF-8 DFA whose state is carried across fragments.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append, PyList_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy
from cpython.unicode cimport PyUnicode_DecodeLatin1

from spidi_core._io_phase_c cimport io_phase_tick
from spidi_core._lane_c cimport LANE_RECEIPT_MAX, HeartbeatLaneC

__all__ = ["WsStreamC", "encode_close_c", "encode_frames_c", "encode_text_c", "parse_upgrade_head_c"]

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Bjoern Hoehrmann's UTF-8 DFA (http://bjoern.hoehrmann.de/utf-8/decoder/dfa/): byte
       classes, then transitions. State 0 accepts, 12 rejects; anything else is mid-sequence.
       It rejects at the first byte that cannot continue a valid sequence (overlongs,
       surrogates and code points above U+10FFFF included). */
    static const uint8_t spidi_utf8d[] = {
      0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
      0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
      0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
      0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
      1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,
      7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,
      8,8,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,
      10,3,3,3,3,3,3,3,3,3,3,3,3,4,3,3,11,6,6,6,5,8,8,8,8,8,8,8,8,8,8,8,
      0,12,24,36,60,96,84,12,12,12,48,72,12,12,12,12,12,12,12,12,12,12,12,12,
      12,0,12,12,12,12,12,0,12,0,12,12,12,24,12,12,12,12,12,24,12,24,12,12,
      12,12,12,12,12,12,12,24,12,12,12,12,12,24,12,12,12,12,12,12,12,24,12,12,
      12,12,12,12,12,12,12,36,12,36,12,12,12,36,12,12,12,12,12,36,12,36,12,12,
      12,36,12,12,12,12,12,12,12,12,12,12,
    };

    /* Advance the DFA over n bytes; ASCII runs are skipped 8 bytes at a time. */
    static uint32_t spidi_utf8_run(uint32_t state, const unsigned char *s, Py_ssize_t n) {
        Py_ssize_t i = 0;
        uint64_t w;
        while (i < n) {
            if (state == 0) {
                while (i + 8 <= n) {
                    memcpy(&w, s + i, 8);
                    if (w & 0x8080808080808080ULL) break;
                    i += 8;
                }
                if (i == n) break;
            }
            state = spidi_utf8d[256 + state + spidi_utf8d[s[i]]];
            if (state == 12) return 12;
            i++;
        }
        return state;
    }

    /* dst = src XOR the repeating 4-byte mask; dst may equal src. */
    static void spidi_unmask(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
                             const unsigned char *mask) {
        uint32_t m32;
        uint64_t m64, w;
        Py_ssize_t i = 0;
        memcpy(&m32, mask, 4);
        m64 = ((uint64_t)m32 << 32) | m32;  /* the mask's bytes twice, in memory order */
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, src + i, 8);
            w ^= m64;
            memcpy(dst + i, &w, 8);
        }
        for (; i < n; i++) dst[i] = src[i] ^ mask[i & 3];
    }

    static uint64_t spidi_be64(const unsigned char *p) {
        uint64_t v = 0;
        int i;
        for (i = 0; i < 8; i++) v = (v << 8) | p[i];
        return v;
    }

    /* A server frame header (FIN, no mask) for opcode and length; returns its size. */
    static Py_ssize_t spidi_header(unsigned char *h, int opcode, uint64_t n) {
        int i;
        h[0] = (unsigned char)(0x80 | opcode);
        if (n < 126) { h[1] = (unsigned char)n; return 2; }
        if (n < 65536) { h[1] = 126; h[2] = (unsigned char)(n >> 8); h[3] = (unsigned char)n; return 4; }
        h[1] = 127;
        for (i = 0; i < 8; i++) h[2 + i] = (unsigned char)(n >> (56 - 8 * i));
        return 10;
    }
    """
    uint32_t spidi_utf8_run(uint32_t state, const unsigned char *s, Py_ssize_t n) nogil
    void spidi_unmask(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
                      const unsigned char *mask) nogil
    uint64_t spidi_be64(const unsigned char *p) nogil
    Py_ssize_t spidi_header(unsigned char *h, int opcode, uint64_t n) nogil

cdef enum:
    OPEN = 0
    CLOSING = 1
    CLOSED = 2
    OP_CONT = 0
    OP_TEXT = 1
    OP_BINARY = 2
    OP_CLOSE = 8
    OP_PING = 9
    OP_PONG = 10
    UTF8_ACCEPT = 0
    UTF8_REJECT = 12
    NO_STATUS = 1005
    MAX_CLOSE_REASON = 123
    # A single-frame message up to this size is unmasked on the stack: no allocation before the
    # message is handed out (or taken by the fast lane).
    STACK_BYTES = 1024

# Limits are clamped so length arithmetic cannot overflow; no real message gets near it.
cdef Py_ssize_t LIMIT_CAP = (<Py_ssize_t>1) << 56

cdef inline bint _valid_close_code(int code) noexcept:
    """A close code a peer may put on the wire (RFC 6455 7.4.1, the IANA registry, 3000-4999)."""
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code < 5000)


cdef int _grow(unsigned char **buf, Py_ssize_t *cap, Py_ssize_t need) except -1:
    """Make ``*buf`` hold at least ``need`` bytes (doubling, at least 256)."""
    cdef Py_ssize_t size
    cdef unsigned char *grown
    if need <= cap[0]:
        return 0
    size = cap[0] * 2
    if size < need:
        size = need
    if size < 256:
        size = 256
    grown = <unsigned char *>realloc(buf[0], size)
    if grown == NULL:
        raise MemoryError()
    buf[0] = grown
    cap[0] = size
    return 0


cdef bytes _frame(int opcode, const unsigned char *payload, Py_ssize_t n):
    cdef unsigned char head[10]
    cdef Py_ssize_t h = spidi_header(head, opcode, n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, h + n)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    memcpy(dst, head, h)
    if n:
        memcpy(dst + h, payload, n)
    return out


def encode_text_c(bytes payload not None) -> bytes:
    """One unmasked text frame with FIN set carrying ``payload``."""
    return _frame(OP_TEXT, <const unsigned char *>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))


def encode_frames_c(list chunks not None) -> bytes:
    """Each chunk as one text frame, concatenated, so a batch costs one ``transport.write``."""
    cdef Py_ssize_t total = 0, n, at = 0
    cdef unsigned char head[10]
    cdef bytes chunk, out
    cdef unsigned char *dst
    for chunk in chunks:
        if chunk is None:
            raise TypeError("encode_frames_c() takes a list of bytes")
        n = PyBytes_GET_SIZE(chunk)
        total += n + (2 if n < 126 else 4 if n < 65536 else 10)
    out = PyBytes_FromStringAndSize(NULL, total)
    dst = <unsigned char *>PyBytes_AS_STRING(out)
    for chunk in chunks:
        n = PyBytes_GET_SIZE(chunk)
        at += spidi_header(dst + at, OP_TEXT, n)
        memcpy(dst + at, PyBytes_AS_STRING(chunk), n)
        at += n
    return out


def encode_close_c(int code, str reason not None) -> bytes:
    """A close frame with ``code`` and ``reason`` (UTF-8, cut at a character boundary to fit 123
    bytes); code 1005 ("no status") gives an empty close frame."""
    if code == NO_STATUS:
        return b"\x88\x00"
    cdef bytes raw = reason.encode("utf-8")
    if PyBytes_GET_SIZE(raw) > MAX_CLOSE_REASON:
        raw = raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    cdef bytes payload = code.to_bytes(2, "big") + raw
    return _frame(OP_CLOSE, <const unsigned char *>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))


# -- the opening handshake's request head ----------------------------------------------------

# RFC 9110 token characters (header names): !#$%&'*+-.^_`|~ digits letters.
cdef unsigned char _TOKEN_CHAR[256]
for _c in list(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"):
    _TOKEN_CHAR[<int>_c] = 1
DEF _NAME_MAX = 64  # longer header names are left to the reference


def parse_upgrade_head_c(bytes head not None, Py_ssize_t max_headers):
    """``(target, headers)`` of a WebSocket upgrade request head exactly as the reference
    (``spidi_server.transport.handshake.parse_request``) reads it, for the heads this path takes:
    ``GET <visible ASCII target> HTTP/1.1``, at most ``max_headers`` well-formed header lines,
    names up to 64 characters, the blank line last, no request body. Anything else is None: the
    reference then reads it (and refuses it with its own status and text)."""
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(head)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t i, start, vstart, vend, k, lines = 0
    cdef unsigned char c
    cdef unsigned char name[_NAME_MAX]
    cdef dict headers = {}
    cdef list values
    if n < 18 or memcmp(s, b"GET ", 4) != 0:
        return None
    i = 4
    while i < n and 0x21 <= s[i] <= 0x7E:
        i += 1
    if i == 4 or i + 11 > n or memcmp(s + i, b" HTTP/1.1\r\n", 11) != 0:
        return None
    target = PyUnicode_DecodeLatin1(<const char *>s + 4, i - 4, NULL)
    i += 11
    while True:
        if i + 2 > n:
            return None
        if s[i] == 13 and s[i + 1] == 10:  # the blank line
            i += 2
            break
        lines += 1
        if lines > max_headers:
            return None
        start = i
        while i < n and _TOKEN_CHAR[s[i]]:
            i += 1
        if i == start or i - start > _NAME_MAX or i >= n or s[i] != 58:  # ':'
            return None
        for k in range(i - start):
            c = s[start + k]
            name[k] = c + 32 if 65 <= c <= 90 else c
        key = PyUnicode_DecodeLatin1(<const char *>name, i - start, NULL)
        i += 1
        vstart = i
        while i < n and s[i] != 13 and s[i] != 10 and s[i] != 0:
            i += 1
        if i + 2 > n or s[i] != 13 or s[i + 1] != 10:
            return None
        vend = i
        i += 2
        while vstart < vend and (s[vstart] == 32 or s[vstart] == 9):
            vstart += 1
        while vend > vstart and (s[vend - 1] == 32 or s[vend - 1] == 9):
            vend -= 1
        value = PyUnicode_DecodeLatin1(<const char *>s + vstart, vend - vstart, NULL)
        values = headers.get(key)
        if values is None:
            headers[key] = [value]
        else:
            values.append(value)
    if i != n or "transfer-encoding" in headers:
        return None
    values = headers.get("content-length")
    if values is not None and values != ["0"]:
        return None
    return target, headers


cdef class WsStreamC:
    """RFC 6455 server-side frame stream of one connection (Cython build of ``WsStreamPy``).

    ``feed(data)`` returns the data messages completed; ``take_output()`` the frames to send.
    ``state`` is OPEN (0), CLOSING (1) or CLOSED (2); ``error`` the (code, reason) we failed the
    connection with; ``peer_close`` the peer's (code, reason), 1005 when its close had no code.
    """

    def __cinit__(self):
        self._buf = NULL
        self._buf_len = 0
        self._buf_cap = 0
        self._frag = NULL
        self._frag_size = 0
        self._frag_cap = 0
        self._out = NULL
        self._out_len = 0
        self._out_cap = 0

    def __init__(self, Py_ssize_t max_message):
        if max_message < 0:
            raise ValueError("max_message must be >= 0")
        self.max_message = max_message if max_message < LIMIT_CAP else LIMIT_CAP
        self.state = OPEN
        self.peer_close = None
        self.error = None
        self._frag_op = 0
        self._utf8 = UTF8_ACCEPT
        self._lane = None
        self._lane_any = None
        self._conn_key = 0

    def set_lane(self, lane, int64_t conn_key) -> None:
        """Offer each complete single-frame text message to ``lane`` (a HeartbeatLane; None to
        stop) for connection ``conn_key`` first, while no message has yet been returned in the
        same ``feed`` call; a message the lane takes is not returned, its receipt (if any) is
        queued as a text frame for ``take_output``."""
        self._lane = lane if isinstance(lane, HeartbeatLaneC) else None
        self._lane_any = lane
        self._conn_key = conn_key

    def __dealloc__(self):
        free(self._buf)
        free(self._frag)
        free(self._out)

    @property
    def buffered(self):
        """Bytes held for a partial frame or a fragmented message (0 when idle)."""
        return self._buf_len + self._frag_size

    def take_output(self) -> bytes:
        """The frames queued since the last call (pongs, close frames, lane receipts), b"" if none."""
        if not self._out_len:
            return b""
        out = PyBytes_FromStringAndSize(<char *>self._out, self._out_len)
        free(self._out)
        self._out = NULL
        self._out_len = self._out_cap = 0
        return out

    def close(self, int code, str reason not None) -> None:
        """Start the closing handshake: queue our close frame; the stream becomes CLOSING."""
        if self.state != OPEN:
            return
        self._queue_close(code, reason)
        self.state = CLOSING

    def feed(self, bytes data not None) -> list:
        """Consume bytes from the peer; return the data messages they complete, in order."""
        io_phase_tick()  # a chunk read: the event loop's I/O phase bound counts its time
        if self.state == CLOSED:
            return []
        return self._feed(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef list _feed(self, const unsigned char *data, Py_ssize_t n):
        cdef list messages = []
        cdef Py_ssize_t off = 0, want, length, consumed, rest
        cdef unsigned char b1
        # A partial frame is held: top it up only to the end of that frame (so the rest of the
        # chunk is still parsed in place), learning its size as its header completes.
        while self._buf_len:
            if off == n:
                return messages
            if self._buf_len < 2:
                want = 2
            else:
                b1 = self._buf[1] & 0x7F
                want = 6 if b1 < 126 else 8 if b1 == 126 else 14
                if self._buf_len >= want:
                    # The header was checked when it completed: the length is within the caps.
                    if b1 < 126:
                        length = b1
                    elif b1 == 126:
                        length = (self._buf[2] << 8) | self._buf[3]
                    else:
                        length = <Py_ssize_t>spidi_be64(self._buf + 2)
                    want += length
            want -= self._buf_len
            if want > n - off:
                want = n - off
            _grow(&self._buf, &self._buf_cap, self._buf_len + want)
            memcpy(self._buf + self._buf_len, data + off, want)
            self._buf_len += want
            off += want
            consumed = self._run(self._buf, self._buf_len, messages)
            if self.state == CLOSED:
                break
            if consumed:  # the held frame is done (it was all the buffer held)
                self._buf_len = 0
                free(self._buf)
                self._buf = NULL
                self._buf_cap = 0
        if self.state != CLOSED and off < n:
            consumed = self._run(data + off, n - off, messages)
            rest = n - off - consumed
            if rest and self.state != CLOSED:
                _grow(&self._buf, &self._buf_cap, rest)
                memcpy(self._buf, data + off + consumed, rest)
                self._buf_len = rest
        if self.state == CLOSED:
            free(self._buf)
            self._buf = NULL
            self._buf_len = self._buf_cap = 0
            self._end_fragments()
        return messages

    cdef Py_ssize_t _run(self, const unsigned char *p, Py_ssize_t n, list messages) except -1:
        """Parse whole frames from ``p``; return how many leading bytes they took."""
        cdef Py_ssize_t pos = 0, head, size
        cdef uint64_t length
        cdef unsigned char b0, b1, opcode
        cdef bint fin, control
        cdef const unsigned char *src
        cdef const unsigned char *mask
        cdef unsigned char *dst
        cdef uint32_t utf8
        cdef object payload
        cdef unsigned char tmp[STACK_BYTES]
        while n - pos >= 2:
            b0 = p[pos]
            b1 = p[pos + 1]
            opcode = b0 & 0x0F
            if not (opcode <= OP_BINARY or (opcode >= OP_CLOSE and opcode <= OP_PONG)):
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
                length = (p[pos + 2] << 8) | p[pos + 3]
            elif length == 127:
                head = 14
                if n - pos < 10:
                    break
                length = spidi_be64(p + pos + 2)
                if length >> 63:
                    self._fail(1002, "frame length too large")
                    break
            control = opcode >= OP_CLOSE
            if control:
                if length > 125:
                    self._fail(1002, "control frame too long")
                    break
            elif <uint64_t>self._frag_size + length > <uint64_t>self.max_message:
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
            elif opcode == OP_CONT:
                if not self._frag_op:
                    self._fail(1002, "unexpected continuation frame")
                    break
            elif self._frag_op:
                self._fail(1002, "expected a continuation frame")
                break
            size = <Py_ssize_t>length
            if n - pos < head + size:
                break
            mask = p + pos + head - 4
            src = p + pos + head
            pos += head + size
            if control:
                if opcode == OP_PING:
                    if self.state == OPEN:
                        spidi_unmask(tmp, src, size, mask)
                        self._queue_frame(OP_PONG, tmp, size)
                elif opcode == OP_CLOSE:
                    spidi_unmask(tmp, src, size, mask)
                    self._on_close(tmp, size)
                    break
            elif fin and opcode != OP_CONT:
                if size <= STACK_BYTES:
                    dst = tmp
                    payload = None
                else:
                    payload = PyBytes_FromStringAndSize(NULL, size)
                    dst = <unsigned char *>PyBytes_AS_STRING(payload)
                spidi_unmask(dst, src, size, mask)
                if opcode == OP_TEXT and spidi_utf8_run(UTF8_ACCEPT, dst, size) != UTF8_ACCEPT:
                    self._fail(1007, "invalid UTF-8")
                    break
                self._message(messages, dst, size, opcode == OP_TEXT, payload)
            else:
                if opcode != OP_CONT:
                    self._frag_op = opcode
                    self._utf8 = UTF8_ACCEPT
                _grow(&self._frag, &self._frag_cap, self._frag_size + size)
                dst = self._frag + self._frag_size
                spidi_unmask(dst, src, size, mask)
                if self._frag_op == OP_TEXT:
                    utf8 = spidi_utf8_run(self._utf8, dst, size)
                    if utf8 == UTF8_REJECT or (fin and utf8 != UTF8_ACCEPT):
                        self._fail(1007, "invalid UTF-8")
                        break
                    self._utf8 = utf8
                self._frag_size += size
                if fin:
                    payload = PyBytes_FromStringAndSize(<char *>self._frag, self._frag_size)
                    self._end_fragments()
                    self._message(messages, NULL, 0, False, payload)
            if self.state == CLOSED:
                break
        return pos

    cdef int _message(self, list messages, const unsigned char *p, Py_ssize_t n, bint single_text,
                      object payload) except -1:
        """A data message is complete: ``payload`` (a bytes) or else the ``n`` bytes at ``p``
        (``single_text``: one unfragmented text frame, those bytes then on the stack).

        The one place a message leaves the stream: the fast-lane hook sits here.
        """
        cdef unsigned char receipt[LANE_RECEIPT_MAX]
        cdef Py_ssize_t got
        if self.state != OPEN:
            return 0
        # The fast lane only while nothing went to Python in this feed: replies keep their order.
        if single_text and self._lane_any is not None and PyList_GET_SIZE(messages) == 0:
            if self._lane is not None:
                # (a message larger than the stack buffer is beyond the lane's limit anyway)
                if payload is None:
                    got = self._lane.offer_raw(self._conn_key, p, n, receipt)
                    if got >= 0:
                        if got:
                            self._queue_frame(OP_TEXT, receipt, got)
                        return 0
            else:
                if payload is None:
                    payload = PyBytes_FromStringAndSize(<const char *>p, n)
                answer = self._lane_any.offer(self._conn_key, payload)
                if answer is not None:
                    if answer:
                        self._queue_frame(OP_TEXT, <const unsigned char *>PyBytes_AS_STRING(answer),
                                          PyBytes_GET_SIZE(answer))
                    return 0
        if payload is None:
            payload = PyBytes_FromStringAndSize(<const char *>p, n)
        PyList_Append(messages, payload)
        return 0

    cdef int _on_close(self, const unsigned char *p, Py_ssize_t n) except -1:
        """The peer's close frame: check it, answer it, end the stream."""
        cdef int code
        cdef str reason
        if n == 0:
            code = NO_STATUS
            reason = ""
        elif n == 1:
            return self._fail(1002, "close frame too short")
        else:
            code = (p[0] << 8) | p[1]
            if spidi_utf8_run(UTF8_ACCEPT, p + 2, n - 2) != UTF8_ACCEPT:
                return self._fail(1007, "invalid UTF-8 in close reason")
            if not _valid_close_code(code):
                return self._fail(1002, "invalid close code")
            reason = (<const char *>p + 2)[: n - 2].decode("utf-8")
        self.peer_close = (code, reason)
        if self._frag_op:
            return self._fail(1002, "incomplete fragmented message")
        if self.state == OPEN:
            self._queue_close(1000 if code == NO_STATUS else code, "")
        self.state = CLOSED
        return 0

    cdef int _fail(self, int code, str reason) except -1:
        """Fail the connection: queue our close (unless already sent) and stop reading."""
        self.error = (code, reason)
        if self.state == OPEN:
            self._queue_close(code, reason)
        self.state = CLOSED
        return 0

    cdef int _queue_raw(self, const unsigned char *p, Py_ssize_t n) except -1:
        """Append ready-made frame bytes to the output."""
        _grow(&self._out, &self._out_cap, self._out_len + n)
        memcpy(self._out + self._out_len, p, n)
        self._out_len += n
        return 0

    cdef int _queue_frame(self, int opcode, const unsigned char *payload, Py_ssize_t n) except -1:
        """Frame ``payload`` (FIN, unmasked) straight into the output: no Python object."""
        _grow(&self._out, &self._out_cap, self._out_len + 10 + n)
        self._out_len += spidi_header(self._out + self._out_len, opcode, n)
        if n:
            memcpy(self._out + self._out_len, payload, n)
            self._out_len += n
        return 0

    cdef int _queue_close(self, int code, str reason) except -1:
        cdef bytes frame = encode_close_c(code, reason)
        return self._queue_raw(<const unsigned char *>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))

    cdef void _end_fragments(self) noexcept:
        free(self._frag)
        self._frag = NULL
        self._frag_size = self._frag_cap = 0
        self._frag_op = 0
        self._utf8 = UTF8_ACCEPT
