"""SIGTERM ends ``spidi serve`` within ``shutdown_timeout_s`` at any moment, start-up included,
and leaves nothing running (issue 14: a node stopped during start-up hung in asyncio's runner)."""

from __future__ import annotations

import signal
import time

from .procs_boot import Serve, wait_nothing_left

SHUTDOWN_TIMEOUT_S = 5.0
SLACK_S = 1.0  # the interpreter's own exit
ENV = {"SPIDI_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)}


def _terminate(node: Serve) -> tuple[int, float]:
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    code = node.wait(SHUTDOWN_TIMEOUT_S + SLACK_S)
    return code, time.monotonic() - started


def test_sigterm_during_startup_stops_what_started(private_tmp):
    node = Serve(private_tmp, "--port", "0", "--ops-port", "0", env=ENV)
    try:
        # The embedded services are starting (a fresh data directory: initdb comes next).
        node.wait_child("redis-server")
        code, took = _terminate(node)
        assert took < SHUTDOWN_TIMEOUT_S + SLACK_S
        assert code == 0, node.stderr
        assert "start_interrupted" in node.stderr
        wait_nothing_left(node, timeout=0.5)
    finally:
        node.kill_all()


def test_sigterm_to_a_running_node_exits_promptly(private_tmp):
    node = Serve(private_tmp, "--port", "0", "--ops-port", "0", env=ENV)
    try:
        node.wait_banner()
        code, took = _terminate(node)
        assert code == 0, node.stderr
        assert took < SHUTDOWN_TIMEOUT_S
        assert "node_stopped" in node.stderr and "task_refuses_cancellation" not in node.stderr
        wait_nothing_left(node, timeout=0.5)
    finally:
        node.kill_all()


def test_a_task_refusing_cancellation_is_named_and_the_process_exits(private_tmp):
    env = dict(ENV, SPIDI_DEV_STUBBORN_TASK="1", SPIDI_HISTORY="false")
    node = Serve(private_tmp, "--port", "0", "--ops-port", "0", env=env)
    try:
        node.wait_banner()
        _, took = _terminate(node)
        assert took < SHUTDOWN_TIMEOUT_S + SLACK_S
        stuck = [line for line in node.stderr.splitlines() if "task_refuses_cancellation" in line]
        assert len(stuck) == 1 and "dev-stubborn-task" in stuck[0], node.stderr
        wait_nothing_left(node, timeout=0.5)
    finally:
        node.kill_all()
