"""How fast the history writer drains the event stream into PostgreSQL, and how few rows it needs.

Simulates the events Spidi nodes emit for a steady heartbeat load (default: 20,000 heartbeats/s
from 10,000 sessions in 10 rooms on 4 nodes, 60 s checkpoints, 1 % session churn per minute) for a
few simulated minutes, appends them all to the Redis stream exactly as the server does (see
spidi_server/stores/events.py), then times one writer draining the backlog.

    python -m benchmarks.bench_writer [--minutes 2] [--sessions 10000] [--json out.json]

Uses an embedded Redis and an embedded PostgreSQL in a temporary directory, or
SPIDI_BENCH_REDIS_URL / SPIDI_BENCH_POSTGRES_DSN (a database the benchmark may fill).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import redis

from spidi_server import logs
from spidi_server.history.embedded_pg import EmbeddedPostgres
from spidi_server.history.migrate import migrate
from spidi_server.history.sql.sessions import table_counts
from spidi_server.history.writer_loop import STATUS_KEY, run_writer
from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings
from spidi_server.stores import events
from spidi_server.stores.embedded_redis import EmbeddedRedis

TENANT = "bench"
CLIENT = {"client_id": "bench", "app_version": "2.4.1", "device": "Pixel 8", "os": "Android 15"}


@dataclasses.dataclass
class Workload:
    """The simulated load."""

    sessions: int = 10_000
    rooms: int = 10
    nodes: int = 4
    heartbeats_per_s: int = 20_000
    minutes: int = 2
    churn: float = 0.01  # share of sessions that end (and are replaced) each minute

    @property
    def heartbeats(self) -> int:
        """Heartbeats the simulated minutes represent."""
        return self.heartbeats_per_s * 60 * self.minutes


class _Session:
    __slots__ = ("sid", "room", "node", "user", "started", "beats", "lat_sum", "lat_min", "lat_max", "last")

    def __init__(self, room: int, node: int, user: str, started: int):
        self.sid = str(uuid.uuid4())
        self.room, self.node, self.user, self.started = room, node, user, started
        self.beats, self.lat_sum, self.lat_min, self.lat_max, self.last = 0, 0.0, None, None, started


def generate(w: Workload, t0: int, rng: random.Random) -> list[dict]:
    """The events the nodes would emit: starts, a checkpoint per session per minute, churn ends and
    starts, one room sample per room, node and minute."""
    out: list[dict] = []
    codes = [f"room-{r}" for r in range(w.rooms)]
    per_session_per_min = w.heartbeats_per_s * 60 / w.sessions

    def start(now: int) -> _Session:
        room, node = rng.randrange(w.rooms), rng.randrange(w.nodes)
        s = _Session(room, node, f"user-{rng.randrange(10**6)}", now)
        out.append(
            events.session_started(
                session_id=s.sid,
                room_id=room_id_for(TENANT, codes[s.room]),
                room_code=codes[s.room],
                tenant=TENANT,
                user_id=s.user,
                client_id=CLIENT["client_id"],
                app_version=CLIENT["app_version"],
                device=CLIENT["device"],
                os=CLIENT["os"],
                ip="10.0.0.1",
                node_id=f"node-{s.node}",
                started_at=now,
            )
        )
        return s

    def figures(s: _Session) -> dict:
        return {
            "session_id": s.sid,
            "room_id": room_id_for(TENANT, codes[s.room]),
            "tenant": TENANT,
            "started_at": s.started,
            "heartbeats": s.beats,
            "last_heartbeat_at": s.last,
            "latency_sum": s.lat_sum,
            "latency_count": s.beats,
            "latency_min": s.lat_min,
            "latency_max": s.lat_max,
        }

    live = [start(t0 + i % 60_000) for i in range(w.sessions)]
    for minute in range(w.minutes):
        end_of_minute = t0 + (minute + 1) * 60_000
        online = [[0] * w.nodes for _ in range(w.rooms)]
        hist = [[[0] * (len(events.LATENCY_BUCKETS_MS) + 1) for _ in range(w.nodes)] for _ in range(w.rooms)]
        lat = [[[0.0, 0] for _ in range(w.nodes)] for _ in range(w.rooms)]
        for s in live:
            online[s.room][s.node] += 1
            beats = int(per_session_per_min)
            latency = rng.lognormvariate(3.5, 0.6)  # one draw per session-minute keeps generation quick
            s.beats += beats
            s.lat_sum += latency * beats
            s.lat_min = latency if s.lat_min is None else min(s.lat_min, latency)
            s.lat_max = latency if s.lat_max is None else max(s.lat_max, latency)
            s.last = end_of_minute - rng.randrange(500)
            bucket = next((i for i, b in enumerate(events.LATENCY_BUCKETS_MS) if latency <= b), -1)
            hist[s.room][s.node][bucket] += beats
            lat[s.room][s.node][0] += latency * beats
            lat[s.room][s.node][1] += beats
            out.append(events.session_checkpoint(**figures(s)))
        leaving = rng.sample(range(len(live)), int(len(live) * w.churn))
        for i in sorted(leaving, reverse=True):
            s = live.pop(i)
            out.append(
                events.session_ended(
                    **figures(s),
                    ended_at=end_of_minute,
                    reason="leave",
                    user_id=s.user,
                    room_code=codes[s.room],
                    **CLIENT,
                )
            )
            live.append(start(end_of_minute))
        for r in range(w.rooms):
            for n in range(w.nodes):
                out.append(
                    events.room_sample(
                        room_id=room_id_for(TENANT, codes[r]),
                        room_code=codes[r],
                        tenant=TENANT,
                        node_id=f"node-{n}",
                        bucket=t0 + minute * 60_000,
                        online_sum=online[r][n] * 240,
                        online_samples=240,
                        online_max=online[r][n],
                        latency_sum=lat[r][n][0],
                        latency_count=lat[r][n][1],
                        latency_hist=hist[r][n],
                    )
                )
    return out


def push(client: redis.Redis, evs: list[dict]) -> None:
    """XADD the events as the server does, pipelined."""
    for i in range(0, len(evs), 5000):
        pipe = client.pipeline(transaction=False)
        for ev in evs[i : i + 5000]:
            pipe.xadd(events.STREAM, events.encode(ev), maxlen=events.STREAM_MAXLEN, approximate=True)
        pipe.execute()


def drain(
    settings: Settings, client: redis.Redis, expected: int, timeout: float = 600.0
) -> tuple[float, dict]:
    """Run a writer until it has written ``expected`` events; (seconds, final status)."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_writer, args=(settings, stop), kwargs={"consumer": "bench"}, daemon=True
    )
    started = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + timeout
    while int(client.hget(STATUS_KEY, "events_written") or 0) < expected:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"writer did not finish: {client.hgetall(STATUS_KEY)}")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join(30)
    return elapsed, client.hgetall(STATUS_KEY)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print (and return) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--heartbeats-per-s", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    logs.configure("warning")  # the writer's warnings (a backlog this size is one) as JSON lines
    w = Workload(args.sessions, args.rooms, args.nodes, args.heartbeats_per_s, args.minutes)

    with tempfile.TemporaryDirectory(prefix="spidi-bench-") as tmp:
        embedded_redis = embedded_pg = None
        redis_url = os.environ.get("SPIDI_BENCH_REDIS_URL")
        if not redis_url:
            embedded_redis = EmbeddedRedis(Path(tmp) / "redis").start()
            redis_url = embedded_redis.url
        dsn = os.environ.get("SPIDI_BENCH_POSTGRES_DSN")
        if not dsn:
            embedded_pg = EmbeddedPostgres(Path(tmp) / "postgres")
            dsn = embedded_pg.start()
        else:
            migrate(dsn)
        try:
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            client.delete(events.STREAM, STATUS_KEY)
            settings = Settings(
                data_dir=tmp,
                redis_url=redis_url,
                postgres_dsn=dsn,
                writer_batch_size=args.batch_size,
                writer_flush_interval_s=0.05,
                retention_hot_days=3650,
                retention_drop_days=3650,
            )
            # Warm-up: first start migrates and creates this month's partitions; not timed.
            drain(settings, client, 0)

            t0 = int(time.time() // 60 * 60_000)
            rng = random.Random(7)
            gen_started = time.perf_counter()
            evs = generate(w, t0, rng)
            gen_s = time.perf_counter() - gen_started
            push_started = time.perf_counter()
            push(client, evs)
            push_s = time.perf_counter() - push_started

            elapsed, status = drain(settings, client, len(evs))
            with psycopg.connect(dsn, autocommit=True) as conn:
                counts = table_counts(conn)
            stored_rows = counts["dat_spd_session"] + counts["dat_spd_room_stats"]
            # Rows inserted or updated: session and room-minute upserts, plus the ledger rows (room
            # samples only; session events are idempotent without it).
            row_writes = int(status["rows_upserted"]) + counts["spd_event_ledger"]
            result = {
                "workload": dataclasses.asdict(w),
                "events": len(evs),
                "heartbeats_represented": w.heartbeats,
                "generate_s": round(gen_s, 2),
                "push_s": round(push_s, 2),
                "drain_s": round(elapsed, 3),
                "events_per_s": round(len(evs) / elapsed),
                "batches": int(status["batches"]),
                "live_event_rate_per_s": round(len(evs) / (w.minutes * 60), 1),
                "headroom_x": round((len(evs) / elapsed) / (len(evs) / (w.minutes * 60)), 1),
                "rows_stored": stored_rows,
                "rows_stored_per_heartbeat": round(stored_rows / w.heartbeats, 5),
                "row_writes_incl_ledger": row_writes,
                "row_writes_per_heartbeat": round(row_writes / w.heartbeats, 5),
                "table_counts": counts,
            }
        finally:
            if embedded_pg is not None:
                embedded_pg.stop()
            if embedded_redis is not None:
                embedded_redis.stop()

    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
