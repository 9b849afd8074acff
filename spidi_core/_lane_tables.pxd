# The heartbeat lane's C containers (spidi_core/_lane_c.pyx): a growable int32 list and an
# open-addressing int64 -> int32 table, and the session ids' hash. Inline functions only.

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove

cdef enum:
    EMPTY = -1
    DELETED = -2


ctypedef struct IntVec:
    int32_t* data
    Py_ssize_t len
    Py_ssize_t cap


ctypedef struct I64Map:
    # Open addressing, linear probing: vals[i] is a record index, EMPTY or DELETED.
    int64_t* keys
    int32_t* vals
    Py_ssize_t cap
    Py_ssize_t used
    Py_ssize_t tomb


cdef inline int vec_push(IntVec* v, int32_t x) except -1:
    cdef int32_t* data
    cdef Py_ssize_t cap
    if v.len == v.cap:
        cap = v.cap * 2 if v.cap else 8
        data = <int32_t*>realloc(v.data, cap * sizeof(int32_t))
        if data == NULL:
            raise MemoryError()
        v.data = data
        v.cap = cap
    v.data[v.len] = x
    v.len += 1
    return 0


cdef inline void vec_remove(IntVec* v, int32_t x) noexcept:
    """Take ``x`` out, keeping the order of the others."""
    cdef Py_ssize_t i
    for i in range(v.len):
        if v.data[i] == x:
            memmove(&v.data[i], &v.data[i + 1], (v.len - i - 1) * sizeof(int32_t))
            v.len -= 1
            return


cdef inline void vec_free(IntVec* v) noexcept:
    free(v.data)
    v.data = NULL
    v.len = v.cap = 0


cdef inline uint64_t mix64(int64_t key) noexcept:
    cdef uint64_t h = <uint64_t>key
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    return h


cdef inline int32_t i64_find(I64Map* m, int64_t key) noexcept:
    cdef Py_ssize_t mask, i
    cdef int32_t v
    if m.cap == 0:
        return -1
    mask = m.cap - 1
    i = <Py_ssize_t>(mix64(key) & <uint64_t>mask)
    while True:
        v = m.vals[i]
        if v == EMPTY:
            return -1
        if v != DELETED and m.keys[i] == key:
            return v
        i = (i + 1) & mask


cdef inline int i64_grow(I64Map* m) except -1:
    cdef Py_ssize_t cap = 16 if m.cap == 0 else (m.cap * 2 if m.used * 2 >= m.cap else m.cap)
    cdef int64_t* keys = <int64_t*>malloc(cap * sizeof(int64_t))
    cdef int32_t* vals = <int32_t*>malloc(cap * sizeof(int32_t))
    cdef Py_ssize_t i, j, mask = cap - 1
    if keys == NULL or vals == NULL:
        free(keys)
        free(vals)
        raise MemoryError()
    for i in range(cap):
        vals[i] = EMPTY
    for i in range(m.cap):
        if m.vals[i] >= 0:
            j = <Py_ssize_t>(mix64(m.keys[i]) & <uint64_t>mask)
            while vals[j] != EMPTY:
                j = (j + 1) & mask
            keys[j] = m.keys[i]
            vals[j] = m.vals[i]
    free(m.keys)
    free(m.vals)
    m.keys = keys
    m.vals = vals
    m.cap = cap
    m.tomb = 0
    return 0


cdef inline int i64_put(I64Map* m, int64_t key, int32_t val) except -1:
    """Insert or overwrite."""
    cdef Py_ssize_t mask, i, spot
    cdef int32_t v
    if (m.used + m.tomb + 1) * 10 >= m.cap * 7:
        i64_grow(m)
    mask = m.cap - 1
    i = <Py_ssize_t>(mix64(key) & <uint64_t>mask)
    spot = -1
    while True:
        v = m.vals[i]
        if v == EMPTY:
            break
        if v == DELETED:
            if spot < 0:
                spot = i
        elif m.keys[i] == key:
            m.vals[i] = val
            return 0
        i = (i + 1) & mask
    if spot >= 0:
        i = spot
        m.tomb -= 1
    m.keys[i] = key
    m.vals[i] = val
    m.used += 1
    return 0


cdef inline void i64_del(I64Map* m, int64_t key) noexcept:
    cdef Py_ssize_t mask, i
    cdef int32_t v
    if m.cap == 0:
        return
    mask = m.cap - 1
    i = <Py_ssize_t>(mix64(key) & <uint64_t>mask)
    while True:
        v = m.vals[i]
        if v == EMPTY:
            return
        if v != DELETED and m.keys[i] == key:
            m.vals[i] = DELETED
            m.used -= 1
            m.tomb += 1
            return
        i = (i + 1) & mask


cdef inline uint64_t hash_bytes(const unsigned char* p, Py_ssize_t n) noexcept:
    """A fast 64-bit hash of a session id, 8 bytes per step (the ids are the server's own, so
    no adversary chooses what the table holds)."""
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ <uint64_t>n
    cdef uint64_t w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * 0xff51afd7ed558ccdULL
        h ^= h >> 32
        p += 8
        n -= 8
    if n:
        w = 0
        memcpy(&w, p, n)
        h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 29
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 32
    return h
