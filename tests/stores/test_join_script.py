"""join.lua batches against a real Redis: the script keeps the room's count, peak and metrics
fields while it runs and writes them once, leaving the state one call per join left, also when
the joins of a batch differ in capacity and hour (stores/lua/join.lua, stores/commands.py)."""

from __future__ import annotations

import pytest

from spidi_server.stores import keys
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import HotStore

NOW_MS = 1_767_000_000_000
HOUR_MS = 3_600_000


@pytest.fixture
async def store(redis_url, redis_sync):
    hot = HotStore(connect(redis_url), node_id="join-script")
    await hot.start()
    yield hot
    await hot.close()


async def test_join_batch_with_changing_capacity_and_hour_as_one_call_each(store, redis_sync):
    """The metrics fields of the last admitted join stand, and the peak restarts in a new hour,
    whether the joins go one call each or as one batch."""
    plan = [(10, 0), (12, 0), (12, HOUR_MS), (8, HOUR_MS)]  # (capacity, time offset)

    def queue(room: str, i: int, capacity: int, at: int):
        fields = {"userId": f"u{i}", "roomCode": room}
        return store.join(room, "t1", room, capacity, f"{room}-s{i}", f"u{i}", NOW_MS + at, 120, fields)

    one_each = []
    for i, (capacity, at) in enumerate(plan):
        j = queue("one", i, capacity, at)
        assert await store.flush()
        one_each.append(await j.result)
    batch = [queue("bat", i, capacity, at) for i, (capacity, at) in enumerate(plan)]
    assert await store.flush()
    assert [await j.result for j in batch] == one_each == [1, 2, 3, 4]

    def metrics(room: str) -> dict:
        out = redis_sync.hgetall(keys.room_metrics(room))
        out["code"] = out["code"].replace(room, "R")
        return out

    assert metrics("bat") == metrics("one")
    assert metrics("bat")["capacity"] == "8" and metrics("bat")["peak"] == "4"
