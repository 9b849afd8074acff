"""``current_hour`` (join.lua's and room_metrics.lua's hour bucket) keeps the last hour it formatted:
whatever order the times come in, it answers what strftime answers."""

from __future__ import annotations

import time

from spidi_server.stores.scripts import current_hour


def _strftime(now_s: float) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(now_s))


def test_hour_bucket_equals_strftime_across_boundaries_in_any_order():
    base = 1767225600.0  # 2026-01-01 00:00:00 UTC: a year, a day and an hour boundary at once
    times = []
    for hour in (-2, -1, 0, 1, 23, 24, 8760):
        start = base + hour * 3600
        times += [start - 0.001, start, start + 0.5, start + 3599.999]
    # Forwards, backwards, and jumping back and forth over the same boundary.
    for now_s in times + times[::-1] + [base, base - 0.001, base, base - 3600, base + 1]:
        assert current_hour(now_s) == _strftime(now_s), now_s


def test_hour_bucket_of_now_by_default():
    before = _strftime(time.time())
    got = current_hour()
    after = _strftime(time.time())
    assert got in (before, after)
