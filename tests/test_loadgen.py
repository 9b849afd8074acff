"""The benchmark's load generator against a real node: every heartbeat it sends is processed."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct

import pytest

from benchmarks.heartbeat_load import storm_figures
from benchmarks.loadgen import FAILURE_KINDS, LoadGenerator, classify_failure, fetch_metric, wait_for_metric

from .conftest import token_for

CONNECTIONS = 50
RATE = 500
DURATION = 1.0


async def test_loadgen_heartbeats_all_processed(node):
    metrics_url = node.ops.url + "/metrics"
    tokens = [token_for(node.settings, f"load-{i}", "spidi:user") for i in range(CONNECTIONS)]
    gen = LoadGenerator("127.0.0.1", node.transport.port, tokens, rooms=5)
    try:
        connected = await gen.connect_all(CONNECTIONS)
        assert connected.connected == CONNECTIONS, dict(gen.errors)
        assert all(c.session_id for c in gen.conns)

        before = await fetch_metric(metrics_url, "spidi_heartbeats_total")
        result = await gen.run(RATE, DURATION, sample_every=10)
        await gen.wait_receipts(result, timeout=5)
        assert result.offered == RATE * DURATION
        assert result.sent + result.skipped == result.offered
        assert result.sent > 0

        after, _ = await wait_for_metric(
            metrics_url, "spidi_heartbeats_total", before + result.sent, timeout=10
        )
        assert after - before == result.sent
        assert result.sampled > 0
        assert result.rtt_ms, "no round-trip samples"
        assert result.lost_receipts == 0
        assert not gen.errors, dict(gen.errors)
    finally:
        await gen.close()


# -- connect accounting (the storm's figures) ----------------------------------------------------


async def test_storm_every_client_in_is_accounted(node):
    count = 30
    tokens = [token_for(node.settings, f"storm-{i}", "spidi:user") for i in range(count)]
    gen = LoadGenerator("127.0.0.1", node.transport.port, tokens, rooms=3, connect_concurrency=count)
    try:
        result = await gen.connect_all(count)
        assert result.all_in, (result.failures, dict(gen.errors))
        assert result.failures == {}
        assert len(result.latency_ms) == count
        assert 0 < result.latency(50) <= result.latency(99) <= result.seconds * 1000
        figures = storm_figures(result, tree_cpu_s=0.003)
        assert figures["all_in"] and figures["connected"] == figures["requested"] == count
        assert set(figures["failures"]) == set(FAILURE_KINDS) and not any(figures["failures"].values())
        assert figures["tree_cpu_us_per_conn"] == pytest.approx(100.0)
    finally:
        await gen.close()


async def _misbehaving_server(kind: str):
    """A loopback server that fails every WebSocket handshake in the way ``kind`` names."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if kind == "reset":
            # SO_LINGER 0: close() sends a RST instead of a FIN.
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            writer.transport.abort()
            return
        await reader.readuntil(b"\r\n\r\n")
        if kind == "rejected":
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await reader.read()  # the client closes
        elif kind == "timeout":
            await reader.read()  # never answers
        writer.close()  # "closed": a clean FIN after reading the request

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("kind", ["reset", "rejected", "timeout", "closed"])
async def test_connect_failures_are_classified(kind):
    server = await _misbehaving_server(kind)
    port = server.sockets[0].getsockname()[1]
    gen = LoadGenerator("127.0.0.1", port, ["t"], connect_concurrency=3, connect_timeout=0.5)
    try:
        result = await gen.connect_all(3)
        assert result.connected == 0 and not result.all_in
        assert result.failures == {kind: 3}, dict(gen.errors)
        assert result.latency_ms == []
    finally:
        await gen.close()
        server.close()
        await server.wait_closed()


async def test_connect_refused_is_classified():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gen = LoadGenerator("127.0.0.1", port, ["t"], connect_concurrency=2, connect_timeout=2)
    result = await gen.connect_all(2)
    assert result.failures == {"refused": 2}


def test_classify_failure():
    assert classify_failure(None) == "closed"
    assert classify_failure(ConnectionRefusedError()) == "refused"
    assert classify_failure(ConnectionResetError()) == "reset"
    assert classify_failure(BrokenPipeError()) == "reset"
    assert classify_failure(OSError(errno.ECONNRESET, "reset")) == "reset"
    assert classify_failure(TimeoutError()) == "timeout"
    assert classify_failure(OSError(errno.EADDRNOTAVAIL, "no port")) == "other"


async def test_hello_refused_is_rejected_not_timeout(node_factory):
    # A room of two: the third and fourth HELLO get ROOM_FULL on /user/queue/errors at once.
    node = await node_factory(default_room_capacity=2)
    tokens = [token_for(node.settings, f"full-{i}", "spidi:user") for i in range(4)]
    gen = LoadGenerator(
        "127.0.0.1", node.transport.port, tokens, rooms=1, connect_concurrency=1, connect_timeout=5
    )
    try:
        result = await gen.connect_all(4)
        assert result.connected == 2
        assert result.failures == {"rejected": 2}, dict(gen.errors)
        assert result.seconds < 5  # answered, not timed out
        assert any("ROOM_FULL" in reason for reason in gen.errors), dict(gen.errors)
    finally:
        await gen.close()
