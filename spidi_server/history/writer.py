"""The history writer as a process: ``spidi writer`` / ``python -m spidi_server.history.writer``,
and the child ``spidi serve`` starts (``start_writer_process``, ``stop_writer_process``).

The loop itself is ``writer_loop.py`` (its docstring tells how the stream becomes PostgreSQL rows).
Here: the command line, the settings, an embedded PostgreSQL when no DSN is configured, and the
graceful stop: SIGTERM/SIGINT set the loop's stop event (``processes.stop_on_signals_sync``), the
open batch is flushed, then the process exits. Started as a child it also exits on its own once
its parent is gone (``--parent-pid``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .. import logs
from ..errors import ConfigError
from ..processes import stop_on_signals_sync, stop_process
from ..settings import Settings, load_settings
from .writer_loop import run_writer


def start_writer_process(
    settings: Settings,
    redis_url: str,
    dsn: str,
    consumer: str | None = None,
    reclaim_idle_s: float | None = None,
) -> subprocess.Popen:
    """Start the writer as a child process of this one (``spidi serve`` with ``writer = child``).

    The child logs JSON to the same stderr and exits on its own if this process disappears.
    """
    args = [sys.executable, "-m", "spidi_server.history.writer"]
    args += ["--data-dir", settings.data_dir, "--log-level", settings.log_level]
    args += ["--flush-interval", repr(settings.writer_flush_interval_s)]
    args += ["--batch-size", str(settings.writer_batch_size)]
    args += ["--retention-hot-days", str(settings.retention_hot_days)]
    args += ["--retention-drop-days", str(settings.retention_drop_days)]
    args += ["--parent-pid", str(os.getpid())]
    if consumer:
        args += ["--consumer", consumer]
    if reclaim_idle_s is not None:
        args += ["--reclaim-idle-s", repr(reclaim_idle_s)]
    # URL and DSN through the environment: they may hold passwords, which ps would show.
    env = {**os.environ, "SPIDI_REDIS_URL": redis_url, "SPIDI_POSTGRES_DSN": dsn}
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, env=env)


def stop_writer_process(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM the writer (it flushes its open batch), wait up to ``timeout``, then SIGKILL.

    Killing loses nothing: unacknowledged entries are re-read by the next writer.
    """
    return stop_process(proc, timeout)


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of ``python -m spidi_server.history.writer``."""
    parser = argparse.ArgumentParser(
        prog="python -m spidi_server.history.writer",
        description="Spidi history writer: Redis Stream to PostgreSQL",
    )
    parser.add_argument("--config", help="TOML configuration file (also SPIDI_CONFIG)")
    parser.add_argument("--data-dir", dest="data_dir")
    parser.add_argument("--redis-url", dest="redis_url")
    parser.add_argument("--postgres-dsn", dest="postgres_dsn")
    parser.add_argument("--log-level", dest="log_level")
    parser.add_argument("--flush-interval", dest="writer_flush_interval_s", type=float)
    parser.add_argument("--batch-size", dest="writer_batch_size", type=int)
    parser.add_argument("--retention-hot-days", dest="retention_hot_days", type=int)
    parser.add_argument("--retention-drop-days", dest="retention_drop_days", type=int)
    parser.add_argument("--consumer", help="consumer name in the group (default writer-<hostname>)")
    parser.add_argument(
        "--reclaim-idle-s",
        type=float,
        help="idle time after which another consumer's "
        "pending entries are taken over (default max(300, 10 x flush interval))",
    )
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m spidi_server.history.writer``: run until SIGTERM/SIGINT."""
    args = build_parser().parse_args(argv)
    names = (
        "data_dir",
        "redis_url",
        "postgres_dsn",
        "log_level",
        "writer_flush_interval_s",
        "writer_batch_size",
        "retention_hot_days",
        "retention_drop_days",
    )
    try:
        settings = load_settings(args.config, overrides={n: getattr(args, n) for n in names})
    except ConfigError as exc:  # say it plainly, no traceback
        print(f"spidi writer: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if not settings.redis_url:
        print("spidi writer: --redis-url (or SPIDI_REDIS_URL) is required", file=sys.stderr)
        return 2
    stop = stop_on_signals_sync()
    embedded = None
    dsn = settings.postgres_dsn
    try:
        if not dsn:
            from .embedded_pg import EmbeddedPostgres

            embedded = EmbeddedPostgres(settings.data_path / "postgres")
            dsn = embedded.start()
    except ConfigError as exc:
        print(f"spidi writer: {exc}", file=sys.stderr)
        return 2
    try:
        run_writer(
            settings,
            stop,
            dsn=dsn,
            consumer=args.consumer,
            parent_pid=args.parent_pid,
            reclaim_idle_s=args.reclaim_idle_s,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
