"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task], timeout: float = 5.0) -> set[asyncio.Task]:
    """Cancel ``tasks`` and wait for them to end; returns those still running after ``timeout``.

    The cancellation is repeated until each task ends: on Python 3.11 ``asyncio.wait_for`` may
    swallow a cancellation that arrives just as its inner future completes, and a loop task that
    lost its one cancellation would otherwise run forever and hang the shutdown that awaits it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.1, max(0.0, deadline - loop.time())))
    return pending
