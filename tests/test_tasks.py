"""Periodic jobs (``tasks.run_every``): a fixed schedule on the shared grid, so that the node's
jobs due together wake the loop once, and the loop monitor's timer rides on the same points.

Real event loops and clocks; the assertions allow for a loaded machine (medians, not maxima).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from spidi_server.loop_monitor import LoopMonitor
from spidi_server.tasks import GRID_S, next_run, run_every


def test_next_run_rounds_up_to_a_multiple_of_whole_grid_step_intervals_only():
    assert next_run(10.013, 1.0) == pytest.approx(11.0)
    assert next_run(11.0, 1.0) == pytest.approx(11.0)  # already on it
    assert next_run(10.013, 0.1) == pytest.approx(10.1)
    assert next_run(10.013, GRID_S) == pytest.approx(GRID_S * 201)  # 10.05
    assert next_run(10.013, 0.0625) == 10.013  # not a whole number of steps: its own schedule
    assert next_run(10.013, 0.02) == 10.013  # shorter than a step: its own schedule


def _offset(t: float) -> float:
    """How far ``t`` is past the grid point before it, in seconds."""
    return t - round(t / GRID_S) * GRID_S


async def _runs(interval_s: float, count: int, delay_s: float = 0.0, hold_s: float = 0.0) -> list[float]:
    """Loop times of ``count`` runs of a job every ``interval_s``, started after ``delay_s``; each
    run holds the loop ``hold_s`` (a job's own duration)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(delay_s)
    times: list[float] = []
    done = asyncio.Event()

    async def job() -> None:
        times.append(loop.time())
        time.sleep(hold_s)
        if len(times) == count:
            done.set()

    task = loop.create_task(run_every(interval_s, job, "test"))
    try:
        await asyncio.wait_for(done.wait(), 10 * interval_s * count)
    finally:
        task.cancel()
    return times


async def test_jobs_started_apart_run_together_on_the_grid():
    first, second = await asyncio.gather(_runs(0.1, 6), _runs(0.1, 6, delay_s=0.03))
    # Started 30 ms apart, they run on the same grid points (one wake-up each time)...
    assert statistics.median(abs(_offset(t)) for t in first + second) < 0.005
    pairs = [min(abs(a - b) for b in second) for a in first[1:]]
    assert statistics.median(pairs) < 0.005
    # ... every interval, the first time at least one interval after the start.
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert abs(statistics.median(gaps) - 0.1) < 0.01


async def test_a_jobs_own_duration_does_not_move_its_schedule():
    times = await _runs(0.1, 6, hold_s=0.03)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert abs(statistics.median(gaps) - 0.1) < 0.01  # not 0.13: no drift


async def test_the_run_after_an_overrun_comes_one_interval_after_it():
    times = await _runs(0.05, 3, hold_s=0.12)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.12 + 0.05 - 0.005  # no burst of the runs it missed


async def test_the_monitor_ticks_on_the_grid_of_its_period():
    ticks: list[float] = []
    monitor = LoopMonitor(lambda lag: ticks.append(time.monotonic()), period=GRID_S)
    monitor.start()
    try:
        job_times = await _runs(GRID_S * 2, 5)
    finally:
        monitor.stop()
    assert statistics.median(abs(_offset(t)) for t in ticks) < 0.005
    # the job's runs and the monitor's ticks share their wake-ups
    assert statistics.median(min(abs(t - j) for t in ticks) for j in job_times) < 0.005
    assert abs(statistics.median(b - a for a, b in zip(ticks, ticks[1:], strict=False)) - GRID_S) < 0.01
