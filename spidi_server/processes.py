"""Processes: one way to stop the children Spidi starts (redis-server, the writer), one way to
look at and stop a process it adopted (an embedded redis-server left by a node killed with
SIGKILL), and one way for a Spidi process to be told to stop.

SIGINT and SIGTERM both mean a graceful stop: an event is set, and the process winds down on its
own (serve and the supervisor on their asyncio loop, the history writer in its synchronous loop).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_stop_signals(
    install: Callable[[signal.Signals, Callable[[], None]], object], stop: Callable[[], None]
) -> None:
    for sig in STOP_SIGNALS:
        install(sig, stop)


def stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """``stop`` (or a new event), set by the running loop on SIGINT or SIGTERM: a graceful stop."""
    stop = stop or asyncio.Event()
    _on_stop_signals(asyncio.get_running_loop().add_signal_handler, stop.set)
    return stop


def stop_on_signals_sync(stop: threading.Event | None = None) -> threading.Event:
    """``stop`` (or a new event), set on SIGINT or SIGTERM, for a process without an asyncio loop
    (the history writer). Call it from the main thread."""
    stop = stop or threading.Event()
    _on_stop_signals(lambda sig, callback: signal.signal(sig, lambda *_: callback()), stop.set)
    return stop


def stop_process(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def process_cmdline(pid: int) -> list[str] | None:
    """The command line of process ``pid`` from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    if not raw:
        return None  # a zombie, or a kernel thread
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def read_pidfile(path: Path) -> int | None:
    """The pid written in ``path`` (its first line), or None when missing or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_pid(
    pid: int, still_ours: Callable[[int], bool], timeout: float, stop_signal: signal.Signals = signal.SIGTERM
) -> None:
    """``stop_signal`` (SIGTERM) to a process this one did not start (an adopted redis-server)
    until it exits, for up to ``timeout`` seconds, then SIGKILL. ``still_ours(pid)`` is asked
    before each signal, so a pid recycled meanwhile by another program is never signalled. The
    signal is repeated: redis-server ignores a SIGTERM that arrives while it writes its first AOF.
    (A PostgreSQL postmaster is stopped at once by SIGINT; SIGTERM waits for its clients.)"""
    deadline = time.monotonic() + timeout
    sig = stop_signal
    while True:
        if not still_ours(pid):
            return  # gone (a zombie included: no command line), or someone else's now
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        resend = time.monotonic() + (0.5 if sig != signal.SIGKILL else 5.0)
        while time.monotonic() < resend and process_cmdline(pid) is not None:
            time.sleep(0.02)
        if process_cmdline(pid) is None or sig == signal.SIGKILL:
            return
