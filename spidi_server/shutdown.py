"""Ending a ``spidi serve`` process within ``shutdown_timeout_s``, whatever hangs.

A graceful stop runs on the event loop; this module is its backstop. ``HardDeadline`` is a
thread armed when the stop begins: if the process has not exited when it fires (a task that
refuses cancellation, an executor thread still inside a blocking start-up call, asyncio's runner
waiting on either), it stops every process this one started and ends it with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from . import logs

log = logging.getLogger("spidi.shutdown")

CHILD_GRACE_S = 1.0  # SIGTERM to SIGKILL for the children a forced exit stops


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (None if it is gone)."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (children, theirs, ...), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if _stat(pid) and _stat(pid)[0] != "Z"]
    return alive


def stop_children(postgres_data: Path | None = None) -> None:
    """Stop every process this one started: SIGTERM, then SIGKILL after ``CHILD_GRACE_S``.

    ``postgres_data``: the embedded PostgreSQL's directory. Its postmaster is not our child
    (pg_ctl detaches it) and is stopped too, but only if it started after this process did:
    one that was already running there belongs to someone else.
    """
    pids = descendants(os.getpid())
    postmaster = _our_postmaster(postgres_data) if postgres_data else None
    if postmaster is not None:
        os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown: it ends its backends itself
        pids += [postmaster]
    _signal_all(pids, signal.SIGTERM)
    left = _wait_gone(pids, CHILD_GRACE_S)
    if postmaster is not None:
        left += descendants(postmaster)
    _signal_all(left, signal.SIGKILL)
    _wait_gone(left, CHILD_GRACE_S)


def _our_postmaster(data: Path) -> int | None:
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    ours, theirs = start_ticks(os.getpid()), start_ticks(pid)
    if ours is None or theirs is None or theirs < ours:
        return None
    return pid


def forced_exit(code: int, postgres_data: Path | None = None) -> None:
    """Stop every child, flush the logs, and end the process now (no atexit, no asyncio runner)."""
    try:
        stop_children(postgres_data)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class HardDeadline:
    """``forced_exit`` after ``seconds`` unless ``cancel`` comes first (a daemon thread)."""

    def __init__(self, seconds: float, postgres_data: Path | None = None, code: int = 1):
        self.seconds = seconds
        self.postgres_data = postgres_data
        self.code = code
        self._timer: threading.Timer | None = None
        self.started_at = 0.0

    def arm(self) -> None:
        """Start counting (once)."""
        if self._timer is None:
            self.started_at = time.monotonic()
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def remaining(self) -> float:
        """Seconds left before the forced exit (all of them when not armed)."""
        if self._timer is None:
            return self.seconds
        return max(0.0, self.seconds - (time.monotonic() - self.started_at))

    def cancel(self) -> None:
        """The process ends on its own: no forced exit."""
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        logs.event(log, "shutdown_deadline_passed", logging.ERROR, seconds=self.seconds)
        forced_exit(self.code, self.postgres_data)


async def cancel_leftover_tasks(timeout: float) -> list[str]:
    """Cancel every task of the loop but the current one; log (one line each) and return the
    names of those still running after ``timeout`` seconds: they refuse cancellation."""
    from .tasks import cancel_and_wait

    current = asyncio.current_task()
    stuck = await cancel_and_wait([t for t in asyncio.all_tasks() if t is not current], timeout)
    names = sorted(t.get_name() for t in stuck)
    for task in stuck:
        coro = task.get_coro()
        logs.event(
            log,
            "task_refuses_cancellation",
            logging.ERROR,
            task=task.get_name(),
            coroutine=getattr(coro, "__qualname__", repr(coro)),
        )
    return names
