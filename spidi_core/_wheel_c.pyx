# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython heartbeat timing wheel; behaves exactly like :mod:`spidi_core.wheel_py` (the spec).

Same lazy algorithm and the same bucket arithmetic as the reference; see its module docstring
for the invariant. What differs is the storage:

* each key has one ``_Entry`` (allocated once, at ``add``) holding its deadline and its bucket;
  ``touch`` is one dict lookup plus a C double store, with no allocation;
* each bucket is an intrusive circular doubly-linked list through the entries, headed by a
  sentinel ``_Entry``, so moving or unlinking a key is a few pointer stores.

The links are borrowed ``PyObject*``: the ``_entries`` dict owns every live entry and the
``_heads`` list owns the sentinels, so the lists create no reference cycles and entries need no
GC tracking. An entry is always unlinked before the dict lets go of it. Keys are expected to
be plain hashables (session ids are str): a key whose ``__eq__``/``__hash__`` calls back into
the same wheel is not supported.
"""

cimport cython
from cpython.dict cimport PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM
from cpython.object cimport PyObject
from libc.math cimport floor, isfinite
from libc.stdint cimport int64_t

__all__ = ["HeartbeatWheelC"]

# Same clamp as wheel_py.TICK_CAP: keeps tick numbers, and their differences, inside an int64.
cdef int64_t TICK_CAP = (<int64_t>1) << 60
cdef double TICK_CAP_D = <double>TICK_CAP


@cython.final
@cython.no_gc
@cython.freelist(256)
cdef class _Entry:
    """One tracked key (or, with key None, a bucket's sentinel)."""

    cdef object key
    cdef double deadline
    cdef Py_ssize_t slot
    cdef PyObject* prev  # borrowed: see the module docstring
    cdef PyObject* next


cdef inline void _link(_Entry head, _Entry e) noexcept:
    """Insert ``e`` at the tail of the list headed by ``head``."""
    cdef _Entry last = <_Entry>head.prev
    e.prev = <PyObject*>last
    e.next = <PyObject*>head
    last.next = <PyObject*>e
    head.prev = <PyObject*>e


cdef inline void _unlink(_Entry e) noexcept:
    (<_Entry>e.prev).next = e.next
    (<_Entry>e.next).prev = e.prev
    e.prev = NULL
    e.next = NULL


cdef inline _Entry _sentinel():
    cdef _Entry h = _Entry.__new__(_Entry)
    h.prev = <PyObject*>h
    h.next = <PyObject*>h
    h.slot = -1
    return h


cdef inline int64_t _mod(int64_t a, int64_t n) noexcept:
    # cdivision is on, so % follows the sign of a; the reference uses Python's floor modulo
    cdef int64_t r = a % n
    return r + n if r < 0 else r


@cython.final
@cython.no_gc_clear  # a GC clear must never leave _entries/_heads as None under the C code
cdef class HeartbeatWheelC:
    """Expire keys whose deadline has passed, with O(1) amortised add/touch/remove/advance.

    ``tick`` is the width of one bucket in seconds, ``slots`` the number of buckets and ``now``
    the wheel's starting time (monotonic seconds, the same clock as every deadline).
    """

    cdef double _tick
    cdef Py_ssize_t _nslots
    cdef double _now
    cdef int64_t _tick_no  # tick of the wheel's time: the bucket scanned next
    cdef dict _entries  # key -> _Entry
    cdef list _heads  # sentinel _Entry per bucket

    def __cinit__(self, double tick=0.1, Py_ssize_t slots=4096, double now=0.0):
        if not (tick > 0.0 and isfinite(tick)):
            raise ValueError(f"tick must be a positive finite number, not {tick!r}")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, not {slots!r}")
        if not isfinite(now):
            raise ValueError(f"now must be finite, not {now!r}")
        self._tick = tick
        self._nslots = slots
        self._now = now
        self._tick_no = self._tick_of(now)
        self._entries = {}
        self._heads = [_sentinel() for _ in range(slots)]

    # -- helpers -------------------------------------------------------------------------------

    cdef inline int64_t _tick_of(self, double t) noexcept:
        cdef double q = t / self._tick
        if q >= TICK_CAP_D:
            return TICK_CAP
        if q <= -TICK_CAP_D:
            return -TICK_CAP
        return <int64_t>floor(q)

    cdef inline int64_t _target_tick(self, double deadline) noexcept:
        cdef int64_t t = self._tick_of(deadline)
        return t if t > self._tick_no else self._tick_no

    cdef inline _Entry _head(self, Py_ssize_t s):
        return <_Entry>PyList_GET_ITEM(self._heads, s)

    cdef inline void _place(self, _Entry e) noexcept:
        cdef Py_ssize_t s = <Py_ssize_t>_mod(self._target_tick(e.deadline), self._nslots)
        e.slot = s
        _link(self._head(s), e)

    cdef void _pull_in(self, _Entry e) noexcept:
        # deadline moved earlier: move the entry only if its bucket would be reached too late
        cdef int64_t t = self._target_tick(e.deadline)
        if self._tick_no + _mod(e.slot - self._tick_no, self._nslots) <= t:
            return
        _unlink(e)
        self._place(e)

    # -- public API ----------------------------------------------------------------------------

    @property
    def tick(self):
        """Seconds covered by one bucket."""
        return self._tick

    @property
    def slots(self):
        """Number of buckets; one rotation spans ``slots * tick`` seconds."""
        return self._nslots

    @property
    def now(self):
        """The wheel's current time: the largest ``now`` given to the constructor or ``advance``."""
        return self._now

    def add(self, key, double deadline):
        """Track ``key`` until ``deadline``; re-adding a present key acts like :meth:`touch`.

        A deadline at or before the wheel's time expires on the next :meth:`advance`.
        """
        if deadline != deadline:
            raise ValueError("deadline must not be NaN")
        cdef PyObject* p = PyDict_GetItemWithError(self._entries, key)
        cdef _Entry e
        cdef double old
        if p is NULL:
            e = _Entry.__new__(_Entry)
            e.key = key
            e.deadline = deadline
            PyDict_SetItem(self._entries, key, e)
            self._place(e)
            return
        e = <_Entry>p
        old = e.deadline
        e.deadline = deadline
        if deadline < old:
            self._pull_in(e)

    def touch(self, key, double deadline):
        """Move ``key``'s deadline, later or earlier. Raises KeyError if ``key`` is absent."""
        if deadline != deadline:
            raise ValueError("deadline must not be NaN")
        cdef PyObject* p = PyDict_GetItemWithError(self._entries, key)
        if p is NULL:
            raise KeyError(key)
        cdef _Entry e = <_Entry>p
        cdef double old = e.deadline
        e.deadline = deadline
        # later: nothing else to do (lazy); earlier: the bucket may be reached too late
        if deadline < old:
            self._pull_in(e)

    def remove(self, key):
        """Stop tracking ``key``. Returns True if it was present."""
        cdef PyObject* p = PyDict_GetItemWithError(self._entries, key)
        if p is NULL:
            return False
        cdef _Entry e = <_Entry>p  # keeps the entry alive past the dict deletion
        _unlink(e)
        PyDict_DelItem(self._entries, key)
        return True

    def advance(self, double now):
        """Move the wheel's time to ``now``; remove and return every key whose deadline <= now.

        Each expired key is returned exactly once, in no particular order. A ``now`` earlier than
        the wheel's time returns ``[]`` and leaves the wheel unchanged. However far ``now`` jumps,
        at most one rotation of buckets is scanned.
        """
        if now != now:
            raise ValueError("now must not be NaN")
        if now < self._now:
            return []
        cdef int64_t end = self._tick_of(now)
        cdef int64_t start = self._tick_no
        # the current bucket is always rescanned (past-deadline adds, later keys of this tick)
        cdef int64_t span = end - start + 1
        if span > self._nslots:
            span = self._nslots
        cdef list expired = []
        cdef _Entry survivors = _sentinel()
        cdef _Entry head, e
        cdef PyObject* p
        cdef int64_t i
        for i in range(span):
            head = self._head(<Py_ssize_t>_mod(start + i, self._nslots))
            if head.next == <PyObject*>head:
                continue
            # detach the whole chain at once, then walk it: each entry is visited once and its
            # old neighbours are never written again (they are cold in cache)
            (<_Entry>head.prev).next = NULL
            p = head.next
            head.next = head.prev = <PyObject*>head
            while p is not NULL:
                e = <_Entry>p
                p = e.next
                if e.deadline <= now:
                    e.prev = e.next = NULL
                    expired.append(e.key)
                    PyDict_DelItem(self._entries, e.key)
                else:
                    _link(survivors, e)
        self._now = now
        self._tick_no = end
        # re-bucket only after the scan, relative to the new tick, so that no key is met twice
        while survivors.next != <PyObject*>survivors:
            e = <_Entry>survivors.next
            _unlink(e)
            self._place(e)
        return expired

    def deadline(self, key):
        """The key's current deadline, or None if it is not tracked."""
        cdef PyObject* p = PyDict_GetItemWithError(self._entries, key)
        if p is NULL:
            return None
        return (<_Entry>p).deadline

    def __len__(self):
        return len(self._entries)

    def __contains__(self, key):
        return key in self._entries

    def __repr__(self):
        return (
            f"<{type(self).__name__} keys={len(self)} now={self._now!r} "
            f"tick={self._tick!r} slots={self._nslots}>"
        )
