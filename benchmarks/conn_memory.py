"""What one idle connection costs a Spidi node, and who holds it.

Starts ``spidi serve --dev`` with tracemalloc on (the ``--serve`` half of this module), takes a
snapshot, opens N connections with ``loadgen.py`` (CONNECT, two SUBSCRIBEs, HELLO: the heartbeat
benchmark's connections), lets them settle and takes a second one. It prints, per connection:

- the RSS growth of the node (inflated by tracemalloc's own bookkeeping: ``--no-trace`` gives the
  plain figure, as ``heartbeat_load.py`` measures it);
- the traced Python heap growth;
- the garbage-collected objects by type (count and ``sys.getsizeof`` bytes), e.g. one
  ``StompConnection`` of 216 bytes;
- the allocations by the line of code that made them (tracemalloc's diff).

Run: ``python -m benchmarks.conn_memory [-c 3000] [--no-trace] [--top 30]``. Figures go to stdout;
the snapshots and the node's data directory to ``test-artifacts/conn-memory/`` (ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import pickle
import re
import secrets
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "test-artifacts" / "conn-memory"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def serve(argv: list[str]) -> int:
    """The node's side: ``spidi serve`` with tracemalloc; SIGUSR1 writes snapshot number n."""
    tracemalloc.start(int(os.environ.get("CONN_MEMORY_FRAMES", "1")))
    count = [0]

    def dump(signum, frame) -> None:
        gc.collect()
        n, count[0] = count[0], count[0] + 1
        objects: collections.Counter[str] = collections.Counter()
        sizes: collections.Counter[str] = collections.Counter()
        for o in gc.get_objects():
            t = type(o)
            name = f"{t.__module__}.{t.__qualname__}"
            objects[name] += 1
            sizes[name] += sys.getsizeof(o)
        tracemalloc.take_snapshot().dump(str(OUT / f"snap-{n}.tm"))
        with open(OUT / f"types-{n}.pkl", "wb") as f:
            pickle.dump((objects, sizes, tracemalloc.get_traced_memory()[0]), f)
        (OUT / f"done-{n}").write_text("ok")

    signal.signal(signal.SIGUSR1, dump)
    from spidi_server.cli import main

    return main(argv)


async def measure(cfg: argparse.Namespace) -> None:
    """The driver: start the node, snapshot, connect, settle, snapshot, print the differences."""
    from benchmarks.heartbeat_load import mint_tokens
    from benchmarks.loadgen import LoadGenerator

    secret = secrets.token_urlsafe(48)
    tokens = mint_tokens(secret, cfg.connections)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        SPIDI_JWT_SECRET=secret,
        SPIDI_HEARTBEAT_TIMEOUT_MS=str(6 * 3600 * 1000),
        SPIDI_DEFAULT_ROOM_CAPACITY=str(max(1000, cfg.connections)),
        SPIDI_LOG_LEVEL="warning",
    )
    node_args = ["serve", "--dev", "--data-dir", str(OUT / "data"), "--host", "127.0.0.1", "--port", "0"]
    node_args += ["--ops-port", "0"]
    how = ["-m", "spidi_server.cli"] if cfg.no_trace else ["-m", "benchmarks.conn_memory", "--serve"]
    log = OUT / "server.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *how, *node_args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"ws://[^\s/]+:(\d+)/ws", log.read_text(errors="replace"))
            port = int(found.group(1)) if found else None
            await asyncio.sleep(0.05)
        if port is None:
            raise RuntimeError(f"the node did not start:\n{log.read_text(errors='replace')[-2000:]}")
        await asyncio.sleep(1.0)

        async def snapshot(n: int) -> None:
            if not cfg.no_trace:
                proc.send_signal(signal.SIGUSR1)
                while not (OUT / f"done-{n}").exists():
                    await asyncio.sleep(0.05)

        await snapshot(0)
        rss_before = _rss(proc.pid)
        gen = LoadGenerator("127.0.0.1", port, tokens, rooms=10, connect_concurrency=100)
        result = await gen.connect_all(cfg.connections)
        n = result.connected
        await asyncio.sleep(cfg.settle)
        rss_idle = _rss(proc.pid)
        await snapshot(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"{n}/{cfg.connections} connections in {result.seconds:.1f} s")
    print(f"RSS per idle connection: {(rss_idle - rss_before) / max(1, n) / 1024:.2f} KiB", end="")
    print(" (tracemalloc on: inflated)" if not cfg.no_trace else "")
    if cfg.no_trace or not n:
        return
    before, after = (pickle.loads((OUT / f"types-{i}.pkl").read_bytes()) for i in (0, 1))
    print(f"traced Python heap per connection: {(after[2] - before[2]) / n:.0f} B")
    print("\nobjects per connection (gc-tracked; count, sys.getsizeof bytes):")
    rows = []
    for name in set(after[0]) | set(before[0]):
        count = (after[0][name] - before[0][name]) / n
        size = (after[1][name] - before[1][name]) / n
        if abs(count) >= 0.5 or abs(size) >= 8:
            rows.append((size, count, name))
    for size, count, name in sorted(rows, reverse=True):
        print(f"  {count:6.2f} x {size:7.1f} B  {name}")
    print(f"\nallocations per connection by line (top {cfg.top}; bytes, blocks):")
    old = tracemalloc.Snapshot.load(str(OUT / "snap-0.tm"))
    new = tracemalloc.Snapshot.load(str(OUT / "snap-1.tm"))
    for stat in new.compare_to(old, "lineno")[: cfg.top]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename, ROOT) if str(ROOT) in frame.filename else frame.filename}:{frame.lineno}"
        print(f"  {stat.size_diff / n:7.1f} B {stat.count_diff / n:5.2f}  {where}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return serve(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--connections", type=int, default=3000)
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds between the connects and the snapshot"
    )
    parser.add_argument("--top", type=int, default=30, help="lines of the allocation table")
    parser.add_argument("--no-trace", action="store_true", help="plain RSS only (no tracemalloc)")
    cfg = parser.parse_args()
    import shutil

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    asyncio.run(measure(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
