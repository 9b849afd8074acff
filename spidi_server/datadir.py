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
from pathlib import Path

from .errors import ConfigError

LOCK_FILE = "spidi.lock"


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
