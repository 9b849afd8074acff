"""Node CPU per flush pipeline of the hot store, against a real embedded redis-server.

The hot store (spidi_server/stores/hot_store.py) is started on a private redis-server (a unix
socket, as the node's embedded one), then, ``--rounds`` times: one batch queued and ``flush()``
awaited, so each round is one pipeline through the flusher (queue, build, send, read, answer).
The process's CPU time (the node's side only: Redis is another process) is divided by the
rounds. Shapes:

- ``small``: a history event, a TTL touch with a field (HSET + 2 EXPIRE) and a PUBLISH: 5 commands;
- ``joins``: 13 joins into one room with their 13 history events and a PUBLISH: the connect
  ramp's pipeline (join.lua, the indexes, the events: ~44 commands).

It imports ``spidi_server`` from ``PYTHONPATH``, so the same file measures two builds (A/B):

    PYTHONPATH=/path/to/base python benchmarks/flush_pipeline.py --shape joins
    PYTHONPATH=$PWD          python benchmarks/flush_pipeline.py --shape joins
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import uvloop

from spidi_server.stores.client import connect
from spidi_server.stores.embedded_redis import EmbeddedRedis
from spidi_server.stores.hot_store import HotStore

JOINS = 13


def queue(store: HotStore, shape: str, i: int) -> None:
    """One round's batch."""
    now_ms = int(time.time() * 1000)
    if shape == "small":
        store.event({"id": f"e{i}", "kind": "heartbeat_gap", "sessionId": f"s{i}"})
        store.update_session("bench-room", f"s{i}", "t1", f"u{i}", 120, {"ip": "10.0.0.1"})
        store.publish("spidi:roster:bench", b'{"left":[]}')
        return
    for k in range(JOINS):
        sid = f"s{i}-{k}"
        fields = {"userId": f"u{k}", "clientId": f"c{k}", "ip": "10.0.0.1", "connectedAt": now_ms}
        store.join(f"room{i % 8}", "t1", "code", 0, sid, f"u{k}", now_ms, 120, fields)
        store.event({"id": f"e{sid}", "kind": "session_started", "sessionId": sid})
    store.publish("spidi:roster:bench", b'{"joined":[]}')


async def run(url: str, shape: str, rounds: int, warmup: int) -> dict:
    store = HotStore(connect(url), node_id="bench")
    await store.start()
    commands: list[int] = []
    store.on_flush = lambda count, seconds, ok: commands.append(count)
    try:
        for i in range(warmup):
            queue(store, shape, i)
            assert await store.flush()
        commands.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(warmup, warmup + rounds):
            queue(store, shape, i)
            assert await store.flush()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await store.close()
    return {
        "shape": shape,
        "rounds": rounds,
        "pipelines": len(commands),
        "commands_per_pipeline": sum(commands) / max(1, len(commands)),
        "cpu_us_per_pipeline": cpu / max(1, len(commands)) * 1e6,
        "wall_us_per_pipeline": wall / max(1, len(commands)) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("small", "joins"), default="small")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp(prefix="spidi-flush-bench-"))
    try:
        with EmbeddedRedis(path) as server:
            result = uvloop.run(run(server.url, args.shape, args.rounds, args.warmup))
    finally:
        shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
