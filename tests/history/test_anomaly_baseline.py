"""The anomaly baselines in SQL (history/sql/anomalies.py), over history written by the writer:
median and MAD per minute of one hour of week across past weeks, quiet minutes counted as zero,
weeks before the room existed left out, latency p95 from the minutes' histograms."""

from __future__ import annotations

import pytest

from spidi_server.history.sql import anomalies
from spidi_server.rooms import room_id_for

from .helpers import (
    FakeSession,
    dt,
    hist_of,
    ms,
    push,
    quantile,
    room_sample,
    running_writer,
    wait_for,
    written,
)

WEEK_MS = 7 * 86_400_000
LATENCIES = [20.0] * 19 + [400.0]


def test_baseline_is_median_and_mad_of_the_same_hour_of_week(history_settings, redis_sync, pg):
    hour = ms("2026-06-01T10:00")
    evs = []
    for week in (1, 3):  # week 2 has nothing in this hour (a quiet hour); week 4 predates the room
        for m in range(60):
            minute = hour - week * WEEK_MS + m * 60_000
            for i in range(1 + m % 3):  # 1, 2, 3 joins (and leaves) a minute
                s = FakeSession("acme", "hall", f"w{week}m{m}u{i}", minute + 1_000 + i)
                evs += [s.started(), s.ended(minute + 30_000 + i, "timeout" if (m, i) == (0, 0) else "leave")]
            evs.append(room_sample("acme", "hall", minute, latencies=LATENCIES))
    # A sample of another hour of week 2: the room exists since week 3, so week 2's hour counts (as zeros).
    evs.append(room_sample("acme", "hall", hour - 2 * WEEK_MS + 3 * 3_600_000))
    with running_writer(history_settings):
        push(redis_sync, evs)
        wait_for(lambda: written(redis_sync) == len(evs), timeout=60)
    room = room_id_for("acme", "hall")
    (row,) = anomalies.baselines(pg, [room, room_id_for("acme", "none")], dt("2026-06-01T10:00"), 4).values()
    # 180 minutes: weeks 1, 2 (all zero) and 3. Joins: 60 x 0, 40 x 1, 40 x 2, 40 x 3 -> median 1;
    # deviations 40 x 0, 100 x 1, 40 x 2 -> MAD 1.
    assert (row["room_id"], row["minutes"], row["latency_minutes"]) == (room, 180, 120)
    assert (row["joins_med"], row["joins_mad"]) == (1.0, 1.0)
    assert (row["leaves_med"], row["leaves_mad"]) == (1.0, 1.0)
    assert (row["drops_med"], row["drops_mad"]) == (0.0, 0.0)  # one timeout in 180 minutes
    p95 = quantile(hist_of(LATENCIES), 0.95)
    assert row["p95_med"] == pytest.approx(p95) and row["p95_mad"] == pytest.approx(0.0)
    # Another hour of week has none of it: only week 2's one quiet sample, weeks 1-3 of zeros.
    (other,) = anomalies.baselines(pg, [room], dt("2026-06-01T13:00"), 4).values()
    assert (other["minutes"], other["joins_med"], other["latency_minutes"]) == (180, 0.0, 0)
