# cython: language_level=3
"""A bound on how long uvloop's I/O phase runs before the loop turns to its timers and tasks.

libuv's ``uv__io_poll`` calls ``epoll_wait`` again, without returning, as long as the last call
filled its 1,024-event array, up to 48 times. With thousands of sockets each readable every
few milliseconds, one phase can run for half a second: the data callbacks (and the heartbeats
answered in them) go on, while everything that runs as a task or a timer (the Redis flusher, a
HELLO's admission, the roster fan-out) waits for the phase to end.

The only ways libuv leaves that loop early are a signal or io_uring: so the bound is a signal.
It is a ``uv_signal_t`` of the loop's on a real-time signal plus a ``uv_prepare_t``: the first
``io_phase_tick`` of a phase notes the time, and the first one past the budget raises the signal
in this thread. libuv's handler writes to the loop's signal pipe; the ``epoll_wait`` that reports
the pipe ends the phase, after the callbacks of the events it returned with it. The prepare
callback (just before the next poll) starts a new phase. Cost: one clock read per chunk read,
one signal per phase that outlasts the budget, nothing in an idle loop (the first tick, not the
poll, starts the clock).

libuv's functions come from uvloop's own extension (``libuv_get_loop_t_ptr`` gives the loop):
the handles belong to the very libuv that runs the loop. One loop per process at a time (a node
runs one); ``install`` counts its users on that loop and ``release`` closes the handles with the
last, which must happen before the loop closes (uvloop refuses to close a loop with open handles
it does not know).
"""

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

__all__ = ["breaks", "install", "installed", "release", "tick"]

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int dlclose(void *handle)
    char *dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from "<signal.h>" nogil:
    int raise_signal "raise"(int sig)
    int SIGRTMAX

ctypedef void (*prepare_cb_t)(void *handle) noexcept nogil
ctypedef void (*signal_cb_t)(void *handle, int signum) noexcept nogil
ctypedef void (*close_cb_t)(void *handle) noexcept nogil
ctypedef size_t (*handle_size_t)(int handle_type) noexcept nogil
ctypedef int (*handle_init_t)(void *loop, void *handle) noexcept nogil
ctypedef int (*prepare_start_t)(void *handle, prepare_cb_t cb) noexcept nogil
ctypedef int (*signal_start_t)(void *handle, signal_cb_t cb, int signum) noexcept nogil
ctypedef void (*unref_t)(void *handle) noexcept nogil
ctypedef void (*close_t)(void *handle, close_cb_t cb) noexcept nogil

# uv_handle_type values (uv.h's UV_HANDLE_TYPE_MAP order, stable across libuv 1.x)
DEF UV_PREPARE = 9
DEF UV_SIGNAL = 16

# A real-time signal nobody else in the process handles (Python and uvloop use none).
SIGNAL_OFFSET = 6


cdef struct Bound:
    bint active
    int users
    void *loop
    void *prepare
    void *signal
    int signum
    int64_t budget_ns
    int64_t started_ns  # the phase's first tick, 0 before it
    bint signalled  # this phase's signal is raised already
    uint64_t breaks  # phases ended by the bound
    close_t close


cdef Bound _bound  # static: zeroed


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef void io_phase_tick() noexcept nogil:
    """Called for each chunk a socket delivers: past the budget, end the phase (once)."""
    if not _bound.active or _bound.signalled:
        return
    cdef int64_t now = _now_ns()
    if _bound.started_ns == 0:
        _bound.started_ns = now
    elif now - _bound.started_ns >= _bound.budget_ns:
        _bound.signalled = True
        _bound.breaks += 1
        raise_signal(_bound.signum)


cdef void _on_prepare(void *handle) noexcept nogil:
    # Just before the loop polls again: a new phase, its clock not started.
    _bound.started_ns = 0
    _bound.signalled = False


cdef void _on_signal(void *handle, int signum) noexcept nogil:
    pass  # the signal's whole point is that libuv left the poll for it


cdef void _free_handle(void *handle) noexcept nogil:
    free(handle)


cdef void *_symbol(void *lib, const char *name) except NULL:
    cdef void *fn = dlsym(lib, name)
    if fn == NULL:
        raise OSError(f"uvloop's libuv has no {name.decode()}")
    return fn


def install(loop, double budget_ms) -> None:
    """Bound ``loop``'s I/O phases (a uvloop loop) to about ``budget_ms`` of data callbacks;
    another ``install`` on the same loop shares the bound (``release`` once each)."""
    import uvloop
    import uvloop.loop

    if not isinstance(loop, uvloop.Loop):
        raise TypeError("the I/O phase bound needs a uvloop loop")
    if budget_ms < 0:
        raise ValueError("budget_ms must be >= 0")
    cdef void *uv_loop = PyCapsule_GetPointer(uvloop.loop.libuv_get_loop_t_ptr(loop), NULL)
    if _bound.users:
        if _bound.loop != uv_loop:
            raise RuntimeError("the I/O phase bound is installed on another loop")
        _bound.users += 1
        return
    path = uvloop.loop.__file__.encode()
    cdef void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        raise OSError(f"cannot open uvloop's extension: {dlerror().decode()}")
    cdef void *prepare = NULL
    cdef void *signal = NULL
    try:
        handle_size = <handle_size_t>_symbol(lib, b"uv_handle_size")
        prepare_init = <handle_init_t>_symbol(lib, b"uv_prepare_init")
        prepare_start = <prepare_start_t>_symbol(lib, b"uv_prepare_start")
        signal_init = <handle_init_t>_symbol(lib, b"uv_signal_init")
        signal_start = <signal_start_t>_symbol(lib, b"uv_signal_start")
        unref = <unref_t>_symbol(lib, b"uv_unref")
        close = <close_t>_symbol(lib, b"uv_close")
        prepare = calloc(1, handle_size(UV_PREPARE))
        signal = calloc(1, handle_size(UV_SIGNAL))
        if prepare == NULL or signal == NULL:
            raise MemoryError()
        signum = SIGRTMAX - SIGNAL_OFFSET
        if prepare_init(uv_loop, prepare):
            raise OSError("uv_prepare_init failed")
        if prepare_start(prepare, _on_prepare):
            close(prepare, _free_handle)  # initialised: the loop holds it until it is closed
            prepare = NULL
            raise OSError("uv_prepare_start failed")
        if signal_init(uv_loop, signal):
            close(prepare, _free_handle)
            prepare = NULL
            raise OSError("uv_signal_init failed")
        if signal_start(signal, _on_signal, signum):
            close(prepare, _free_handle)
            close(signal, _free_handle)
            prepare = signal = NULL
            raise OSError("uv_signal_start failed")
    except BaseException:
        free(prepare)
        free(signal)
        raise
    finally:
        dlclose(lib)  # RTLD_NOLOAD took a reference: uvloop stays loaded
    unref(prepare)  # neither keeps the loop alive
    unref(signal)
    _bound.loop = uv_loop
    _bound.prepare = prepare
    _bound.signal = signal
    _bound.signum = signum
    _bound.close = close
    _bound.budget_ns = <int64_t>(budget_ms * 1e6)
    _bound.started_ns = 0
    _bound.signalled = False
    _bound.users = 1
    _bound.active = True


def release() -> None:
    """One ``install``'s share ends; the last closes the handles (before the loop closes)."""
    if not _bound.users:
        return
    _bound.users -= 1
    if _bound.users:
        return
    _bound.active = False
    _bound.close(_bound.prepare, _free_handle)
    _bound.close(_bound.signal, _free_handle)
    _bound.prepare = _bound.signal = _bound.loop = NULL


def installed() -> bool:
    """Whether a bound is active."""
    return bool(_bound.active)


def breaks() -> int:
    """Phases the bound ended since the process started."""
    return _bound.breaks


def tick() -> None:
    """``io_phase_tick`` for callers in Python (transports without a Cython stream; tests)."""
    io_phase_tick()
