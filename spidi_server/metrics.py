"""Prometheus metrics of a node. Names follow ``spidi_<subsystem>_<name>_<unit>``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FRAME_COMMANDS = (
    "CONNECT",
    "STOMP",
    "SEND",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "DISCONNECT",
    "ACK",
    "NACK",
    "OTHER",
)


class NodeMetrics:
    """Every metric the node exports, on a registry of its own (so tests can run several nodes)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.websocket_connections = Gauge(
            "spidi_websocket_connections", "Open WebSocket connections", registry=r
        )
        self.sessions_active = Gauge(
            "spidi_sessions_active", "Presence sessions held by this node", registry=r
        )
        self.rooms_total = Gauge(
            "spidi_rooms_total", "Rooms with at least one session on this node", registry=r
        )
        self.heartbeat_latency_ms = Histogram(
            "spidi_heartbeat_latency_ms",
            "Client-reported latency carried by heartbeats, ms",
            buckets=(5, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000),
            registry=r,
        )
        self.frames = Counter(
            "spidi_frames_total", "STOMP frames received, by command", ["command"], registry=r
        )
        self.heartbeats = Counter("spidi_heartbeats_total", "Presence heartbeats processed", registry=r)
        self.stomp_heartbeats = Counter(
            "spidi_stomp_heartbeats_total", "STOMP heart-beat EOLs received", registry=r
        )
        self.errors = Counter("spidi_errors_total", "Errors sent to clients, by code", ["code"], registry=r)
        self.sessions_ended = Counter(
            "spidi_sessions_ended_total", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.redis_flush_commands = Histogram(
            "spidi_redis_pipeline_commands",
            "Commands per Redis pipeline flush",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=r,
        )
        self.redis_flush_seconds = Histogram(
            "spidi_redis_pipeline_duration_seconds",
            "Duration of a Redis pipeline flush",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.redis_flush_failures = Counter(
            "spidi_redis_pipeline_failures_total", "Redis pipeline flushes that failed", registry=r
        )
        # Bound label children once: .labels() per frame would cost a dict lookup and a lock.
        self.frame_counter = {cmd: self.frames.labels(command=cmd) for cmd in FRAME_COMMANDS}
        for reason in ("leave", "timeout", "disconnect", "shutdown"):
            self.sessions_ended.labels(reason=reason)

    def count_frame(self, command: str) -> None:
        counter = self.frame_counter.get(command)
        (counter if counter is not None else self.frame_counter["OTHER"]).inc()

    def record_flush(self, commands: int, seconds: float, ok: bool) -> None:
        self.redis_flush_commands.observe(commands)
        self.redis_flush_seconds.observe(seconds)
        if not ok:
            self.redis_flush_failures.inc()
