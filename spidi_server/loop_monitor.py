"""Event-loop stalls: how late the loop runs a timer, how long garbage collections hold it, and
what the loop was running when it stalled.

A stall is any stretch during which the loop runs no callback: one long synchronous step (a big
snapshot, a full garbage collection) delays every heartbeat queued behind it, so the round trips
clients measure grow by the stall. Three cheap instruments find them:

- ``LoopMonitor``: a ``call_later`` chain every ``period`` seconds measuring its own lateness into
  a histogram (``spidi_event_loop_lag_seconds``), counting stalls and keeping the longest of the
  last minute, and of the last few seconds (``recent``: what /health judges the loop by). About
  20 callbacks a second, nothing per message.
- ``GcTimer``: a ``gc.callbacks`` hook timing collections of the older generations (the young
  one runs thousands of times a second and takes microseconds; it is not worth a clock read).
- ``StallReporter`` (setting ``loop_stall_log``): a thread that, when the monitor's timer is
  late by ``stall_s``, reads the loop thread's Python stack and logs it (``loop_stall``), at most
  once per ``min_gap_s``. It samples only while the loop thread lets the GIL go, which pure
  Python code does every few ms; a step inside one C call (``gc.collect`` itself, a big
  ``orjson.dumps``) shows as the Python line that made the call, or not at all, hence GcTimer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import sys
import threading
import time
import traceback

from spidi_core import io_phase

from . import logs

log = logging.getLogger("spidi.loop")

# Bounds of spidi_event_loop_lag_seconds (and of the GC pause histogram): 1 ms to 1 s.
LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

MAX_WINDOW_S = 60.0  # spidi_event_loop_lag_max_seconds: the longest lag of the last one to two windows


class LoopMonitor:
    """Measure how late the loop runs a timer set every ``period`` seconds.

    ``observe(lag)`` receives each lateness in seconds (a Histogram's ``observe``); lateness of
    ``stall_s`` or more also calls ``on_stall(lag)``. ``longest`` is the worst lag of the current
    and the previous ``window_s`` (what the max gauge exports); ``recent()`` the worst of the last
    ``recent_s`` seconds (per-second maxima in a ring). ``last_tick`` / ``ticks`` are read by
    ``StallReporter`` from its thread. ``clock`` is ``time.monotonic`` (tests pass their own).
    """

    def __init__(
        self,
        observe,
        on_stall=None,
        period: float = 0.05,
        stall_s: float = 0.05,
        window_s: float = MAX_WINDOW_S,
        clock=time.monotonic,
        recent_s: int = 10,
    ):
        self.observe = observe
        self.on_stall = on_stall
        self.period = period
        self.stall_s = stall_s
        self.window_s = window_s
        self.clock = clock
        self.ticks = 0
        self.last_tick = clock()
        self.last_cpu = time.process_time()  # the process's CPU seconds at the last tick
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._window_start = self.last_tick
        self._window_max = 0.0
        self._previous_max = 0.0
        # The longest lag of each of the last ``recent_s`` seconds, by second number modulo recent_s.
        self.recent_s = max(1, int(recent_s))
        self._second_max = [0.0] * self.recent_s
        self._second_of = [-1] * self.recent_s

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Arm the first timer (on the running loop unless ``loop`` is given)."""
        self._loop = loop or asyncio.get_running_loop()
        self.last_tick = self.clock()
        self._arm(self.last_tick)

    def stop(self) -> None:
        """Cancel the pending timer; ``start`` may be called again."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def longest(self) -> float:
        """The longest lag measured in the current and the previous window, seconds."""
        self._roll(self.clock())
        return max(self._window_max, self._previous_max)

    def recent(self) -> float:
        """The longest lag measured in the last ``recent_s`` seconds, seconds."""
        second = int(self.clock())
        return max(
            (
                m
                for m, at in zip(self._second_max, self._second_of, strict=True)
                if second - at < self.recent_s
            ),
            default=0.0,
        )

    def record(self, lag: float, now: float) -> None:
        """Account one measured lateness ``lag`` taken at ``now`` (what each tick does)."""
        self.observe(lag)
        self._roll(now)
        if lag > self._window_max:
            self._window_max = lag
        second = int(now)
        slot = second % self.recent_s
        if self._second_of[slot] != second:
            self._second_of[slot] = second
            self._second_max[slot] = lag
        elif lag > self._second_max[slot]:
            self._second_max[slot] = lag
        if lag >= self.stall_s and self.on_stall is not None:
            self.on_stall(lag)

    def _arm(self, now: float) -> None:
        # Due at the next point of the period's grid (multiples of ``period``), not one period
        # after this tick: the node's periodic jobs wake the loop on the same grid
        # (``tasks.GRID_S``, the default period), so the monitor's timer rides on their wake-ups
        # instead of adding 20 of its own a second. A tick that came early counts from its due time.
        base = max(now, self._due)
        self._due = (math.floor(base / self.period + 1e-6) + 1) * self.period
        self._handle = self._loop.call_later(self._due - now, self._tick)

    def _tick(self) -> None:
        # The clock, not loop.time(): uvloop's time is the one cached when the iteration began,
        # which would hide the callbacks that ran ahead of this one in the same iteration.
        now = self.clock()
        lag = now - self._due
        if lag < 0.0:  # timers may fire up to a clock tick early
            lag = 0.0
        self.last_tick = now
        self.last_cpu = time.process_time()
        self.ticks += 1
        self._arm(now)
        self.record(lag, now)

    def _roll(self, now: float) -> None:
        if now - self._window_start >= self.window_s:
            # A gap of two windows or more leaves nothing worth keeping from the old ones.
            recent = now - self._window_start < 2 * self.window_s
            self._previous_max = self._window_max if recent else 0.0
            self._window_max = 0.0
            self._window_start = now


class GcTimer:
    """Time CPython's collections of generation ``min_generation`` and older.

    ``observe(generation, seconds)`` receives each pause; ``last_full`` is the last full (generation 2)
    collection's duration. Install with ``install()``, remove with ``uninstall()``.
    """

    def __init__(self, observe, min_generation: int = 1):
        self.observe = observe
        self.min_generation = min_generation
        self.last_full = 0.0
        self.collections = 0
        self._started = 0.0

    def install(self) -> None:
        """Hook into gc.callbacks (once)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Remove the hook."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        generation = info["generation"]
        if generation < self.min_generation:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        if not self._started:
            return  # installed between a start and its stop
        seconds = time.perf_counter() - self._started
        self._started = 0.0
        self.collections += 1
        if generation == 2:
            self.last_full = seconds
        self.observe(generation, seconds)


class IoPhaseBound:
    """The bound on uvloop's I/O phase (``spidi_core._io_phase_c``), for one node's loop.

    ``install(loop)`` bounds the loop's socket reads to ``budget_ms`` per phase when the loop is
    uvloop's and the extensions are built (whether it did); ``uninstall()`` gives the share back,
    and must run before the loop closes. Only the native transport's reads count the time.
    """

    def __init__(self, budget_ms: float):
        self.budget_ms = budget_ms
        self.installed = False

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Bound ``loop``'s I/O phases if it can be; whether it is."""
        if self.installed or self.budget_ms <= 0 or io_phase is None:
            return self.installed
        try:
            import uvloop
        except ImportError:  # the plain asyncio loop: its select() returns once per turn anyway
            return False
        if isinstance(loop, uvloop.Loop):
            io_phase.install(loop, self.budget_ms)
            self.installed = True
        return self.installed

    def uninstall(self) -> None:
        """Give the bound back (the last user closes its libuv handles)."""
        if self.installed:
            io_phase.release()
            self.installed = False

    @staticmethod
    def cuts() -> int:
        """I/O phases the bound ended in this process."""
        return io_phase.breaks() if io_phase is not None else 0


class StallReporter:
    """A daemon thread logging the loop thread's stack while ``monitor``'s timer is late.

    It checks every ``stall_s / 2``; when the monitor has not ticked for ``period + stall_s`` it
    logs ``loop_stall`` (WARNING) with how late the timer is (``stuck_ms``), the CPU time the
    process used since the timer last ran (``cpu_ms``, over ``stuck_ms`` plus at most one
    ``period``: about as much = a long step of ours; much less = the process was waiting, for a
    CPU on a starved host or in a blocking call) and the stack it is running, once per stall and
    at most once per ``min_gap_s``.
    """

    def __init__(self, monitor: LoopMonitor, stall_s: float, min_gap_s: float = 10.0):
        self.monitor = monitor
        self.stall_s = stall_s
        self.min_gap_s = min_gap_s
        self.reports = 0
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (from the loop's thread: that is the thread whose stack is read)."""
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spidi-stall-reporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        monitor = self.monitor
        late_after = monitor.period + self.stall_s
        reported_tick = -1
        last_report = -self.min_gap_s
        while not self._stop.wait(self.stall_s / 2):
            ticks, last, last_cpu = monitor.ticks, monitor.last_tick, monitor.last_cpu
            now = time.monotonic()
            stuck = now - last
            if stuck < late_after or ticks == reported_tick or now - last_report < self.min_gap_s:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                return  # the loop's thread is gone
            cpu = time.process_time() - last_cpu
            stack = "".join(traceback.format_stack(frame, limit=30))
            del frame
            reported_tick, last_report = ticks, now
            self.reports += 1
            logs.event(
                log,
                "loop_stall",
                logging.WARNING,
                stuck_ms=round((stuck - monitor.period) * 1000, 1),
                cpu_ms=round(cpu * 1000, 1),
                stack=stack,
            )
