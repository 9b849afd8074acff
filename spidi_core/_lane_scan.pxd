# The heartbeat lane's strict scanner (spidi_core/_lane_c.pyx; lane_py.scan_frame is its
# specification): one STOMP SEND to /app/heartbeat with a small JSON body, read over
# const unsigned char*, without a Python object. Inline functions only.

from cpython.object cimport PyObject
from libc.stdint cimport int64_t
from libc.string cimport memchr, memcmp, memcpy


cdef extern from "Python.h":
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0


# Same limits as lane_py.
cdef enum:
    MAX_LANE_MESSAGE = 1024
    MAX_RECEIPT = 64
    MAX_FRACTION = 17
    MAX_LATENCY_MS = 3600000


ctypedef struct Scanned:
    Py_ssize_t receipt_at  # the receipt id's bytes in the message; receipt_len -1: none
    Py_ssize_t receipt_len
    Py_ssize_t sid_at  # the session id's bytes in the message
    Py_ssize_t sid_len
    double latency
    bint is_int  # the latency was written as an integer


cdef inline bint is_digit(unsigned char c) noexcept:
    return 0x30 <= c <= 0x39


cdef inline bint is_receipt_char(unsigned char c) noexcept:
    return (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A
            or c == 0x2E or c == 0x5F or c == 0x2D)


cdef inline Py_ssize_t skip_spaces(const unsigned char* b, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and b[i] == 0x20:
        i += 1
    return i


cdef inline Py_ssize_t scan_string(const unsigned char* b, Py_ssize_t i, Py_ssize_t n,
                                   Py_ssize_t* start) noexcept:
    """A JSON string of printable ASCII without escapes at ``i``: its end (after the quote)
    with ``start`` set to its first character, or -1."""
    if i >= n or b[i] != 0x22:
        return -1
    i += 1
    start[0] = i
    cdef unsigned char c
    while i < n:
        c = b[i]
        if c == 0x22:
            return i + 1
        if c < 0x20 or c > 0x7E or c == 0x5C:
            return -1
        i += 1
    return -1


cdef inline Py_ssize_t scan_number(const unsigned char* b, Py_ssize_t i, Py_ssize_t n,
                                   double* value, bint* is_int) except -2:
    """``0|[1-9][0-9]{0,6}`` and an optional ``.[0-9]{1,17}`` below MAX_LATENCY_MS: its end, or -1."""
    cdef Py_ssize_t start = i, frac
    cdef int64_t whole = 0
    cdef char text[32]
    if i >= n or not is_digit(b[i]):
        return -1
    if b[i] == 0x30:
        i += 1
    else:
        while i < n and is_digit(b[i]) and i - start < 7:
            whole = whole * 10 + (b[i] - 0x30)
            i += 1
    if i < n and is_digit(b[i]):
        return -1
    if i < n and b[i] == 0x2E:
        i += 1
        frac = i
        while i < n and is_digit(b[i]) and i - frac <= MAX_FRACTION:
            i += 1
        if i - frac < 1 or i - frac > MAX_FRACTION:
            return -1
        memcpy(text, b + start, i - start)
        text[i - start] = 0
        value[0] = PyOS_string_to_double(text, NULL, NULL)  # Python's own (correctly rounded) parse
        is_int[0] = False
    else:
        value[0] = <double>whole
        is_int[0] = True
    if value[0] >= MAX_LATENCY_MS:
        return -1
    return i


cdef inline int scan_heartbeat(const unsigned char* msg, Py_ssize_t n, Py_ssize_t max_frame_size,
                               Py_ssize_t max_headers, Py_ssize_t max_header_line,
                               Scanned* got) except -2:
    """Read one ordinary heartbeat SEND (see lane_py's module docstring) into ``got``: 0, or -1
    when the message is anything else. The limits are the STOMP parser's."""
    cdef Py_ssize_t pos, nl, colon, body, end, i, sid_start = 0, key_start = 0, length = -1
    cdef Py_ssize_t rstart = 0, rlen = -1, k, sid_len = 0
    cdef unsigned int seen = 0
    cdef Py_ssize_t nheaders = 0
    cdef const unsigned char* hit
    cdef double latency = 0.0
    cdef bint is_int = False, have_sid = False, have_latency = False
    if (n > MAX_LANE_MESSAGE or n > max_frame_size or max_header_line < 4 or n < 7
            or msg[n - 1] != 0 or memcmp(msg, b"SEND\n", 5) != 0):
        return -1
    # headers
    pos = 5
    while True:
        hit = <const unsigned char*>memchr(msg + pos, 0x0A, n - pos)
        if hit == NULL:
            return -1
        nl = hit - msg
        if nl == pos:
            pos += 1
            break
        if nl - pos > max_header_line or nheaders >= max_headers:
            return -1
        nheaders += 1
        colon = pos
        while colon < nl and msg[colon] != 0x3A:
            colon += 1
        if colon == nl:
            return -1
        k = colon - pos
        i = colon + 1  # the value: [i, nl)
        if k == 11 and memcmp(msg + pos, b"destination", 11) == 0:
            if seen & 1 or nl - i != 14 or memcmp(msg + i, b"/app/heartbeat", 14) != 0:
                return -1
            seen |= 1
        elif k == 7 and memcmp(msg + pos, b"receipt", 7) == 0:
            if seen & 2 or nl - i < 1 or nl - i > MAX_RECEIPT:
                return -1
            for end in range(i, nl):
                if not is_receipt_char(msg[end]):
                    return -1
            seen |= 2
            rstart = i
            rlen = nl - i
        elif k == 12 and memcmp(msg + pos, b"content-type", 12) == 0:
            if seen & 4:
                return -1
            if not ((nl - i == 16 and memcmp(msg + i, b"application/json", 16) == 0)
                    or (nl - i == 30 and memcmp(msg + i, b"application/json;charset=utf-8", 30) == 0)):
                return -1
            seen |= 4
        elif k == 14 and memcmp(msg + pos, b"content-length", 14) == 0:
            if seen & 8 or nl - i < 1 or nl - i > 4 or msg[i] == 0x30:
                return -1
            length = 0
            for end in range(i, nl):
                if not is_digit(msg[end]):
                    return -1
                length = length * 10 + (msg[end] - 0x30)
            seen |= 8
        else:
            return -1
        pos = nl + 1
    if not (seen & 1):
        return -1
    body = pos
    end = n - 1
    if length >= 0 and length != end - body:
        return -1
    # body: {"sessionId": "...", "latencyMs": number} in either order
    i = skip_spaces(msg, body, end)
    if i >= end or msg[i] != 0x7B:
        return -1
    i += 1
    for k in range(2):
        i = skip_spaces(msg, i, end)
        i = scan_string(msg, i, end, &key_start)
        if i < 0:
            return -1
        nl = i - 1 - key_start  # the key's length
        i = skip_spaces(msg, i, end)
        if i >= end or msg[i] != 0x3A:
            return -1
        i = skip_spaces(msg, i + 1, end)
        if nl == 9 and memcmp(msg + key_start, b"sessionId", 9) == 0 and not have_sid:
            i = scan_string(msg, i, end, &sid_start)
            if i < 0 or i - 1 == sid_start:
                return -1
            sid_len = i - 1 - sid_start
            have_sid = True
        elif nl == 9 and memcmp(msg + key_start, b"latencyMs", 9) == 0 and not have_latency:
            i = scan_number(msg, i, end, &latency, &is_int)
            if i < 0:
                return -1
            have_latency = True
        else:
            return -1
        i = skip_spaces(msg, i, end)
        if i >= end or msg[i] != (0x2C if k == 0 else 0x7D):
            return -1
        i += 1
    if skip_spaces(msg, i, end) != end:
        return -1
    got.receipt_at = rstart
    got.receipt_len = rlen
    got.sid_at = sid_start
    got.sid_len = sid_len
    got.latency = latency
    got.is_int = is_int
    return 0
