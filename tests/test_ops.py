"""The ops endpoints: liveness, readiness (flipping with Redis), the WebSocket side's health
(event-loop lag, accept queue), metrics, and the log fields."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

import spidi_core
from spidi_server.logs import JsonFormatter
from spidi_server.stores.embedded_redis import EmbeddedRedis
from spidi_server.transport.listening import accept_queue

from .conftest import TEST_SECRET, TRANSPORTS, token_for
from .stomp_client import connected
from .test_cli import free_port, read_banner


async def _get(url: str) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_readiness_flips_when_redis_stops_and_comes_back(node_factory):
    own = Path(tempfile.mkdtemp(prefix="spidi-ready-"))
    redis = EmbeddedRedis(own).start()
    try:
        node = await node_factory(redis_url=redis.url, history=False)
        base = node.ops.url
        status, body = await _get(f"{base}/health/ready")
        assert status == 200 and body["status"] in ("UP", "DEGRADED")  # DEGRADED: a lagging loop
        assert body["components"]["redis"]["status"] == "UP"
        status, spidi = await _get(f"{base}/actuator/health/spidi")
        assert status == 200 and spidi["components"]["redis"] == body["components"]["redis"]

        redis.stop()
        status, body = await _get(f"{base}/health/ready")
        assert status == 503 and body["status"] == "DOWN" and body["components"]["redis"]["status"] == "DOWN"
        assert (await _get(f"{base}/actuator/health/spidi"))[0] == 503
        # The /health overview reports the component too (liveness is /health/live, see test_security_probes).
        status, live = await _get(f"{base}/health")
        assert live["components"]["redis"]["status"] == "down"

        redis.start()
        for _ in range(50):
            status, body = await _get(f"{base}/health/ready")
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200 and body["components"]["redis"]["status"] == "UP"
    finally:
        redis.stop()


async def test_not_ready_while_history_has_no_writer(node):
    # History on, writer external and none running: events pile up, so the node is not ready.
    status, body = await _get(f"{node.ops.url}/health/ready")
    assert status == 503 and body["components"]["writer"]["status"] == "DOWN"
    assert body["components"]["writer"]["state"] == "unknown"


def test_accept_queue_reads_the_kernels_count_of_waiting_connections():
    """TCP_INFO of a listening socket: connections the kernel completed that accept() has not
    taken (ss -ltn's Recv-Q), and the queue's limit."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(50)
        server = SimpleNamespace(sockets=[listener])
        assert accept_queue(server) == (0, 50)
        waiting = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        assert accept_queue(server) == (3, 50)
        accepted, _ = listener.accept()
        assert accept_queue(server) == (2, 50)
        for sock in (*waiting, accepted):
            sock.close()
    assert accept_queue(None) is None and accept_queue(SimpleNamespace(sockets=[])) is None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_health_reports_connections_loop_lag_and_accept_backlog(node):
    client = await connected(node.ws_url, token_for(node.settings, "h", "spidi:user"))
    status, body = await _get(f"{node.ops.url}/health")
    ws = body["components"]["websocket"]
    assert status == 200 and ws["transport"] == node.transport.name and ws["connections"] == 1
    assert ws["acceptBacklog"] == 0 and ws["acceptBacklogLimit"] == min(node.settings.listen_backlog, 4096)
    assert 0 <= ws["loopLagMs"] < 1000 and ws["loopLagLimitMs"] == node.settings.health_loop_lag_ms
    # The node's loop is this test's: while it is held (a blocking step), connections the kernel
    # completes wait in the listening socket's queue, and the component counts them.
    port = node.transport.port
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    for _ in range(100):  # the handshake's last ACK reaches the listener at once on loopback
        if node.ops._websocket_component()["acceptBacklog"] == 3:
            break
        time.sleep(0.001)
    assert node.ops._websocket_component()["acceptBacklog"] == 3
    time.sleep(0.15)  # still held: the loop lags by this much
    for sock in held:
        sock.close()
    status, body = await _get(f"{node.ops.url}/health")
    ws = body["components"]["websocket"]
    assert ws["acceptBacklog"] == 0 and ws["loopLagMs"] >= 100
    assert ws["status"] == "degraded" and body["status"] == "degraded" and status == 200
    await client.close()


def _serve(tmp_path: Path, redis_url: str, **env_extra: str) -> tuple[subprocess.Popen, str]:
    """``spidi serve`` in a process of its own (signals reach it alone); its ops URL."""
    ops = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_JWT_SECRET=TEST_SECRET,
        SPIDI_HISTORY="false",
        SPIDI_LOG_LEVEL="warning",
        **env_extra,
    )
    command = [sys.executable, "-m", "spidi_server.cli", "serve", "--dev", "--data-dir", str(tmp_path)]
    command += ["--port", str(free_port()), "--ops-port", str(ops)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    read_banner(proc)
    return proc, f"http://127.0.0.1:{ops}"


async def _until(url: str, wanted: str, timeout: float = 10.0) -> dict:
    """The readiness body once its websocket component says ``wanted`` (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await _get(f"{url}/actuator/health/spidi")
        if body["components"]["websocket"]["status"] == wanted or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_readiness_degrades_while_the_nodes_loop_lags_and_recovers(tmp_path, redis_url, redis_sync):
    """A node whose event loop really stops (SIGSTOP for 300 ms, then SIGCONT) measures the lag
    on its next timer: the websocket component is DEGRADED (still 200: it serves, slowly) until
    the lag leaves its window, then UP again."""
    proc, url = _serve(tmp_path, redis_url, SPIDI_HEALTH_LOOP_LAG_WINDOW_S="2")
    try:
        body = await _until(url, "UP")  # start-up's own steps out of the window first
        assert body["status"] == "UP" and body["components"]["websocket"]["loopLagMs"] <= 100
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(0.3)  # the stall itself, not a wait for a condition
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        status, body = await _get(f"{url}/actuator/health/spidi")
        ws = body["components"]["websocket"]
        assert ws["status"] == "DEGRADED" and ws["loopLagMs"] >= 250, body
        assert body["status"] == "DEGRADED" and status == 200
        assert body["components"]["redis"]["status"] == "UP"
        _, overview = await _get(f"{url}/health")
        assert (
            overview["status"] == "degraded" and overview["components"]["websocket"]["status"] == "degraded"
        )
        # Two seconds (the window) later the lag is history: UP again.
        body = await _until(url, "UP", timeout=6.0)
        assert body["status"] == "UP" and body["components"]["websocket"]["loopLagMs"] <= 100, body
    finally:
        proc.terminate()
        proc.wait(10)


async def test_health_names_the_codec_running(node):
    # The Cython codec and wheel when built (and not turned off), else the pure-Python references.
    status, body = await _get(f"{node.ops.url}/health")
    assert status == 200
    assert body["codec"] == ("cython" if spidi_core.FrameParser is spidi_core.FrameParserC else "python")
    assert body["codec"] == (
        "cython" if spidi_core.HeartbeatWheel is spidi_core.HeartbeatWheelC else "python"
    )


async def test_metrics_names(node):
    client = await connected(node.ws_url, token_for(node.settings, "m", "spidi:user"))
    sid = (await client.hello("lobby"))["sessionId"]
    await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 7}, receipt="r")
    await client.next(command="RECEIPT")
    await client.app("/app/leave", {"sessionId": "nope"})
    await client.json("/user/queue/errors")
    status, text = await _get(f"{node.ops.url}/metrics")
    assert status == 200
    for name in (
        "spidi_node_rooms 1.0",
        "spidi_sessions_active 1.0",
        "spidi_websocket_connections 1.0",
        "spidi_heartbeats_total 1.0",
        "spidi_heartbeat_latency_ms_count 1.0",
        'spidi_frames_total{command="SEND"} 3.0',
        'spidi_errors_total{code="UNKNOWN_SESSION"} 1.0',
        "spidi_redis_pipeline_commands_count",
        "spidi_redis_pipeline_duration_seconds_bucket",
        "spidi_writer_backlog_events 1.0",  # session_started, nobody consuming
        "spidi_writer_batch_duration_seconds",
        "spidi_event_loop_lag_seconds_bucket",
        "spidi_event_loop_lag_max_seconds",
        "spidi_event_loop_stalls_total",
        "spidi_gc_pause_seconds_bucket",
        'spidi_sessions_ended_total{reason="timeout"} 0.0',
    ):
        assert name in text, name
    await client.close()


async def test_log_lines_carry_trace_user_room_and_client(node, caplog):
    caplog.set_level(logging.INFO, logger="spidi")
    client = await connected(node.ws_url, token_for(node.settings, "logged", "spidi:user"))
    welcome = await client.hello("lobby", "tablet", device="iPad", os="iPadOS")
    await client.app("/app/leave", {"sessionId": welcome["sessionId"]}, receipt="l")
    await client.next(command="RECEIPT")
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "spidi.presence"]
    started = next(line for line in lines if line["event"] == "session_started")
    ended = next(line for line in lines if line["event"] == "session_ended")
    for line in (started, ended):
        assert line["trace_id"] and line["user_id"] == "logged" and line["room_id"] == welcome["roomId"]
        assert line["client_info"]["device"] == "iPad" and line["client_info"]["clientId"] == "tablet"
        assert line["level"] == "INFO" and line["timestamp"].endswith("Z")
    assert started["trace_id"] == ended["trace_id"] and ended["reason"] == "leave"
    assert not [r for r in caplog.records if "heartbeat" in r.getMessage()]
    await client.close()
