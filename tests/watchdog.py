"""A watchdog per pytest process: what the tests started dies with pytest, however pytest dies.

The Makefile's ``timeout`` backstop ends a hung run with SIGTERM (to pytest and, under xdist, its
workers), which Python does not turn into an exception: no fixture teardown runs. The embedded
redis-servers of the fixtures run in sessions of their own (``start_new_session``) and pgserver's
postmaster is a daemon (``pg_ctl`` detaches it), so nothing would stop them.

``start()`` (from tests/conftest.py, in the controller and in every worker) starts a small
process in a session of its own that holds the read end of a pipe only pytest writes to. Every
second, and whenever ``guard`` writes, it notes pytest's descendants (pid and start time, so a
recycled pid is never touched); ``guard(pid)`` adds a process that is not a descendant (the
postmaster). When the pipe reaches end of file, pytest has exited, cleanly or not: whatever it
noted is still running gets SIGTERM, and SIGKILL five seconds later. Watchdogs (the workers',
descendants of the controller) are never noted: each finishes its own sweep. After a clean run
the fixtures have stopped everything already and there is nothing left to signal.
"""

from __future__ import annotations

import os
import subprocess
import sys

_SCRIPT = r"""
import os, select, signal, sys, time

parent = int(sys.argv[1])
MARK = sys.argv[2]  # on every watchdog's command line
noted = {}  # pid -> start time (field 22 of /proc/<pid>/stat)
others = set()  # (pid, start time) of the watchdogs of pytest's xdist workers: never signalled


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]  # ppid, start time


def note_descendants():
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = stat(int(name))
            if info is not None:
                children.setdefault(info[0], []).append((int(name), info[1]))
    todo = [parent]
    while todo:
        for pid, start in children.get(todo.pop(), ()):
            if (pid, start) in others:
                continue
            if noted.get(pid) != start:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        watchdog = MARK.encode() in fh.read()
                except OSError:
                    continue
                if watchdog:  # this one, or a worker's: each stops what its own process started
                    others.add((pid, start))
                    continue
                noted[pid] = start
            todo.append(pid)


def alive():
    running = []
    for pid, start in noted.items():
        info = stat(pid)
        if info is not None and info[1] == start:
            running.append(pid)
    return running


buffer = b""
while True:
    ready, _, _ = select.select([0], [], [], 1.0)
    if ready:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            info = stat(int(line))
            if info is not None:
                noted[int(line)] = info[1]
    note_descendants()

for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    running = alive()
    for pid in running:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
"""

MARK = "spidi-test-watchdog"
_pipe: int | None = None
_process: subprocess.Popen | None = None  # kept: it outlives pytest by design


def start() -> None:
    """Start this pytest process's watchdog (once)."""
    global _pipe, _process
    if _pipe is not None:
        return
    read, write = os.pipe()  # not inheritable: only this process holds the write end
    _process = subprocess.Popen(
        [sys.executable, "-I", "-c", _SCRIPT, str(os.getpid()), MARK],
        stdin=read,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # out of reach of the signals meant for pytest's process group
    )
    os.close(read)
    _pipe = write


def guard(pid: int) -> None:
    """Have the watchdog stop ``pid`` too when pytest exits (for a process that is not its child)."""
    if _pipe is not None:
        os.write(_pipe, f"{pid}\n".encode())
