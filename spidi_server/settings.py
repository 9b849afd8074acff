"""Configuration: one typed place for every setting.

Precedence, lowest first: the defaults below, a TOML file (``--config`` or ``SPIDI_CONFIG``),
``SPIDI_<NAME>`` environment variables, then command-line flags. ``validate`` runs at start and
raises ``ConfigError`` with a message naming the bad setting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

ROLES = ("spidi:admin", "spidi:monitor", "spidi:user")


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
    node_id: str = field(default="", metadata={"doc": "This node's id; generated when empty"})

    redis_url: str = field(default="", metadata={"doc": "Redis URL; empty starts an embedded redis-server"})

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

    jwt_algorithms: list[str] = field(
        default_factory=lambda: ["HS256"], metadata={"doc": "Accepted JWT algorithms (HS256, RS256, ES256)"}
    )
    jwt_secret: str = field(default="", metadata={"doc": "HS256 secret; dev mode generates one in data_dir"})
    jwt_public_key_file: str = field(default="", metadata={"doc": "PEM public key for RS256/ES256"})
    jwt_issuer: str = field(default="", metadata={"doc": "Required `iss` claim, if set"})
    jwt_audience: str = field(default="", metadata={"doc": "Required `aud` claim, if set"})
    jwt_leeway_s: float = field(default=5.0, metadata={"doc": "Clock leeway for exp/nbf"})

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

    max_frame_size: int = field(default=65536, metadata={"doc": "Largest STOMP frame accepted, bytes"})
    max_headers: int = field(default=64, metadata={"doc": "Most headers in one frame"})
    max_header_line: int = field(default=8192, metadata={"doc": "Longest header line, bytes"})
    connect_timeout_s: float = field(default=10.0, metadata={"doc": "Time allowed from handshake to CONNECT"})
    max_subscriptions: int = field(default=64, metadata={"doc": "Subscriptions per connection"})
    transport: str = field(
        default="websockets", metadata={"doc": "WebSocket implementation: websockets or picows"}
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
    gc_full_interval_s: float = field(
        default=60.0,
        metadata={
            "doc": "Full garbage collections run on this schedule instead of when CPython decides; 0 = default"
        },
    )
    shutdown_timeout_s: float = field(default=5.0, metadata={"doc": "Grace given to clients on shutdown"})

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
            "writer_flush_interval_s",
            "writer_batch_size",
            "checkpoint_interval_s",
            "retention_hot_days",
            "retention_drop_days",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        for name in (
            "grace_period_ms",
            "stomp_heartbeat_ms",
            "jwt_leeway_s",
            "shutdown_timeout_s",
            "connect_timeout_s",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers must be between 1 and 256, got {self.workers}")
        for address in self.worker_metrics:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"worker_metrics: {address!r} is not host:port")
        if self.heartbeat_timeout_ms < self.heartbeat_interval_ms:
            raise ConfigError("heartbeat_timeout_ms must be at least heartbeat_interval_ms")
        if self.transport not in ("websockets", "picows"):
            raise ConfigError(f"transport must be 'websockets' or 'picows', got {self.transport!r}")
        if self.transport == "picows" and self.websocket_compression:
            raise ConfigError("websocket_compression needs transport = 'websockets' (picows has no deflate)")
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
        if self.jwt_algorithms[0].startswith(("RS", "ES")) and not self.jwt_public_key_file:
            raise ConfigError("jwt_public_key_file is required for RS256/ES256")
        for code, capacity in self.rooms.items():
            if not isinstance(capacity, int) or capacity <= 0:
                raise ConfigError(f"rooms.{code}: capacity must be a positive integer, got {capacity!r}")
        return self


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
            if isinstance(raw, str):
                pairs = (p.split("=", 1) for p in raw.split(",") if p.strip())
                return {k.strip(): int(v) for k, v in pairs}
            return dict(raw)
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
