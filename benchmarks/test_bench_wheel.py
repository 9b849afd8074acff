"""Micro benchmarks of the heartbeat timing wheel, Cython build against the pure reference.

Each benchmark works on a wheel holding 100,000 sessions with 30 s heartbeat timeouts (tick 0.1 s,
4096 slots), the production shape. Run with ``make bench``; compare within a group
(``--benchmark-group-by=group`` is the default). Batched benchmarks record ``ops_per_round`` in
``extra_info``: divide the round time by it for the per-operation cost.
"""

from __future__ import annotations

import random

import pytest

from spidi_core.wheel_py import HeartbeatWheelPy

try:
    from spidi_core._wheel_c import HeartbeatWheelC
except ImportError:
    HeartbeatWheelC = None

SESSIONS = 100_000
TIMEOUT = 30.0
TICK = 0.1
BATCH = 1_000

IMPLS = [
    pytest.param(HeartbeatWheelPy, id="py"),
    pytest.param(
        HeartbeatWheelC,
        id="c",
        marks=pytest.mark.skipif(HeartbeatWheelC is None, reason="spidi_core._wheel_c is not built"),
    ),
]


@pytest.fixture(params=IMPLS)
def Wheel(request):
    """The wheel class under test."""
    return request.param


def full_wheel(Wheel, rng):
    """A wheel of SESSIONS sessions whose deadlines are spread over one timeout period."""
    w = Wheel(tick=TICK, slots=4096, now=0.0)
    for i in range(SESSIONS):
        w.add(f"session-{i}", rng.uniform(0.0, TIMEOUT))
    return w


@pytest.mark.benchmark(group="wheel-touch")
def test_bench_touch(benchmark, Wheel):
    """touch (a heartbeat: deadline moves later) on 1,000 random sessions of 100,000."""
    rng = random.Random(1)
    w = full_wheel(Wheel, rng)
    keys = [f"session-{rng.randrange(SESSIONS)}" for _ in range(BATCH)]
    deadline = [TIMEOUT]
    touch = w.touch

    def heartbeats():
        deadline[0] += 0.001  # later every round, as real heartbeats are
        d = deadline[0]
        for key in keys:
            touch(key, d)

    benchmark.extra_info["ops_per_round"] = BATCH
    benchmark(heartbeats)
    assert len(w) == SESSIONS


@pytest.mark.benchmark(group="wheel-advance")
def test_bench_advance(benchmark, Wheel):
    """advance by one tick: ~330 sessions in the bucket, ~99% re-bucketed (heartbeats seen), ~1% expire."""
    rng = random.Random(2)
    w = full_wheel(Wheel, rng)
    for i in range(SESSIONS):  # all but 1% heartbeated since: lazily still in their old bucket
        if i % 100:
            key = f"session-{i}"
            w.touch(key, w.deadline(key) + TIMEOUT)
    ticks = iter(range(1, 10**6))

    def tick():
        # mid-tick times: every round crosses exactly one bucket boundary (k * 0.1 may not)
        return w.advance((next(ticks) + 0.5) * TICK)

    # one round per tick; fewer rounds than ticks in a timeout keeps every round in steady state
    expired = benchmark.pedantic(tick, rounds=250, iterations=1, warmup_rounds=0)
    assert isinstance(expired, list)
    assert SESSIONS * 0.9 < len(w) < SESSIONS


@pytest.mark.benchmark(group="wheel-add-remove")
def test_bench_add_remove(benchmark, Wheel):
    """add then remove 1,000 sessions (connect + disconnect) on a wheel of 100,000."""
    rng = random.Random(3)
    w = full_wheel(Wheel, rng)
    batch = [(f"new-{i}", rng.uniform(0.0, TIMEOUT)) for i in range(BATCH)]
    add, remove = w.add, w.remove

    def churn():
        for key, d in batch:
            add(key, d)
        for key, _ in batch:
            remove(key)

    benchmark.extra_info["ops_per_round"] = 2 * BATCH
    benchmark(churn)
    assert len(w) == SESSIONS
