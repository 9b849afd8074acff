"""Point-in-time reads of a busy room: GET /rooms/{id}/roster?at= and /rooms/{id}/timeline latency
against a month of one room's session history, written the way production writes it.

The history is filled THROUGH THE WRITER: for each of ``--users`` users and each of ``--days`` days
ending now, 2 to 4 sessions (lognormal lengths, median ~40 min) as session_started /
session_ended events with their real (past) times, pushed to the Redis stream in pipelined
batches and ingested by one history writer (``run_writer``, as ``spidi serve`` runs it); sessions
still going at the end stay open with a checkpoint a few seconds old. Then a real node serves the
REST API and the calls are timed over HTTP on loopback, one at a time:

Each call is also timed without HTTP (the SQL of history/sql/pitr.py in a tenant transaction).

* roster?at=<uniformly random instant of the history (30 days at most)> (as an admin: IP addresses included)
* timeline: the last 24 h at 5m, a random day at 1m, the month at 1h, a random week as 400 points

``--without-indexes`` then drops migration 0015's indexes and times the same calls again.

    python -m benchmarks.pitr_bench                     # 1,000 users, 30 days (~90k sessions)
    python -m benchmarks.pitr_bench --users 100 --days 3 --calls 50    # quick
    python -m benchmarks.pitr_bench --without-indexes --markdown benchmarks/results/x.md

Uses an embedded Redis and an embedded PostgreSQL in a temporary directory, or
SPIDI_BENCH_REDIS_URL / SPIDI_BENCH_POSTGRES_DSN (a database the benchmark may fill).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
import redis

from spidi_server import logs
from spidi_server.auth import mint_token
from spidi_server.history.embedded_pg import EmbeddedPostgres
from spidi_server.history.migrate import migrate
from spidi_server.history.sql import pitr
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.history.writer_loop import STATUS_KEY, run_writer
from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings
from spidi_server.stores import events
from spidi_server.stores.embedded_redis import EmbeddedRedis

TENANT = "bench"
ROOM = "lecture-hall"
DAY_MS = 86_400_000
PUSH_BATCH = 10_000
MAX_AHEAD = 200_000  # events pushed and not yet written, at most
SECRET = "pitr-bench-secret-0123456789abcdef0123456789"
INDEXES = ("dat_spd_session_room_end_idx", "dat_spd_session_room_open_idx")
TIMELINES = {
    "24h@5m": lambda now, rng: (now - timedelta(hours=24), now, {"step": "5m"}),
    "day@1m": lambda now, rng: _random_span(now, rng, timedelta(days=1), {"step": "1m"}),
    "month@1h": lambda now, rng: (now - timedelta(days=30), now, {"step": "1h"}),
    "week/400pts": lambda now, rng: _random_span(now, rng, timedelta(days=7), {"points": "400"}),
}


def _random_span(now: datetime, rng: random.Random, span: timedelta, extra: dict):
    start = now - timedelta(days=30) + (timedelta(days=30) - span) * rng.random()
    return start, start + span, extra


def generate(
    users: int, days: int, now_ms: int, rng: random.Random, room: str = ROOM
) -> tuple[list[dict], int, int]:
    """(events, sessions, still open): every user's sessions of the ``days`` days before now in ``room``."""
    room_id = room_id_for(TENANT, room)
    out: list[dict] = []
    sessions = still_open = 0
    first_day = now_ms - days * DAY_MS
    for u in range(users):
        user = f"user-{u:05d}"
        device, os_name = rng.choice([("Pixel 8", "Android 15"), ("iPhone 15", "iOS 18"), (None, "Windows")])
        for day in range(days):
            k = rng.randint(2, 4)
            starts = sorted(first_day + day * DAY_MS + rng.randrange(DAY_MS) for _ in range(k))
            for i, start in enumerate(starts):
                limit = starts[i + 1] if i + 1 < k else start + DAY_MS
                end = min(start + int(rng.lognormvariate(7.8, 0.8) * 1000), limit - 1000)
                if end <= start:
                    continue
                sid = str(uuid.uuid4())
                info = {"client_id": "bench", "app_version": "3.1.0", "device": device, "os": os_name}
                out.append(
                    events.session_started(
                        session_id=sid,
                        room_id=room_id,
                        room_code=room,
                        tenant=TENANT,
                        user_id=user,
                        node_id=f"node-{u % 4}",
                        started_at=start,
                        ip=f"10.{u // 250}.{u % 250}.{i + 1}",
                        **info,
                    )
                )
                sessions += 1
                live = end >= now_ms
                last_hb = now_ms - 5_000 if live else end
                figures = {
                    "session_id": sid,
                    "room_id": room_id,
                    "tenant": TENANT,
                    "started_at": start,
                    "heartbeats": max(1, (last_hb - start) // 30_000),
                    "last_heartbeat_at": last_hb,
                    "latency_sum": 40.0,
                    "latency_count": 1,
                    "latency_min": 40.0,
                    "latency_max": 40.0,
                }
                if live:
                    still_open += 1
                    out.append(events.session_checkpoint(**figures))
                else:
                    reason = rng.choices(["leave", "timeout", "disconnect"], [80, 10, 10])[0]
                    out.append(
                        events.session_ended(
                            **figures, ended_at=end, reason=reason, user_id=user, room_code=room, **info
                        )
                    )
    return out, sessions, still_open


def fill(settings: Settings, client: redis.Redis, rooms: Iterable[list[dict]]) -> tuple[float, int]:
    """Push each room's events in pipelined batches while one writer ingests them; (seconds until
    all are written, events pushed). Rooms come one at a time: a busy database's events never sit
    in memory all at once."""
    stop = threading.Event()
    writer = threading.Thread(
        target=run_writer, args=(settings, stop), kwargs={"consumer": "pitr"}, daemon=True
    )
    started = time.perf_counter()
    writer.start()
    pushed = 0
    for evs in rooms:
        for i in range(0, len(evs), PUSH_BATCH):
            # At most a room's worth ahead of the writer: the stream stays a bounded size in Redis.
            while pushed + i - int(client.hget(STATUS_KEY, "events_written") or 0) > MAX_AHEAD:
                if not writer.is_alive():
                    raise RuntimeError(f"writer died: {client.hgetall(STATUS_KEY)}")
                time.sleep(0.05)
            pipe = client.pipeline(transaction=False)
            for ev in evs[i : i + PUSH_BATCH]:
                pipe.xadd(events.STREAM, events.encode(ev), maxlen=events.STREAM_MAXLEN, approximate=True)
            pipe.execute()
        pushed += len(evs)
    deadline = time.monotonic() + 3600
    while int(client.hget(STATUS_KEY, "events_written") or 0) < pushed:
        if time.monotonic() > deadline or not writer.is_alive():
            raise RuntimeError(f"writer did not finish: {client.hgetall(STATUS_KEY)}")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    writer.join(60)
    return elapsed, pushed


def summary(samples: list[float]) -> dict:
    """p50, p95, max and mean of latencies in ms."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


async def measure(base: str, token: str, calls: int, days: int, rng: random.Random) -> dict:
    """Time ``calls`` roster calls and ``calls`` timeline calls (spread over the shapes)."""
    room_id = room_id_for(TENANT, ROOM)
    headers = {"Authorization": f"Bearer {token}"}
    out: dict = {}
    async with aiohttp.ClientSession(base, headers=headers) as http:

        async def timed(path: str, params: dict) -> tuple[float, dict]:
            t = time.perf_counter()
            async with http.get(path, params=params) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"{path} {params}: {resp.status} {body}")
            return (time.perf_counter() - t) * 1000, body

        for _ in range(5):  # warm the pool and caches; not counted
            await timed(f"/api/v1/rooms/{room_id}/roster", {"at": datetime.now(UTC).isoformat()})
        now = datetime.now(UTC) - timedelta(seconds=1)
        roster, sizes = [], []
        for _ in range(calls):
            at = now - timedelta(days=days) * rng.random()
            ms, body = await timed(f"/api/v1/rooms/{room_id}/roster", {"at": at.isoformat()})
            roster.append(ms)
            sizes.append(len(body["items"]))
        out["roster"] = {
            **summary(roster),
            "entries_mean": round(statistics.fmean(sizes), 1),
            "entries_max": max(sizes),
        }
        every = []
        for name, shape in TIMELINES.items():
            samples = []
            for _ in range(max(1, calls // len(TIMELINES))):
                start, end, extra = shape(now, rng)
                ms, body = await timed(
                    f"/api/v1/rooms/{room_id}/timeline",
                    {"from": start.isoformat(), "to": end.isoformat(), **extra},
                )
                samples.append(ms)
            out[f"timeline {name}"] = {**summary(samples), "points": len(body["points"])}
            every += samples
        out["timeline (all shapes)"] = summary(every)
    return out


def measure_sql(dsn: str, calls: int, days: int, seed: int, lost_after_s: float) -> dict:
    """The same reads without HTTP: ``history.sql.pitr`` inside a tenant transaction, as the API
    runs them (what the indexes change, without the node's and the client's own time)."""
    rng = random.Random(seed)
    room_id = room_id_for(TENANT, ROOM)
    out: dict = {}
    with psycopg.connect(dsn) as conn:

        def timed(work) -> float:
            t = time.perf_counter()
            with tenant_transaction(conn, TENANT):
                work(conn)
            return (time.perf_counter() - t) * 1000

        now = datetime.now(UTC) - timedelta(seconds=1)
        lost_before = now - timedelta(seconds=lost_after_s)
        samples = []
        for _ in range(calls):
            at = now - timedelta(days=days) * rng.random()
            samples.append(timed(lambda c, at=at: pitr.roster_at(c, room_id, at, lost_before)))
        out["roster"] = summary(samples)
        every = []
        for name, shape in TIMELINES.items():
            samples = []
            for _ in range(max(1, calls // len(TIMELINES))):
                start, end, extra = shape(now, rng)
                if "step" in extra:
                    step = timedelta(
                        seconds=int(extra["step"][:-1]) * {"m": 60, "h": 3600}[extra["step"][-1]]
                    )
                    points = -(-(end - start) // step)
                else:
                    points = int(extra["points"])
                    step = (end - start) / points
                samples.append(
                    timed(
                        lambda c, s=start, st=step, n=points: pitr.online_counts(
                            c, room_id, s, st, n, lost_before
                        )
                    )
                )
            out[f"timeline {name}"] = summary(samples)
            every += samples
        out["timeline (all shapes)"] = summary(every)
    return out


async def serve_and_measure(settings: Settings, calls: int, days: int, seed: int) -> dict:
    """Start a node (REST API on its ops port) and time the calls against it."""
    from spidi_server.node import Node

    node = Node(settings)
    await node.start()
    try:
        token = mint_token(settings, "bench-admin", ["spidi:admin"], TENANT, 3600)
        return await measure(node.ops.url, token, calls, days, random.Random(seed))
    finally:
        await node.stop()


def markdown(result: dict) -> str:
    """The results as a short markdown summary."""
    lines = [
        f"# Point-in-time rosters and timelines (issue #19) — {result['date']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}",
        "",
        f"History: {result['sessions']:,} sessions of {result['users']:,} users over {result['days']} days in the room "
        f"({result['still_open']} still open), and {result['other_rooms']} other rooms alike "
        f"({result['stored']:,} sessions in all): {result['events']:,} events pushed to the stream and ingested by the "
        f"writer in {result['fill_s']} s; PostgreSQL {result['postgres']}, VACUUM ANALYZEd after the fill (as autovacuum would).",
        "",
        "Over HTTP: calls on loopback to a real node (client in the same process), one at a time, as an admin",
        "(IP addresses included). SQL only: the same reads (history/sql/pitr.py) in a tenant transaction, as",
        "the API runs them. Roster `at` uniformly random over the history (up to 30 days).",
        f"Load average when it finished: {result['loadavg']} (a shared machine: other jobs ran meanwhile).",
        "",
    ]
    for label, kinds in result["runs"].items():
        for kind, figures in kinds.items():
            lines += [
                f"## {label}: {kind}",
                "",
                "| call | n | p50 ms | p95 ms | max ms | notes |",
                "|---|---|---|---|---|---|",
            ]
            for name, f in figures.items():
                notes = ""
                if "entries_mean" in f:
                    notes = f"{f['entries_mean']} entries on average, {f['entries_max']} at most"
                elif "points" in f:
                    notes = f"{f['points']} points"
                lines.append(
                    f"| {name} | {f['n']} | {f['p50_ms']} | {f['p95_ms']} | {f['max_ms']} | {notes} |"
                )
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print (and return) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="roster calls, and timeline calls in all")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--other-rooms",
        type=int,
        default=0,
        help="also fill this many other rooms of the tenant alike (a database where the room is one of many)",
    )
    parser.add_argument(
        "--without-indexes", action="store_true", help="also time without migration 0015's indexes"
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--markdown", help="also write a markdown summary to this file")
    args = parser.parse_args(argv)
    if not (1 <= args.users <= 20_000 and 1 <= args.days <= 60 and 1 <= args.calls <= 10_000):
        parser.error(
            "--users 1..20000, --days 1..60 (the API reads 30 days back at most here), --calls 1..10000"
        )
    logs.configure("warning")
    rng = random.Random(args.seed)
    now_ms = int(time.time() * 1000)
    evs, sessions, still_open = generate(args.users, args.days, now_ms, rng)

    with tempfile.TemporaryDirectory(prefix="spidi-pitr-bench-") as tmp:
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
                host="127.0.0.1",
                port=0,
                ops_host="127.0.0.1",
                ops_port=0,
                data_dir=str(Path(tmp) / "data"),
                redis_url=redis_url,
                postgres_dsn=dsn,
                writer="external",
                jwt_secret=SECRET,
                writer_batch_size=10_000,
                writer_flush_interval_s=0.2,
                writer_sweep_interval_s=0,  # the open sessions are "live": nothing to sweep
                tenant_defaults=False,
            ).validate()
            noise = (
                generate(args.users, args.days, now_ms, random.Random(args.seed + n), f"other-{n}")[0]
                for n in range(args.other_rooms)
            )
            fill_s, pushed = fill(settings, client, itertools.chain([evs], noise))
            with psycopg.connect(dsn, autocommit=True) as conn:
                # What autovacuum does after a load: hint bits and the visibility map set, so the
                # first timed reads do not pay for them (and index-only scans are possible).
                conn.execute("VACUUM (ANALYZE) dat_spd_session")
                stored = conn.execute("SELECT count(*) FROM dat_spd_session").fetchone()[0]
                postgres = conn.execute("SHOW server_version").fetchone()[0]
            if args.other_rooms == 0 and stored != sessions:
                raise RuntimeError(f"{stored} sessions stored, {sessions} generated")
            days = min(args.days, 30)

            def both() -> dict:
                return {
                    "over HTTP": asyncio.run(serve_and_measure(settings, args.calls, days, args.seed)),
                    "SQL only": measure_sql(dsn, args.calls, days, args.seed, settings.writer_sweep_after_s),
                }

            runs = {"with migration 0015's indexes": both()}
            if args.without_indexes:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for name in INDEXES:
                        conn.execute(f"DROP INDEX {name}")
                    conn.execute("ANALYZE dat_spd_session")
                runs["without them (room_id index only)"] = both()
        finally:
            if embedded_pg is not None:
                embedded_pg.stop()
            if embedded_redis is not None:
                embedded_redis.stop()

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.pitr_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "postgres": postgres,
        "users": args.users,
        "days": args.days,
        "sessions": sessions,
        "still_open": still_open,
        "events": pushed,
        "other_rooms": args.other_rooms,
        "stored": stored,
        "fill_s": round(fill_s, 1),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
