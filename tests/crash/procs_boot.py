"""Helpers of the start-up and shutdown crash tests: real ``spidi serve`` processes, and /proc
scans for anything they leave behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket listening on a free loopback port (close it when done)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


class Serve:
    """One ``spidi serve --dev`` in its own session, its output in files under ``tmp``."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None, data: Path | None = None):
        self.data = data or tmp / "data"
        self.out = tmp / "stdout.txt"
        self.err = tmp / "stderr.txt"
        full_env = dict(os.environ, SPIDI_REDIS_URL="", PYTHONPATH=str(ROOT))
        full_env.update(env or {})
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spidi_server.cli", "serve", "--dev", "--data-dir", str(self.data)]
                + ["--host", "127.0.0.1", "--ops-host", "127.0.0.1"]
                + list(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                start_new_session=True,
            )

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """The exit status; fails the test if the process is still running after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; stderr:\n{self.stderr[-3000:]}") from None

    def wait_banner(self, timeout: float = 60.0) -> None:
        """Until the banner (up to the user token) is printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "    user " in self.stdout:
                return
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.stderr[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"no banner within {timeout} s: {self.stderr[-3000:]}")

    def wait_child(self, name: str, timeout: float = 30.0) -> int:
        """The pid of the first process under this one whose command line holds ``name``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in descendants(self.proc.pid):
                if name in cmdline(pid):
                    return pid
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.stderr[-3000:]}"
            time.sleep(0.01)
        raise AssertionError(f"no {name} child within {timeout} s")

    def left_behind(self) -> list[str]:
        """Every live process that belongs to this node: under it, or naming its data directory."""
        return [f"{pid}: {cmdline(pid)}" for pid in self._ours()]

    def _ours(self) -> list[int]:
        pids = set(descendants(self.proc.pid)) if self.proc.poll() is None else set()
        with contextlib.suppress(OSError):
            pids.add(int((self.data / "postgres" / "postmaster.pid").read_text().split()[0]))
        for pid in all_pids():
            if str(self.data) in cmdline(pid):
                pids.add(pid)
        return sorted(pid for pid in pids if alive(pid))

    def kill_all(self) -> None:
        """SIGKILL the node, its session and everything it started (for finally blocks)."""
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self._ours():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child in all_pids():
        fields = _stat(child)
        if fields:
            children.setdefault(int(fields[1]), []).append(child)
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), ()):
            found.append(child)
            queue.append(child)
    return found


def wait_nothing_left(node: Serve, timeout: float = 3.0) -> None:
    """Asserts that within ``timeout`` no process of ``node`` is alive."""
    deadline = time.monotonic() + timeout
    while node.left_behind() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.left_behind() == [], "left running"
