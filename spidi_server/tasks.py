"""Background tasks: running a job periodically, and stopping tasks reliably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from . import logs

log = logging.getLogger("spidi.tasks")


async def run_every(
    interval_s: float,
    job: Callable[[], Awaitable[object]],
    name: str,
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Run ``job`` (a coroutine function) every ``interval_s``, the first time after one interval.

    A failure does not stop the loop: it is handed to ``on_error``, or else logged with its
    traceback as ``"<name> failed"``. Cancelling the task ends the loop.
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_error is None:
                log.exception("%s failed", name)
            else:
                on_error(exc)


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
