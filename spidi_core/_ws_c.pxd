# Declarations of the Cython WebSocket stream (``_ws_c.pyx``): its fields and C-level methods,
# so other Cython modules (the heartbeat fast lane) can reach them without Python calls.

from libc.stdint cimport uint32_t


cdef class WsStreamC:
    cdef readonly Py_ssize_t max_message
    cdef readonly int state  # OPEN 0, CLOSING 1, CLOSED 2
    cdef readonly object peer_close  # (code, reason) | None
    cdef readonly object error  # (code, reason) | None
    # Bytes of an incomplete frame, malloc'd on demand; NULL whenever the stream is idle.
    cdef unsigned char *_buf
    cdef Py_ssize_t _buf_len
    cdef Py_ssize_t _buf_cap
    # The fragmented message in progress, unmasked; NULL when none.
    cdef unsigned char *_frag
    cdef Py_ssize_t _frag_size
    cdef Py_ssize_t _frag_cap
    cdef int _frag_op  # its opcode, 0 = none
    cdef uint32_t _utf8  # UTF-8 DFA state carried across its fragments
    # Frames queued for the peer (pongs, closes, fast-lane receipts), malloc'd on demand; NULL
    # once take_output() has handed them over.
    cdef unsigned char *_out
    cdef Py_ssize_t _out_len
    cdef Py_ssize_t _out_cap

    cdef list _feed(self, const unsigned char *data, Py_ssize_t n)
    cdef Py_ssize_t _run(self, const unsigned char *p, Py_ssize_t n, list messages) except -1
    # Where every data message leaves the stream (the fast-lane hook): ``payload`` (bytes) or, when
    # it is None, the ``n`` bytes at ``p``; ``single_text`` for an unfragmented text message.
    cdef int _message(self, list messages, const unsigned char *p, Py_ssize_t n, bint single_text,
                      object payload) except -1
    cdef int _on_close(self, const unsigned char *p, Py_ssize_t n) except -1
    cdef int _fail(self, int code, str reason) except -1
    cdef int _queue_raw(self, const unsigned char *p, Py_ssize_t n) except -1
    cdef int _queue_frame(self, int opcode, const unsigned char *payload, Py_ssize_t n) except -1
    cdef int _queue_close(self, int code, str reason) except -1
    cdef void _end_fragments(self) noexcept
