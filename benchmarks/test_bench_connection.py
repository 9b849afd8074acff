"""Micro benchmark of the heartbeat hot path above the codec: one WebSocket message of heartbeat
SEND frames through ``ClientConnection.receive`` (``StompConnection.receive_data``, the typed
events, ``dispatch``, ``push``) into a presence that does nothing, so the figure is the
protocol and dispatch cost alone.

Run with ``pytest benchmarks/test_bench_connection.py --benchmark-only``.
"""

from __future__ import annotations

import orjson
import pytest

from spidi_core import HeartbeatLane, serialize_frame
from spidi_server.auth import TokenVerifier, mint_token
from spidi_server.connection import ClientConnection
from spidi_server.metrics import NodeMetrics
from spidi_server.protocol.stomp import StompConnection
from spidi_server.settings import Settings

# No rate limit: the benchmark sends far more frames per second than a client may.
SETTINGS = Settings(
    jwt_secret="bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz", max_message_rate=0
).validate()
HEARTBEAT = serialize_frame(
    "SEND",
    {"destination": "/app/heartbeat", "content-type": "application/json"},
    orjson.dumps({"sessionId": "0b7c3f1e-4a4e-4f8e-9d55-2f0c1e6a9b10", "latencyMs": 42.5}),
)
BATCH = 100  # heartbeat frames per message in the batched case


class _Presence:
    """Takes the heartbeats and drops them: the benchmark measures what is above presence."""

    def __init__(self) -> None:
        self.beats = 0
        self.lane = HeartbeatLane((5.0,), 1_000)  # the connection's rate bucket lives here

    def heartbeat(self, client, session_id: str, latency_ms: float) -> None:
        self.beats += 1


class _Host:
    """What a connection reads from its node."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        self.metrics = NodeMetrics()
        self.presence = _Presence()
        self._verifier = TokenVerifier(SETTINGS)

    def new_stomp_connection(self, conn_id: str, query_token: str | None) -> StompConnection:
        return StompConnection(self._verifier, conn_id, query_token=query_token)


class _Writer:
    def write(self, chunks: list[bytes]) -> None:
        pass

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str, discard: bool = False) -> None:
        pass


def _connected() -> tuple[ClientConnection, _Presence]:
    host = _Host()
    conn = ClientConnection(host, _Writer(), "c-1", "127.0.0.1", None)
    token = mint_token(SETTINGS, "bench", ["spidi:user"], "default", 3600)
    conn.receive(serialize_frame("CONNECT", {"accept-version": "1.2", "passcode": token}))
    assert conn.stomp.claims is not None
    return conn, host.presence


@pytest.mark.benchmark(group="connection: heartbeat SEND frames through receive + dispatch")
def test_one_heartbeat_per_message(benchmark):
    conn, presence = _connected()
    benchmark(conn.receive, HEARTBEAT)
    assert presence.beats > 0 and conn.stomp.close_reason is None


@pytest.mark.benchmark(group="connection: heartbeat SEND frames through receive + dispatch")
def test_hundred_heartbeats_per_message(benchmark):
    conn, presence = _connected()
    data = HEARTBEAT * BATCH
    benchmark(conn.receive, data)
    assert presence.beats % BATCH == 0 and conn.stomp.close_reason is None
