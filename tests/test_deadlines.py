"""deadlines.Deadlines: one timer for items that share a timeout, on a real event loop."""

from __future__ import annotations

import asyncio

from spidi_server.deadlines import Deadlines


async def test_items_expire_in_order_after_the_timeout_unless_discarded():
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, float]] = []
    deadlines = Deadlines(0.2, lambda item: expired.append((item, loop.time())))
    started = loop.time()
    deadlines.add("a", loop)
    deadlines.add("b", loop)
    deadlines.discard("b")  # done in time
    await asyncio.sleep(0.1)
    deadlines.add("c", loop)  # added later: its own deadline, after a's
    deadlines.discard("never added")  # harmless
    while len(expired) < 2:
        await asyncio.sleep(0.01)
    assert [item for item, _ in expired] == ["a", "c"]
    assert expired[0][1] - started >= 0.2 and expired[1][1] - started >= 0.3
    assert len(deadlines) == 0 and deadlines.timer is None  # no timer while nothing waits


async def test_one_timer_serves_every_item():
    loop = asyncio.get_running_loop()
    expired: list[int] = []
    deadlines = Deadlines(0.05, expired.append)
    for i in range(100):
        deadlines.add(i, loop)
    timer = deadlines.timer
    assert timer is not None
    for i in range(1, 100, 2):
        deadlines.discard(i)
    assert deadlines.timer is timer and len(deadlines) == 50
    while len(expired) < 50:
        await asyncio.sleep(0.01)
    assert expired == list(range(0, 100, 2)) and deadlines.timer is None
