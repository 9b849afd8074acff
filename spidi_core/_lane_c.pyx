# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython heartbeat lane; behaves exactly like :mod:`spidi_core.lane_py` (the spec).

Everything lives in C memory owned by the lane:

* sessions are records in one array (a free list reuses removed ones), indexed by an
  open-addressing hash table keyed by the session id's UTF-8 bytes; a record keeps the
  session's figures, its pending beat and LF_* flag bits. Latencies are doubles with a flag
  saying whether they came as an int, so that ``stats`` and ``take_beats`` give back exactly
  what the reference does (ints as ints, floats as their repr);
* connections and rooms are records keyed by their int key (a small int64 hash table each);
  a room has its sample histogram and the index lists of its pending beats and updated sessions;
* ``offer_raw`` (the C entry, also used by the WebSocket stream) scans the message over
  ``const unsigned char*``, finds the session without a Python object, records the beat and
  writes the RECEIPT into the caller's buffer. The only Python-level call on that path is
  ``PyOS_string_to_double`` for a latency with a fraction (no object is made).

The containers and the hash live in ``_lane_tables.pxd``, the strict scanner in
``_lane_scan.pxd`` (inline C functions both). Record indices are stable (the arrays grow by
realloc, the index is the identity), so the pending lists hold indices; a removed session is
taken out of them at once (rare, linear).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free
from cpython.object cimport PyObject
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.math cimport NAN
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset, strlen
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

from spidi_core._lane_scan cimport Scanned, scan_heartbeat
from spidi_core._lane_tables cimport (
    DELETED,
    EMPTY,
    hash_bytes,
    i64_del,
    i64_find,
    i64_put,
    vec_free,
    vec_push,
    vec_remove,
)

cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0
    const char* PyUnicode_AsUTF8AndSize(object u, Py_ssize_t* size) except NULL

from spidi_core.lane_py import PackedBeats

__all__ = ["HeartbeatLaneC"]


cdef inline Py_ssize_t _put_int(char* out, long long value) noexcept:
    """``value`` in decimal at ``out`` (at most 20 bytes), as ``%lld`` writes it; its length.
    take_beats writes two numbers per heartbeat, and snprintf's format parsing cost more than
    the rest of the line."""
    cdef char tmp[20]
    cdef Py_ssize_t n = 0, i, neg = 0
    cdef unsigned long long u
    if value < 0:
        neg = 1
        u = <unsigned long long>0 - <unsigned long long>value  # LLONG_MIN included
    else:
        u = <unsigned long long>value
    while True:
        tmp[n] = <char>(48 + <int>(u % 10))
        n += 1
        u //= 10
        if u == 0:
            break
    if neg:
        out[0] = b'-'
    for i in range(n):
        out[neg + i] = tmp[n - 1 - i]
    return neg + n


cdef struct RespBuf:
    char* data
    Py_ssize_t size
    Py_ssize_t used


cdef int _resp_bulk(RespBuf* buf, const char* data, Py_ssize_t n) except -1:
    """Append ``data`` as a RESP bulk string (``$<n>\\r\\n<data>\\r\\n``), growing ``buf``."""
    cdef Py_ssize_t need = buf.used + n + 25  # "$", 20 digits at most, two CRLFs
    cdef char* grown
    cdef char* out
    if need > buf.size:
        grown = <char*>realloc(buf.data, need * 2)
        if grown == NULL:
            raise MemoryError()
        buf.data = grown
        buf.size = need * 2
    out = buf.data + buf.used
    out[0] = b'$'
    need = 1 + _put_int(out + 1, n)
    out[need] = b'\r'
    out[need + 1] = b'\n'
    memcpy(out + need + 2, data, n)
    need += 2 + n
    out[need] = b'\r'
    out[need + 1] = b'\n'
    buf.used += need + 2
    return 0


# LaneSession.flags
cdef enum:
    LF_HAS_LATENCY = 1
    LF_LATENCY_INT = 2
    LF_MIN_INT = 4  # latency_min / latency_max exist once heartbeats > 0
    LF_MAX_INT = 8
    LF_BEAT_INT = 16
    LF_DIRTY = 32  # a pending beat
    LF_TTL_DUE = 64
    LF_UPDATED = 128

cdef const char* RECEIPT_HEAD = b"RECEIPT\nreceipt-id:"
cdef Py_ssize_t RECEIPT_HEAD_LEN = 19


cdef inline double monotonic() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline double wall_offset() noexcept:
    """time.time() - time.monotonic(), now."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    cdef double wall = <double>(<int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec) / 1e9
    return wall - monotonic()


cdef object _number_object(double value, bint is_int):
    """A latency as the full path held it: an int if it came as one, else a float."""
    if is_int:
        return <int64_t>value
    return value


# -- the lane -----------------------------------------------------------------------------------

@cython.final
cdef class HeartbeatLaneC:
    """Per-session heartbeat figures and the fast lane (C build; see ``lane_py``)."""

    def __cinit__(self):
        self.free_conn = -1
        self.free_sess = -1
        self.wall_checked = -1e300

    def __init__(self, buckets, ttl_refresh_ms, *, Py_ssize_t max_frame_size=65536,
                 Py_ssize_t max_headers=64, Py_ssize_t max_header_line=8192):
        cdef Py_ssize_t i
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_line = max_header_line
        values = [float(b) for b in buckets]
        self.nbuckets = len(values)
        self.buckets = <double*>malloc((self.nbuckets + 1) * sizeof(double))
        self.hist = <int64_t*>calloc(self.nbuckets + 1, sizeof(int64_t))
        if self.buckets == NULL or self.hist == NULL:
            raise MemoryError()
        for i in range(self.nbuckets):
            self.buckets[i] = values[i]
        self.ttl_refresh_ms = int(ttl_refresh_ms)

    def __dealloc__(self):
        cdef Py_ssize_t i, d
        for i in range(self.nsess):
            free(self.sess[i].sid)
        for i in range(self.nrooms):
            free(self.rooms[i].hist)
            for d in range(LANE_GROUP_DIMS):
                free(self.rooms[i].ghist[d])
            vec_free(&self.rooms[i].beats)
            vec_free(&self.rooms[i].updated)
        free(self.sess)
        free(self.slots)
        free(self.rooms)
        free(self.conns)
        free(self.conn_map.keys)
        free(self.conn_map.vals)
        free(self.room_map.keys)
        free(self.room_map.vals)
        vec_free(&self.dirty_rooms)
        vec_free(&self.ttl_due)
        free(self.buckets)
        free(self.hist)

    # -- connections ---------------------------------------------------------------------------

    cdef LaneConn* _conn(self, int64_t key) except NULL:
        cdef int32_t idx = i64_find(&self.conn_map, key)
        if idx < 0:
            raise KeyError(key)
        return &self.conns[idx]

    def open(self, int64_t conn_key, double rate, double burst, double now):
        """A connection: its token bucket (rate 0 = no limit), not ready until ``set_ready``."""
        cdef int32_t idx = i64_find(&self.conn_map, conn_key)
        cdef LaneConn* grown
        cdef Py_ssize_t cap
        if idx < 0:
            if self.free_conn >= 0:
                idx = self.free_conn
                self.free_conn = self.conns[idx].next_free
            else:
                if self.nconns == self.capconns:
                    cap = self.capconns * 2 if self.capconns else 64
                    grown = <LaneConn*>realloc(self.conns, cap * sizeof(LaneConn))
                    if grown == NULL:
                        raise MemoryError()
                    self.conns = grown
                    self.capconns = cap
                idx = <int32_t>self.nconns
                self.nconns += 1
            i64_put(&self.conn_map, conn_key, idx)
        cdef LaneConn* c = &self.conns[idx]
        c.key = conn_key
        c.rate = rate
        c.burst = burst
        c.tokens = burst
        c.last_received = now
        c.ready = 0
        c.live = 1
        c.next_free = -1

    def charge(self, int64_t conn_key, double now, Py_ssize_t frames):
        """The full path received ``frames`` frames (min 1 token); False over the limit."""
        cdef LaneConn* c = self._conn(conn_key)
        cdef double tokens
        cdef bint ok = True
        if c.rate:
            tokens = c.tokens + (now - c.last_received) * c.rate
            if tokens > c.burst:
                tokens = c.burst
            tokens -= frames if frames > 1 else 1
            c.tokens = tokens
            ok = tokens >= 0
        c.last_received = now
        return ok

    def last_received(self, int64_t conn_key):
        """Monotonic seconds of the connection's last message (either path)."""
        return self._conn(conn_key).last_received

    def set_ready(self, int64_t conn_key, ready):
        """Whether the lane may take this connection's messages."""
        self._conn(conn_key).ready = 1 if ready else 0

    def close(self, int64_t conn_key):
        """Forget a connection."""
        cdef int32_t idx = i64_find(&self.conn_map, conn_key)
        if idx < 0:
            return
        i64_del(&self.conn_map, conn_key)
        self.conns[idx].live = 0
        self.conns[idx].next_free = self.free_conn
        self.free_conn = idx

    # -- rooms ---------------------------------------------------------------------------------

    cdef int32_t _room(self, int64_t key) except -1:
        """The room's index, created on first use."""
        cdef int32_t idx = i64_find(&self.room_map, key)
        cdef LaneRoom* grown
        cdef Py_ssize_t cap
        if idx >= 0:
            return idx
        if self.nrooms == self.caprooms:
            cap = self.caprooms * 2 if self.caprooms else 16
            grown = <LaneRoom*>realloc(self.rooms, cap * sizeof(LaneRoom))
            if grown == NULL:
                raise MemoryError()
            self.rooms = grown
            self.caprooms = cap
        idx = <int32_t>self.nrooms
        cdef LaneRoom* r = &self.rooms[idx]
        memset(r, 0, sizeof(LaneRoom))
        r.key = key
        r.hist = <int64_t*>calloc(self.nbuckets + 1, sizeof(int64_t))
        if r.hist == NULL:
            raise MemoryError()
        self.nrooms += 1
        i64_put(&self.room_map, key, idx)
        return idx

    # -- sessions ------------------------------------------------------------------------------

    cdef int32_t _find(self, const char* sid, Py_ssize_t n, uint64_t h) noexcept:
        cdef Py_ssize_t mask, i
        cdef int32_t v
        cdef LaneSession* s
        if self.slot_cap == 0:
            return -1
        mask = self.slot_cap - 1
        i = <Py_ssize_t>(h & <uint64_t>mask)
        while True:
            v = self.slots[i]
            if v == EMPTY:
                return -1
            if v != DELETED:
                s = &self.sess[v]
                if s.hash == h and s.sid_len == n and memcmp(s.sid, sid, n) == 0:
                    return v
            i = (i + 1) & mask

    cdef int32_t _find_str(self, session_id) except -2:
        cdef Py_ssize_t n
        cdef const char* p = PyUnicode_AsUTF8AndSize(session_id, &n)
        return self._find(p, n, hash_bytes(<const unsigned char*>p, n))

    cdef LaneSession* _session(self, session_id) except NULL:
        cdef int32_t idx = self._find_str(session_id)
        if idx < 0:
            raise KeyError(session_id)
        return &self.sess[idx]

    cdef int _grow_slots(self) except -1:
        cdef Py_ssize_t cap = 64 if self.slot_cap == 0 else (
            self.slot_cap * 2 if self.slot_used * 2 >= self.slot_cap else self.slot_cap)
        cdef int32_t* slots = <int32_t*>malloc(cap * sizeof(int32_t))
        cdef Py_ssize_t i, j, mask = cap - 1
        if slots == NULL:
            raise MemoryError()
        for i in range(cap):
            slots[i] = EMPTY
        for i in range(self.slot_cap):
            if self.slots[i] >= 0:
                j = <Py_ssize_t>(self.sess[self.slots[i]].hash & <uint64_t>mask)
                while slots[j] != EMPTY:
                    j = (j + 1) & mask
                slots[j] = self.slots[i]
        free(self.slots)
        self.slots = slots
        self.slot_cap = cap
        self.slot_tomb = 0
        return 0

    def add_session(self, session_id, int64_t conn_key, int64_t room_key, int64_t now_ms, double now):
        """A session joined on ``conn_key`` in ``room_key`` (a session already known restarts)."""
        cdef Py_ssize_t n, cap, mask, i, spot
        cdef const char* p = PyUnicode_AsUTF8AndSize(session_id, &n)
        cdef uint64_t h = hash_bytes(<const unsigned char*>p, n)
        cdef int32_t room = self._room(room_key)
        cdef int32_t idx = self._find(p, n, h)
        cdef LaneSession* grown
        cdef char* sid
        if idx >= 0:
            self.remove_session(session_id)
        sid = <char*>malloc(n + 1)
        if sid == NULL:
            raise MemoryError()
        memcpy(sid, p, n)
        sid[n] = 0
        if self.free_sess >= 0:
            idx = self.free_sess
            self.free_sess = self.sess[idx].next_free
        else:
            if self.nsess == self.capsess:
                cap = self.capsess * 2 if self.capsess else 64
                grown = <LaneSession*>realloc(self.sess, cap * sizeof(LaneSession))
                if grown == NULL:
                    free(sid)
                    raise MemoryError()
                self.sess = grown
                self.capsess = cap
            idx = <int32_t>self.nsess
            self.nsess += 1
        cdef LaneSession* s = &self.sess[idx]
        memset(s, 0, sizeof(LaneSession))
        s.sid = sid
        s.sid_len = n
        s.hash = h
        s.conn_key = conn_key
        s.room = room
        s.next_free = -1
        s.last_ms = now_ms
        s.ttl_refreshed = now_ms
        s.last_mono = now
        for i in range(LANE_GROUP_DIMS):
            s.group[i] = -1
        if (self.slot_used + self.slot_tomb + 1) * 10 >= self.slot_cap * 7:
            self._grow_slots()
        mask = self.slot_cap - 1
        i = <Py_ssize_t>(h & <uint64_t>mask)
        spot = -1
        while self.slots[i] != EMPTY:
            if self.slots[i] == DELETED and spot < 0:
                spot = i
            i = (i + 1) & mask
        if spot >= 0:
            i = spot
            self.slot_tomb -= 1
        self.slots[i] = idx
        self.slot_used += 1

    def set_groups(self, session_id, *slots):
        """The session's group slot per dimension (-1: none; see ``lane_py``)."""
        cdef LaneSession* s = self._session(session_id)
        cdef LaneRoom* r = &self.rooms[s.room]
        cdef Py_ssize_t d, rows, width = self.nbuckets + 1
        cdef int64_t* grown
        if len(slots) != LANE_GROUP_DIMS:
            raise ValueError(f"set_groups takes {LANE_GROUP_DIMS} slots, got {len(slots)}")
        for slot in slots:
            if not -1 <= slot < LANE_GROUP_SLOTS:
                raise ValueError(f"group slot {slot} out of range -1..{LANE_GROUP_SLOTS - 1}")
        for d in range(LANE_GROUP_DIMS):
            rows = <Py_ssize_t>slots[d] + 1
            if rows > r.grows[d]:
                grown = <int64_t*>realloc(r.ghist[d], rows * width * sizeof(int64_t))
                if grown == NULL:
                    raise MemoryError()
                memset(grown + r.grows[d] * width, 0, (rows - r.grows[d]) * width * sizeof(int64_t))
                r.ghist[d] = grown
                r.grows[d] = <int32_t>rows
        for d in range(LANE_GROUP_DIMS):
            s.group[d] = <int16_t>slots[d]

    def detach(self, session_id):
        """The session's connection went away (grace period): no lane beats, figures kept."""
        self._session(session_id).conn_key = -1

    def attach(self, session_id, int64_t conn_key):
        """The session resumed on ``conn_key``."""
        self._session(session_id).conn_key = conn_key

    def remove_session(self, session_id):
        """Forget a session, its pending beat, TTL refresh and update included."""
        cdef int32_t idx = self._find_str(session_id)
        cdef Py_ssize_t mask, i
        cdef LaneSession* s
        cdef LaneRoom* r
        if idx < 0:
            return
        s = &self.sess[idx]
        r = &self.rooms[s.room]
        if s.flags & LF_DIRTY:
            vec_remove(&r.beats, idx)
            self.npending -= 1
            if r.watched:
                self.npending_watched -= 1
            if r.beats.len == 0 and r.in_dirty:
                vec_remove(&self.dirty_rooms, s.room)
                r.in_dirty = 0
        if s.flags & LF_TTL_DUE:
            vec_remove(&self.ttl_due, idx)
        if s.flags & LF_UPDATED:
            vec_remove(&r.updated, idx)
        mask = self.slot_cap - 1
        i = <Py_ssize_t>(s.hash & <uint64_t>mask)
        while self.slots[i] != idx:
            i = (i + 1) & mask
        self.slots[i] = DELETED
        self.slot_used -= 1
        self.slot_tomb += 1
        free(s.sid)
        s.sid = NULL
        s.flags = 0
        s.next_free = self.free_sess
        self.free_sess = idx

    def beat(self, session_id, latency_ms, int64_t now_ms, double now):
        """Record a heartbeat the full path checked (KeyError for an unknown session);
        ``latency_ms`` None: a heartbeat without a latency sample."""
        cdef int32_t idx = self._find_str(session_id)
        if idx < 0:
            raise KeyError(session_id)
        if latency_ms is None:
            self._record(idx, 0.0, False, False, now_ms, now)
            return
        cdef bint is_int = isinstance(latency_ms, int)
        cdef double latency = <double>latency_ms if is_int else float(latency_ms)
        self._record(idx, latency, is_int, True, now_ms, now)

    cdef int _record(self, int32_t idx, double latency, bint is_int, bint has_latency, int64_t now_ms,
                     double now) except -1:
        cdef LaneSession* s = &self.sess[idx]
        cdef LaneRoom* r = &self.rooms[s.room]
        cdef Py_ssize_t lo, hi, mid
        s.last_ms = now_ms
        s.last_mono = now
        s.heartbeats += 1
        if not (s.flags & LF_DIRTY):
            if not r.in_dirty:
                vec_push(&self.dirty_rooms, s.room)
                r.in_dirty = 1
            vec_push(&r.beats, idx)
            s.flags |= LF_DIRTY
            self.npending += 1
            if r.watched:
                self.npending_watched += 1
            if not has_latency:
                s.beat_latency = NAN  # Redis keeps the session's last reported latency
        s.beat_ms = now_ms
        if has_latency:
            s.beat_latency = latency
            s.flags = (s.flags | LF_BEAT_INT) if is_int else (s.flags & ~LF_BEAT_INT)
        if now_ms - s.ttl_refreshed > self.ttl_refresh_ms:
            s.ttl_refreshed = now_ms
            if not (s.flags & LF_TTL_DUE):
                vec_push(&self.ttl_due, idx)
                s.flags |= LF_TTL_DUE
        if r.watched and not (s.flags & LF_UPDATED):
            vec_push(&r.updated, idx)
            s.flags |= LF_UPDATED
        self.heartbeats += 1
        if not has_latency:
            return 0
        s.latency = latency
        s.flags |= LF_HAS_LATENCY
        if is_int:
            s.flags |= LF_LATENCY_INT
        else:
            s.flags &= ~LF_LATENCY_INT
        if s.latency_count == 0 or latency < s.latency_min:
            s.latency_min = latency
            s.flags = (s.flags | LF_MIN_INT) if is_int else (s.flags & ~LF_MIN_INT)
        if s.latency_count == 0 or latency > s.latency_max:
            s.latency_max = latency
            s.flags = (s.flags | LF_MAX_INT) if is_int else (s.flags & ~LF_MAX_INT)
        s.latency_count += 1
        s.latency_sum += latency
        # bisect_left: the first bound >= latency (the last bucket is the overflow)
        lo = 0
        hi = self.nbuckets
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.buckets[mid] < latency:
                lo = mid + 1
            else:
                hi = mid
        r.latency_sum += latency
        r.count += 1
        r.hist[lo] += 1
        # The session's groups (two increments; set_groups made their rows).
        if s.group[0] >= 0:
            r.ghist[0][s.group[0] * (self.nbuckets + 1) + lo] += 1
            r.groups_dirty = 1
        if s.group[1] >= 0:
            r.ghist[1][s.group[1] * (self.nbuckets + 1) + lo] += 1
            r.groups_dirty = 1
        self.latency_sum += latency
        self.hist[lo] += 1
        return 0

    def stats(self, session_id):
        """(last_heartbeat_ms, latency_ms, heartbeats, latency_sum, latency_min, latency_max,
        latency_count) or None; latencies keep the type they came in."""
        cdef int32_t idx = self._find_str(session_id)
        if idx < 0:
            return None
        cdef LaneSession* s = &self.sess[idx]
        latency = latency_min = latency_max = None
        if s.flags & LF_HAS_LATENCY:
            latency = _number_object(s.latency, s.flags & LF_LATENCY_INT)
        if s.latency_count:
            latency_min = _number_object(s.latency_min, s.flags & LF_MIN_INT)
            latency_max = _number_object(s.latency_max, s.flags & LF_MAX_INT)
        return (s.last_ms, latency, s.heartbeats, s.latency_sum, latency_min, latency_max, s.latency_count)

    def last_beat(self, session_id):
        """Monotonic seconds of the session's last beat (its join before any), None if unknown."""
        cdef int32_t idx = self._find_str(session_id)
        if idx < 0:
            return None
        return self.sess[idx].last_mono

    def session_count(self):
        """Sessions the lane holds."""
        return self.slot_used

    def grade(self, double now, double late_s, double at_risk_s):
        """(live, late, at_risk, [(session_id, grade)] of the sessions whose grade moved): see
        ``lane_py.HeartbeatLanePy.grade``."""
        cdef Py_ssize_t i
        cdef LaneSession* s
        cdef double age
        cdef uint8_t g
        cdef Py_ssize_t counts[3]
        cdef list moved = []
        counts[0] = counts[1] = counts[2] = 0
        for i in range(self.nsess):
            s = &self.sess[i]
            if s.sid == NULL:
                continue
            age = now - s.last_mono
            g = 0 if age <= late_s else (1 if age <= at_risk_s else 2)
            counts[g] += 1
            if g != s.grade:
                s.grade = g
                moved.append((s.sid[:s.sid_len].decode("utf-8"), g))
        return counts[0], counts[1], counts[2], moved

    def set_watched(self, int64_t room_key, watched):
        """Whether the room's beating sessions are collected for ``take_updated``."""
        cdef LaneRoom* r = &self.rooms[self._room(room_key)]
        cdef Py_ssize_t i
        if r.watched and not watched:
            self.npending_watched -= r.beats.len
        elif watched and not r.watched:
            self.npending_watched += r.beats.len
        r.watched = 1 if watched else 0
        if not watched:
            for i in range(r.updated.len):
                self.sess[r.updated.data[i]].flags &= ~LF_UPDATED
            r.updated.len = 0

    # -- the hot path --------------------------------------------------------------------------

    cdef Py_ssize_t offer_raw(self, int64_t conn_key, const unsigned char* msg, Py_ssize_t n,
                              unsigned char* receipt) except -2:
        """The lane's C entry: -1 when the message takes the full path, else the length of the
        RECEIPT written to ``receipt`` (LANE_RECEIPT_MAX bytes of room; 0 = none asked)."""
        cdef int32_t ci = i64_find(&self.conn_map, conn_key)
        cdef LaneConn* c
        cdef Scanned got
        cdef double tokens, now
        cdef int32_t idx
        cdef LaneSession* s
        if ci < 0:
            return -1
        c = &self.conns[ci]
        if not c.ready:
            return -1
        if scan_heartbeat(msg, n, self.max_frame_size, self.max_headers, self.max_header_line,
                          &got) < 0:
            return -1
        idx = self._find(<const char*>msg + got.sid_at, got.sid_len, hash_bytes(msg + got.sid_at, got.sid_len))
        if idx < 0:
            return -1
        s = &self.sess[idx]
        if s.conn_key != conn_key:
            return -1
        now = monotonic()
        if c.rate:
            tokens = c.tokens + (now - c.last_received) * c.rate
            if tokens > c.burst:
                tokens = c.burst
            if tokens < 1.0:
                return -1  # the full path charges it and refuses the message
            c.tokens = tokens - 1.0
        c.last_received = now
        if now - self.wall_checked > 0.05:
            # The wall clock is read at most every 50 ms and derived from the monotonic one in
            # between (one clock read per heartbeat instead of two); a step of the wall clock
            # shows within 50 ms.
            self.wall_at = wall_offset()
            self.wall_checked = now
        # int(time.time() * 1000), as presence.model.now_ms computes it
        self._record(idx, got.latency, got.is_int, True, <int64_t>((now + self.wall_at) * 1000.0), now)
        self.handled += 1
        if got.receipt_len < 0:
            return 0
        memcpy(receipt, RECEIPT_HEAD, RECEIPT_HEAD_LEN)
        memcpy(receipt + RECEIPT_HEAD_LEN, msg + got.receipt_at, got.receipt_len)
        memcpy(receipt + RECEIPT_HEAD_LEN + got.receipt_len, b"\n\n\0", 3)
        return RECEIPT_HEAD_LEN + got.receipt_len + 3

    def offer(self, int64_t conn_key, message):
        """Take one WebSocket text message if it is an ordinary heartbeat: its RECEIPT frame
        (b"" when none was asked), or None for the full path."""
        cdef unsigned char out[LANE_RECEIPT_MAX]
        cdef bytes data = message if type(message) is bytes else bytes(message)
        cdef Py_ssize_t got = self.offer_raw(
            conn_key, <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
        if got < 0:
            return None
        return PyBytes_FromStringAndSize(<char*>out, got)

    # -- drained by Python ---------------------------------------------------------------------

    def pending(self):
        """Beats waiting in ``take_beats`` (one per session at most)."""
        return self.npending

    def pending_watched(self):
        """Of the pending beats, those of watched rooms (their roster updates wait on them)."""
        return self.npending_watched

    def take_beats(self, bint watched_only=False):
        """room_key -> the room's pending beats as ``lane_py.pack_beats`` writes them (a
        ``PackedBeats``: the ZADD XX's score/member and the HSET's field/value pairs in RESP);
        with ``watched_only`` only the watched rooms' beats, the others' stay pending."""
        cdef dict out = {}
        cdef Py_ssize_t ri, j, tlen, kept = 0, nlat
        cdef LaneRoom* r
        cdef LaneSession* s
        cdef RespBuf members
        cdef RespBuf latencies
        cdef char* text
        cdef char num[32]
        cdef int32_t room
        members.data = NULL
        members.size = members.used = 0
        latencies.data = NULL
        latencies.size = latencies.used = 0
        try:
            for ri in range(self.dirty_rooms.len):
                room = self.dirty_rooms.data[ri]
                r = &self.rooms[room]
                if watched_only and not r.watched:
                    # stays dirty, in the same order (compacted to the front of the list)
                    self.dirty_rooms.data[kept] = room
                    kept += 1
                    continue
                self.npending -= r.beats.len
                members.used = latencies.used = 0
                nlat = 0
                for j in range(r.beats.len):
                    s = &self.sess[r.beats.data[j]]
                    s.flags &= ~LF_DIRTY
                    tlen = _put_int(num, <long long>s.beat_ms)
                    _resp_bulk(&members, num, tlen)
                    _resp_bulk(&members, s.sid, s.sid_len)
                    if s.beat_latency != s.beat_latency:  # NaN: no latency (Redis keeps its last)
                        continue
                    _resp_bulk(&latencies, s.sid, s.sid_len)
                    nlat += 1
                    if s.flags & LF_BEAT_INT:
                        tlen = _put_int(num, <long long>s.beat_latency)
                        _resp_bulk(&latencies, num, tlen)
                    else:
                        text = PyOS_double_to_string(s.beat_latency, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
                        try:
                            _resp_bulk(&latencies, text, strlen(text))
                        finally:
                            PyMem_Free(text)
                out[r.key] = PackedBeats(
                    r.beats.len,
                    PyBytes_FromStringAndSize(members.data, members.used),
                    nlat,
                    PyBytes_FromStringAndSize(latencies.data, latencies.used),
                )
                r.beats.len = 0
                r.in_dirty = 0
        finally:
            free(members.data)
            free(latencies.data)
        self.dirty_rooms.len = kept
        self.npending_watched = 0
        return out

    def take_ttl_due(self):
        """Sessions whose TTL refresh became due (at most once per ttl_refresh_ms each)."""
        cdef list out = []
        cdef Py_ssize_t i
        cdef LaneSession* s
        for i in range(self.ttl_due.len):
            s = &self.sess[self.ttl_due.data[i]]
            s.flags &= ~LF_TTL_DUE
            out.append(s.sid[:s.sid_len].decode("utf-8"))
        self.ttl_due.len = 0
        return out

    def take_updated(self, int64_t room_key):
        """Sessions of a watched room that beat since the last take."""
        cdef int32_t room = i64_find(&self.room_map, room_key)
        cdef list out = []
        cdef Py_ssize_t i
        cdef LaneSession* s
        cdef LaneRoom* r
        if room < 0:
            return out
        r = &self.rooms[room]
        for i in range(r.updated.len):
            s = &self.sess[r.updated.data[i]]
            s.flags &= ~LF_UPDATED
            s.grade = 0  # it just beat: the caller marks it live
            out.append(s.sid[:s.sid_len].decode("utf-8"))
        r.updated.len = 0
        return out

    def take_room_sample(self, int64_t room_key):
        """The room's (latency_sum, count, histogram) since the last take."""
        cdef int32_t room = i64_find(&self.room_map, room_key)
        cdef Py_ssize_t i
        cdef LaneRoom* r
        if room < 0:
            return 0.0, 0, [0] * (self.nbuckets + 1)
        r = &self.rooms[room]
        out = (r.latency_sum, r.count, [r.hist[i] for i in range(self.nbuckets + 1)])
        r.latency_sum = 0.0
        r.count = 0
        memset(r.hist, 0, (self.nbuckets + 1) * sizeof(int64_t))
        return out

    def take_room_groups(self, int64_t room_key):
        """The room's group histograms since the last take: [(dimension, slot, histogram)] of the
        groups that counted a latency, by dimension then slot."""
        cdef int32_t room = i64_find(&self.room_map, room_key)
        cdef Py_ssize_t d, g, i, width = self.nbuckets + 1
        cdef int64_t* row
        cdef bint used
        cdef list out = []
        cdef LaneRoom* r
        if room < 0:
            return out
        r = &self.rooms[room]
        if not r.groups_dirty:
            return out
        for d in range(LANE_GROUP_DIMS):
            for g in range(r.grows[d]):
                row = r.ghist[d] + g * width
                used = False
                for i in range(width):
                    if row[i]:
                        used = True
                        break
                if used:
                    out.append((d, g, [row[i] for i in range(width)]))
                    memset(row, 0, width * sizeof(int64_t))
        r.groups_dirty = 0
        return out

    def take_counters(self):
        """(heartbeats, latency_sum, histogram, handled by the lane) since the last take."""
        cdef Py_ssize_t i
        out = (self.heartbeats, self.latency_sum, [self.hist[i] for i in range(self.nbuckets + 1)], self.handled)
        self.heartbeats = 0
        self.latency_sum = 0.0
        memset(self.hist, 0, (self.nbuckets + 1) * sizeof(int64_t))
        self.handled = 0
        return out
