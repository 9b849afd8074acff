"""Configuration: one typed place for every setting.

Precedence, lowest first: the defaults below, a TOML file (``--config`` or ``SPIDI_CONFIG``),
``SPIDI_<NAME>`` environment variables, then command-line flags. ``validate`` runs at start and
raises ``ConfigError`` with a message naming the bad setting.

One job, one long table: every setting with its type, default and doc string (the README table is
generated from it), then loading and validation; splitting it would put settings in two places.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .stores.client import check_url, is_cluster_url, parse_cluster_url

# The shortest HS256 secret accepted (RFC 7518 3.2: a key at least as long as the hash, 256 bits).
MIN_HS_SECRET_BYTES = 32
MAX_SLO_BREAKDOWN_TOP_N = 64  # groups per room and dimension (the lane has 256 slots; rows stay small)


@dataclass
class Settings:
    """Every tunable of a Spidi node; ``doc`` metadata feeds the README configuration table."""

    host: str = field(default="127.0.0.1", metadata={"doc": "Address the WebSocket server binds"})
    port: int = field(default=8765, metadata={"doc": "WebSocket port (endpoint path /ws)"})
    ops_host: str = field(default="127.0.0.1", metadata={"doc": "Address of the ops HTTP server"})
    ops_port: int = field(default=9100, metadata={"doc": "Ops HTTP port: /metrics, /health"})
    data_dir: str = field(default=".spidi", metadata={"doc": "Embedded Redis socket, dev secret, logs"})
    log_level: str = field(default="info", metadata={"doc": "debug, info, warning or error"})
    dev: bool = field(
        default=False, metadata={"doc": "Development mode: generated secret, auto-created rooms"}
    )
    node_id: str = field(
        default="",
        metadata={
            "doc": "This node's id; when empty, `spidi serve` makes one up once and keeps it in `<data_dir>/node_id`"
        },
    )

    redis_url: str = field(
        default="",
        metadata={
            "doc": "Redis URL (redis://, rediss://, unix://, or redis+cluster://host:port[,host:port...] "
            "for Redis Cluster); empty starts an embedded redis-server"
        },
    )
    redis_join_timeout_ms: float = field(
        default=1000.0,
        metadata={
            "doc": "Longest HELLO waits for Redis to admit a session against the room's capacity across "
            "all nodes; after it (or at once while Redis is down) it admits on this process's count"
        },
    )

    postgres_dsn: str = field(
        default="", metadata={"doc": "PostgreSQL DSN; empty starts an embedded one (pgserver)"}
    )
    history: bool = field(default=True, metadata={"doc": "Record presence history (events to the writer)"})
    writer: str = field(
        default="child", metadata={"doc": "child: serve starts the writer; external: run it alone"}
    )
    writer_flush_interval_s: float = field(
        default=30.0, metadata={"doc": "Longest a batch waits for PostgreSQL"}
    )
    writer_batch_size: int = field(default=5000, metadata={"doc": "Events that flush a batch at once"})
    checkpoint_interval_s: float = field(default=60.0, metadata={"doc": "Period of session checkpoints"})
    retention_hot_days: int = field(default=90, metadata={"doc": "Older history moves to the archive schema"})
    retention_drop_days: int = field(default=730, metadata={"doc": "Older history is dropped"})
    writer_sweep_interval_s: float = field(
        default=60.0,
        metadata={
            "doc": "Period of the writer's sweep ending sessions open in history whose node is gone"
            " (reason node_lost); 0 turns it off"
        },
    )
    writer_sweep_after_s: float = field(
        default=300.0,
        metadata={
            "doc": "The sweep ends an open session once its last heartbeat in history is this old"
            " and Redis no longer knows it (its node died or restarted)"
        },
    )

    jwt_algorithms: list[str] = field(
        default_factory=lambda: ["HS256"], metadata={"doc": "Accepted JWT algorithms (HS256, RS256, ES256)"}
    )
    jwt_secret: str = field(
        default="",
        metadata={
            "doc": "HS256 secret, at least 32 bytes; required outside dev mode unless jwt_keys, "
            "jwt_jwks_file or RS256/ES256 keys are set (dev mode generates one in data_dir)"
        },
    )
    jwt_public_key_file: str = field(default="", metadata={"doc": "PEM public key for RS256/ES256"})
    jwt_issuer: str = field(default="", metadata={"doc": "Required `iss` claim, if set"})
    jwt_audience: str = field(default="", metadata={"doc": "Required `aud` claim, if set"})
    jwt_leeway_s: float = field(default=5.0, metadata={"doc": "Clock leeway for exp/nbf"})
    monitors_may_acknowledge: bool = field(
        default=False, metadata={"doc": "spidi:monitor may acknowledge alerts (default: spidi:admin only)"}
    )
    monitors_see_ip: bool = field(
        default=False,
        metadata={"doc": "spidi:monitor sees clients' IP addresses in rosters (default: admins only)"},
    )
    export_signing_key_file: str = field(
        default="",
        metadata={
            "doc": "Ed25519 key that signs attendance exports: a PEM (PKCS#8) private key or the base64 "
            "of a 32-byte seed; empty: dev mode generates one in `<data_dir>/dev-export-key`, otherwise "
            "exports answer 503"
        },
    )
    export_max_rows: int = field(
        default=100_000,
        metadata={"doc": "Most sessions one attendance export holds; a longer period is refused (400)"},
    )

    heartbeat_interval_ms: int = field(default=15_000, metadata={"doc": "Heartbeat interval told to clients"})
    heartbeat_timeout_ms: int = field(
        default=45_000, metadata={"doc": "A session silent this long ends (timeout)"}
    )
    grace_period_ms: int = field(default=15_000, metadata={"doc": "Resume window after an abrupt close"})
    stomp_heartbeat_ms: int = field(
        default=10_000, metadata={"doc": "STOMP heart-beat the server offers (both directions)"}
    )
    auto_create_rooms: bool | None = field(
        default=None, metadata={"doc": "Create unknown rooms on HELLO (default: on in dev mode)"}
    )
    default_room_capacity: int = field(default=1000, metadata={"doc": "Capacity of an auto-created room"})
    rooms: dict[str, int] = field(
        default_factory=dict, metadata={"doc": "Predefined rooms: code = capacity (TOML table)"}
    )
    room_empty_ttl_s: int = field(
        default=3600,
        metadata={
            "doc": "An empty room's live state expires after this many seconds (an auto-created room "
            "is then gone); a stored room's ttl_s overrides it"
        },
    )
    room_sweep_interval_s: float = field(
        default=10.0,
        metadata={"doc": "Period of the rooms index upkeep (expired rooms out) and of spidi_rooms_total"},
    )

    max_frame_size: int = field(default=65536, metadata={"doc": "Largest STOMP frame accepted, bytes"})
    max_headers: int = field(default=64, metadata={"doc": "Most headers in one frame"})
    max_header_line: int = field(default=8192, metadata={"doc": "Longest header line, bytes"})
    connect_timeout_s: float = field(default=10.0, metadata={"doc": "Time allowed from handshake to CONNECT"})
    max_subscriptions: int = field(default=64, metadata={"doc": "Subscriptions per connection"})
    transport: str = field(
        default="native",
        metadata={
            "doc": "WebSocket implementation: native (Spidi's own, the default), websockets (the reference) or picows"
        },
    )
    websocket_compression: bool = field(
        default=False, metadata={"doc": "permessage-deflate on the WebSocket"}
    )

    metrics_interval_ms: int = field(default=250, metadata={"doc": "Coalescing window of room updates"})
    rooms_topic_interval_ms: int = field(default=1000, metadata={"doc": "Period of /topic/rooms"})
    redis_flush_interval_ms: float = field(
        default=10.0,
        metadata={"doc": "Shortest gap between Redis pipelines: batches grow, round trips do not"},
    )
    redis_heartbeat_interval_ms: float = field(
        default=50.0,
        metadata={
            "doc": "Heartbeats go to Redis at most this often, more per script call; those of rooms "
            "watched by some process at the flush interval (their roster updates wait on them)"
        },
    )
    gc_full_interval_s: float = field(
        default=60.0,
        metadata={
            "doc": "Period of the node's garbage-collection step: young objects collected, survivors "
            "frozen; a full collection only after churn (closed connections = a quarter of those open) or "
            "once the frozen heap doubled (gc_policy.py); "
            "0 = CPython's own schedule"
        },
    )
    loop_io_budget_ms: float = field(
        default=10.0,
        metadata={
            "doc": "Longest the event loop runs socket reads before its timers and tasks (the Redis flusher, "
            "joins, fan-out) get a turn: uvloop alone may read for half a second under a flood; native "
            "transport; 0 = unbounded"
        },
    )
    loop_stall_ms: float = field(
        default=50.0,
        metadata={
            "doc": "Event-loop lateness counted as a stall (spidi_event_loop_stalls_total), and after "
            "which loop_stall_log reports what the loop runs"
        },
    )
    loop_stall_log: bool = field(
        default=False,
        metadata={
            "doc": "Log the loop's Python stack while it is stalled (loop_stall, at most once per 10 s): "
            "a thread samples it, so it finds long Python steps; GC pauses have their own metric"
        },
    )
    health_loop_lag_ms: float = field(
        default=100.0,
        metadata={
            "doc": "/health and /actuator/health/spidi: the websocket component is degraded while the "
            "event loop's longest lag of the last health_loop_lag_window_s exceeds this"
        },
    )
    health_loop_lag_window_s: int = field(
        default=10,
        metadata={"doc": "Seconds of event-loop lag the health's loopLagMs looks back over (its maximum)"},
    )
    shutdown_timeout_s: float = field(
        default=5.0,
        metadata={
            "doc": "Longest a stop takes, signal to exit, start-up included (clients get half of it to close)"
        },
    )

    workers: int = field(
        default=1,
        metadata={
            "doc": "Worker processes of `spidi serve` sharing its ports; set it to the number of cores in production"
        },
    )
    reuse_port: bool = field(
        default=False,
        metadata={
            "doc": "Bind the WebSocket and ops ports with SO_REUSEPORT (the supervisor sets it for its workers)"
        },
    )
    listen_backlog: int = field(
        default=4096,
        metadata={
            "doc": "Pending-connection queue of the WebSocket port (listen backlog): room for a whole "
            "reconnect storm after a restart; the kernel caps it at net.core.somaxconn"
        },
    )
    ops_private_port: int = field(
        default=0,
        metadata={
            "doc": "Worker only: loopback port of its own /metrics/local (set by the supervisor; 0 = none)"
        },
    )
    worker_metrics: list[str] = field(
        default_factory=list,
        metadata={"doc": "Worker only: host:port of every worker's private port, for node-wide /metrics"},
    )

    # -- alerting (spidi_server/alerting) --
    alerting: bool = field(
        default=True, metadata={"doc": "Evaluate alert rules (needs PostgreSQL); one evaluator per cluster"}
    )
    alert_interval_s: float = field(default=1.0, metadata={"doc": "Period of alert evaluation"})
    alert_lease_s: float = field(
        default=5.0,
        metadata={
            "doc": "Evaluator lease in Redis: another process takes over this long after the holder dies"
        },
    )
    alert_rules_refresh_s: float = field(
        default=2.0, metadata={"doc": "The evaluator reloads rules and rooms from PostgreSQL this often"}
    )
    slo_refresh_s: float = field(
        default=60.0,
        metadata={
            "doc": "The evaluator reads an SLO's burn rates per room (slo_burn rules) from PostgreSQL at "
            "most this often; room statistics are written once a minute"
        },
    )
    slo_budget_refresh_s: float = field(
        default=300.0,
        metadata={
            "doc": "The evaluator reads each SLO's compliance, budget and burn rates over its whole window "
            "(the spidi_slo_* metrics) at most this often"
        },
    )
    slo_breakdown_top_n: int = field(
        default=8,
        metadata={
            "doc": "The SLO breakdown: a room's latencies are also counted per client appVersion and per os, "
            "for at most this many values of each per room and minute (the rest as other); 0 turns it "
            "off. Nodes and the history writer both bound by it"
        },
    )
    alert_hysteresis: float = field(
        default=0.1,
        metadata={
            "doc": "Built-in rules resolve only below threshold x (1 - this), so a hovering value does not flap"
        },
    )
    alert_stale_heartbeat_s: float = field(
        default=60.0,
        metadata={
            "doc": "staleSessions (and silentShare outside heartbeat rules, which use their own "
            "threshold): a session silent this long while online is stale"
        },
    )
    anomaly_baseline_weeks: int = field(
        default=4,
        metadata={
            "doc": "Anomaly rules: the baseline of a room is the same hour of week over this many past weeks "
            "(median and MAD of joins/min, leaves/min, latency p95), recomputed at most hourly"
        },
    )
    anomaly_z_threshold: float = field(
        default=3.5,
        metadata={
            "doc": "Robust z-score above which a rate is anomalous: an anomaly rule's default threshold, "
            "and the one custom rules' anomaly metrics use"
        },
    )
    anomaly_min_excess: int = field(
        default=10,
        metadata={
            "doc": "A join/leave storm (or a mass disconnect of one group) needs at least this many events "
            "per minute above the baseline median, so a calm room does not flag on a few joins"
        },
    )
    anomaly_latency_min_excess_ms: float = field(
        default=100.0,
        metadata={"doc": "A latency spike needs a p95 at least this many ms above the baseline median"},
    )
    anomaly_flap_reconnects: int = field(
        default=5,
        metadata={
            "doc": "A client (user + clientId) flaps when it opens more than this many new sessions in "
            "one room within anomaly_flap_window_s"
        },
    )
    anomaly_flap_window_s: float = field(
        default=600.0, metadata={"doc": "Window of the flapping flag (reconnects counted within it)"}
    )
    anomaly_refresh_s: float = field(
        default=5.0,
        metadata={
            "doc": "The evaluator reads recent joins, ends and reconnects from PostgreSQL for anomaly "
            "rules at most this often"
        },
    )
    tenant_defaults: bool = field(
        default=True,
        metadata={
            "doc": "On a tenant's first use (API call or client session), give it the room types webrtc, chat, notification and "
            "the built-in rules capacity 80 %, latency 500 ms, heartbeat 60 s (once: deleted ones stay deleted)"
        },
    )
    alert_rate_limit_s: float = field(
        default=300.0,
        metadata={
            "doc": "At most one external notification per rule in this window (0 = none); "
            "a resolve goes out when its firing did"
        },
    )
    alert_rate_limit_per_room: bool = field(
        default=False,
        metadata={"doc": "Apply alert_rate_limit_s per rule and room instead of per rule"},
    )
    webhook_secret: str = field(
        default="", metadata={"doc": "HMAC-SHA256 key signing webhook bodies (X-Spidi-Signature)"}
    )
    webhook_timeout_s: float = field(default=5.0, metadata={"doc": "Timeout of one webhook POST"})
    webhook_retries: int = field(
        default=5, metadata={"doc": "Retries of a failed webhook POST (exponential backoff)"}
    )
    webhook_backoff_s: float = field(default=1.0, metadata={"doc": "First retry delay; doubles per retry"})
    webhook_allowed_networks: list[str] = field(
        default_factory=list,
        metadata={
            "doc": "CIDRs webhooks may reach although not public (loopback, private, link-local...; "
            "all else such is refused), e.g. 10.20.0.0/16"
        },
    )
    webhook_allowed_hosts: list[str] = field(
        default_factory=list,
        metadata={"doc": "Webhook host names whose addresses are not checked (exact, case-insensitive)"},
    )
    smtp_host: str = field(
        default="", metadata={"doc": "SMTP server for email alerts (empty: email channel off)"}
    )
    smtp_port: int = field(default=25, metadata={"doc": "SMTP port"})
    smtp_tls: str = field(default="none", metadata={"doc": "none, starttls or ssl"})
    smtp_user: str = field(default="", metadata={"doc": "SMTP login, if the server needs one"})
    smtp_password: str = field(default="", metadata={"doc": "SMTP password"})
    smtp_from: str = field(default="spidi@localhost", metadata={"doc": "From address of alert emails"})
    smtp_to: list[str] = field(
        default_factory=list, metadata={"doc": "Recipients of email channels that name none"}
    )
    smtp_timeout_s: float = field(default=10.0, metadata={"doc": "Timeout of one SMTP delivery"})
    room_hooks_url: str = field(
        default="", metadata={"doc": "Webhook for room lifecycle events (empty: off)"}
    )
    room_hooks_events: list[str] = field(
        default_factory=lambda: ["room_occupied", "room_vacated", "member_joined", "member_left"],
        metadata={"doc": "Lifecycle events posted to room_hooks_url"},
    )

    # -- hardening --
    handshake_timeout_s: float = field(
        default=10.0,
        metadata={"doc": "Time from TCP accept to a complete TLS and WebSocket handshake (slowloris guard)"},
    )
    max_message_rate: float = field(
        default=100.0,
        metadata={"doc": "Frames per second one connection may send, sustained (token bucket); 0 = no limit"},
    )
    max_message_burst: int = field(
        default=200, metadata={"doc": "Frames one connection may send at once above max_message_rate"}
    )
    max_send_buffer: int = field(
        default=4 * 1024 * 1024,
        metadata={"doc": "Bytes queued for a client that does not read, beyond which it is closed (1008)"},
    )
    max_connections: int = field(
        default=100_000,
        metadata={"doc": "WebSocket connections one process holds; more get HTTP 503; 0 = no cap"},
    )
    max_connections_per_ip: int = field(
        default=0,
        metadata={"doc": "Open WebSocket connections per client IP; more get HTTP 429; 0 = no limit"},
    )
    connection_rate_per_ip: float = field(
        default=0.0,
        metadata={
            "doc": "New WebSocket connections per second per client IP; more get HTTP 429; 0 = no limit"
        },
    )
    connection_burst_per_ip: int = field(
        default=20, metadata={"doc": "New connections one IP may open at once above connection_rate_per_ip"}
    )
    trusted_proxies: list[str] = field(
        default_factory=list,
        metadata={"doc": "Proxies (IP or CIDR) whose X-Forwarded-For names the client; empty = trust none"},
    )
    allowed_origins: list[str] = field(
        default_factory=list,
        metadata={
            "doc": "Browser origins allowed on the WebSocket handshake and by CORS on the ops port; empty = "
            "any on the WebSocket (the token guards it), none but the ops port's own for CORS (any with --dev)"
        },
    )
    metrics_token: str = field(
        default="",
        metadata={
            "doc": "Bearer token /metrics requires (Authorization: Bearer <token>), also between workers; "
            "empty = /metrics open"
        },
    )
    tls_cert_file: str = field(
        default="", metadata={"doc": "PEM certificate (chain): serve wss:// and https:// on both ports"}
    )
    tls_key_file: str = field(default="", metadata={"doc": "PEM private key of tls_cert_file"})
    jwt_keys: dict[str, str] = field(
        default_factory=dict,
        metadata={"doc": "Key rotation: kid = HS256 secret, or PEM public key file for RS256/ES256"},
    )
    jwt_jwks_file: str = field(
        default="", metadata={"doc": "JWKS file of verification keys by kid; reloaded when it changes"}
    )
    jwt_cache_size: int = field(
        default=10_000,
        metadata={
            "doc": "Verified tokens remembered until they expire (a reconnect skips the signature); 0 = off"
        },
    )

    # -- faults --
    redis_buffer_max_ops: int = field(
        default=100_000,
        metadata={
            "doc": "Redis writes (history events, joins, leaves, TTL refreshes, roster announcements) kept "
            "in memory while Redis does not answer; older ones go to the spill file"
        },
    )
    redis_spill_dir: str = field(
        default="",
        metadata={
            "doc": "Directory of the spill file `redis-<node_id>.jsonl` (JSON lines, fsync per chunk, "
            "replayed in order once Redis answers, then removed); empty = `<data_dir>/spill`"
        },
    )
    redis_spill_max_bytes: int = field(
        default=1 << 30,
        metadata={
            "doc": "Largest spill file; writes beyond it (or on a full disk) are dropped and counted; "
            "0 = no spill file, drop beyond redis_buffer_max_ops"
        },
    )
    redis_timeout_ms: float = field(
        default=3000.0,
        metadata={
            "doc": "When Redis counts as hung: a write pipeline unanswered this long is an outage (writes "
            "buffered and spilled, readiness degraded, HELLO admits on the local count) while its reply is "
            "still awaited; reads fail after it (plus up to 2 s waiting for earlier writes); a reply not "
            "read within 10 times it drops its connection (the batch is then resent)"
        },
    )
    embedded_redis_appendonly: bool = field(
        default=True,
        metadata={
            "doc": "Embedded redis-server keeps an AOF (appendfsync everysec) in `<data_dir>/redis`, so "
            "hot state and unwritten history events survive a machine restart; false = memory only"
        },
    )
    embedded_redis_maxmemory_mb: int = field(
        default=1024,
        metadata={
            "doc": "Embedded redis-server's maxmemory, MiB (policy noeviction: a full Redis refuses "
            "writes, which the node buffers and retries, rather than evict presence); 0 = no limit"
        },
    )

    @property
    def rooms_auto_created(self) -> bool:
        """Whether HELLO may create a room that does not exist."""
        return self.dev if self.auto_create_rooms is None else self.auto_create_rooms

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def validate(self) -> Settings:
        """Check every value; raise ConfigError naming the first bad one."""
        for name in ("port", "ops_port", "ops_private_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"{name} must be a TCP port (0-65535), got {value}")
        positive = (
            "heartbeat_interval_ms",
            "heartbeat_timeout_ms",
            "default_room_capacity",
            "max_frame_size",
            "max_headers",
            "max_header_line",
            "max_subscriptions",
            "metrics_interval_ms",
            "rooms_topic_interval_ms",
            "room_empty_ttl_s",
            "room_sweep_interval_s",
            "writer_flush_interval_s",
            "writer_batch_size",
            "checkpoint_interval_s",
            "retention_hot_days",
            "retention_drop_days",
            "export_max_rows",
            "redis_join_timeout_ms",
            "loop_stall_ms",
            "health_loop_lag_ms",
            "health_loop_lag_window_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        for name in (
            "grace_period_ms",
            "redis_heartbeat_interval_ms",
            "stomp_heartbeat_ms",
            "jwt_leeway_s",
            "jwt_cache_size",
            "loop_io_budget_ms",
            "shutdown_timeout_s",
            "connect_timeout_s",
            "embedded_redis_maxmemory_mb",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 1 <= self.listen_backlog <= 65535:
            raise ConfigError(f"listen_backlog must be between 1 and 65535, got {self.listen_backlog}")
        if self.writer_sweep_interval_s < 0:
            raise ConfigError(
                f"writer_sweep_interval_s must not be negative, got {self.writer_sweep_interval_s}"
            )
        if self.writer_sweep_after_s <= self.checkpoint_interval_s + self.writer_flush_interval_s:
            # A live session's last heartbeat in history is at most that old.
            raise ConfigError(
                "writer_sweep_after_s must exceed checkpoint_interval_s + writer_flush_interval_s,"
                f" got {self.writer_sweep_after_s}"
            )
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers must be between 1 and 256, got {self.workers}")
        for address in self.worker_metrics:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"worker_metrics: {address!r} is not host:port")
        if is_cluster_url(self.redis_url):
            parse_cluster_url(self.redis_url)  # raises ConfigError naming redis_url
        elif self.redis_url:
            check_url(self.redis_url)  # raises ConfigError naming redis_url
        if self.heartbeat_timeout_ms < self.heartbeat_interval_ms:
            raise ConfigError("heartbeat_timeout_ms must be at least heartbeat_interval_ms")
        if self.transport not in ("native", "websockets", "picows"):
            raise ConfigError(f"transport must be 'native', 'websockets' or 'picows', got {self.transport!r}")
        if self.transport != "websockets" and self.websocket_compression:
            raise ConfigError(
                f"websocket_compression needs transport = 'websockets' ({self.transport} has no deflate)"
            )
        if self.writer not in ("child", "external"):
            raise ConfigError(f"writer must be 'child' or 'external', got {self.writer!r}")
        if self.retention_drop_days < self.retention_hot_days:
            raise ConfigError("retention_drop_days must be at least retention_hot_days")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, got {self.log_level!r}")
        for alg in self.jwt_algorithms:
            if alg not in ("HS256", "RS256", "ES256"):
                raise ConfigError(f"jwt_algorithms: unsupported algorithm {alg!r} (HS256, RS256, ES256)")
        if any(a.startswith("HS") for a in self.jwt_algorithms) and any(
            not a.startswith("HS") for a in self.jwt_algorithms
        ):
            raise ConfigError("jwt_algorithms: do not mix HS and RS/ES algorithms (key confusion)")
        if self.jwt_algorithms[0].startswith(("RS", "ES")) and not (
            self.jwt_public_key_file or self.jwt_keys or self.jwt_jwks_file
        ):
            raise ConfigError("jwt_public_key_file (or jwt_keys, jwt_jwks_file) is required for RS256/ES256")
        self._validate_secrets()
        self._validate_hardening()
        self._validate_faults()
        for name in (
            "alert_interval_s",
            "alert_lease_s",
            "alert_rules_refresh_s",
            "alert_stale_heartbeat_s",
            "slo_refresh_s",
            "slo_budget_refresh_s",
            "anomaly_z_threshold",
            "anomaly_latency_min_excess_ms",
            "anomaly_flap_window_s",
            "anomaly_refresh_s",
            "webhook_timeout_s",
            "webhook_backoff_s",
            "smtp_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        if self.alert_lease_s < 2 * self.alert_interval_s:
            raise ConfigError(
                "alert_lease_s must be at least twice alert_interval_s (the holder renews every interval)"
            )
        if self.anomaly_baseline_weeks < 1 or self.anomaly_min_excess < 1 or self.anomaly_flap_reconnects < 1:
            raise ConfigError(
                "anomaly_baseline_weeks, anomaly_min_excess and anomaly_flap_reconnects must be at least 1"
            )
        if not 0 <= self.slo_breakdown_top_n <= MAX_SLO_BREAKDOWN_TOP_N:
            raise ConfigError(
                f"slo_breakdown_top_n must be from 0 to {MAX_SLO_BREAKDOWN_TOP_N}, got {self.slo_breakdown_top_n}"
            )
        if not 0 <= self.alert_hysteresis < 1:
            raise ConfigError(f"alert_hysteresis must be in [0, 1), got {self.alert_hysteresis}")
        if self.alert_rate_limit_s < 0 or self.webhook_retries < 0:
            raise ConfigError("alert_rate_limit_s and webhook_retries must not be negative")
        if self.smtp_tls not in ("none", "starttls", "ssl"):
            raise ConfigError(f"smtp_tls must be none, starttls or ssl, got {self.smtp_tls!r}")
        for network in self.webhook_allowed_networks:
            try:
                ipaddress.ip_network(network)
            except ValueError as exc:
                raise ConfigError(
                    f"webhook_allowed_networks: {network!r} is not a network (CIDR): {exc}"
                ) from None
        for host in self.webhook_allowed_hosts:
            if not host or any(c.isspace() or c in "/:@" for c in host):
                raise ConfigError(f"webhook_allowed_hosts: {host!r} is not a host name")
        for name in ("room_hooks_url",):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"{name} must be an http:// or https:// URL, got {url!r}")
        for event in self.room_hooks_events:
            if event not in ("room_occupied", "room_vacated", "member_joined", "member_left"):
                raise ConfigError(f"room_hooks_events: unknown event {event!r}")
        if self.room_hooks_url and not self.history:
            raise ConfigError(
                "room_hooks_url needs history = true (room hooks read the history events stream)"
            )
        for code, capacity in self.rooms.items():
            if not isinstance(capacity, int) or capacity <= 0:
                raise ConfigError(f"rooms.{code}: capacity must be a positive integer, got {capacity!r}")
        return self

    def _validate_secrets(self) -> None:
        """HS256 secrets long enough not to be guessed offline from one captured token."""
        hs_secrets = {"jwt_secret": self.jwt_secret}
        if self.jwt_algorithms[0].startswith("HS"):
            hs_secrets.update((f"jwt_keys.{kid}", secret) for kid, secret in self.jwt_keys.items())
        for name, secret in hs_secrets.items():
            if secret and len(secret.encode()) < MIN_HS_SECRET_BYTES:
                raise ConfigError(
                    f"{name} must be at least {MIN_HS_SECRET_BYTES} bytes, got {len(secret.encode())}"
                    " (generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )

    def _validate_faults(self) -> None:
        """The ``# -- faults --`` settings."""
        if not 100 <= self.redis_timeout_ms <= 600_000:
            raise ConfigError(f"redis_timeout_ms must be between 100 and 600000, got {self.redis_timeout_ms}")
        if self.redis_buffer_max_ops < 100:
            raise ConfigError(f"redis_buffer_max_ops must be at least 100, got {self.redis_buffer_max_ops}")
        if self.redis_spill_max_bytes < 0:
            raise ConfigError(
                f"redis_spill_max_bytes must not be negative (0 = no spill file), got {self.redis_spill_max_bytes}"
            )

    def spill_path(self, node_id: str) -> Path:
        """The spill file of node (process) ``node_id``: one per process, found again by a process
        that starts under the same id."""
        base = Path(self.redis_spill_dir).expanduser() if self.redis_spill_dir else self.data_path / "spill"
        return base / f"redis-{node_id}.jsonl"

    def _validate_hardening(self) -> None:
        """The ``# -- hardening --`` settings."""
        import ipaddress

        for name in (
            "handshake_timeout_s",
            "max_send_buffer",
            "max_message_burst",
            "connection_burst_per_ip",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        for name in (
            "max_message_rate",
            "max_connections",
            "max_connections_per_ip",
            "connection_rate_per_ip",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative (0 = no limit), got {getattr(self, name)}")
        if self.max_message_rate and self.max_message_burst < 1:
            raise ConfigError("max_message_burst must be at least 1")
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(f"trusted_proxies: {entry!r} is not an IP address or network") from exc
        for origin in self.allowed_origins:
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
                raise ConfigError(
                    f"allowed_origins: {origin!r} is not an origin like https://app.example.com (no path)"
                )
        if self.dev:
            # Development mode hands an admin token to the dashboard: only ever on this machine.
            for name in ("host", "ops_host"):
                if not is_loopback(getattr(self, name)):
                    raise ConfigError(
                        f"{name}: development mode (--dev) serves a development admin token and must bind "
                        f"a loopback address (127.0.0.1, ::1, localhost), got {getattr(self, name)!r}"
                    )
        token = self.metrics_token
        if token and (len(token) < 16 or not token.isprintable() or " " in token):
            raise ConfigError("metrics_token must be at least 16 printable characters, without spaces")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("tls_cert_file and tls_key_file go together: set both or neither")
        for name in ("tls_cert_file", "tls_key_file", "jwt_jwks_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}: no such file {path!r}")
        if self.jwt_keys and not self.jwt_algorithms[0].startswith("HS"):
            for kid, path in self.jwt_keys.items():
                if not Path(path).is_file():
                    raise ConfigError(
                        f"jwt_keys.{kid}: RS256/ES256 keys are PEM files; no such file {path!r}"
                    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    """Turn a TOML, env or flag value into the field's type, or raise ConfigError."""
    kind = str(kind)
    try:
        if "bool" in kind:
            if isinstance(raw, bool) or raw is None:
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("list"):
            if isinstance(raw, str):
                return [p.strip() for p in raw.split(",") if p.strip()]
            return list(raw)
        if kind.startswith("dict"):
            value_type = int if kind.endswith("int]") else str
            if isinstance(raw, str):
                pairs = (p.split("=", 1) for p in raw.split(",") if p.strip())
                return {k.strip(): value_type(v.strip()) for k, v in pairs}
            if value_type is int:
                return dict(raw)  # validate() names a capacity that is not an integer
            return {str(k): str(v) for k, v in dict(raw).items()}
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {raw!r} as {kind}") from exc


def load_settings(
    config_file: str | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build validated Settings from defaults, TOML file, SPIDI_* environment and overrides (flags)."""
    env = os.environ if env is None else env
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or env.get("SPIDI_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, known[key].type, raw)

    for name, f in known.items():
        raw = env.get(f"SPIDI_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(f"SPIDI_{name.upper()}", f.type, raw)

    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, known[key].type, raw)

    return dataclasses.replace(Settings(), **values).validate()


def settings_table() -> list[tuple[str, str, str, str]]:
    """(setting, env var, default, description) rows for the README."""
    rows = []
    defaults = Settings()
    for f in fields(Settings):
        rows.append(
            (f.name, f"SPIDI_{f.name.upper()}", repr(getattr(defaults, f.name)), f.metadata.get("doc", ""))
        )
    return rows


def markdown_table() -> str:
    """The README configuration table (``python -m spidi_server.settings`` prints it)."""
    lines = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for name, env, default, doc in settings_table():
        lines.append(f"| `{name}` | `{env}` | `{default}` | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
