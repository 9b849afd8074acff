# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""STOMP 1.2 frame codec, Cython build of ``frames_py`` (the specification).

Same behaviour as the reference, byte for byte and error reason for error reason; only the
mechanics differ: bytes are scanned with memchr in place, a chunk that starts on a frame
boundary is parsed straight from the caller's memory, and only an incomplete tail is copied into
a C buffer, which never holds more than ``max_frame_size + 1`` bytes and is freed once the
parser is idle again (an idle connection holds no buffer and no headers dict).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8String
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove

from types import MemberDescriptorType

from spidi_core.errors import FrameError
from spidi_core.frame import Frame

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL
    # Both return borrowed references.
    PyObject* PyDict_SetDefault(object d, object key, object default_value) except NULL
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL

    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member

__all__ = ["FrameParserC", "serialize_frame_c"]

cdef enum:
    LF = 10
    CR = 13
    BACKSLASH = 92
    # Parser states, as in the reference.
    IDLE = 0
    HEAD = 1
    BODY = 2
    STACK_BYTES = 512

# Limits are clamped here so offset arithmetic (even 10 * limit) cannot overflow; no real
# frame gets anywhere near it.
cdef Py_ssize_t LIMIT_CAP = (<Py_ssize_t>1) << 56

cdef str _CONTENT_LENGTH = "content-length"

# Commands and header names that arrive on almost every frame: handing out one shared str
# (hash already computed) skips a decode per line and a hash per dict insertion.
cdef tuple _KNOWN = (
    "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT", "DISCONNECT",
    "CONNECT", "STOMP", "CONNECTED", "MESSAGE", "RECEIPT", "ERROR",
    "destination", "content-type", "content-length", "receipt", "receipt-id", "id", "ack",
    "subscription", "message-id", "transaction", "message", "accept-version", "host", "login",
    "passcode", "heart-beat", "version", "session", "server",
)
cdef enum:
    KNOWN_MAX = 40
cdef const char *_known_ptr[KNOWN_MAX]
cdef Py_ssize_t _known_len[KNOWN_MAX]
cdef Py_ssize_t _known_count = 0


cdef void _init_known() except *:
    global _known_count
    cdef Py_ssize_t size
    for text in _KNOWN[:KNOWN_MAX]:
        hash(text)
        _known_ptr[_known_count] = PyUnicode_AsUTF8AndSize(text, &size)
        _known_len[_known_count] = size
        _known_count += 1


_init_known()


cdef inline object _known(const char *s, Py_ssize_t length):
    """The shared str for these bytes if they are a known name, else None."""
    cdef Py_ssize_t i
    for i in range(_known_count):
        if _known_len[i] == length and memcmp(_known_ptr[i], s, length) == 0:
            return _KNOWN[i]
    return None


cdef type _Frame = Frame
cdef tuple _NO_ARGS = ()


cdef Py_ssize_t _slot_offset(str name) except -2:
    """Where a Frame keeps its ``name`` slot, or -1 if it is not a plain __slots__ member."""
    descr = _Frame.__dict__.get(name)
    if type(descr) is not MemberDescriptorType:
        return -1
    return (<PyMemberDescrObject *><PyObject *>descr).d_member.offset


cdef Py_ssize_t _COMMAND_AT = _slot_offset("command")
cdef Py_ssize_t _HEADERS_AT = _slot_offset("headers")
cdef Py_ssize_t _BODY_AT = _slot_offset("body")
cdef bint _DIRECT_SLOTS = _COMMAND_AT > 0 and _HEADERS_AT > 0 and _BODY_AT > 0


cdef inline void _fill_slot(object frame, Py_ssize_t offset, object value) noexcept:
    cdef PyObject **slot = <PyObject **>((<char *><PyObject *>frame) + offset)
    Py_INCREF(value)
    Py_XDECREF(slot[0])
    slot[0] = <PyObject *>value


cdef object _new_frame(command, headers, bytes body):
    """Frame(command, headers, body) without running the Python-level __init__.

    One frame per message makes this hot: filling the three __slots__ in place costs a fraction
    of calling the class. Falls back to attribute assignment should Frame stop using slots.
    """
    cdef object frame = (<PyTypeObject *>_Frame).tp_new(_Frame, <PyObject *>_NO_ARGS, NULL)
    if _DIRECT_SLOTS:
        _fill_slot(frame, _COMMAND_AT, command)
        _fill_slot(frame, _HEADERS_AT, headers)
        _fill_slot(frame, _BODY_AT, body)
    else:
        frame.command = command
        frame.headers = headers
        frame.body = body
    return frame


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef object _frame_error(str reason, str message):
    return FrameError(reason, message)


cdef str _unescape(const char *s, Py_ssize_t length):
    """Decode STOMP 1.2 header escapes of already validated UTF-8 bytes."""
    cdef char *out = <char *>malloc(length if length > 0 else 1)
    cdef Py_ssize_t i = 0, j = 0
    cdef char c
    if out == NULL:
        raise MemoryError()
    try:
        while i < length:
            c = s[i]
            if c != BACKSLASH:
                out[j] = c
                i += 1
            else:
                c = s[i + 1] if i + 1 < length else 0
                if c == b'n':
                    out[j] = b'\n'
                elif c == b'c':
                    out[j] = b':'
                elif c == BACKSLASH:
                    out[j] = b'\\'
                elif c == b'r':
                    out[j] = b'\r'
                else:
                    # Report the escape like the reference does: as decoded text.
                    bad = PyUnicode_DecodeUTF8(s + i, _min(length - i, 5), "replace")[:2]
                    raise _frame_error("bad-escape", f"invalid escape sequence {bad!r} in header")
                i += 2
            j += 1
        return PyUnicode_DecodeUTF8(out, j, NULL)
    finally:
        free(out)


cdef str _decode_header(const char *s, Py_ssize_t length):
    try:
        return PyUnicode_DecodeUTF8(s, length, NULL)
    except UnicodeDecodeError:
        raise _frame_error("bad-header", "header is not valid UTF-8") from None


cdef class FrameParserC:
    """Incremental STOMP 1.2 frame parser (Cython); see ``FrameParserPy`` for the contract."""

    cdef readonly Py_ssize_t max_frame_size
    cdef readonly Py_ssize_t max_headers
    cdef readonly Py_ssize_t max_header_line
    cdef readonly Py_ssize_t heartbeats
    # The pending bytes: the incomplete frame starts at _buf[0].
    cdef char *_buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef int _state
    # Relative to the start of the pending frame, as in the reference.
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _scan
    cdef Py_ssize_t _length
    cdef Py_ssize_t _nheaders
    cdef object _command
    cdef bint _raw
    cdef dict _headers
    cdef object _error

    def __cinit__(self):
        self._buf = NULL
        self._len = 0
        self._cap = 0

    def __init__(self, max_frame_size: int = 65536, max_headers: int = 64, max_header_line: int = 8192):
        if max_frame_size < 1 or max_headers < 0 or max_header_line < 0:
            raise ValueError("max_frame_size must be >= 1, max_headers and max_header_line >= 0")
        self.max_frame_size = min(max_frame_size, LIMIT_CAP)
        self.max_headers = min(max_headers, LIMIT_CAP)
        self.max_header_line = min(max_header_line, LIMIT_CAP)
        self.heartbeats = 0
        self._len = 0
        self._state = IDLE
        self._pos = 0
        self._scan = 0
        self._length = -1
        self._nheaders = 0
        self._command = None
        self._raw = False
        self._headers = None  # a fresh dict per frame, made when it starts
        self._error = None

    def __dealloc__(self):
        free(self._buf)

    @property
    def buffered(self):
        """Bytes held waiting for the rest of a frame."""
        return self._len

    def feed(self, data) -> list:
        """Consume a chunk (a str is UTF-8 encoded) and return the frames it completes, in order.

        Raises FrameError on a malformed frame or an exceeded limit (frames completed earlier in
        the same chunk are dropped with it); the parser then stays broken.
        """
        cdef Py_buffer view
        if self._error is not None:
            raise _frame_error(self._error.reason, str(self._error))
        if type(data) is bytes:
            return self._feed(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        if isinstance(data, str):
            data = PyUnicode_AsUTF8String(data)
            return self._feed(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        # The exported buffer also keeps a bytearray from being resized under us.
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._feed(<const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap
        cdef char *grown
        if need <= self._cap:
            return 0
        cap = self._cap * 2
        if cap < need:
            cap = need
        if cap < 256:
            cap = 256
        grown = <char *>realloc(self._buf, cap)
        if grown == NULL:
            raise MemoryError()
        self._buf = grown
        self._cap = cap
        return 0

    cdef list _feed(self, const char *data, Py_ssize_t n):
        cdef list frames = []
        cdef Py_ssize_t off = 0, consumed, rest, take
        try:
            while off < n:
                if self._len == 0:
                    # Fast path: on a frame boundary, parse from the caller's memory.
                    consumed = self._run(data + off, n - off, frames)
                    rest = n - off - consumed
                    if rest:
                        self._reserve(rest)
                        memcpy(self._buf, data + off + consumed, rest)
                        self._len = rest
                    break
                # Top the buffer up to one byte past the frame limit at most: that much
                # is enough to finish the pending frame or to prove it too large.
                take = _min(n - off, self.max_frame_size + 1 - self._len)
                if take <= 0:  # cannot happen: _run never leaves more than a frame's worth
                    raise _frame_error("frame-too-large", f"frame larger than {self.max_frame_size} bytes")
                self._reserve(self._len + take)
                memcpy(self._buf + self._len, data + off, take)
                self._len += take
                off += take
                consumed = self._run(self._buf, self._len, frames)
                if consumed:
                    self._len -= consumed
                    memmove(self._buf, self._buf + consumed, self._len)
        except FrameError as exc:
            self._error = exc
            raise
        if self._len == 0 and self._buf != NULL:
            # Idle again: the buffer goes back, so an idle connection holds none (a frame that
            # spans messages is rare, and a malloc then is cheap next to the memory kept).
            free(self._buf)
            self._buf = NULL
            self._cap = 0
        return frames

    cdef Py_ssize_t _run(self, const char *p, Py_ssize_t n, list frames) except -1:
        """Advance the state machine over p[0:n]; return how many leading bytes are done."""
        cdef Py_ssize_t start = 0, pos, window_end, nl, end, body_start, limit
        cdef Py_ssize_t max_frame = self.max_frame_size
        cdef const char *hit
        cdef char c
        while True:
            if self._state == IDLE:
                while start < n:
                    c = p[start]
                    if c == LF:
                        self.heartbeats += 1
                        start += 1
                    elif c == CR:
                        if start + 1 == n:
                            return start  # a CR alone: wait to see whether LF follows
                        if p[start + 1] != LF:
                            break  # not an EOL: a (bad) command line starting with CR
                        self.heartbeats += 1
                        start += 2
                    else:
                        break
                if start == n:
                    return n
                self._state = HEAD
                self._pos = 0
                self._command = None
                self._headers = {}
                self._nheaders = 0
                self._length = -1

            if self._state == HEAD:
                while True:
                    pos = start + self._pos
                    # An LF is only acceptable where neither limit has been crossed yet.
                    window_end = _min(_min(n, start + max_frame), pos + self.max_header_line + 2)
                    hit = NULL
                    if window_end > pos:
                        hit = <const char *>memchr(p + pos, LF, window_end - pos)
                    if hit == NULL:
                        self._check_incomplete_line(p, start, pos, n)
                        return start
                    nl = hit - p
                    end = nl
                    if nl > pos and p[nl - 1] == CR:
                        end -= 1
                    if end - pos > self.max_header_line:
                        raise _frame_error(
                            "header-line-too-long", f"header line longer than {self.max_header_line} bytes"
                        )
                    self._pos = nl + 1 - start
                    if self._command is None:
                        self._take_command(p + pos, end - pos)
                    elif end == pos:
                        self._end_headers()
                        break
                    else:
                        self._take_header(p + pos, end - pos)

            # BODY
            body_start = start + self._pos
            if self._length >= 0:
                end = body_start + self._length
                if end >= n:
                    return start
                if p[end] != 0:
                    raise _frame_error("missing-nul", "frame body is not followed by a NUL byte")
            else:
                limit = _min(n, start + max_frame)
                pos = start + self._scan
                hit = NULL
                if limit > pos:
                    hit = <const char *>memchr(p + pos, 0, limit - pos)
                if hit == NULL:
                    if n > start + max_frame:
                        raise _frame_error("frame-too-large", f"frame larger than {max_frame} bytes")
                    self._scan = n - start
                    return start
                end = hit - p
            PyList_Append(
                frames,
                _new_frame(self._command, self._headers, PyBytes_FromStringAndSize(p + body_start, end - body_start)),
            )
            # The frame owns its command and headers now: an idle parser holds neither (memory
            # per idle connection).
            self._command = None
            self._headers = None
            start = end + 1
            self._state = IDLE

    cdef int _check_incomplete_line(self, const char *p, Py_ssize_t start, Py_ssize_t pos, Py_ssize_t n) except -1:
        """No LF yet for the line at ``pos``: raise if the bytes held already break a limit."""
        cdef Py_ssize_t limit = self.max_header_line
        cdef Py_ssize_t line_bad = -1, frame_bad = -1
        # Index of the byte proving the line too long: byte pos+limit, unless it is a CR that
        # may still start the CRLF; then byte pos+limit+1 (the search found no LF there).
        if pos + limit < n and p[pos + limit] != CR:
            line_bad = pos + limit
        elif pos + limit + 1 < n:
            line_bad = pos + limit + 1
        if start + self.max_frame_size < n:
            frame_bad = start + self.max_frame_size
        if frame_bad >= 0 and (line_bad < 0 or frame_bad <= line_bad):
            raise _frame_error("frame-too-large", f"frame larger than {self.max_frame_size} bytes")
        if line_bad >= 0:
            raise _frame_error("header-line-too-long", f"header line longer than {limit} bytes")
        return 0

    cdef int _take_command(self, const char *line, Py_ssize_t length) except -1:
        cdef Py_ssize_t i
        if length == 0:
            raise _frame_error("bad-command", f"invalid command {b''!r}")
        for i in range(length):
            if not (b'A' <= line[i] <= b'Z'):
                raise _frame_error("bad-command", f"invalid command {line[:_min(length, 40)]!r}")
        self._command = _known(line, length)
        if self._command is None:
            self._command = PyUnicode_DecodeUTF8(line, length, NULL)
        self._raw = (length == 7 and memcmp(line, b"CONNECT", 7) == 0) or (
            length == 9 and memcmp(line, b"CONNECTED", 9) == 0
        )
        return 0

    cdef int _take_header(self, const char *line, Py_ssize_t length) except -1:
        cdef const char *colon
        cdef Py_ssize_t name_len, value_len
        cdef const char *value_ptr
        cdef bint known_name
        self._nheaders += 1
        if self._nheaders > self.max_headers:
            raise _frame_error("too-many-headers", f"more than {self.max_headers} headers")
        colon = <const char *>memchr(line, b':', length)
        if colon == NULL:
            raise _frame_error("bad-header", f"header line without ':' {line[:_min(length, 40)]!r}")
        name_len = colon - line
        value_ptr = colon + 1
        value_len = length - name_len - 1
        # Validate both halves before unescaping so error reasons match the reference.
        # A known name is plain ASCII without escapes: decoding it would change nothing.
        name = _known(line, name_len)
        known_name = name is not None
        if not known_name:
            name = _decode_header(line, name_len)
        value = _decode_header(value_ptr, value_len)
        if not self._raw:
            if not known_name and memchr(line, BACKSLASH, name_len) != NULL:
                name = _unescape(line, name_len)
            if memchr(value_ptr, BACKSLASH, value_len) != NULL:
                value = _unescape(value_ptr, value_len)
        PyDict_SetDefault(self._headers, name, value)  # a repeated header: the first one wins
        return 0

    cdef int _end_headers(self) except -1:
        """The blank line: size the body from content-length, if any."""
        cdef PyObject *found
        cdef const char *digits
        cdef Py_ssize_t size, i, length = 0
        self._state = BODY
        self._scan = self._pos
        found = PyDict_GetItemWithError(self._headers, _CONTENT_LENGTH)
        if found == NULL:
            self._length = -1
            return 0
        text = <object>found
        digits = PyUnicode_AsUTF8AndSize(text, &size)
        if size == 0:
            raise _frame_error("bad-content-length", f"invalid content-length {text[:40]!r}")
        for i in range(size):
            if not (b'0' <= digits[i] <= b'9'):
                raise _frame_error("bad-content-length", f"invalid content-length {text[:40]!r}")
            # Saturate: anything past the frame limit is refused the same way.
            if length <= self.max_frame_size:
                length = length * 10 + (digits[i] - 48)
        self._length = length
        if self._pos + length + 1 > self.max_frame_size:
            raise _frame_error("frame-too-large", f"frame larger than {self.max_frame_size} bytes")
        return 0


# ---------------------------------------------------------------------------------------------
# Serializer

cdef struct Writer:
    char *data
    Py_ssize_t length
    Py_ssize_t capacity
    char stack[STACK_BYTES]


cdef inline void _writer_init(Writer *w) noexcept:
    w.data = w.stack
    w.length = 0
    w.capacity = STACK_BYTES


cdef inline void _writer_free(Writer *w) noexcept:
    if w.data != w.stack:
        free(w.data)


cdef int _writer_reserve(Writer *w, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = w.length + extra, cap
    cdef char *grown
    if need <= w.capacity:
        return 0
    cap = w.capacity * 2
    if cap < need:
        cap = need
    if w.data == w.stack:
        grown = <char *>malloc(cap)
        if grown != NULL:
            memcpy(grown, w.stack, w.length)
    else:
        grown = <char *>realloc(w.data, cap)
    if grown == NULL:
        raise MemoryError()
    w.data = grown
    w.capacity = cap
    return 0


cdef inline int _writer_put(Writer *w, const char *s, Py_ssize_t length) except -1:
    _writer_reserve(w, length)
    memcpy(w.data + w.length, s, length)
    w.length += length
    return 0


# For each byte: 0 if it goes out as is, else the letter that follows the backslash.
cdef unsigned char _ESCAPE_LETTER[256]
_ESCAPE_LETTER[:] = [0] * 256
_ESCAPE_LETTER[BACKSLASH] = b'\\'
_ESCAPE_LETTER[LF] = b'n'
_ESCAPE_LETTER[CR] = b'r'
_ESCAPE_LETTER[b':'] = b'c'


cdef int _writer_put_escaped(Writer *w, const char *s, Py_ssize_t length) except -1:
    cdef Py_ssize_t i = 0, run
    cdef unsigned char letter
    cdef char *out
    _writer_reserve(w, 2 * length)  # worst case: every byte escaped
    out = w.data + w.length
    while i < length:
        # Copy the stretch up to the next byte needing an escape in one go: most header text
        # has none at all.
        run = i
        while run < length and _ESCAPE_LETTER[<unsigned char>s[run]] == 0:
            run += 1
        memcpy(out, s + i, run - i)
        out += run - i
        if run == length:
            break
        letter = _ESCAPE_LETTER[<unsigned char>s[run]]
        out[0] = b'\\'
        out[1] = <char>letter
        out += 2
        i = run + 1
    w.length = out - w.data
    return 0


cdef int _write_header(Writer *w, name, value, bint raw) except -1:
    """Write ``name:value\\n``; return 1 when the header is content-length."""
    cdef const char *s
    cdef Py_ssize_t size
    cdef int is_length
    if type(name) is not str:
        name = str(name)
    if type(value) is not str:
        value = str(value)
    s = PyUnicode_AsUTF8AndSize(name, &size)
    is_length = size == 14 and memcmp(s, b"content-length", 14) == 0
    if raw:
        _writer_put(w, s, size)
    else:
        _writer_put_escaped(w, s, size)
    _writer_put(w, b":", 1)
    s = PyUnicode_AsUTF8AndSize(value, &size)
    if raw:
        _writer_put(w, s, size)
    else:
        _writer_put_escaped(w, s, size)
    _writer_put(w, b"\n", 1)
    return is_length


cdef int _write_length(Writer *w, Py_ssize_t length) except -1:
    cdef char digits[24]
    cdef int i = 24
    while True:
        i -= 1
        digits[i] = <char>(48 + length % 10)
        length //= 10
        if length == 0:
            break
    _writer_put(w, b"content-length:", 15)
    _writer_put(w, digits + i, 24 - i)
    _writer_put(w, b"\n", 1)
    return 0


def serialize_frame_c(command, headers=None, body=b""):
    """Encode one STOMP 1.2 frame; see ``serialize_frame_py`` for the contract."""
    cdef Writer w
    cdef const char *s
    cdef Py_ssize_t size, body_len
    cdef const char *body_ptr
    cdef bint raw, has_length = False
    cdef Py_buffer view
    cdef bint have_view = False
    cdef bytes out
    cdef char *dst
    if isinstance(body, str):
        body = PyUnicode_AsUTF8String(body)
    if type(body) is bytes:
        body_ptr = PyBytes_AS_STRING(body)
        body_len = PyBytes_GET_SIZE(body)
    else:
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        have_view = True
        body_ptr = <const char *>view.buf
        body_len = view.len
    _writer_init(&w)
    try:
        s = PyUnicode_AsUTF8AndSize(command, &size)
        raw = (size == 7 and memcmp(s, b"CONNECT", 7) == 0) or (size == 9 and memcmp(s, b"CONNECTED", 9) == 0)
        _writer_put(&w, s, size)
        _writer_put(&w, b"\n", 1)
        if headers:
            if type(headers) is dict:
                for name, value in (<dict>headers).items():
                    if _write_header(&w, name, value, raw):
                        has_length = True
            else:
                items = headers.items() if hasattr(headers, "items") else headers
                for name, value in items:
                    if _write_header(&w, name, value, raw):
                        has_length = True
        if body_len and not has_length:
            _write_length(&w, body_len)
        _writer_put(&w, b"\n", 1)
        out = PyBytes_FromStringAndSize(NULL, w.length + body_len + 1)
        dst = PyBytes_AS_STRING(out)
        memcpy(dst, w.data, w.length)
        memcpy(dst + w.length, body_ptr, body_len)
        dst[w.length + body_len] = 0
        return out
    finally:
        _writer_free(&w)
        if have_view:
            PyBuffer_Release(&view)
