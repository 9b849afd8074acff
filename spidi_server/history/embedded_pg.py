"""A PostgreSQL of our own, from the pgserver package, when no ``postgres_dsn`` is configured.

pgserver runs initdb on first use, starts the server on a unix socket inside the data directory
(``<data_dir>/postgres``) and hands out a DSN; several processes may share the one server (it
counts handles and stops when the last one lets go). As root it runs PostgreSQL as a system user
``pgserver`` that it creates, because PostgreSQL refuses to run as root.

A node killed with SIGKILL leaves its PostgreSQL running; pgserver adopts a server named by
``postmaster.pid``. It trusts any live process with that pid, so ``start`` first checks in /proc
that the pid is a postgres of this data directory: a dead, zombie or recycled pid makes the file
stale (removed, a new server starts) rather than adopted.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from .. import logs
from ..errors import ConfigError
from ..processes import process_cmdline, read_pidfile
from .migrate import migrate

log = logging.getLogger("spidi.history.postgres")


def _pgserver():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); pgserver only uses it for a
    # lock file, and the fallback it picks is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise ConfigError(
                "pgserver is not installed; set SPIDI_POSTGRES_DSN or pip install pgserver"
            ) from exc
    # pgserver logs every command it runs, multi-line, at INFO.
    logging.getLogger("pgserver").setLevel(max(logging.WARNING, logging.getLogger().level))
    return pgserver


class EmbeddedPostgres:
    """Start (initdb on first use), migrate, and stop a private PostgreSQL under ``data_path``."""

    def __init__(self, data_path: Path | str):
        self.data_path = Path(data_path).expanduser().resolve()
        self._server = None
        self.dsn: str | None = None

    def start(self, apply_migrations: bool = True) -> str:
        """Start the server (or join one already running on this data path); return its DSN."""
        pgserver = _pgserver()
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self._forget_stale_pidfile()
        try:
            self._server = pgserver.get_server(self.data_path, cleanup_mode="stop")
        except Exception as exc:
            log_file = self.data_path / "log"
            raise ConfigError(f"embedded PostgreSQL did not start; see {log_file}: {exc}") from exc
        self.dsn = self._server.get_uri()
        logs.event(log, "postgres_started", data_path=str(self.data_path), dsn=self.dsn)
        if apply_migrations:
            migrate(self.dsn)
        return self.dsn

    def _forget_stale_pidfile(self) -> None:
        # pgserver adopts any pid psutil calls running, a zombie too (a killed postmaster that a
        # container's init never reaps), and PostgreSQL refuses to start over a postmaster.pid
        # naming a live pid: unless that pid is our postmaster, the file is stale.
        pidfile = self.data_path / "postmaster.pid"
        pid = read_pidfile(pidfile)
        if pid is None or self.is_ours(pid):
            return  # none, or a running server to adopt
        logs.event(log, "postgres_pidfile_stale", logging.WARNING, pid=pid, pidfile=str(pidfile))
        # The socket's lock file names the same pid and stops PostgreSQL the same way.
        lines = pidfile.read_text().splitlines()
        socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4] else self.data_path
        for lock in {*socket_dir.glob(".s.PGSQL.*.lock"), *self.data_path.glob(".s.PGSQL.*.lock")}:
            if read_pidfile(lock) == pid:
                lock.unlink(missing_ok=True)
        pidfile.unlink(missing_ok=True)

    def is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is the postmaster of this data directory (``postgres -D <data_path>``)."""
        argv = process_cmdline(pid) or []
        return bool(argv) and os.path.basename(argv[0]) == "postgres" and str(self.data_path) in argv

    def stop(self) -> None:
        """Let go of the server; it stops when no other live process holds it."""
        server, self._server = self._server, None
        if server is None:
            return
        # pgserver keeps the pids of the processes sharing the server in a file and only stops
        # it when the last one lets go; a process killed with SIGKILL never removes its pid,
        # which would keep the server running forever. Forget the dead ones first.
        try:
            handles = server.global_process_id_list
            alive = [pid for pid in handles.get() if _alive(pid)]
            if os.getpid() not in alive:
                alive.append(os.getpid())
            handles.put(alive)
        except Exception:  # pragma: no cover - pgserver internals changed; stopping still works
            pass
        pid = server.get_pid()
        if not self.is_ours(pid):
            # Already dead (killed, or a zombie nobody reaps): pg_ctl stop would wait for it and
            # pgserver then fail to kill it; only our handle is left to drop.
            server.cleanup_mode = None
            logs.event(log, "postgres_gone", logging.WARNING, pid=pid, data_path=str(self.data_path))
        try:
            server.cleanup()
        except Exception as exc:
            # The caller still has Redis to stop: say it and go on.
            logs.event(log, "postgres_stop_failed", logging.ERROR, error=str(exc))
            return
        logs.event(log, "postgres_stopped", data_path=str(self.data_path))

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    # A zombie (killed, not yet reaped by its parent) holds no handle: /proc shows no command line.
    return process_cmdline(pid) is not None


def resolve_dsn(settings) -> tuple[str, EmbeddedPostgres | None]:
    """The configured DSN, or an embedded server's (started, under ``<data_dir>/postgres``).

    Returns (dsn, embedded) where ``embedded`` must be stopped by the caller (None for a
    configured DSN). Migrations are applied either way.
    """
    if settings.postgres_dsn:
        migrate(settings.postgres_dsn)
        return settings.postgres_dsn, None
    embedded = EmbeddedPostgres(settings.data_path / "postgres")
    return embedded.start(), embedded
