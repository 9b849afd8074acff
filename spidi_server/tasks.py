"""Background tasks: running a job periodically, and stopping tasks reliably."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable

from . import logs

log = logging.getLogger("spidi.tasks")


# The node's periodic jobs wake the loop on one shared grid (the loop monitor's period): jobs
# due at the same grid point run in one wake-up. On a virtual machine each wake-up of an idle loop
# costs tens of microseconds of CPU whatever it runs, so a dozen jobs that each kept their own
# phase (and drifted by their own run time) cost a dozen wake-ups where one would do.
GRID_S = 0.05


def next_run(due: float, interval_s: float) -> float:
    """``due`` rounded up to a multiple of ``interval_s`` on the loop's clock, for an interval
    that is a whole number of grid steps (``GRID_S``); any other interval keeps its own schedule
    (``due`` itself). A multiple of the interval, not merely a grid point: two jobs of one
    interval started at different times then run at the same points, and a job of 1 s at every
    fourth point of a job of 250 ms (rounded to the grid only, they kept whatever grid phase
    their start gave them, up to an interval apart)."""
    steps = interval_s / GRID_S
    if steps < 1 or abs(steps - round(steps)) > 1e-6:
        return due
    step = round(steps) * GRID_S
    return math.ceil(due / step - 1e-6) * step


async def run_every(
    interval_s: float,
    job: Callable[[], Awaitable[object]],
    name: str,
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Run ``job`` (a coroutine function) every ``interval_s``, the first time after one interval.

    The runs keep to a fixed schedule, ``interval_s`` apart however long each takes (the next run
    of one that overran comes one interval after it ended), each time rounded up to the shared
    grid (``next_run``), so that jobs due together wake the loop once.

    A failure does not stop the loop: it is handed to ``on_error``, or else logged with its
    traceback as ``"<name> failed"``. Cancelling the task ends the loop.
    """
    loop = asyncio.get_running_loop()
    due = next_run(loop.time() + interval_s, interval_s)
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_error is None:
                log.exception("%s failed", name)
            else:
                on_error(exc)
        # From the point it ran at, not its unrounded time: a run 30 ms long then never looks
        # like an overrun of a point less than an interval ahead.
        due += interval_s
        now = loop.time()
        if due < now:  # it overran: the next run one interval after this one ended
            due = next_run(now + interval_s, interval_s)


def warn(logger: logging.Logger, event: str) -> Callable[[Exception], None]:
    """An ``on_error`` for ``run_every``: one structured WARNING line ``event`` with the error."""

    def on_error(exc: Exception) -> None:
        logs.event(logger, event, logging.WARNING, error=str(exc))

    return on_error


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
