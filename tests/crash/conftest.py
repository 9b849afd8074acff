"""Crash tests: real ``spidi serve`` processes killed with SIGKILL, and what they leave behind.

Helpers shared by the tests of this directory: a ``spidi serve --dev`` on a data directory of its
own (in its own process group, so the test can kill the group), a /proc scan for the embedded
redis-server and PostgreSQL of a data directory, and a fixture that kills everything a test
started, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from spidi_server.processes import process_cmdline

from ..test_cli import SPIDI, free_port

START_TIMEOUT_S = 60.0  # two shared cores: a first start runs initdb


def embedded_of(data_dir: Path) -> dict[str, list[int]]:
    """Live redis-server and postmaster processes whose command line names ``data_dir``.

    PostgreSQL's own children retitle themselves ("postgres: checkpointer"), so the postmaster is
    the one postgres that names its data directory — except for a child caught between its fork
    and its retitling, which still carries the postmaster's command line: a postgres whose parent
    is a postmaster found here is such a child, not a second postmaster. Zombies have no command
    line: not counted.
    """
    found: dict[str, list[int]] = {"redis-server": [], "postgres": []}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = process_cmdline(int(entry))
        if not argv or not any(str(data_dir) in arg for arg in argv):
            continue
        name = os.path.basename(argv[0].split(" ")[0])
        if name in found:
            found[name].append(int(entry))
    postmasters = set(found["postgres"])
    found["postgres"] = [pid for pid in found["postgres"] if _parent(pid) not in postmasters]
    return found


def _parent(pid: int) -> int | None:
    """``pid``'s parent (None once it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state": ppid


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie counts as exited)."""
    return process_cmdline(pid) is None


@dataclass
class Serve:
    """One ``spidi serve --dev`` subprocess and what its banner said."""

    proc: subprocess.Popen
    port: int
    ops: int
    err_path: Path
    banner: str = ""

    def stderr(self) -> str:
        """What it wrote to stderr so far (to a file: an unread pipe would block its logging)."""
        return self.err_path.read_text(errors="replace")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.ops}"

    def token(self, role: str = "user") -> str:
        return re.search(rf"^\s+{role}\s+(\S+)$", self.banner, re.M).group(1)


@dataclass
class CrashSite:
    """A data directory and every ``spidi serve`` started on it; ``cleanup`` kills them all."""

    base: Path
    serves: list[Serve] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    def spawn(self, *args: str) -> Serve:
        """Start ``spidi serve --dev`` on this data directory (not waiting for it)."""
        port, ops = free_port(), free_port()
        argv = [*SPIDI, "serve", "--dev", "--data-dir", str(self.data_dir)]
        argv += ["--port", str(port), "--ops-port", str(ops), *args]
        err_path = self.base / f"serve-{len(self.serves)}.err"
        with err_path.open("w") as err:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=dict(os.environ, SPIDI_REDIS_URL="", SPIDI_POSTGRES_DSN=""),
                start_new_session=True,  # its own process group: the test may kill the whole group
            )
        serve = Serve(proc, port, ops, err_path)
        self.serves.append(serve)
        return serve

    def serve(self, *args: str) -> Serve:
        """Start ``spidi serve --dev`` and return once its banner is out and it is ready."""
        serve = self.spawn(*args)
        lines: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = serve.proc.stdout.readline()  # the banner ends with the user token
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("user "):
                serve.banner = "".join(lines)
                return serve
        raise AssertionError(f"no banner: {''.join(lines)}\nstderr: {serve.stderr()[-3000:]}")

    def redis(self) -> redis.Redis:
        """A client on the embedded Redis of this data directory."""
        return redis.Redis(unix_socket_path=str(self.data_dir / "redis" / "redis.sock"))

    def cleanup(self) -> None:
        """SIGKILL every serve's process group, then whatever names the data directory."""
        for serve in self.serves:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(serve.proc.pid, signal.SIGKILL)
            serve.proc.wait(10)
            serve.proc.stdout.close()
        for pids in embedded_of(self.data_dir).values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def private_tmp():
    """A temporary directory outside pytest's tree, for a ``Serve`` whose node runs an embedded
    PostgreSQL: pgserver (run as root) needs the parents traversable, and any other pytest run
    starting meanwhile resets /tmp/pytest-of-root to 0700 (tests/pg_fixtures.py)."""
    path = Path(tempfile.mkdtemp(prefix="spidi-serve-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def crash_site():
    """A fresh data directory; every process started on it is killed after the test."""
    # Not under pytest's tmp_path: pgserver (run as root) needs its parents traversable.
    site = CrashSite(Path(tempfile.mkdtemp(prefix="spidi-crash-")))
    try:
        yield site
    finally:
        site.cleanup()
