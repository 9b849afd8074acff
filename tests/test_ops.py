"""The ops endpoints: liveness, readiness (flipping with Redis), metrics, and the log fields."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path

import aiohttp

import spidi_core
from spidi_server.logs import JsonFormatter
from spidi_server.stores.embedded_redis import EmbeddedRedis

from .conftest import token_for
from .stomp_client import connected


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
        assert status == 200 and body["status"] == "UP" and body["components"]["redis"]["status"] == "UP"
        assert await _get(f"{base}/actuator/health/spidi") == (status, body)

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
        assert status == 200 and body["status"] == "UP"
    finally:
        redis.stop()


async def test_not_ready_while_history_has_no_writer(node):
    # History on, writer external and none running: events pile up, so the node is not ready.
    status, body = await _get(f"{node.ops.url}/health/ready")
    assert status == 503 and body["components"]["writer"]["status"] == "DOWN"
    assert body["components"]["writer"]["state"] == "unknown"


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
        assert line["level"] == "info" and line["ts"].endswith("Z")
    assert started["trace_id"] == ended["trace_id"] and ended["reason"] == "leave"
    assert not [r for r in caplog.records if "heartbeat" in r.getMessage()]
    await client.close()
