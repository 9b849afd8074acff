"""The benchmark's load generator against a real node: every heartbeat it sends is processed."""

from __future__ import annotations

from benchmarks.loadgen import LoadGenerator, fetch_metric, wait_for_metric

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
