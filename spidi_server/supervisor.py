"""``spidi serve --workers N``: one supervisor process, N worker processes sharing the ports.

CPython runs one core per process, so a node that should use every core of its host runs several
processes. The supervisor starts what the workers share once: the embedded Redis (unless
``redis_url`` is set), the embedded PostgreSQL with its migrations (unless ``postgres_dsn`` is set;
only when history needs it) and the history writer child. It then starts N workers, each an
ordinary ``Node`` in its own process (``python -m spidi_server.supervisor --parent-pid P``), which:

* bind the same WebSocket port and the same ops port with SO_REUSEPORT, so the kernel spreads
  new connections (and scrapes) between them;
* reach the shared Redis and PostgreSQL through ``SPIDI_REDIS_URL``/``SPIDI_POSTGRES_DSN`` and leave
  the writer to the supervisor (``SPIDI_WRITER=external``);
* carry a stable node id, ``<base>-w<i>``, kept when a worker is restarted;
* serve their own figures on a private loopback port (``/metrics/local``); the shared ``/metrics``
  adds every worker's up (``ops.py``);
* stop on their own when the supervisor disappears (they poll their parent's pid).

A worker that dies is reaped (its sessions end at once, reason ``disconnect``, instead of after the
liveness timeout) and restarted with backoff. SIGTERM or SIGINT stops the workers first (they
close their clients with 1001 and flush), then the writer, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, fields

from . import __version__, logs
from .errors import ConfigError, StartupError
from .preflight import bind_error
from .processes import stop_on_signals
from .services import BackingServices
from .settings import Settings, load_settings

log = logging.getLogger("spidi.supervisor")

POLL_S = 0.1  # how often the supervisor looks at its children (and a worker at its parent)
PARENT_POLL_S = 0.5
READY_TIMEOUT_S = 60.0  # a worker's first start: imports, Redis, PostgreSQL room load, binding
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a worker up this long before it died restarts after the shortest delay


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the ``SPIDI_*`` variable that ``load_settings`` reads back to the same value."""
    env = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None:
            continue  # an unset optional (auto_create_rooms): its default applies in the worker too
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, list):
            text = ",".join(map(str, value))
        elif isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = str(value)
        env[f"SPIDI_{f.name.upper()}"] = text
    return env


def claim_port(host: str, port: int) -> int:
    """The port the workers will share: ``port``, or a free one when 0; StartupError if it is taken.

    The probe binds without SO_REUSEPORT, so it also fails when another server (even one that
    used SO_REUSEPORT itself) listens there: the workers would otherwise silently share the port
    with it and the kernel would split the clients between the two.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}") from exc
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds: TIME_WAIT is fine
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address[0], port, *address[2:]))
            except OSError as exc:
                raise bind_error(host, port, exc) from exc
            if port == 0:
                port = sock.getsockname()[1]  # the other addresses of the host get this one too
    return port


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (all held open until chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class WorkerSlot:
    """One worker position: its stable id and private port, and the process currently filling it."""

    index: int
    node_id: str
    private_port: int
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # monotonic time of the pending restart
    backoff_s: float = BACKOFF_FIRST_S
    restarts: int = 0

    @property
    def private_address(self) -> str:
        """Where this worker serves /metrics/local, /worker/state and /health/local."""
        return f"127.0.0.1:{self.private_port}"


class Supervisor:
    """Shared services once, N workers, restarts and reaping, ordered shutdown."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # Generated ids are kept for the supervisor's lifetime: a restarted worker takes the same id.
        self.base_id = settings.node_id or uuid.uuid4().hex[:12]
        self.port = settings.port
        self.ops_port = settings.ops_port
        self.slots: list[WorkerSlot] = []
        self.services = BackingServices(settings)
        self.redis = None  # async client on the shared Redis, for reaping
        self.stop_event = asyncio.Event()

    # -- start -----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit code of ``spidi serve``."""
        stop_on_signals(self.stop_event)
        try:
            try:
                await self._start()
            except StartupFailed as exc:
                print(f"spidi: {exc}", file=sys.stderr, flush=True)
                return 1
            if not self.stop_event.is_set():
                print("\n".join(self.banner()), flush=True)
                await self._supervise()
            return 0
        finally:
            await self._shutdown()

    async def _start(self) -> None:
        from .auth import TokenVerifier

        s = self.settings
        # Creates the dev secret once, here: workers starting together would each write their own.
        TokenVerifier(s)
        # Known before the workers start: every worker binds these very ports.
        self.port = claim_port(s.host, s.port)
        self.ops_port = claim_port(s.ops_host, s.ops_port)
        private = free_loopback_ports(s.workers)
        self.slots = [WorkerSlot(i, f"{self.base_id}-w{i}", private[i]) for i in range(s.workers)]
        await self._start_shared()
        for slot in self.slots:
            self._spawn(slot)
        await self._wait_ready()

    async def _start_shared(self) -> None:
        """Embedded Redis, PostgreSQL (migrated) and the writer, on the same conditions as a Node."""
        from .stores.client import connect

        await self.services.start()
        self.redis = connect(self.services.redis_url)

    def worker_settings(self, slot: WorkerSlot) -> Settings:
        """What worker ``slot`` runs with: these settings, pointed at the shared services and ports."""
        return dataclasses.replace(
            self.settings,
            node_id=slot.node_id,
            port=self.port,
            ops_port=self.ops_port,
            redis_url=self.services.redis_url,
            postgres_dsn=self.services.dsn or "",
            writer="external",  # the supervisor runs the one writer child
            workers=1,
            reuse_port=True,
            ops_private_port=slot.private_port,
            worker_metrics=[w.private_address for w in self.slots],
        )

    def _spawn(self, slot: WorkerSlot) -> None:
        # The resolved settings go through the environment (never argv: they may hold secrets,
        # which ps would show), replacing whatever SPIDI_* the supervisor itself was given.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
        env.update(settings_env(self.worker_settings(slot)))
        slot.proc = subprocess.Popen(
            [sys.executable, "-m", "spidi_server.supervisor", "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own session: a Ctrl-C in the terminal reaches the supervisor only, which then
            # stops the workers in order instead of racing them.
            start_new_session=True,
        )
        slot.started_at = time.monotonic()
        slot.restart_at = None
        logs.event(
            log,
            "worker_started",
            worker=slot.index,
            node_id=slot.node_id,
            pid=slot.proc.pid,
            restarts=slot.restarts,
        )

    async def _wait_ready(self) -> None:
        """Until every worker answers on its private port; StartupFailed if one exits or hangs."""
        import aiohttp

        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(self.slots)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http:
            while pending and not self.stop_event.is_set():
                for slot in list(pending):
                    code = slot.proc.poll()
                    if code is not None:
                        raise StartupFailed(
                            f"worker {slot.node_id} exited with {code} while starting; see its log"
                        )
                    try:
                        async with http.get(f"http://{slot.private_address}/health/local") as resp:
                            if resp.status == 200:
                                pending.remove(slot)
                    except (aiohttp.ClientError, TimeoutError):
                        pass  # not listening yet
                if time.monotonic() > deadline:
                    names = ", ".join(slot.node_id for slot in pending)
                    raise StartupFailed(f"workers {names} did not start within {READY_TIMEOUT_S:.0f} s")
                if pending:
                    await asyncio.sleep(POLL_S)

    def banner(self) -> list[str]:
        """The lines ``spidi serve`` prints once the node accepts clients."""
        from .cli import banner_lines

        s = self.settings
        lines = banner_lines(
            s,
            node_id=self.base_id,
            ws_url=f"ws://{s.host}:{self.port}/ws",
            ops_url=f"http://{s.ops_host}:{self.ops_port}",
            redis_url=self.services.redis_url,
            embedded_redis=self.services.embedded_redis is not None,
            dsn=self.services.dsn,
            embedded_pg=self.services.embedded_pg is not None,
            writer_pid=self.services.writer_proc.pid if self.services.writer_proc is not None else None,
            extra=[f"  Workers:           {len(self.slots)} (SO_REUSEPORT)"]
            + [
                f"    {w.node_id:<16} pid {w.proc.pid:<8} http://{w.private_address}/metrics/local"
                for w in self.slots
            ],
        )
        return lines

    # -- supervise -------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Watch the children until asked to stop: reap and restart dead workers, restart the writer."""
        while not self.stop_event.is_set():
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is None and slot.proc is not None and slot.proc.poll() is not None:
                    await self._worker_died(slot)
                elif slot.restart_at is not None and now >= slot.restart_at and not self.stop_event.is_set():
                    slot.restarts += 1
                    self._spawn(slot)
            self.services.watch_writer(now)
            with contextlib.suppress(TimeoutError):  # woken early by a stop signal
                await asyncio.wait_for(self.stop_event.wait(), POLL_S)

    async def _worker_died(self, slot: WorkerSlot) -> None:
        code = slot.proc.returncode
        uptime = time.monotonic() - slot.started_at
        if uptime >= STABLE_AFTER_S:
            slot.backoff_s = BACKOFF_FIRST_S
        delay = slot.backoff_s
        slot.backoff_s = min(BACKOFF_MAX_S, slot.backoff_s * 2)
        logs.event(
            log,
            "worker_exited",
            logging.WARNING,
            worker=slot.index,
            node_id=slot.node_id,
            pid=slot.proc.pid,
            returncode=code,
            uptime_s=round(uptime, 1),
        )
        # Its sessions end now (reason node_lost) rather than when its liveness key expires,
        # and before the restarted worker takes the id again.
        await self.reap(slot.node_id, "node_lost")
        slot.restart_at = time.monotonic() + delay
        logs.event(log, "worker_restarting", worker=slot.index, node_id=slot.node_id, delay_s=delay)

    async def reap(self, node_id: str, reason: str) -> int:
        """End every session ``node_id`` held (``reaper.reap_node``); -1 if that was not possible."""
        try:
            from .reaper import reap_node
            from .stores import keys
        except ImportError:  # pragma: no cover - the reaper ships with the node
            logs.event(log, "reap_unavailable", logging.WARNING, node_id=node_id)
            return -1
        if self.redis is None:
            return -1
        lock = keys.node_reaping(node_id)
        try:
            # The lock a sibling's liveness check takes before reaping the same id: wait for it
            # rather than end the same sessions twice (two session_ended events each).
            deadline = time.monotonic() + 5.0
            while not await self.redis.set(lock, f"supervisor:{self.base_id}", nx=True, px=30_000):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            try:
                ended = await reap_node(self.redis, node_id, reason)
            finally:
                await self.redis.delete(lock)
        except Exception as exc:  # Redis down: the id's liveness key expires and a node reaps later
            logs.event(log, "reap_failed", logging.WARNING, node_id=node_id, error=str(exc))
            return -1
        logs.event(log, "worker_reaped", node_id=node_id, sessions=ended, reason=reason)
        return ended

    # -- stop ------------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Workers first (clients closed with 1001, flushed), then the writer, PostgreSQL, Redis."""
        live = [slot for slot in self.slots if slot.proc is not None and slot.proc.poll() is None]
        for slot in live:
            slot.proc.terminate()
        # A worker takes up to shutdown_timeout_s for its clients and as long again to flush.
        grace = 2 * self.settings.shutdown_timeout_s + 10
        deadline = time.monotonic() + grace
        while any(slot.proc.poll() is None for slot in live) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        for slot in live:
            if slot.proc.poll() is None:
                logs.event(
                    log,
                    "worker_killed",
                    logging.WARNING,
                    node_id=slot.node_id,
                    pid=slot.proc.pid,
                    grace_s=grace,
                )
                slot.proc.kill()
                await asyncio.to_thread(slot.proc.wait)
                await self.reap(slot.node_id, "shutdown")
        if self.redis is not None:
            with contextlib.suppress(Exception):  # Redis already gone: nothing to release
                await self.redis.aclose()
        await self.services.stop()
        if self.slots:
            logs.event(log, "supervisor_stopped", node_id=self.base_id, workers=len(self.slots))


class StartupFailed(Exception):
    """A worker could not start: the supervisor stops what it started and exits 1."""


def run_supervisor(settings: Settings) -> int:
    """``spidi serve`` with ``workers > 1``: run the supervisor on uvloop; its exit code."""
    import uvloop

    return uvloop.run(Supervisor(settings).run())


# -- the worker side ---------------------------------------------------------------------------


async def run_worker(settings: Settings, parent_pid: int) -> None:
    """One worker: a Node until SIGTERM/SIGINT or until the supervisor ``parent_pid`` is gone."""
    from .node import Node

    node = Node(settings)
    stop = stop_on_signals()
    watch = asyncio.get_running_loop().create_task(_watch_parent(parent_pid, stop))
    try:
        await node.start()
        await stop.wait()
    finally:
        watch.cancel()
        await node.stop()  # also after a failed start: stops what had started


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # Polling the parent pid works whatever thread started us (PR_SET_PDEATHSIG would fire when
    # that thread ends) and lets the worker close its clients cleanly instead of being killed.
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_POLL_S)
    logs.event(log, "supervisor_gone", logging.WARNING, parent_pid=parent_pid)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    """``python -m spidi_server.supervisor --parent-pid P``: a worker, configured by SPIDI_* only."""
    parser = argparse.ArgumentParser(
        prog="python -m spidi_server.supervisor",
        description=f"Spidi {__version__} worker process (started by spidi serve --workers N)",
    )
    parser.add_argument("--parent-pid", type=int, required=True, help="exit when this process is gone")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"spidi worker: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if os.getppid() != args.parent_pid:
        return 0  # the supervisor went while we were starting
    import uvloop

    try:
        uvloop.run(run_worker(settings, args.parent_pid))
    except StartupError as exc:
        print(f"spidi worker: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
