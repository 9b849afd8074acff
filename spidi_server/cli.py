"""The ``spidi`` command: ``serve``, ``writer``, ``migrate``, ``retention``, ``token`` and ``verify-export``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable

from . import __version__, logs
from .auth import mint_token
from .datadir import DataDirLock, stable_node_id
from .errors import ConfigError, StartupError
from .preflight import check_data_dir
from .processes import stop_on_signals
from .redact import redact
from .roles import ALL as ROLES
from .settings import Settings, load_settings
from .shutdown import CHILD_GRACE_S, HardDeadline, cancel_leftover_tasks, forced_exit

log = logging.getLogger("spidi.cli")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (also SPIDI_CONFIG)")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (default .spidi)")
    parser.add_argument("--dev", action="store_const", const=True, default=None, help="development mode")


def build_parser() -> argparse.ArgumentParser:
    """The `spidi` command line: serve, writer, migrate, retention, token, verify-export."""
    parser = argparse.ArgumentParser(prog="spidi", description="Spidi real-time presence server")
    parser.add_argument("--version", action="version", version=f"spidi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node")
    _common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--ops-host", dest="ops_host")
    serve.add_argument("--ops-port", dest="ops_port", type=int)
    serve.add_argument("--redis-url", dest="redis_url")
    serve.add_argument("--log-level", dest="log_level")
    serve.add_argument("--node-id", dest="node_id")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the ports (default 1; the number of cores in production)",
    )

    writer = sub.add_parser("writer", help="run the history writer alone (Redis Stream to PostgreSQL)")
    _common(writer)
    writer.add_argument("--redis-url", dest="redis_url")
    writer.add_argument("--postgres-dsn", dest="postgres_dsn")
    writer.add_argument("--log-level", dest="log_level")

    migrate = sub.add_parser("migrate", help="apply the PostgreSQL migrations")
    _common(migrate)
    migrate.add_argument("--postgres-dsn", dest="postgres_dsn")

    retention = sub.add_parser("retention", help="archive and drop old history partitions")
    _common(retention)
    retention.add_argument("--postgres-dsn", dest="postgres_dsn")
    retention.add_argument("--now", action="store_true", required=True, help="run it now")

    token = sub.add_parser("token", help="mint a development token (HS256 secret of this configuration)")
    _common(token)
    token.add_argument(
        "--role", required=True, action="append", choices=ROLES + tuple(r.split(":")[1] for r in ROLES)
    )
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--tenant", default="default")
    token.add_argument("--ttl", type=int, default=86400, help="seconds of validity")

    verify = sub.add_parser(
        "verify-export",
        help="verify signed attendance exports (signature of each file, chain across them)",
        description="Exit code 0: every file verifies and, per tenant, the files chain (seq in order, "
        "prevHash = hash of the previous one); 1: any failure. One line per file.",
    )
    _common(verify)
    verify.add_argument("files", nargs="*", metavar="FILE", help="saved exports (.csv or .json)")
    verify.add_argument(
        "--public-key",
        dest="public_key",
        help="the server's public key: a PEM file, a file holding its base64, or the base64 itself "
        "(GET /api/v1/exports/public-key); default: the key this configuration signs with",
    )
    verify.add_argument(
        "--print-key", dest="print_key", action="store_true", help="print this configuration's public key"
    )
    return parser


def _settings(args: argparse.Namespace, names: tuple[str, ...]) -> Settings:
    overrides = {name: getattr(args, name, None) for name in names}
    return load_settings(args.config, overrides=overrides)


async def _serve(settings: Settings, deadline: HardDeadline) -> None:
    """Run a node until SIGTERM/SIGINT; a signal during start-up stops what had started.

    From the signal (or a failed start) on, ``deadline`` bounds the stop: a task that refuses
    cancellation is logged by name and the process exits anyway (see shutdown.py).
    """
    import uvloop  # noqa: F401  (installed as the loop policy by the caller)

    from .node import Node

    node = Node(settings)
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    starting = loop.create_task(node.start(), name="node-start")
    stopped = loop.create_task(stop.wait(), name="stop-signal")
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    # A Ctrl-C also reaches initdb and pg_ctl (same process group) and may fail the start
    # before the signal is seen here: a start that ends with the stop asked is an interruption.
    interrupted = not starting.done() or stop.is_set()
    try:
        if not interrupted and starting.exception() is None:
            _print_banner(settings, node)
            await stopped
    finally:
        deadline.arm()
        if interrupted:
            logs.event(log, "start_interrupted")
            starting.cancel()
            await asyncio.wait({starting})
        stopped.cancel()
        await node.stop()
        # A little of the deadline is kept for stopping the children of a forced exit.
        stuck = await cancel_leftover_tasks(max(0.1, deadline.remaining() - 2 * CHILD_GRACE_S))
        failure = None if interrupted or starting.cancelled() else starting.exception()
        if stuck or interrupted:
            # A stuck task, or a start-up call still running in an executor thread, would hang
            # asyncio's runner (it waits for both): end here, after stopping every child.
            if failure is not None:
                print(f"spidi: cannot start: {redact(str(failure))}", file=sys.stderr, flush=True)
            forced_exit(2 if failure is not None else 1 if stuck else 0, deadline.postgres_data)
    if failure is not None:
        raise failure


def _print_banner(settings: Settings, node) -> None:
    lines = banner_lines(
        settings,
        node_id=node.node_id,
        ws_url=node.ws_url,
        ops_url=node.ops.url,
        redis_url=node.redis_url,
        embedded_redis=node.embedded_redis is not None,
        dsn=node.dsn,
        embedded_pg=node.embedded_pg is not None,
        writer_pid=node.writer_proc.pid if node.writer_proc is not None else None,
    )
    print("\n".join(lines), flush=True)


def banner_lines(
    settings: Settings,
    *,
    node_id: str,
    ws_url: str,
    ops_url: str,
    redis_url: str,
    embedded_redis: bool,
    dsn: str | None,
    embedded_pg: bool,
    writer_pid: int | None,
    extra: Iterable[str] = (),
) -> list[str]:
    """What ``spidi serve`` prints once it accepts clients (one node, or the supervisor of workers)."""
    lines = [
        f"Spidi {__version__} node {node_id}",
        f"  WebSocket (STOMP): {ws_url}",
        f"  Ops:               {ops_url}/metrics  {ops_url}/health",
        f"  Dashboard:         {ops_url}/",
        f"  REST API:          {ops_url}/api/v1  (OpenAPI: {ops_url}/api/openapi.json)",
        f"  Data directory:    {settings.data_path}",
        f"  Redis:             {'embedded at ' + redis_url if embedded_redis else redact(redis_url)}",
    ]
    if dsn:
        where = f"embedded under {settings.data_path / 'postgres'}" if embedded_pg else "external"
        lines.append(f"  PostgreSQL:        {where} ({redact(dsn)})")
    if writer_pid is not None:
        lines.append(f"  History writer:    pid {writer_pid}")
    lines.extend(extra)
    # Last: tests and scripts read the banner up to the user token.
    if settings.dev and settings.jwt_algorithms[0].startswith("HS"):
        lines.append("  Development tokens (24 h):")
        for role in ROLES:
            name = role.split(":")[1]
            lines.append(f"    {name:8} {mint_token(settings, f'dev-{name}', [role], 'default')}")
    return lines


def _history_command(args: argparse.Namespace) -> int:
    from .history import embedded_pg, retention, writer

    settings = _settings(args, ("data_dir", "dev", "postgres_dsn", "redis_url", "log_level"))
    logs.configure(settings.log_level)
    if args.command == "writer":
        return writer.main(
            [
                a
                for pair in (
                    ("--data-dir", settings.data_dir),
                    ("--redis-url", settings.redis_url),
                    ("--postgres-dsn", settings.postgres_dsn),
                )
                if pair[1]
                for a in pair
            ]
            + (["--config", args.config] if args.config else [])
        )
    if args.command == "retention":
        print(json.dumps(retention.run_retention(settings).as_dict(), indent=2, default=str))
        return 0
    dsn, embedded = embedded_pg.resolve_dsn(settings)  # applies the migrations
    if embedded is not None:
        embedded.stop()
    print(f"migrations applied ({redact(dsn)})")
    return 0


def _verify_export(args: argparse.Namespace) -> int:
    """``spidi verify-export``: one line per file, 0 when all verify, 1 otherwise (2: bad key)."""
    from pathlib import Path

    from . import exports

    public = None
    if args.public_key:
        source = Path(args.public_key)
        try:
            text = source.read_bytes() if source.is_file() else args.public_key.encode()
            public = exports.public_key_from_text(text, f"--public-key {args.public_key!r}")
        except exports.ExportError as exc:
            raise ConfigError(str(exc)) from None
    if public is None or args.print_key:
        from .export_keys import signing_key

        configured = signing_key(_settings(args, ("data_dir", "dev"))).public_key()
        if args.print_key:
            print(f"Ed25519 keyId {exports.key_id(configured)}")
            print(exports.public_key_b64(configured))
            print(exports.public_key_pem(configured), end="")
            if not args.files:
                return 0
        public = public or configured
    if not args.files:
        print("spidi verify-export: name the files to verify", file=sys.stderr)
        return 2
    results = exports.verify_files(args.files, public)
    for result in results:
        print(result.line())
    return 1 if any(r.problems for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `spidi` console script; returns the exit code (2: bad configuration)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = _settings(
                args,
                (
                    "data_dir",
                    "dev",
                    "host",
                    "port",
                    "ops_host",
                    "ops_port",
                    "redis_url",
                    "log_level",
                    "node_id",
                    "workers",
                ),
            )
            logs.configure(settings.log_level)
            check_data_dir(settings.data_path)
            # Before anything starts; never released: the kernel drops it when this process ends.
            DataDirLock(settings.data_path).acquire()
            if not settings.node_id:
                settings = dataclasses.replace(settings, node_id=stable_node_id(settings.data_path))
            if settings.workers > 1:
                from .supervisor import run_supervisor

                return run_supervisor(settings)
            import uvloop
            from redis.exceptions import RedisClusterException, RedisError

            embedded_pg = settings.data_path / "postgres" if not settings.postgres_dsn else None
            deadline = HardDeadline(settings.shutdown_timeout_s, embedded_pg)
            try:
                uvloop.run(_serve(settings, deadline))
            except (RedisError, RedisClusterException) as exc:
                # Only at start (a running node buffers through Redis outages): say where, no password.
                where = redact(settings.redis_url) if settings.redis_url else "the embedded Redis"
                print(f"spidi: cannot start on Redis at {where}: {redact(str(exc))}", file=sys.stderr)
                return 2
            finally:
                deadline.cancel()
            return 0
        if args.command in ("writer", "migrate", "retention"):
            return _history_command(args)
        if args.command == "verify-export":
            return _verify_export(args)
        if args.command == "token":
            settings = _settings(args, ("data_dir", "dev"))
            roles = [r if r.startswith("spidi:") else f"spidi:{r}" for r in args.role]
            print(mint_token(settings, args.sub, roles, args.tenant, args.ttl))
            return 0
    except StartupError as exc:
        print(f"spidi: cannot start: {redact(str(exc))}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        # Redacted once more here: a message may quote a URL or DSN from any layer.
        print(f"spidi: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
