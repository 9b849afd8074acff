"""Prometheus metrics of a node. Names follow ``spidi_<subsystem>_<name>_<unit>``.

Counters touched per heartbeat are plain integers (``HotCounters``) exported by a collector at
scrape time: prometheus_client's Counter takes a lock per ``inc`` and its Histogram walks its
buckets in Python, which on the heartbeat path cost more than the heartbeat itself.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .loop_monitor import LAG_BUCKETS_S
from .stores.events import LATENCY_BUCKETS_MS

# Index of each command in HotCounters.frames.
FRAME_COMMANDS = ("SEND", "SUBSCRIBE", "UNSUBSCRIBE", "CONNECT", "DISCONNECT", "OTHER")


class HotCounters:
    """Per-heartbeat figures as plain numbers.

    Heartbeat figures live in the heartbeat lanes (``spidi_core.HeartbeatLane``, one per
    ``Presence``) and are folded in here when they are read: each source is a ``take_counters``
    callable (heartbeats, latency sum, histogram, SENDs the lane answered), so nothing is added
    per heartbeat on this side.
    """

    __slots__ = ("_heartbeats", "_latency_hist", "_latency_sum", "frames", "stomp_heartbeats", "sources")

    def __init__(self) -> None:
        self._heartbeats = 0
        self._latency_hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # last: above the highest bound
        self._latency_sum = 0.0
        self.frames = [0] * len(FRAME_COMMANDS)
        self.stomp_heartbeats = 0
        self.sources: list = []  # take_counters callables, folded in before any figure is read

    def fold(self) -> None:
        """Add what the sources counted since the last fold."""
        for take in self.sources:
            beats, latency_sum, hist, handled = take()
            if beats:
                self._heartbeats += beats
                self._latency_sum += latency_sum
                own = self._latency_hist
                for i, count in enumerate(hist):
                    own[i] += count
            # A SEND the lane answered never reached the connection's own count.
            self.frames[0] += handled

    @property
    def heartbeats(self) -> int:
        self.fold()
        return self._heartbeats

    @heartbeats.setter
    def heartbeats(self, value: int) -> None:
        self._heartbeats = value

    @property
    def latency_sum(self) -> float:
        self.fold()
        return self._latency_sum

    @latency_sum.setter
    def latency_sum(self, value: float) -> None:
        self._latency_sum = value

    @property
    def latency_hist(self) -> list[int]:
        self.fold()
        return self._latency_hist


class _HotCollector:
    def __init__(self, hot: HotCounters):
        self.hot = hot

    def collect(self):
        hot = self.hot
        hot.fold()
        yield CounterMetricFamily("spidi_heartbeats", "Presence heartbeats processed", value=hot.heartbeats)
        yield CounterMetricFamily(
            "spidi_stomp_heartbeats", "STOMP heart-beat EOLs received", value=hot.stomp_heartbeats
        )
        frames = CounterMetricFamily("spidi_frames", "STOMP frames received, by command", labels=["command"])
        for command, value in zip(FRAME_COMMANDS, hot.frames, strict=True):
            frames.add_metric([command], value)
        yield frames
        cumulative, buckets = 0, []
        for bound, count in zip(
            (*map(str, map(float, LATENCY_BUCKETS_MS)), "+Inf"), hot.latency_hist, strict=True
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "spidi_heartbeat_latency_ms",
            "Client-reported latency carried by heartbeats, ms",
            buckets=buckets,
            sum_value=hot.latency_sum,
        )

    def describe(self):
        return []


class NodeMetrics:
    """Every metric the node exports, on a registry of its own (so tests can run several nodes)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.hot = HotCounters()
        self.frame_counts = self.hot.frames
        r.register(_HotCollector(self.hot))
        self.websocket_connections = Gauge(
            "spidi_websocket_connections", "Open WebSocket connections", registry=r
        )
        self.sessions_active = Gauge(
            "spidi_sessions_active", "Presence sessions held by this node", registry=r
        )
        self.sessions_liveness = Gauge(
            "spidi_sessions_liveness",
            "This node's sessions by liveness grade (live, late, at_risk), graded once a second",
            ["grade"],
            registry=r,
        )
        self.node_rooms = Gauge(
            "spidi_node_rooms", "Rooms with at least one session on this node", registry=r
        )
        # Cluster-wide, the same on every node: read from Redis (room_index.py), not counted here.
        self.rooms_total = Gauge(
            "spidi_rooms_total",
            "Rooms of the tenant, cluster-wide: stored, configured and auto-created ones with live state",
            ["tenant"],
            registry=r,
        )
        self.errors = Counter("spidi_errors", "Errors sent to clients, by code", ["code"], registry=r)
        self.sessions_ended = Counter(
            "spidi_sessions_ended", "Sessions ended, by reason", ["reason"], registry=r
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
            "spidi_redis_pipeline_failures", "Redis pipeline flushes that failed", registry=r
        )
        # Sampled from INFO memory every few seconds by the node (not at scrape time, not per write).
        self.redis_used_memory = Gauge(
            "spidi_redis_used_memory_bytes",
            "Redis used_memory (on a cluster: the primary nearest its maxmemory)",
            registry=r,
        )
        self.redis_maxmemory = Gauge(
            "spidi_redis_maxmemory_bytes", "Redis maxmemory of the same server; 0 = no limit", registry=r
        )
        # Event-loop stalls (loop_monitor.py): a 50 ms timer's lateness, the stalls among them,
        # the longest of the last minute, and the pauses of CPython's older-generation collections.
        self.event_loop_lag = Histogram(
            "spidi_event_loop_lag_seconds",
            "How late the event loop ran a timer set every 50 ms",
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
        self.event_loop_stalls = Counter(
            "spidi_event_loop_stalls", "Timer lateness at or above loop_stall_ms", registry=r
        )
        self.event_loop_lag_max = Gauge(
            "spidi_event_loop_lag_max_seconds", "Longest timer lateness of the last minute or two", registry=r
        )
        self.event_loop_io_phase_cuts = Gauge(
            "spidi_event_loop_io_phase_cuts",
            "Event-loop I/O phases ended by loop_io_budget_ms so timers and tasks could run (since start)",
            registry=r,
        )
        self.gc_pause = Histogram(
            "spidi_gc_pause_seconds",
            "CPython garbage collections of generation 1 and 2, by generation",
            ["generation"],
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
        # Fed by the node from its GcPolicy's count (gc.get_freeze_count walks the frozen heap).
        self.gc_frozen = Gauge(
            "spidi_gc_frozen_objects",
            "Objects frozen out of ordinary collections, at most (gc_policy.py)",
            registry=r,
        )
        self.writer_backlog = Gauge(
            "spidi_writer_backlog_events", "History events in the stream waiting for the writer", registry=r
        )
        self.writer_batch_seconds = Gauge(
            "spidi_writer_batch_duration_seconds", "Duration of the writer's last batch", registry=r
        )
        self.sessions_reaped = Counter(
            "spidi_sessions_reaped", "Sessions of dead nodes this node ended", registry=r
        )
        self.capacity_degraded = Counter(
            "spidi_capacity_checks_degraded",
            "HELLOs admitted on this process's own room count because Redis did not answer in time",
            registry=r,
        )
        for reason in ("leave", "timeout", "disconnect", "shutdown"):
            self.sessions_ended.labels(reason=reason)
        # alerting
        self.alerts_triggered = Counter(
            "spidi_alerts_triggered",
            "Alerts that started firing, by kind and severity",
            ["kind", "severity"],
            registry=r,
        )
        self.alert_transitions = Counter(
            "spidi_alert_transitions", "Alert lifecycle transitions, by new state", ["state"], registry=r
        )
        self.alert_evaluations = Counter(
            "spidi_alert_evaluations", "Rule-and-room evaluations run by this process", registry=r
        )
        self.alert_evaluation_errors = Counter(
            "spidi_alert_evaluation_errors",
            "Evaluations that failed (expression error, missing data)",
            registry=r,
        )
        self.anomaly_flags = Counter(
            "spidi_anomaly_flags",
            "Anomaly flags raised by anomaly-using rules, by flag type",
            ["flag"],
            registry=r,
        )
        self.alert_evaluation_seconds = Gauge(
            "spidi_alert_evaluation_duration_seconds", "Duration of the last evaluation round", registry=r
        )
        self.alert_leader = Gauge(
            "spidi_alert_evaluator_leader", "1 while this process holds the evaluator lease", registry=r
        )
        self.alert_notifications = Counter(
            "spidi_alert_notifications",
            "Alert notifications, by channel and outcome (sent, failed, suppressed, refused)",
            ["channel", "outcome"],
            registry=r,
        )
        self.webhook_retries = Counter(
            "spidi_webhook_retries",
            "Webhook POSTs retried after a failure, by purpose",
            ["purpose"],
            registry=r,
        )
        self.room_hooks = Counter(
            "spidi_room_hooks",
            "Room lifecycle webhook POSTs, by event and outcome",
            ["event", "outcome"],
            registry=r,
        )
        # latency SLOs: set only by the process holding the evaluator lease (alerting/slo_reader.py)
        self.slo_compliance = Gauge(
            "spidi_slo_compliance",
            "Share of heartbeats at or under the SLO's threshold over its window (1 without heartbeats)",
            ["slo"],
            registry=r,
        )
        self.slo_error_budget_remaining = Gauge(
            "spidi_slo_error_budget_remaining",
            "Share of the SLO window's error budget left (negative when overspent)",
            ["slo"],
            registry=r,
        )
        self.slo_burn_rate = Gauge(
            "spidi_slo_burn_rate",
            "Error-budget burn rate of the SLO over a window (5m, 30m, 1h, 6h, 3d)",
            ["slo", "window"],
            registry=r,
        )
        for state in ("pending", "firing", "resolved"):
            self.alert_transitions.labels(state=state)
        # hardening
        from .errors import REFUSAL_REASONS

        self.refusals = Counter(
            "spidi_refusals",
            "Connections and messages refused by a hardening limit, by reason",
            ["reason"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason=reason)
        # faults
        self.fault_source = None  # the HotStore, set by the node: its outage figures, read at scrape time
        r.register(_FaultCollector(self))

    def record_flush(self, commands: int, seconds: float, ok: bool) -> None:
        """Account one Redis pipeline flush (HotStore calls it)."""
        self.redis_flush_commands.observe(commands)
        self.redis_flush_seconds.observe(seconds)
        if not ok:
            self.redis_flush_failures.inc()


# faults
class _FaultCollector:
    """The hot store's outage figures (buffer, spill file, drops, re-asserts), read at scrape time:
    the store keeps plain numbers, so an outage adds no metric calls to its hot loop."""

    def __init__(self, metrics: NodeMetrics):
        self.metrics = metrics

    def collect(self):
        store = self.metrics.fault_source
        spill = store.spill if store is not None else None
        yield GaugeMetricFamily(
            "spidi_redis_buffered_ops",
            "Redis writes waiting in memory (Redis unreachable, or a backlog being sent)",
            value=store.buffered if store is not None else 0,
        )
        yield GaugeMetricFamily(
            "spidi_spill_ops",
            "Redis writes in the spill file waiting to be replayed",
            value=spill.ops if spill else 0,
        )
        yield GaugeMetricFamily(
            "spidi_spill_bytes",
            "Bytes in the spill file waiting to be replayed",
            value=spill.bytes if spill else 0,
        )
        yield CounterMetricFamily(
            "spidi_spilled_ops",
            "Redis writes moved to the spill file",
            value=spill.spilled_total if spill else 0,
        )
        yield CounterMetricFamily(
            "spidi_spill_failures",
            "Chunks that could not be written to the spill file (disk full, size cap, I/O error)",
            value=spill.failures if spill else 0,
        )
        yield CounterMetricFamily(
            "spidi_redis_dropped_ops",
            "Redis writes lost: past the memory buffer and not kept in the spill file",
            value=store.dropped if store is not None else 0,
        )
        yield CounterMetricFamily(
            "spidi_redis_reasserts",
            "Times the node wrote its live sessions to Redis again (reconnect, Redis lost its state)",
            value=store.reasserts if store is not None else 0,
        )

    def describe(self):
        return []
