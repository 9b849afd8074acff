# The heartbeat lane's C layout, declared here so that other extensions (the WebSocket stream,
# spidi_core/_ws_c.pyx) can call ``offer_raw`` without a Python object per heartbeat.

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t

from spidi_core._lane_tables cimport I64Map, IntVec

cdef enum:
    LANE_RECEIPT_MAX = 96  # room for "RECEIPT\nreceipt-id:" + a 64-byte id + "\n\n\0"
    LANE_GROUP_DIMS = 2  # lane_py.GROUP_DIMENSIONS
    LANE_GROUP_SLOTS = 256  # lane_py.MAX_GROUP_SLOTS


ctypedef struct LaneConn:
    int64_t key
    double rate
    double burst
    double tokens
    double last_received
    uint8_t ready
    uint8_t live
    int32_t next_free


ctypedef struct LaneSession:
    char* sid  # malloc'd UTF-8 bytes of the session id, NULL when the record is free
    Py_ssize_t sid_len
    uint64_t hash
    int64_t conn_key  # -1: detached
    int32_t room  # index into rooms
    int32_t next_free
    int64_t last_ms
    int64_t ttl_refreshed
    int64_t heartbeats
    int64_t latency_count  # heartbeats that carried a latency
    int64_t beat_ms  # the pending beat (valid while dirty)
    double beat_latency  # NaN: the pending beat carries no latency
    double last_mono
    double latency
    double latency_sum
    double latency_min
    double latency_max
    uint8_t flags  # LF_* bits
    uint8_t grade  # its liveness grade as ``grade`` last gave it (0 live, 1 late, 2 at risk)
    int16_t group[LANE_GROUP_DIMS]  # its group slot per dimension (set_groups), -1: none


ctypedef struct LaneRoom:
    int64_t key
    double latency_sum
    int64_t count
    int64_t* hist
    IntVec beats  # sessions with a pending beat, in order of their first beat since the take
    IntVec updated  # sessions that beat since the last take_updated (watched rooms)
    uint8_t watched
    uint8_t in_dirty  # listed in dirty_rooms
    uint8_t groups_dirty  # a group histogram counted since take_room_groups
    # Per dimension: a histogram per group slot, slot-major (rows * (nbuckets + 1) counts), grown
    # by set_groups to the highest slot a session of the room was given.
    int64_t* ghist[LANE_GROUP_DIMS]
    int32_t grows[LANE_GROUP_DIMS]


cdef class HeartbeatLaneC:
    cdef double* buckets
    cdef double wall_at  # time.time() - time.monotonic(), read at wall_checked (monotonic s)
    cdef double wall_checked
    cdef Py_ssize_t nbuckets
    cdef int64_t ttl_refresh_ms
    cdef Py_ssize_t max_frame_size  # the STOMP parser's limits: frames beyond them are not taken
    cdef Py_ssize_t max_headers
    cdef Py_ssize_t max_header_line
    cdef LaneConn* conns
    cdef Py_ssize_t nconns
    cdef Py_ssize_t capconns
    cdef int32_t free_conn
    cdef I64Map conn_map
    cdef LaneSession* sess
    cdef Py_ssize_t nsess
    cdef Py_ssize_t capsess
    cdef int32_t free_sess
    cdef int32_t* slots  # session hash index: record index, -1 empty, -2 deleted
    cdef Py_ssize_t slot_cap
    cdef Py_ssize_t slot_used
    cdef Py_ssize_t slot_tomb
    cdef LaneRoom* rooms
    cdef Py_ssize_t nrooms
    cdef Py_ssize_t caprooms
    cdef I64Map room_map
    cdef IntVec dirty_rooms
    cdef IntVec ttl_due
    cdef Py_ssize_t npending
    cdef Py_ssize_t npending_watched  # of npending, those in watched rooms
    cdef int64_t heartbeats
    cdef int64_t handled
    cdef double latency_sum
    cdef int64_t* hist

    cdef LaneConn* _conn(self, int64_t key) except NULL
    cdef int32_t _room(self, int64_t key) except -1
    cdef int32_t _find(self, const char* sid, Py_ssize_t n, uint64_t h) noexcept
    cdef int32_t _find_str(self, session_id) except -2
    cdef LaneSession* _session(self, session_id) except NULL
    cdef int _grow_slots(self) except -1
    cdef int _record(self, int32_t idx, double latency, bint is_int, bint has_latency, int64_t now_ms,
                     double now) except -1
    cdef Py_ssize_t offer_raw(self, int64_t conn_key, const unsigned char* msg, Py_ssize_t n,
                              unsigned char* receipt) except -2
