"""Processes: one way to stop the children Spidi starts (redis-server, the writer), and one way
for a Spidi process to be told to stop.

SIGINT and SIGTERM both mean a graceful stop: an event is set, and the process winds down on its
own (serve and the supervisor on their asyncio loop, the history writer in its synchronous loop).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from collections.abc import Callable

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
