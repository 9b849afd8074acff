"""The heartbeat benchmark's process figures and command line, and what it leaves behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.heartbeat_load import COMPARE_KINDS, ServerProcess, build_parser, parse_storm, resolve
from benchmarks.procstats import (
    cpu_busy_seconds,
    kernel_tcp_counters,
    tree_cpu_delta,
    tree_cpu_sample,
    tree_pids,
)

from .conftest import running


def test_tree_covers_grandchildren_and_counts_their_cpu():
    # A parent that starts a busy child, like the node starting redis-server and PostgreSQL.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time\\nt = time.time()\\n"
        "while time.time() - t < 30: pass'])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert set(tree_pids(parent.pid)) >= {parent.pid, child}
        before = tree_cpu_sample(parent.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tree_cpu_delta(before, tree_cpu_sample(parent.pid)) < 0.2:
            time.sleep(0.05)
        after = tree_cpu_sample(parent.pid)
        assert after[child] - before.get(child, 0.0) >= 0.2  # the grandchild's CPU is in the tree
    finally:
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_tree_cpu_counts_a_child_born_and_reaped_between_samples():
    # Like redis-server's AOF rewrite: a forked child that works for a while and is waited for.
    code = (
        "import subprocess, sys\n"
        "sys.stdin.readline()\n"
        "subprocess.run([sys.executable, '-c', 'import time\\nt = time.process_time()\\n"
        "while time.process_time() - t < 0.3: pass'])\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        before = tree_cpu_sample(parent.pid)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "done"
        after = tree_cpu_sample(parent.pid)
        assert set(after) == {parent.pid}  # the child is gone, never listed
        assert tree_cpu_delta(before, after) >= 0.3
    finally:
        parent.kill()
        parent.wait()
        parent.stdin.close()
        parent.stdout.close()


def test_tree_cpu_delta_counts_new_processes_whole():
    assert tree_cpu_delta({1: 1.0, 2: 0.5}, {1: 1.5, 2: 0.5, 3: 0.25}) == pytest.approx(0.75)


def test_cpu_busy_and_kernel_counters_are_read():
    busy = cpu_busy_seconds()
    assert set(busy) and all(v >= 0 for v in busy.values())
    counters = kernel_tcp_counters()
    assert "ListenOverflows" in counters and "TCPSynRetrans" in counters


def test_storm_and_gen_ceiling_options():
    assert parse_storm("10000/2000") == (10_000, 2_000)
    assert parse_storm("10/50") == (10, 10)
    with pytest.raises(SystemExit):
        parse_storm("10000")
    cfg = resolve(build_parser().parse_args(["--storm", "500/100", "--no-pin"]))
    assert (cfg.connections, cfg.connect_concurrency, cfg.label) == (500, 100, "storm-500-100")
    assert not cfg.probe_presence
    cfg = resolve(build_parser().parse_args(["--gen-ceiling", "--no-pin"]))
    assert cfg.kinds == ["bare-uvloop"] and cfg.find_max and cfg.max_p99_ms == float("inf")
    cfg = resolve(build_parser().parse_args(["--compare", "--no-pin"]))
    assert cfg.kinds == list(COMPARE_KINDS)
    assert {"spidi", "spidi-websockets", "spidi-picows", "bare-uvloop"} <= set(cfg.kinds)


async def test_a_killed_spidi_leaves_no_embedded_server_behind(tmp_path):
    # The benchmark deletes the server's data directory after each run: a redis-server or a
    # PostgreSQL that a killed node left there for its next start to adopt would run forever.
    server = ServerProcess("spidi", tmp_path / "server", None, "s" * 40, 10, "warning")
    await server.start()
    try:
        redis_pid, postmaster_pid = server.redis_pid, server.postmaster_pid()
        assert running(redis_pid) and postmaster_pid is not None and running(postmaster_pid)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        server.stop()
        assert not running(redis_pid) and not running(postmaster_pid)
    finally:
        server.stop()
