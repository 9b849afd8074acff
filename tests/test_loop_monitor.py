"""Event-loop stalls: the lag monitor moves when the loop is blocked on purpose, the stall reporter
names the blocking function, GC pauses are timed, and the node's GC policy walks the frozen heap
only when it has to (spidi_server/loop_monitor.py, gc_policy.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
import weakref

import aiohttp
import pytest

from spidi_server.gc_policy import GcPolicy
from spidi_server.loop_monitor import GcTimer, LoopMonitor, StallReporter

BLOCK_S = 0.2


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _hold_the_loop(seconds: float) -> None:
    """A long synchronous step, as a snapshot or a collection would be (sleep lets the GIL go,
    so the reporter's thread can look at this frame)."""
    time.sleep(seconds)


async def test_monitor_measures_a_blocked_loop():
    lags, stalls = [], []
    monitor = LoopMonitor(lags.append, stalls.append, period=0.01, stall_s=0.05)
    monitor.start()
    try:
        await _until(lambda: monitor.ticks >= 2)
        ticks = monitor.ticks
        _hold_the_loop(BLOCK_S)  # the armed timer was due at most one period from now
        await _until(lambda: monitor.ticks > ticks)
    finally:
        monitor.stop()
    assert max(lags) >= BLOCK_S - 0.01
    assert len(stalls) == 1 and stalls[0] == max(lags)
    assert monitor.longest == max(lags)


def test_longest_keeps_the_current_and_the_previous_window():
    now = [100.0]
    monitor = LoopMonitor(lambda lag: None, period=0.05, window_s=10.0, clock=lambda: now[0])
    monitor.record(0.3, 101.0)
    monitor.record(0.02, 105.0)
    now[0] = 109.0
    assert monitor.longest == 0.3
    monitor.record(0.01, 112.0)  # a new window: the last one's worst is still shown
    now[0] = 115.0
    assert monitor.longest == 0.3
    now[0] = 122.5  # the window holding 0.3 is now two back
    assert monitor.longest == 0.01
    now[0] = 150.0  # silence for more than two windows
    assert monitor.longest == 0.0


def test_recent_is_the_longest_lag_of_the_last_seconds():
    now = [100.0]
    monitor = LoopMonitor(lambda lag: None, period=0.05, recent_s=5, clock=lambda: now[0])
    assert monitor.recent() == 0.0
    monitor.record(0.3, 100.2)
    monitor.record(0.01, 100.9)  # the same second: its maximum stays
    monitor.record(0.02, 102.5)
    now[0] = 104.9
    assert monitor.recent() == 0.3
    now[0] = 105.0  # second 100 is five seconds back: out
    assert monitor.recent() == 0.02
    monitor.record(0.001, 107.1)  # slot 107 % 5 == 102 % 5: the newer second replaces it
    now[0] = 107.5
    assert monitor.recent() == 0.001
    now[0] = 112.0
    assert monitor.recent() == 0.0


async def test_stall_reporter_logs_the_blocking_stack_once_per_gap(caplog):
    caplog.set_level(logging.WARNING, logger="spidi.loop")
    monitor = LoopMonitor(lambda lag: None, period=0.01, stall_s=0.03)
    reporter = StallReporter(monitor, stall_s=0.03, min_gap_s=30.0)
    monitor.start()
    reporter.start()
    try:
        await _until(lambda: monitor.ticks >= 2)
        deadline = time.monotonic() + 5.0
        while reporter.reports == 0 and time.monotonic() < deadline:
            _hold_the_loop(0.05)  # one stall, however long the thread takes to be scheduled
        ticks = monitor.ticks
        _hold_the_loop(BLOCK_S)  # a second stall within min_gap_s
        await _until(lambda: monitor.ticks > ticks)
    finally:
        reporter.stop()
        monitor.stop()
    records = [r for r in caplog.records if r.getMessage() == "loop_stall"]
    assert reporter.reports == 1 and len(records) == 1
    assert "_hold_the_loop" in records[0].stack
    assert records[0].stuck_ms >= 30
    assert records[0].cpu_ms < records[0].stuck_ms  # it slept: the process was not busy


def test_gc_timer_times_older_generations_only():
    pauses = []
    timer = GcTimer(lambda generation, seconds: pauses.append((generation, seconds)))
    timer.install()
    try:
        gc.collect(0)
        assert pauses == []
        gc.collect(1)
        gc.collect(2)
    finally:
        timer.uninstall()
    gc.collect(2)
    assert [g for g, _ in pauses] == [1, 2]
    assert all(seconds >= 0 for _, seconds in pauses)
    assert timer.last_full == pauses[-1][1]


class _Node:
    """A weak-referenceable object that can sit in a cycle."""


@pytest.fixture
def policy():
    thresholds = gc.get_threshold()
    policy = GcPolicy()
    policy.start()
    yield policy
    policy.stop()
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0


def test_gc_step_freezes_survivors_without_a_full_collection(policy):
    kept = [[i] for i in range(5000)]  # long-lived objects made after start
    frozen_before = gc.get_freeze_count()
    assert policy.step(open_connections=0) is False
    assert policy.full_collections == 1  # start's only
    assert gc.get_freeze_count() >= frozen_before + len(kept)
    assert policy.frozen >= gc.get_freeze_count()  # an upper bound, kept without walking
    del kept


def test_frozen_cycles_wait_for_the_full_collection(policy):
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    dead = weakref.ref(a)
    policy.step(open_connections=0)  # the cycle is now frozen
    del a, b
    gc.collect()  # an ordinary collection never sees frozen objects
    assert dead() is not None
    policy.full(0)
    assert dead() is None


def test_full_collection_after_churn(policy):
    policy.closed = 999
    assert policy.step(open_connections=100) is False  # fewer than MIN_CLOSED
    policy.closed = 2000
    assert policy.step(open_connections=10_000) is False  # a fifth of those open
    policy.closed = 2500
    assert policy.step(open_connections=10_000) is True  # a quarter
    assert policy.closed == 0 and policy.full_collections == 2


def test_full_collection_after_the_frozen_heap_doubled(policy):
    kept = [[i] for i in range(policy.baseline + 1000)]
    assert policy.step(open_connections=0) is False  # counts and freezes them
    assert policy.full_due(0)
    assert policy.step(open_connections=0) is True
    assert policy.frozen >= len(kept) and policy.baseline == policy.frozen
    assert not policy.full_due(0)
    del kept


def test_a_connect_ramp_is_growth_not_garbage(policy):
    # Connections holding 50 objects each, as many as double the heap: within their allowance.
    connections = (policy.baseline + 1000) // 50
    kept = [[[i] for i in range(49)] for _ in range(connections)]
    assert policy.step(open_connections=connections) is False
    assert not policy.full_due(connections)
    assert policy.full_due(0)  # the same heap with those connections gone
    policy.full(connections)  # measures what one holds
    assert 50 <= policy.per_connection < 60
    del kept


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} missing"
    return float(match.group(1))


async def test_node_exports_the_stall(node):
    await _until(lambda: node.loop_monitor.ticks >= 2)
    ticks = node.loop_monitor.ticks
    _hold_the_loop(BLOCK_S)
    await _until(lambda: node.loop_monitor.ticks > ticks)
    async with aiohttp.ClientSession() as http, http.get(f"{node.ops.url}/metrics") as response:
        text = await response.text()
    count = _sample(text, "spidi_event_loop_lag_seconds_count")
    assert _sample(text, 'spidi_event_loop_lag_seconds_bucket{le="0.1"}') < count
    assert _sample(text, "spidi_event_loop_stalls_total") >= 1
    assert _sample(text, "spidi_event_loop_lag_max_seconds") >= BLOCK_S - 0.05
    # The policy's start-up collection (a full one) was timed.
    assert _sample(text, 'spidi_gc_pause_seconds_count{generation="2"}') >= 1
    assert _sample(text, "spidi_gc_frozen_objects") > 0
