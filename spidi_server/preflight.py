"""What ``spidi serve`` checks before it starts anything costly.

A second node on a port in use, a data directory it cannot write, or a Redis or PostgreSQL that
does not answer should stop the node at once with one sentence naming the cause, before it spends
seconds starting an embedded redis-server, PostgreSQL and the writer only to stop them again.
Every check raises ``StartupError``; the command prints it and exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import tempfile
from pathlib import Path

from .errors import StartupError
from .redact import redact

CHECK_TIMEOUT_S = 3.0  # how long a Redis or PostgreSQL may take to answer a first request


def port_in_use(host: str, port: int) -> StartupError:
    """The one message for a port another process holds."""
    return StartupError(f"port {port} on {host} is in use")


def bind_error(host: str, port: int, exc: OSError) -> StartupError:
    """``exc``, raised binding ``host:port``, as the message ``spidi serve`` prints."""
    if exc.errno == errno.EADDRINUSE:
        return port_in_use(host, port)
    return StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def check_port(host: str, port: int) -> None:
    """StartupError unless ``host:port`` can be bound now (port 0, any free one, always can).

    The probe binds as asyncio does (SO_REUSEADDR: a port in TIME_WAIT is free) but without
    SO_REUSEPORT, so a server that listens there with SO_REUSEPORT counts as in use too.
    """
    if not port:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve {host!r}: {exc}") from exc
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise bind_error(host, port, exc) from exc


def check_data_dir(path: Path) -> None:
    """Create ``path`` if needed and write a file in it; StartupError naming it if that fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StartupError(f"data directory {path} is not writable: {exc.strerror or exc}") from exc


async def check_redis(url: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """StartupError unless the Redis at ``url`` answers PING within ``timeout`` seconds."""
    from redis.exceptions import RedisClusterException, RedisError

    from .stores.client import connect

    client = connect(url)
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except (OSError, TimeoutError, RedisError, RedisClusterException) as exc:
        raise StartupError(f"Redis at {redact(url)} does not answer: {redact(str(exc))}") from exc
    finally:
        # A client that never connected may fail to close: nothing to release then.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 1.0)


def check_postgres(dsn: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """StartupError unless the PostgreSQL at ``dsn`` accepts a connection (blocking: a thread)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout))):
            pass
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"PostgreSQL at {redact(dsn)} does not answer: {redact(reason)}") from exc
