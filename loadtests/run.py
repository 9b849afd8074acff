"""One-command local load test (``make loadtest``): a throw-away Spidi node, Locust headless, a verdict.

``python -m loadtests.run`` starts ``spidi serve --dev`` in a temporary data directory on free
loopback ports (embedded Redis), mints a user and a monitor token with ``spidi token``, runs
``locust -f loadtests/locustfile.py --headless`` against it for a bounded time, prints Locust's
summary and a one-line verdict, and stops the node (SIGTERM, then wait) whatever happened.

Exit status: 0 when the failure ratio is at most ``--max-failure-ratio`` and heartbeats were
measured; 1 when not; 2 when the node or Locust could not run; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
_WS_LINE = re.compile(r"WebSocket \(STOMP\):\s+(ws://\S+)")
_OPS_LINE = re.compile(r"Ops:\s+(http://\S+)/metrics")


class RunError(Exception):
    """The node or Locust could not be run (exit status 2)."""


def _duration(text: str) -> float:
    """Seconds from Locust-style durations: ``20``, ``20s``, ``2m``, ``1h30m``."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 20, 20s, 2m, 1h30m")
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m loadtests.run``."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description="Run the Spidi Locust load test against a throw-away local node.",
        epilog="Arguments after '--' go to locust unchanged (e.g. -- --html report.html).",
    )
    parser.add_argument("-u", "--users", type=int, default=200, help="concurrent Locust users (default 200)")
    parser.add_argument(
        "-r", "--spawn-rate", type=float, default=50.0, help="users started per second (default 50)"
    )
    parser.add_argument(
        "-t", "--duration", type=_duration, default=20.0, help="run time, e.g. 20s, 2m (default 20s)"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        help="seconds between heartbeats of one user (default 1; real clients use 15)",
    )
    parser.add_argument(
        "--leave-probability",
        type=float,
        default=0.02,
        help="chance per tick of LEAVE + HELLO (default 0.02)",
    )
    parser.add_argument("--rooms", type=int, default=10, help="rooms the users spread over (default 10)")
    parser.add_argument("--room-prefix", default="load-", help="room code prefix (default load-)")
    parser.add_argument("--monitors", type=int, default=2, help="MonitorUsers among the users (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request counts as failed"
    )
    parser.add_argument(
        "--max-failure-ratio",
        type=float,
        default=0.01,
        help="highest failures/requests ratio that still passes (default 0.01)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (node log, CSV stats)"
    )
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


# -- the node -----------------------------------------------------------------------------------


class SpidiNode:
    """A ``spidi serve --dev`` subprocess on ephemeral loopback ports, with its output in a file."""

    def __init__(self, workdir: Path):
        self.data_dir = workdir / "data"
        self.log_path = workdir / "spidi.log"
        self.proc: subprocess.Popen | None = None
        self.ws_url = ""
        self.ops_url = ""
        # A hermetic node: no SPIDI_* settings (config file, Redis URL, secret) leak in from the shell.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
        self.env["PYTHONUNBUFFERED"] = "1"

    def _spidi(self, *args: str) -> list[str]:
        # ``python -m spidi_server.cli`` from the repository is the ``spidi`` script, independent of
        # how (or whether) the package is installed in the interpreter running us.
        return [sys.executable, "-m", "spidi_server.cli", *args]

    def start(self, timeout: float = 30.0) -> None:
        """Start the node and wait until it prints its WebSocket URL."""
        cmd = self._spidi(
            "serve",
            "--dev",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ops-host",
            "127.0.0.1",
            "--ops-port",
            "0",
            "--log-level",
            "warning",
        )
        with open(self.log_path, "wb") as log:
            # Own session: a Ctrl-C reaches Locust (which then prints its summary) but not the node,
            # which we stop ourselves once Locust is done.
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            ws, ops = _WS_LINE.search(text), _OPS_LINE.search(text)
            if ws and ops:
                self.ws_url, self.ops_url = ws.group(1), ops.group(1)
                return
            if self.proc.poll() is not None:
                raise RunError(f"spidi serve exited with status {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RunError(f"spidi serve did not come up within {timeout:g} s:\n{self.log_tail()}")

    @property
    def host(self) -> str:
        """The base URL for Locust's ``--host`` (the locustfile appends ``/ws``)."""
        return self.ws_url.removesuffix("/ws")

    def token(self, role: str, sub: str) -> str:
        """A token from ``spidi token`` for this node's development secret."""
        cmd = self._spidi("token", "--dev", "--data-dir", str(self.data_dir), "--role", role, "--sub", sub)
        done = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=30)
        if done.returncode != 0 or not done.stdout.strip():
            raise RunError(f"spidi token --role {role} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip().splitlines()[-1]

    def scrape(self) -> dict[str, float]:
        """A few counters from the node's /metrics (best effort; {} if unreachable)."""
        wanted = ("spidi_heartbeats_total", "spidi_errors_total", "spidi_sessions_ended_total")
        out: dict[str, float] = {}
        try:
            with urllib.request.urlopen(f"{self.ops_url}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return out
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            base = name.split("{", 1)[0]
            if base in wanted:
                with contextlib.suppress(ValueError):
                    out[name] = out.get(name, 0.0) + float(value)
        return out

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL the node's process group if it does not stop in time."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the node's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"


# -- Locust ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """Final statistics of one request name."""

    name: str
    requests: int
    failures: int
    median_ms: float
    p95_ms: float


def read_stats(path: Path) -> list[Row]:
    """The per-request rows of the JSON the locustfile writes to ``SPIDI_LOAD_STATS_FILE``."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"no statistics from locust ({exc})") from None
    return [
        Row(r["name"], r["requests"], r["failures"], r["median_ms"], r["p95_ms"]) for r in report["requests"]
    ]


def run_locust(args: argparse.Namespace, node: SpidiNode, workdir: Path) -> list[Row]:
    """Run Locust headless against the node and return its final stats; raise RunError if it did not run."""
    stats_file = workdir / "locust-stats.json"
    env = dict(os.environ)
    env.pop("SPIDI_JWT_SECRET", None)
    env.update(
        SPIDI_TOKEN_USER=node.token("user", "loadtest-user"),
        SPIDI_TOKEN_MONITOR=node.token("monitor", "loadtest-monitor"),
        SPIDI_LOAD_HEARTBEAT_INTERVAL=str(args.heartbeat_interval),
        SPIDI_LOAD_LEAVE_PROBABILITY=str(args.leave_probability),
        SPIDI_LOAD_ROOMS=str(args.rooms),
        SPIDI_LOAD_ROOM_PREFIX=args.room_prefix,
        SPIDI_LOAD_MONITORS=str(args.monitors),
        SPIDI_LOAD_TIMEOUT=str(args.timeout),
        SPIDI_LOAD_STATS_FILE=str(stats_file),
    )
    extra = [a for a in args.locust_args if a != "--"]
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(args.users),
        "-r",
        f"{args.spawn_rate:g}",
        "-t",
        f"{args.duration:g}s",
        "--host",
        node.host,
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--stop-timeout",
        "5",
        *extra,
    ]
    print(
        f"$ locust -f {LOCUSTFILE.relative_to(REPO)} --headless -u {args.users} -r {args.spawn_rate:g} "
        f"-t {args.duration:g}s --host {node.host} --only-summary",
        flush=True,
    )
    limit = args.duration + 90
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        stdout, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        raise RunError(f"locust did not finish within {limit:g} s") from None
    finally:
        if proc.poll() is None:  # interrupted or overdue: let Locust stop, print its summary and go
            _stop_locust(proc)
    if proc.returncode != 0:
        raise RunError(f"locust exited with status {proc.returncode}")
    return read_stats(stats_file)


def verdict(rows: list[Row], max_ratio: float) -> tuple[bool, str]:
    """Pass/fail and a one-line summary from the stats rows."""
    requests = sum(r.requests for r in rows)
    failures = sum(r.failures for r in rows)
    beats = next((r for r in rows if r.name == "heartbeat"), None)
    ratio = failures / requests if requests else 1.0
    line = f"{requests} requests, {failures} failures ({ratio:.2%}, limit {max_ratio:.2%})"
    if beats is not None:
        line += (
            f"; heartbeat: {beats.requests} round trips, {beats.failures} failed, "
            f"median {beats.median_ms:g} ms, p95 {beats.p95_ms:g} ms"
        )
    if beats is None or beats.requests == 0:
        return False, line + "; no heartbeat was measured"
    return ratio <= max_ratio, line


def _stop_locust(proc: subprocess.Popen) -> None:
    # A Ctrl-C already reached Locust (same process group); a SIGTERM to us did not.
    for sig, grace in ((None, 3), (signal.SIGINT, 15), (signal.SIGKILL, 5)):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
            return


# -- main -----------------------------------------------------------------------------------------


def _raise_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Start a node, run Locust against it, stop the node; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.users < 1 or args.spawn_rate <= 0 or args.duration <= 0 or args.heartbeat_interval <= 0:
        print(
            "loadtests.run: users, spawn rate, duration and heartbeat interval must be positive",
            file=sys.stderr,
        )
        return 2
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="spidi-load-"))
    node = SpidiNode(workdir)
    status = 2
    try:
        node.start()
        print(f"Spidi node at {node.ws_url} (ops {node.ops_url}), data in {node.data_dir}", flush=True)
        rows = run_locust(args, node, workdir)
        server = node.scrape()
        ok, line = verdict(rows, args.max_failure_ratio)
        if server:
            counters = ", ".join(f"{k} {v:g}" for k, v in sorted(server.items()))
            print(f"Spidi node counters: {counters}")
        print(f"Spidi load test {'PASSED' if ok else 'FAILED'}: {line}", flush=True)
        status = 0 if ok else 1
    except RunError as exc:
        print(f"loadtests.run: {exc}", file=sys.stderr, flush=True)
        status = 2
    except KeyboardInterrupt:
        print("loadtests.run: interrupted", file=sys.stderr, flush=True)
        status = 130
    finally:
        code = node.stop()
        if code not in (None, 0):
            print(
                f"loadtests.run: spidi serve exited with status {code}:\n{node.log_tail()}", file=sys.stderr
            )
        if args.keep:
            print(f"Kept {workdir} (spidi.log, locust-stats.json, data/)")
        else:
            _remove_tree(workdir)
        signal.signal(signal.SIGTERM, previous)
    return status


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
