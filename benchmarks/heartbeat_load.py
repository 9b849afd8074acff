"""End-to-end heartbeat load benchmark: a real Spidi node, thousands of connections, paced heartbeats.

``python -m benchmarks.heartbeat_load [--quick] [--compare] [--find-max] [options]``

It starts the server as a subprocess (pinned to one CPU with ``taskset``; Spidi's embedded
redis-server inherits the pin), runs the load generator of ``loadgen.py`` in this process (pinned
to another CPU), and reports offered vs achieved rate, the server-side processed count (delta of
``spidi_heartbeats_total``: it must MATCH what was sent), round-trip times of sampled heartbeats,
server CPU (and CPU microseconds per heartbeat), RSS per connection, Redis commands per second,
connect time and errors. ``--storm N/K`` replaces the window by a reconnect storm whose every
failed client is accounted by kind. A table goes to stdout; a JSON file and a short markdown
summary (``bench_report.py``; the summary is committed) go to ``benchmarks/results/``.

See ``benchmarks/README.md`` for the meaning of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_report import (
    FLOOR,
    figure_rows,
    host_info,
    markdown_summary,
    print_table,
    ratio_rows,
    ratios,
)
from benchmarks.loadgen import (
    FAILURE_KINDS,
    ConnectResult,
    LoadGenerator,
    WindowResult,
    fetch_metric,
    raise_nofile_limit,
    wait_for_metric,
)
from benchmarks.presence_probe import probe_process
from benchmarks.procstats import (
    cpu_busy_seconds,
    kernel_tcp_counters,
    proc_cpu_seconds,
    proc_cpu_seconds_with_reaped,
    proc_rss_bytes,
    safe_read,
    server_pids,
    tree_cpu_by_role,
    tree_cpu_delta,
    tree_cpu_sample,
)
from benchmarks.pyspy import PySpy, print_profile
from spidi_server.history.embedded_pg import EmbeddedPostgres
from spidi_server.processes import read_pidfile, stop_pid
from spidi_server.stores.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEARTBEATS = "spidi_heartbeats_total"
# "spidi" runs the node's default transport (no transport setting given); the others force one.
# "spidi-native" fails to start in a tree without the native transport: reported, not fatal.
SERVER_KINDS = (
    "spidi",
    "spidi-native",
    "spidi-websockets",
    "spidi-picows",
    "spidi-pure",
    "bare-uvloop",
    "bare-websockets",
    "bare-picows",
)
# Worker-mode kinds (`spidi serve --workers 2`): not in --compare; ask for them with --servers.
WORKER_KINDS = ("spidi-2w", "spidi-picows-2w")
COMPARE_KINDS = ("spidi", "spidi-websockets", "spidi-picows", FLOOR, "bare-websockets", "bare-picows")
# SPIDI_TRANSPORT of the kinds that force a transport.
KIND_TRANSPORT = {
    "spidi-native": "native",
    "spidi-websockets": "websockets",
    "spidi-picows": "picows",
    "spidi-picows-2w": "picows",
}


# -- the server under test ---------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A server subprocess (Spidi or a bare server) and the figures read from it."""

    kind: str
    data_dir: Path
    pin_cpu: int | None
    secret: str
    capacity: int
    log_level: str
    host: str = "127.0.0.1"
    extra_env: dict = field(default_factory=dict)  # --server-env: settings under experiment
    proc: subprocess.Popen | None = None
    ws_port: int = 0
    ops_port: int = 0
    redis_pid: int | None = None
    _redis: object = None

    @property
    def is_spidi(self) -> bool:
        """Whether this is a Spidi node (with Redis) rather than a bare server."""
        return self.kind.startswith("spidi")

    @property
    def metrics_url(self) -> str:
        """Prometheus endpoint of the server."""
        return f"http://{self.host}:{self.ops_port}/metrics"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
        env["PYTHONUNBUFFERED"] = "1"
        # The checkout first on the path: the servers run this tree's code, whatever is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        if self.is_spidi:
            # `python -m spidi_server.cli` is the `spidi` console script (spidi_server.cli:main).
            argv = [
                sys.executable,
                "-m",
                "spidi_server.cli",
                "serve",
                "--dev",
                "--data-dir",
                str(self.data_dir),
                "--host",
                self.host,
                "--port",
                "0",
                "--ops-port",
                "0",
            ]
            env.update(
                SPIDI_JWT_SECRET=self.secret,
                # Sessions must outlive the run: no expiry in the middle of a measurement.
                SPIDI_HEARTBEAT_TIMEOUT_MS=str(6 * 3600 * 1000),
                SPIDI_DEFAULT_ROOM_CAPACITY=str(max(1000, self.capacity)),
                SPIDI_LOG_LEVEL=self.log_level,
            )
            if self.kind == "spidi-pure":
                env["SPIDI_NO_EXTENSIONS"] = "1"
            if self.kind in KIND_TRANSPORT:
                env["SPIDI_TRANSPORT"] = KIND_TRANSPORT[self.kind]
            if self.workers > 1:
                argv += ["--workers", str(self.workers)]
            env.update(self.extra_env)
        else:
            transport = self.kind.split("-", 1)[1]
            argv = [
                sys.executable,
                "-m",
                "benchmarks.bare_server",
                "--transport",
                transport,
                "--host",
                self.host,
                "--port",
                "0",
                "--ops-port",
                "0",
            ]
        if self.pin_cpu is not None:
            argv = ["taskset", "-c", str(self.pin_cpu), *argv]
        return argv, env

    async def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it prints its WebSocket and ops ports."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv, env = self._command()
        out = self.data_dir / "server.out"
        err = self.data_dir / "server.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            # RLIMIT_NOFILE was raised in this process; the child inherits it.
            self.proc = subprocess.Popen(
                argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=ROOT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = out.read_text(errors="replace")
            ws = re.search(r"ws://[^\s/]+:(\d+)/ws", text)
            ops = re.search(r"Ops:\s+http://[^\s/]+:(\d+)", text)
            if ws and ops:
                self.ws_port, self.ops_port = int(ws.group(1)), int(ops.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.tail()}")
            await asyncio.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"{self.kind} did not print its ports within {timeout}s:\n{self.tail()}")
        if self.is_spidi:
            import redis

            self._redis = redis.Redis(unix_socket_path=str(self.data_dir / "redis" / "redis.sock"))
            self.redis_pid = int(self._redis.info("server")["process_id"])
            # The history writer (a child started after the ports are printed) ready before the
            # connects: its first read of an empty stream runs its start-up sweep, which would
            # otherwise flush the first few join events as a batch of their own (the last batch of
            # the run then waits writer_flush_interval_s, out of the connect figures' window).
            while time.monotonic() < deadline and self.history_written() is None:
                await asyncio.sleep(0.05)

    def tail(self, lines: int = 20) -> str:
        """The last lines of the server's stdout and stderr."""
        parts = []
        for name in ("server.out", "server.err"):
            path = self.data_dir / name
            if path.exists():
                parts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(parts)

    @property
    def pid(self) -> int:
        """The server's process id (taskset execs the command, so it is the server itself)."""
        return self.proc.pid

    @property
    def workers(self) -> int:
        """Worker processes of this server (1 unless a worker-mode kind)."""
        return 2 if self.kind.endswith("-2w") else 1

    def cpu(self) -> float:
        """Server CPU seconds so far (supervisor and workers summed in worker mode)."""
        if self.workers == 1:
            return proc_cpu_seconds(self.pid)
        return sum(safe_read(proc_cpu_seconds, pid) for pid in server_pids(self.pid))

    @property
    def transport(self) -> str:
        """The WebSocket transport the server runs: forced by its kind, else the node's default."""
        if not self.is_spidi:
            return self.kind.split("-", 1)[1] + " (bare)"
        forced = self.extra_env.get("SPIDI_TRANSPORT") or KIND_TRANSPORT.get(self.kind)
        if forced:
            return forced
        try:
            from spidi_server.settings import Settings

            return str(Settings().transport)
        except Exception:  # noqa: BLE001 - a label only; the run itself says whether the node started
            return "default"

    def tree_cpu(self) -> dict[int, float]:
        """CPU seconds by pid of the server's whole process tree (see ``tree_cpu_delta``), and of
        its embedded PostgreSQL: pg_ctl daemonizes the postmaster (its parent is init, not the
        node), so it is found by its pidfile in the data directory."""
        sample = tree_cpu_sample(self.pid)
        postmaster = self.postmaster_pid()
        if postmaster is not None and postmaster not in sample:
            sample.update(tree_cpu_sample(postmaster))
        return sample

    def postmaster_pid(self) -> int | None:
        """The embedded PostgreSQL's postmaster (Spidi with no configured DSN), else None."""
        if not self.is_spidi:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        return None

    def redis_rss(self) -> int | None:
        """RSS of the embedded redis-server in bytes (Spidi only)."""
        return safe_read(proc_rss_bytes, self.redis_pid) if self.redis_pid else None

    def redis_cpu(self) -> float | None:
        """Embedded redis-server CPU seconds so far, its reaped AOF rewrite children included (Spidi only)."""
        return proc_cpu_seconds_with_reaped(self.redis_pid) if self.redis_pid else None

    def rss(self) -> int:
        """Server RSS in bytes (summed over supervisor and workers in worker mode)."""
        if self.workers == 1:
            return proc_rss_bytes(self.pid)
        return sum(safe_read(proc_rss_bytes, pid) for pid in server_pids(self.pid))

    def redis_commands(self) -> int | None:
        """INFO stats ``total_commands_processed`` of the embedded Redis (Spidi only)."""
        if self._redis is None:
            return None
        return int(self._redis.info("stats")["total_commands_processed"])

    def redis_commandstats(self) -> dict[str, tuple[int, int]] | None:
        """INFO commandstats of the embedded Redis: command -> (calls, usec) (Spidi only)."""
        if self._redis is None:
            return None
        stats = self._redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}

    def history_written(self) -> int | None:
        """Events the history writer has written to PostgreSQL (its status hash; Spidi only)."""
        if self._redis is None:
            return None
        from spidi_server.stores import keys

        value = self._redis.hget(keys.WRITER_STATUS, "events_written")
        return None if value is None else int(value)  # None: no writer has reported yet

    async def metric(self, name: str) -> float | None:
        """One metric of the server, or None when it does not export it."""
        try:
            return await fetch_metric(self.metrics_url, name)
        except KeyError:
            # A labelled Spidi counter has no sample until its first increment.
            return 0.0 if self.is_spidi else None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, SIGKILL if needed; then what a server that died left running."""
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.is_spidi:
            self._stop_leftovers()

    def _stop_leftovers(self) -> None:
        """The embedded redis-server and PostgreSQL of a Spidi that died without stopping them
        (killed, or run out of memory): a node started on the same data directory would adopt
        them, but the benchmark deletes the directory, so nobody would."""
        redis = EmbeddedRedis(self.data_dir / "redis")
        postgres = EmbeddedPostgres(self.data_dir / "postgres")
        for pidfile, is_ours, stop_signal in (
            (redis.pidfile_path, redis.is_ours, signal.SIGTERM),
            (postgres.data_path / "postmaster.pid", postgres.is_ours, signal.SIGINT),  # fast shutdown
        ):
            pid = read_pidfile(pidfile)
            if pid is not None:
                stop_pid(pid, is_ours, 10.0, stop_signal)


# -- one measured window -----------------------------------------------------------------------------


@dataclass
class Window:
    """A paced window and what the server did during it."""

    offered_rate: float
    result: WindowResult
    seconds: float  # wall time of the sending window, as seen by this process
    processed_in_window: float
    processed_total: float  # after draining
    drain_seconds: float
    server_cpu_s: float
    tree_cpu_s: float  # node + redis + PostgreSQL + writer (bare servers: the process itself)
    redis_cpu_s: float | None
    redis_commands: int | None
    server_errors: float | None
    presence_ms: list[float] = field(default_factory=list)  # presence change -> roster delta delays
    # Busy seconds of the pinned server and generator CPUs over the window (None unpinned): minus
    # what the server tree and the generator used, it is other load on a shared machine.
    server_cpu_busy_s: float | None = None
    gen_cpu_busy_s: float | None = None

    @property
    def match(self) -> bool:
        """Whether the server processed exactly what the generator sent."""
        return int(self.processed_total) == self.result.sent

    def summary(self) -> dict:
        """The window's figures, as stored in the JSON results."""
        r = self.result
        processed_rate = self.processed_in_window / self.seconds if self.seconds else 0.0
        cpu_per_hb = self.server_cpu_s / self.processed_in_window * 1e6 if self.processed_in_window else None
        tree_per_hb = self.tree_cpu_s / self.processed_in_window * 1e6 if self.processed_in_window else None
        # The generator's own cost per heartbeat written, and the rate one core of it would reach.
        gen_per_hb = r.gen_cpu_s / r.sent * 1e6 if r.sent and r.gen_cpu_s else None
        redis_per_hb = (
            self.redis_cpu_s / self.processed_in_window * 1e6
            if self.redis_cpu_s is not None and self.processed_in_window
            else None
        )
        return {
            "offered_rate": self.offered_rate,
            "offered": r.offered,
            "sent": r.sent,
            "skipped": r.skipped,
            "achieved_send_rate": r.achieved_rate,
            "send_window_s": r.elapsed,
            "processed_total": self.processed_total,
            "processed_in_window": self.processed_in_window,
            "processed_rate": processed_rate,
            "match": self.match,
            "drain_s": self.drain_seconds,
            "rtt_samples": len(r.rtt_ms),
            "rtt_sampled": r.sampled,
            "rtt_lost": r.lost_receipts,
            "rtt_p50_ms": r.rtt(50),
            "rtt_p95_ms": r.rtt(95),
            "rtt_p99_ms": r.rtt(99),
            "rtt_max_ms": r.rtt_ms[-1] if r.rtt_ms else None,
            "server_cpu_pct": self.server_cpu_s / self.seconds * 100 if self.seconds else None,
            "server_cpu_us_per_hb": cpu_per_hb,
            "tree_cpu_pct": self.tree_cpu_s / self.seconds * 100 if self.seconds else None,
            "tree_cpu_us_per_hb": tree_per_hb,
            "redis_cpu_pct": self.redis_cpu_s / self.seconds * 100 if self.redis_cpu_s is not None else None,
            "redis_cpu_us_per_hb": redis_per_hb,
            "redis_commands_per_s": self.redis_commands / self.seconds
            if self.redis_commands is not None
            else None,
            "gen_cpu_pct": r.gen_cpu_s / r.elapsed * 100 if r.elapsed else None,
            "other_on_server_cpu_pct": (self.server_cpu_busy_s - self.tree_cpu_s) / self.seconds * 100
            if self.server_cpu_busy_s is not None and self.seconds
            else None,
            "other_on_gen_cpu_pct": (self.gen_cpu_busy_s - r.gen_cpu_s) / r.elapsed * 100
            if self.gen_cpu_busy_s is not None and r.elapsed
            else None,
            "gen_cpu_us_per_hb": gen_per_hb,
            "gen_ceiling_hb_s": 1e6 / gen_per_hb if gen_per_hb else None,
            "server_errors": self.server_errors,
            "generator_errors": r.errors,
            "presence_samples": len(self.presence_ms),
            "presence_p50_ms": _pct(self.presence_ms, 50),
            "presence_p99_ms": _pct(self.presence_ms, 99),
            "presence_max_ms": self.presence_ms[-1] if self.presence_ms else None,
        }


def _pct(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


async def measure(
    server: ServerProcess, gen: LoadGenerator, rate: float, duration: float, cfg: argparse.Namespace
) -> Window:
    """Run one paced window and read the server's counters around it, then let it drain."""
    errors0 = await server.metric("spidi_errors_total")
    c0 = await fetch_metric(server.metrics_url, HEARTBEATS)
    redis_cmd0 = server.redis_commands()
    rcpu0 = server.redis_cpu()
    tree0 = server.tree_cpu()
    cpu0 = server.cpu()
    busy0 = cpu_busy_seconds()
    t0 = time.monotonic()
    probing = None
    if server.is_spidi and cfg.probe_presence:
        url = f"ws://{cfg.host}:{server.ws_port}/ws"
        probing = asyncio.get_running_loop().create_task(
            probe_process(url, cfg.probe_user_token, cfg.probe_monitor_token, max(1.0, duration - 1.5))
        )
    result = await gen.run(rate, duration, sample_every=cfg.sample_every, tick=cfg.tick)
    seconds = time.monotonic() - t0
    presence_ms = await probing if probing is not None else []
    cpu1 = server.cpu()
    busy1 = cpu_busy_seconds()
    tree1 = server.tree_cpu()
    rcpu1 = server.redis_cpu()
    redis_cmd1 = server.redis_commands()
    c1 = await fetch_metric(server.metrics_url, HEARTBEATS)
    await gen.wait_receipts(result, timeout=5.0)
    final, drain = await wait_for_metric(
        server.metrics_url, HEARTBEATS, c0 + result.sent, timeout=60, stall=5
    )
    errors1 = await server.metric("spidi_errors_total")
    return Window(
        offered_rate=rate,
        result=result,
        seconds=seconds,
        processed_in_window=c1 - c0,
        processed_total=final - c0,
        drain_seconds=drain,
        server_cpu_s=cpu1 - cpu0,
        tree_cpu_s=tree_cpu_delta(tree0, tree1),
        redis_cpu_s=None if rcpu0 is None else rcpu1 - rcpu0,
        redis_commands=None if redis_cmd0 is None else redis_cmd1 - redis_cmd0 - 1,  # minus our INFO
        server_errors=None if errors0 is None else errors1 - errors0,
        presence_ms=presence_ms,
        server_cpu_busy_s=_busy(busy0, busy1, server.pin_cpu),
        gen_cpu_busy_s=_busy(busy0, busy1, cfg.gen_cpu if server.pin_cpu is not None else None),
    )


def _busy(before: dict[int, float], after: dict[int, float], cpu: int | None) -> float | None:
    if cpu is None or cpu not in before or cpu not in after:
        return None
    return after[cpu] - before[cpu]


# -- one server, start to stop ----------------------------------------------------------------------


@dataclass
class Run:
    """Everything measured against one server."""

    kind: str
    info: dict = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    max_rate_held: float | None = None
    stop_reason: str | None = None
    profile: dict[str, dict] = field(default_factory=dict)  # phase -> py-spy summary

    def to_doc(self) -> dict:
        """This run as stored in the results JSON (and read back by ``bench_report``)."""
        main = self.main_window()
        return {
            **self.info,
            "max_rate_held": self.max_rate_held,
            "stop_reason": self.stop_reason,
            "result": main.summary() if main else None,
            "windows": [w.summary() for w in self.windows],
            # Round trips of the table's window by send time: stalls show as saw-teeth.
            "rtt_series": [[round(t, 4), round(ms, 3)] for t, ms in main.result.rtt_series] if main else [],
            "profile": self.profile,
        }

    def main_window(self) -> Window | None:
        """The window the table shows: the only one, or for --find-max the last one held."""
        if not self.windows:
            return None
        if self.max_rate_held is not None:
            held = [w for w in self.windows if w.offered_rate == self.max_rate_held]
            if held:
                return held[-1]
        return self.windows[0]


def window_held(w: Window, cfg: argparse.Namespace) -> tuple[bool, str]:
    """Whether a --find-max step held its rate, and why not."""
    s = w.summary()
    p99 = s["rtt_p99_ms"]
    if s["achieved_send_rate"] < 0.97 * w.offered_rate:
        if (s["gen_cpu_pct"] or 0) > 90:
            who = "generator"
        elif (s["tree_cpu_pct"] or 0) > 90:
            who = "server back-pressure"
        else:
            # Neither was busy: the CPUs were taken by something else (a shared machine).
            who = (
                f"neither busy: generator {s['gen_cpu_pct'] or 0:.0f}% server {s['tree_cpu_pct'] or 0:.0f}%, "
                f"other load {s['other_on_gen_cpu_pct'] or 0:.0f}% / {s['other_on_server_cpu_pct'] or 0:.0f}% "
                "on their CPUs"
            )
        return False, f"achieved send rate {s['achieved_send_rate']:.0f}/s < offered ({who})"
    if s["processed_rate"] < 0.97 * w.offered_rate:
        return False, f"processed rate {s['processed_rate']:.0f}/s < offered {w.offered_rate:.0f}/s"
    if p99 is None:
        return False, "no RTT samples"
    if p99 > cfg.max_p99_ms:
        return False, f"p99 RTT {p99:.1f} ms > {cfg.max_p99_ms} ms"
    if not w.match:
        return False, "processed != sent"
    return True, ""


def storm_figures(connected: ConnectResult, tree_cpu_s: float) -> dict:
    """The storm's accounting: who got in, how long it took, why the others did not, server CPU."""
    return {
        "requested": connected.requested,
        "connected": connected.connected,
        "all_in": connected.all_in,
        "seconds": connected.seconds,
        "failures": {k: connected.failures.get(k, 0) for k in FAILURE_KINDS},
        "latency_p50_ms": connected.latency(50),
        "latency_p99_ms": connected.latency(99),
        "latency_max_ms": connected.latency_ms[-1] if connected.latency_ms else None,
        "tree_cpu_s": tree_cpu_s,
        "tree_cpu_us_per_conn": tree_cpu_s / max(1, connected.connected) * 1e6,
    }


async def bench_server(kind: str, cfg: argparse.Namespace, tokens: list[str], stamp: str) -> Run:
    """Start one server, connect, measure (one window, or a --find-max ramp), stop."""
    run = Run(kind)
    data_dir = Path(tempfile.mkdtemp(prefix=f"spidi-bench-{kind}-"))
    # Workers are spread over every core by design: only a one-process server is pinned.
    pin = cfg.server_cpu if not kind.endswith("-2w") else None
    server = ServerProcess(
        kind,
        data_dir,
        pin,
        cfg.secret,
        cfg.connections,
        cfg.server_log_level,
        extra_env=dict(item.split("=", 1) for item in cfg.server_env),
    )
    gen = None
    say = lambda text: print(f"[{kind}] {text}", flush=True)  # noqa: E731
    try:
        await server.start()
        say(
            f"pid {server.pid} ws :{server.ws_port} ops :{server.ops_port}"
            + (f" redis pid {server.redis_pid}" if server.redis_pid else "")
        )
        await asyncio.sleep(0.5)
        rss_before = server.rss()
        redis_rss_before = server.redis_rss()
        gen = LoadGenerator(
            cfg.host,
            server.ws_port,
            tokens,
            rooms=cfg.rooms,
            connect_concurrency=cfg.connect_concurrency,
            connect_timeout=cfg.connect_timeout,
            source_ips=cfg.source_ips,
        )
        what = "storm of" if cfg.storm else "connecting"
        say(
            f"{what} {cfg.connections} clients into {cfg.rooms} rooms, {cfg.connect_concurrency} in flight ..."
        )
        spy = None
        if cfg.py_spy:
            spy = PySpy(server.pid, RESULTS_DIR / f"{stamp}-{cfg.label}-{kind}-connect-pyspy.json")
            if not await spy.start():
                spy = None
        tree_before = server.tree_cpu()
        cmdstats_before = server.redis_commandstats()
        cpu_before = server.cpu()
        gen_cpu_before = time.process_time()
        tcp_before = kernel_tcp_counters()
        connected = await gen.connect_all(cfg.connections)
        tcp_after = kernel_tcp_counters()
        gen_connect_cpu = time.process_time() - gen_cpu_before
        connect_cpu = server.cpu() - cpu_before
        if spy is not None:
            profile = await spy.stop()
            if profile:
                run.profile["connect"] = profile
        say(
            f"{connected.connected}/{connected.requested} ready in {connected.seconds:.2f} s"
            + (f", failed: {connected.failures}" if connected.failed else "")
        )
        if connected.connected == 0 and not cfg.storm:  # a storm reports its failures anyway
            raise RuntimeError(f"no connection: {dict(gen.errors.most_common(5))}")
        await asyncio.sleep(cfg.settle)
        # --wait-history: the writer's inserts of the join events count whole, whenever its batches go.
        deadline = time.monotonic() + cfg.wait_history
        while time.monotonic() < deadline and (server.history_written() or 0) < connected.connected:
            await asyncio.sleep(0.05)
        history_written = server.history_written()
        # The tree's figure includes the settle: work the connects left behind (Redis flushes,
        # the writer's inserts of the join events) counts, at the price of a second of idle timers.
        tree_after = server.tree_cpu()
        connect_tree_cpu = tree_cpu_delta(tree_before, tree_after)
        cmdstats_after = server.redis_commandstats()
        per_conn = 1e6 / max(1, connected.connected)
        by_role = tree_cpu_by_role(tree_before, tree_after, server.redis_pid)
        # Redis's time by command (INFO commandstats: calls and usec, this phase's share per connect).
        commands = (
            {
                name: {
                    "calls_per_conn": (calls - cmdstats_before.get(name, (0, 0))[0])
                    / max(1, connected.connected),
                    "us_per_conn": (usec - cmdstats_before.get(name, (0, 0))[1]) * per_conn / 1e6,
                }
                for name, (calls, usec) in cmdstats_after.items()
                if calls != cmdstats_before.get(name, (0, 0))[0]
            }
            if cmdstats_before is not None and cmdstats_after is not None
            else None
        )
        if commands:
            top = sorted(commands.items(), key=lambda kv: -kv[1]["us_per_conn"])[:12]
            say(
                "redis per connect by command: "
                + ", ".join(
                    f"{n} {c['us_per_conn']:.1f} us ({c['calls_per_conn']:.2f} calls)" for n, c in top
                )
            )
        say(f"history events written: {history_written}")
        say(
            "tree CPU per connect by process: "
            + ", ".join(f"{r} {v * per_conn:.0f} us" for r, v in by_role.items())
        )
        rss_idle = server.rss()
        redis_rss_idle = server.redis_rss()
        run.info = {
            "pid": server.pid,
            "transport": server.transport,
            "connections_requested": connected.requested,
            "connections": connected.connected,
            "connect_failed": connected.failed,
            "connect_s": connected.seconds,
            "connect_rate": connected.connected / connected.seconds if connected.seconds else None,
            "connect_failures": connected.failures,
            "connect_p50_ms": connected.latency(50),
            "connect_p99_ms": connected.latency(99),
            "connect_cpu_us_per_conn": connect_cpu / max(1, connected.connected) * 1e6,
            "connect_tree_cpu_us_per_conn": connect_tree_cpu / max(1, connected.connected) * 1e6,
            # Redis's part of the tree's (the rest of it: the node, the writer and PostgreSQL).
            "connect_redis_cpu_us_per_conn": by_role["redis"] * per_conn if "redis" in by_role else None,
            # The tree's by process (node, redis, writer, postgres) and Redis's by command.
            "connect_cpu_us_per_conn_by_process": {r: v * per_conn for r, v in by_role.items()},
            "connect_redis_commands_per_conn": commands,
            "connect_history_written": history_written,  # by the end of the connect figures' window
            # The generator's side of the connect phase: near the phase's wall time = it was the limit.
            "gen_connect_cpu_s": gen_connect_cpu,
            "connect_kernel_tcp": {k: v - tcp_before.get(k, 0) for k, v in tcp_after.items()},
            "rss_before": rss_before,
            "rss_idle": rss_idle,
            "rss_per_conn": (rss_idle - rss_before) / max(1, connected.connected),
            "redis_rss_per_conn": (redis_rss_idle - redis_rss_before) / max(1, connected.connected)
            if redis_rss_idle is not None and redis_rss_before is not None
            else None,
        }
        if cfg.storm:
            # The storm is the measurement: no heartbeat window after it.
            run.info["storm"] = storm_figures(connected, connect_tree_cpu)
            run.info["generator_errors"] = dict(gen.errors)
            run.info["rss_after"] = server.rss()
            return run
        if cfg.warmup > 0:
            say(f"warm-up {cfg.warmup:g} s at {cfg.rate:g}/s")
            await measure(server, gen, cfg.rate, cfg.warmup, cfg)
        if cfg.find_max:
            rate = cfg.rate
            for _ in range(cfg.max_steps):
                w = await measure(server, gen, rate, cfg.step_seconds, cfg)
                run.windows.append(w)
                ok, why = window_held(w, cfg)
                s = w.summary()
                p99 = s["rtt_p99_ms"]
                say(
                    f"{rate:>9.0f}/s: sent {s['achieved_send_rate']:.0f}/s processed {s['processed_rate']:.0f}/s "
                    f"p99 {'-' if p99 is None else f'{p99:.1f}'} ms server tree cpu {s['tree_cpu_pct'] or 0:.0f}% "
                    f"gen {s['gen_cpu_pct'] or 0:.0f}% "
                    f"{'held' if ok else 'FAILED: ' + why}"
                )
                if not ok:
                    run.stop_reason = why
                    break
                run.max_rate_held = rate
                rate = round(rate * cfg.step_factor, -2)
                if rate > cfg.max_rate:
                    run.stop_reason = f"--max-rate {cfg.max_rate:g} reached"
                    break
            else:
                run.stop_reason = f"--max-steps {cfg.max_steps} reached"
        else:
            say(f"{cfg.rate:g} heartbeats/s for {cfg.duration:g} s")
            run.windows.append(await measure(server, gen, cfg.rate, cfg.duration, cfg))
        run.info["rss_after"] = server.rss()
        if cfg.py_spy:
            rate = run.max_rate_held or cfg.rate
            duration = min(cfg.duration, 10.0)
            spy = PySpy(server.pid, RESULTS_DIR / f"{stamp}-{cfg.label}-{kind}-heartbeats-pyspy.json")
            say(f"extra window profiled by py-spy: {rate:g}/s for {duration:g} s -> {spy.out.name}")
            if await spy.start():
                window = await measure(server, gen, rate, duration, cfg)
                profile = await spy.stop()
                if profile:
                    profile["window"] = window.summary()
                    run.profile["heartbeats"] = profile
        run.info["generator_errors"] = dict(gen.errors)
    finally:
        if gen is not None:
            await gen.close()
        server.stop()
        if cfg.keep_data:
            print(f"[{kind}] data kept in {data_dir}", flush=True)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return run


# -- reporting -----------------------------------------------------------------------------------------


# -- command line ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Command line options."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.heartbeat_load",
        description="End-to-end heartbeat load benchmark of Spidi (see benchmarks/README.md).",
    )
    p.add_argument("-c", "--connections", type=int, help="WebSocket connections, one session each (10000)")
    p.add_argument("-r", "--rate", type=float, help="aggregate heartbeats per second (20000)")
    p.add_argument("-t", "--duration", type=float, help="measured seconds (20)")
    p.add_argument("--rooms", type=int, default=10, help="rooms the sessions are spread over (10)")
    p.add_argument(
        "--sample", type=float, default=0.01, help="fraction of heartbeats carrying a receipt (0.01)"
    )
    p.add_argument("--tick", type=float, default=0.01, help="pacing slice in seconds (0.01)")
    p.add_argument("--warmup", type=float, help="seconds of unmeasured heartbeats first (2; --quick 1)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds idle after connecting, before RSS (1)")
    p.add_argument(
        "--wait-history",
        type=float,
        default=0.0,
        help="after the settle, wait up to this long for the history writer to have written an event "
        "per connection before taking the connect figures (0: no wait)",
    )
    p.add_argument("--quick", action="store_true", help="smoke preset: C=1000, H=5000, T=5")
    p.add_argument(
        "--compare",
        action="store_true",
        help=f"run {', '.join(COMPARE_KINDS)} with ratios to the {FLOOR} floor",
    )
    p.add_argument(
        "--servers",
        help="comma-separated servers to run, from "
        f"{', '.join(SERVER_KINDS + WORKER_KINDS)} (the -2w ones run `spidi serve --workers 2`, unpinned)",
    )
    p.add_argument(
        "--find-max", action="store_true", help="raise the rate until p99 > --max-p99-ms or it lags"
    )
    p.add_argument("--max-p99-ms", type=float, default=50.0, help="--find-max RTT limit (50)")
    p.add_argument(
        "--gen-ceiling",
        action="store_true",
        help="the generator's own ceiling: --find-max against bare-uvloop from 50,000/s with no RTT "
        "limit, so the ramp stops when the generator (or the floor server) cannot keep up",
    )
    p.add_argument(
        "--step-factor", type=float, default=1.25, help="--find-max rate multiplier per step (1.25)"
    )
    p.add_argument("--step-seconds", type=float, help="--find-max seconds per step (5; --quick 3)")
    p.add_argument("--max-steps", type=int, default=20, help="--find-max step limit (20)")
    p.add_argument("--max-rate", type=float, default=2_000_000, help="--find-max rate limit")
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pin server and generator to CPUs (default: on if taskset exists and >1 CPU)",
    )
    p.add_argument(
        "--server-cpu", type=int, default=0, help="CPU of the server (and its redis) when pinned (0)"
    )
    p.add_argument("--gen-cpu", type=int, default=1, help="CPU of the generator when pinned (1)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address the server binds (127.0.0.1)")
    p.add_argument("--connect-concurrency", type=int, default=100, help="connects in flight (100)")
    p.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds a client may take to reach WELCOME (30)"
    )
    p.add_argument(
        "--storm",
        metavar="N/K",
        help="reconnect storm instead of a heartbeat window: N clients, K connecting at once "
        "(e.g. 10000/2000), each CONNECT + 2 SUBSCRIBE + HELLO; reports time until all are in and why not",
    )
    p.add_argument("--source-ips", type=int, default=1, help="spread clients over 127.0.0.1..N (1)")
    p.add_argument("--server-log-level", default="info", help="SPIDI_LOG_LEVEL of the node (info)")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="SPIDI_X=V",
        help="extra environment for Spidi servers (repeatable), e.g. SPIDI_GC_FULL_INTERVAL_S=0",
    )
    p.add_argument(
        "--no-probe-presence",
        dest="probe_presence",
        action="store_false",
        help="skip the presence probe (a monitor timing HELLO/LEAVE to roster delta under load)",
    )
    p.add_argument(
        "--py-spy", action="store_true", help="profile the connect phase and an extra window with py-spy"
    )
    p.add_argument("--label", help="results file label (default from the mode)")
    p.add_argument("--keep-data", action="store_true", help="keep the servers' data directories (logs)")
    return p


def parse_storm(text: str) -> tuple[int, int]:
    """``N/K`` -> (N clients, K in flight); K is capped at N."""
    try:
        n_text, k_text = text.split("/")
        n, k = int(n_text), int(k_text)
    except ValueError:
        raise SystemExit(f"--storm wants N/K, e.g. 10000/2000, not {text!r}") from None
    if n < 1 or k < 1:
        raise SystemExit(f"--storm N/K must be positive, got {text!r}")
    return n, min(n, k)


def resolve(cfg: argparse.Namespace) -> argparse.Namespace:
    """Fill in preset-dependent defaults and validate."""
    quick = cfg.quick
    if cfg.gen_ceiling:
        cfg.servers = cfg.servers or FLOOR
        cfg.find_max = True
        cfg.max_p99_ms = float("inf")
        cfg.rate = cfg.rate or 50_000.0
        cfg.probe_presence = False
        cfg.label = cfg.label or ("quick-genceiling" if quick else "genceiling")
    if cfg.storm:
        cfg.connections, cfg.connect_concurrency = parse_storm(cfg.storm)
        cfg.probe_presence = False
    cfg.connections = cfg.connections or (1000 if quick else 10_000)
    cfg.rate = cfg.rate or (5000.0 if quick else 20_000.0)
    cfg.duration = cfg.duration or (5.0 if quick else 20.0)
    cfg.warmup = cfg.warmup if cfg.warmup is not None else (1.0 if quick else 2.0)
    cfg.step_seconds = cfg.step_seconds or (3.0 if quick else 5.0)
    cfg.sample_every = max(1, round(1 / cfg.sample)) if cfg.sample > 0 else 10**12
    if cfg.servers:
        kinds = [k.strip() for k in cfg.servers.split(",") if k.strip()]
        bad = [k for k in kinds if k not in SERVER_KINDS + WORKER_KINDS]
        if bad:
            raise SystemExit(f"unknown server(s) {bad}; choose from {SERVER_KINDS + WORKER_KINDS}")
        cfg.kinds = kinds
    else:
        cfg.kinds = list(COMPARE_KINDS) if cfg.compare else ["spidi"]
    cpus = os.sched_getaffinity(0)
    if cfg.pin is None:
        cfg.pin = shutil.which("taskset") is not None and len(cpus) > 1
    if cfg.pin:
        if shutil.which("taskset") is None:
            raise SystemExit("--pin needs taskset (util-linux)")
        if cfg.server_cpu not in cpus or cfg.gen_cpu not in cpus or cfg.server_cpu == cfg.gen_cpu:
            raise SystemExit(f"--server-cpu/--gen-cpu must be two distinct CPUs of {sorted(cpus)}")
    else:
        cfg.server_cpu = cfg.gen_cpu = None
    if not cfg.label:
        parts = ["quick" if quick else f"c{cfg.connections}-r{cfg.rate:g}-t{cfg.duration:g}"]
        if cfg.storm:
            parts = [f"storm-{cfg.connections}-{cfg.connect_concurrency}"]
        if cfg.compare:
            parts.append("compare")
        if cfg.find_max:
            parts.append("findmax")
        cfg.label = "-".join(parts)
    cfg.label = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.label)
    return cfg


def probe_tokens(secret: str) -> tuple[str, str]:
    """A user and a monitor token for the presence probe."""
    from spidi_server.auth import mint_token
    from spidi_server.settings import Settings

    settings = Settings(jwt_secret=secret)
    return (
        mint_token(settings, "probe", ["spidi:user"], "default", 6 * 3600),
        mint_token(settings, "probe-monitor", ["spidi:monitor"], "default", 6 * 3600),
    )


def mint_tokens(secret: str, count: int) -> list[str]:
    """One user token per connection, signed with the secret the Spidi servers are given."""
    from spidi_server.auth import mint_token
    from spidi_server.settings import Settings

    settings = Settings(jwt_secret=secret)
    return [mint_token(settings, f"load-{i}", ["spidi:user"], "default", 6 * 3600) for i in range(count)]


async def main_async(cfg: argparse.Namespace) -> int:
    """Run every selected server, print the table, write the JSON."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    load_start = os.getloadavg()
    cfg.secret = secrets.token_urlsafe(48)
    t = time.perf_counter()
    tokens = mint_tokens(cfg.secret, cfg.connections)
    cfg.probe_user_token, cfg.probe_monitor_token = probe_tokens(cfg.secret)
    pinning = f"server CPU {cfg.server_cpu}, generator CPU {cfg.gen_cpu}" if cfg.pin else "off"
    print(f"minted {len(tokens):,} tokens in {time.perf_counter() - t:.2f} s; pinning: {pinning}", flush=True)
    runs: list[Run] = []
    failures: dict[str, str] = {}
    for kind in cfg.kinds:
        try:
            runs.append(await bench_server(kind, cfg, tokens, stamp))
        except Exception as exc:  # one server failing must not lose the others' results
            failures[kind] = f"{type(exc).__name__}: {exc}"
            lines = [ln for ln in failures[kind].splitlines() if ln.strip()]
            print(
                f"[{kind}] FAILED: {' / '.join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)}",
                flush=True,
            )

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{stamp}-{cfg.label}.json"
    config = {
        k: v for k, v in vars(cfg).items() if k not in ("secret", "probe_user_token", "probe_monitor_token")
    }
    doc = {
        "label": cfg.label,
        "timestamp": stamp,
        "command": "python -m benchmarks.heartbeat_load " + shlex.join(cfg.argv),
        "json_name": out.name,
        "config": config,
        "host": {
            **host_info(ROOT),
            "server_cpu": cfg.server_cpu,
            "generator_cpu": cfg.gen_cpu,
            # A shared machine's other work shows here (and per window as "other load").
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "runs": {r.kind: r.to_doc() for r in runs},
        "failures": failures,
    }
    doc["ratios"] = ratios(doc["runs"])

    print()
    mode = "find-max" if cfg.find_max else "fixed rate"
    scenario = (
        f"storm {cfg.storm}"
        if cfg.storm
        else f"C={cfg.connections:,} R={cfg.rooms} H={cfg.rate:,.0f}/s T={cfg.duration:g}s ({mode})"
    )
    print(f"Spidi heartbeat load: {scenario}, sample {cfg.sample:g}, pinned={bool(cfg.pin)}")
    if runs:
        print_table(["figure", *doc["runs"]], figure_rows(doc["runs"], cfg.find_max))
    if doc["ratios"]:
        print()
        print_table(*ratio_rows(doc["ratios"]))
    for r in runs:
        for phase, profile in r.profile.items():
            print_profile(r.kind, phase, profile)
    for r in runs:
        errors = r.info.get("generator_errors") or {}
        if errors:
            print(f"\n[{r.kind}] generator errors:")
            for reason, n in Counter(errors).most_common(10):
                print(f"  {n:6}  {reason}")
    for kind, why in failures.items():
        print(f"\n[{kind}] did not run: {why}")

    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    summary = out.with_suffix(".md")
    summary.write_text(markdown_summary(doc))
    for path in (out, summary):
        print(
            f"{'results' if path is out else 'summary'}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
        )
    all_match = all(w.match for r in runs for w in r.windows)
    storms_ok = all(r.info["storm"]["all_in"] for r in runs if r.info.get("storm"))
    return 0 if runs and all_match and storms_ok and not failures else 1


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    argv = sys.argv[1:] if argv is None else argv
    cfg = resolve(build_parser().parse_args(argv))
    cfg.argv = list(argv)
    limit = raise_nofile_limit()
    if limit < cfg.connections + 256:
        print(
            f"warning: RLIMIT_NOFILE is {limit}; {cfg.connections} connections may not fit", file=sys.stderr
        )
    if cfg.pin:
        os.sched_setaffinity(0, {cfg.gen_cpu})
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_async(cfg))
    return uvloop.run(main_async(cfg))


if __name__ == "__main__":
    sys.exit(main())
