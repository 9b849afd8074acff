"""One live ``spidi serve`` per data directory: a lock held for the life of the process.

The lock is ``flock`` on ``<data_dir>/spidi.lock``, kept on an open descriptor: the kernel drops it
when the process ends however it ends, so a node killed with SIGKILL leaves no stale lock and the
next ``spidi serve`` adopts what that node left running (see ``stores/embedded_redis.py``). The
file also holds the holder's pid, for the message a refused second node prints. The descriptor is
close-on-exec and never inherited, so a redis-server or PostgreSQL outliving its node does not
hold the lock.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

from .errors import ConfigError

LOCK_FILE = "spidi.lock"
NODE_ID_FILE = "node_id"


def stable_node_id(data_path: Path) -> str:
    """The node id of the ``spidi serve`` that holds this data directory's lock: made up once and
    kept in ``<data_dir>/node_id``, so a node killed with SIGKILL and started again comes back
    under the same id and takes its sessions back (their clients resume them) instead of
    having them reaped. Call with the lock held."""
    path = data_path / NODE_ID_FILE
    try:
        node_id = path.read_text().strip()
    except FileNotFoundError:
        node_id = ""
    if not node_id:
        node_id = uuid.uuid4().hex[:12]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(node_id + "\n")
        os.replace(tmp, path)  # whole or absent, whenever the process dies
    return node_id


class DataDirLock:
    """The lock on one data directory; ``acquire`` raises ConfigError when a live node holds it."""

    def __init__(self, data_path: Path):
        self.data_path = data_path
        self.path = data_path / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock (creating the directory and file) or raise ConfigError naming the holder."""
        self.data_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"data directory {self.data_path} is in use by another spidi serve (pid {holder}); "
                "stop that one first or give this one another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with a node taking it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
