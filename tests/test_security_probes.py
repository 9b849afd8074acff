"""Probes and scrapes on the ops port: liveness (/health/live) stays 200 through a Redis outage
while readiness (/health/ready) and /health say DOWN; /metrics behind ``metrics_token``."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import aiohttp
import pytest

from spidi_server.errors import ConfigError
from spidi_server.settings import Settings
from spidi_server.stores.embedded_redis import EmbeddedRedis

TOKEN = "scrape-me-0123456789abcdef"


async def _get(url: str, headers: dict | None = None) -> tuple[int, dict | str, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, resp.headers.get("WWW-Authenticate", "")


@pytest.mark.hardening(
    "security",
    "Liveness probe during a Redis outage",
    "/health/live 200 (no restart, the buffer and spill survive); /health/ready 503",
)
async def test_liveness_holds_while_redis_is_down(node_factory):
    own = Path(tempfile.mkdtemp(prefix="spidi-live-"))
    redis = EmbeddedRedis(own).start()
    try:
        node = await node_factory(redis_url=redis.url, history=False)
        base = node.ops.url
        status, body, _ = await _get(f"{base}/health/live")
        assert status == 200 and body["status"] == "UP" and body["node"] == node.node_id
        redis.stop()
        for _ in range(50):  # the store notices the outage
            if (await _get(f"{base}/health/ready"))[0] == 503:
                break
            await asyncio.sleep(0.1)
        assert (await _get(f"{base}/health/ready"))[0] == 503
        assert (await _get(f"{base}/health"))[0] == 503  # kept as it was: the overview, not a probe
        status, body, _ = await _get(f"{base}/health/live")
        assert status == 200 and body["status"] == "UP"
        assert set(body) == {"status", "node", "uptimeS"}  # small: nothing about dependencies
        redis.start()
        for _ in range(50):
            if (await _get(f"{base}/health/ready"))[0] == 200:
                break
            await asyncio.sleep(0.1)
        assert (await _get(f"{base}/health/live"))[0] == 200
    finally:
        redis.stop()


@pytest.mark.hardening(
    "security",
    "/metrics with metrics_token set: no, wrong, malformed and right Authorization",
    "401 with WWW-Authenticate: Bearer unless the token matches; /health/* stay open",
)
async def test_metrics_token(node_factory):
    node = await node_factory(metrics_token=TOKEN)
    url = f"{node.ops.url}/metrics"
    for headers in (
        None,
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ):
        status, body, challenge = await _get(url, headers)
        assert status == 401 and challenge.startswith("Bearer"), headers
        assert "spidi_" not in body
    status, body, _ = await _get(url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "spidi_websocket_connections" in body
    status, body, _ = await _get(url, {"Authorization": f"bearer  {TOKEN} "})  # scheme is case-insensitive
    assert status == 200
    for probe in ("/health/live", "/health/ready", "/health"):
        assert (await _get(f"{node.ops.url}{probe}"))[0] in (200, 503), probe


async def test_metrics_open_without_a_token(node):
    status, body, _ = await _get(f"{node.ops.url}/metrics")
    assert status == 200 and "spidi_websocket_connections" in body


def test_metrics_token_must_be_strong():
    for bad in ("short", "has a space in it 0123456789", "tab\there0123456789"):
        with pytest.raises(ConfigError, match="metrics_token"):
            Settings(metrics_token=bad).validate()
    Settings(metrics_token=TOKEN).validate()
