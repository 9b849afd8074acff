"""`spidi serve` and `spidi token` as real processes: embedded Redis, tokens, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from .stomp_client import connected

SPIDI = [sys.executable, "-m", "spidi_server.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_banner(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip().startswith("user "):
            return "".join(lines)
    raise AssertionError(
        "no banner: " + "".join(lines) + (proc.stderr.read() if proc.poll() is not None else "")
    )


@pytest.fixture
def served():
    # Not under pytest's tmp_path: pgserver (run as root) needs its parents traversable, and
    # other pytest runs reset /tmp/pytest-of-root to 0700.
    tmp_path = Path(tempfile.mkdtemp(prefix="spidi-cli-"))
    port, ops = free_port(), free_port()
    env = dict(os.environ, SPIDI_REDIS_URL="")
    proc = subprocess.Popen(
        [
            *SPIDI,
            "serve",
            "--dev",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
            "--ops-port",
            str(ops),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        banner = read_banner(proc)
        yield proc, banner, port, ops, tmp_path / "data"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp_path, ignore_errors=True)


async def test_serve_prints_urls_tokens_and_shuts_down_gracefully(served):
    proc, banner, port, ops, data = served
    assert f"ws://127.0.0.1:{port}/ws" in banner
    assert f"http://127.0.0.1:{ops}/metrics" in banner
    assert (
        f"Dashboard:         http://127.0.0.1:{ops}/" in banner
        and f"http://127.0.0.1:{ops}/api/openapi.json" in banner
    )
    assert str(data) in banner
    tokens = dict(re.findall(r"^\s+(admin|monitor|user)\s+(\S+)$", banner, re.M))
    assert set(tokens) == {"admin", "monitor", "user"}
    redis_sock = data / "redis" / "redis.sock"
    assert redis_sock.exists()
    assert "PostgreSQL:        embedded under" in banner and "History writer:    pid" in banner
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # the writer reports its state within a few seconds of starting
            async with http.get(f"http://127.0.0.1:{ops}/health") as resp:
                health = await resp.json()
            if health["components"].get("writer", {}).get("status") == "running":
                break
            await asyncio.sleep(0.1)
    assert health["status"] == "ok", health
    assert health["components"]["postgres"]["status"] == "ok"

    client = await connected(f"ws://127.0.0.1:{port}/ws", tokens["user"])
    welcome = await client.hello("lobby")
    assert welcome["type"] == "WELCOME"

    # A token minted by `spidi token --dev` with the same data directory is accepted by the running
    # server (without --dev the dev secret is never read: tests/test_security_secrets.py).
    minted = subprocess.run(
        [
            *SPIDI,
            "token",
            "--dev",
            "--data-dir",
            str(data),
            "--role",
            "monitor",
            "--sub",
            "ops-1",
            "--tenant",
            "default",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    mon = await connected(f"ws://127.0.0.1:{port}/ws", minted)
    await mon.subscribe("/topic/rooms/lobby/metrics")
    assert (await mon.json("/topic/rooms/lobby/metrics"))["online"] == 1

    report = subprocess.run(
        [*SPIDI, "retention", "--now", "--data-dir", str(data)], capture_output=True, text=True, timeout=60
    )
    assert report.returncode == 0, report.stderr
    assert isinstance(json.loads(report.stdout), dict)

    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.ws.close_code == 1012  # service restart: come back within the grace period
    assert await asyncio.to_thread(proc.wait, 40) == 0
    # The embedded Redis went with it.
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as s:
        s.connect(str(redis_sock))
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    events = [entry["event"] for entry in logs]
    assert "session_started" in events and "node_stopped" in events
    # The session was handed to the grace period (any node may resume it), not ended.
    assert not [e for e in logs if e["event"] == "session_ended"]
    handed = [e for e in logs if e["event"] == "sessions_handed_over"]
    assert [e["sessions"] for e in handed] == [1]
    # Tokens never reach the logs.
    assert all(tokens["user"] not in line for line in map(json.dumps, logs))


def test_ctrl_c_stops_cleanly(served):
    proc, *_ = served
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0


def test_bad_configuration_exits_2_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [*SPIDI, "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, SPIDI_HEARTBEAT_TIMEOUT_MS="-5"),
        timeout=30,
    )
    assert result.returncode == 2
    assert "heartbeat_timeout_ms must be a positive number" in result.stderr


def test_token_requires_a_secret_outside_dev(tmp_path):
    result = subprocess.run(
        [*SPIDI, "token", "--data-dir", str(tmp_path), "--role", "user", "--sub", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "jwt_secret" in result.stderr
