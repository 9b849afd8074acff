"""A pytest killed as the Makefile's ``timeout`` backstop kills it (SIGTERM to its process group, no
fixture teardown) leaves no embedded redis-server or PostgreSQL behind (tests/watchdog.py), run
alone or in an xdist worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spidi_server.processes import process_cmdline

ROOT = Path(__file__).resolve().parents[1]

# Run with the shared fixtures (tests/conftest.py as a plugin): say the servers' pids, then hang.
HANGING = """
import json, os, time
from pathlib import Path

import redis

from spidi_server.processes import read_pidfile


def test_hangs(redis_url, pg_server):
    redis_pid = redis.Redis.from_url(redis_url).info("server")["process_id"]
    postmaster = read_pidfile(pg_server.embedded.data_path / "postmaster.pid")
    pg_dir = str(pg_server.embedded.data_path.parent)
    Path(os.environ["PIDS_FILE"]).write_text(json.dumps([[redis_pid, postmaster], pg_dir]))
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    return process_cmdline(pid) is not None  # a zombie has none


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["serial", "xdist"])
def test_servers_die_with_a_pytest_killed_by_timeout(tmp_path, workers):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
    (tmp_path / "test_hang.py").write_text(HANGING)
    pids_file = tmp_path / "pids.json"
    env = {
        **os.environ,
        "PIDS_FILE": str(pids_file),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("SPIDI_TEST_REDIS_URL", None)
    env.pop("SPIDI_TEST_POSTGRES_DSN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(workers or ["-p", "no:xdist"])]
        + [str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a process group of its own, as `timeout` makes one
    )
    pids: list[int] = []
    pg_dir = None
    try:
        deadline = time.monotonic() + 90
        while not pids and time.monotonic() < deadline and proc.poll() is None:
            try:
                pids, pg_dir = json.loads(pids_file.read_text())
            except (OSError, ValueError):  # not there yet, or half written
                time.sleep(0.1)
        assert pids, f"the hanging test never started its servers (exit {proc.poll()})"
        assert all(_alive(pid) for pid in pids)
        # The redis-server started first (redis_url comes before pg_server), so the watchdog noted
        # it among pytest's descendants when guard() told it of the postmaster.
        os.killpg(proc.pid, signal.SIGTERM)  # what `timeout` does
        proc.wait(30)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _alive(pid)], "servers outlived the killed pytest"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if pg_dir is not None:  # the killed run's PostgreSQL, outside pytest's tree
            shutil.rmtree(pg_dir, ignore_errors=True)
