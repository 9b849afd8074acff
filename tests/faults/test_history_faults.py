"""The history survives its failures with real clients on real nodes: PostgreSQL down for a minute
with the writer SIGKILLed in the middle of it, and the server SIGKILLed with its writer alive.

tests/history/test_writer_crash.py covers the writer alone (events pushed by hand, a writer killed
with a batch blocked in PostgreSQL, PostgreSQL stopped briefly); these run the whole path: clients,
node, Redis stream, writer child, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from spidi_server.history.embedded_pg import EmbeddedPostgres
from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

from ..conftest import TEST_SECRET, running
from ..history.helpers import pending
from ..pg_fixtures import private_pg_dir
from ..test_cli import free_port, read_banner
from .conftest import SESSIONS_SQL, STATS_SQL, Member, get_json, poll_pg, wait_until

PG_DOWN_S = 60.0
KILL_WRITER_AT_S = 33.0  # its successor's backoff then retries about 2 s after PostgreSQL is back


def _pg_answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@pytest.mark.hardening(
    "fault",
    "PostgreSQL down for 60 s while clients heartbeat, join, leave, disconnect and time out; the writer child "
    "is SIGKILLed 33 s into the outage with a batch it could not write",
    "The node keeps serving (readiness: postgres DOWN), restarts its writer, which re-reads the entries it "
    "held; once PostgreSQL is back every session is there once with its end reason and heartbeat count, and "
    "the room's joins, leaves, timeouts and disconnects add up exactly",
)
@pytest.mark.timeout(240)  # 60 s down, then up to 30 s of the writer's backoff before it retries
async def test_postgres_down_60s_with_writer_sigkill(node_factory, redis_sync):
    base = private_pg_dir()  # our own server: the shared one is not ours to stop for a minute
    pg = EmbeddedPostgres(base / "postgres")
    dsn = pg.start()
    try:
        node = await node_factory(
            postgres_dsn=dsn,
            writer="child",
            writer_flush_interval_s=0.2,
            node_id="pgdown",
            alerting=False,
            heartbeat_interval_ms=1000,
            heartbeat_timeout_ms=3000,
            grace_period_ms=0,
            checkpoint_interval_s=1.0,
        )
        ready = f"{node.ops.url}/health/ready"
        plan: dict[str, tuple[str, Member]] = {}  # session id -> (end reason, member)
        beating: list[Member] = []

        async def join(n: int, tag: str) -> None:
            for i in range(n):
                m = await Member.join(node, "pg", f"{tag}{i}")
                m.start(0.2)
                beating.append(m)

        async def end(n: int, how: str) -> None:
            for m in beating[:n]:
                beating.remove(m)
                if how == "leave":
                    await m.leave()
                elif how == "disconnect":
                    await m.disconnect()
                else:
                    await m.stop()  # silent: the node times it out
                plan[m.sid] = ("timeout" if how == "silent" else how, m)

        await join(12, "a")
        await poll_pg(dsn, SESSIONS_SQL, lambda rows: len(rows) == 12, 20)  # the writer is writing

        await asyncio.to_thread(pg.stop)
        down_at = time.monotonic()
        assert not await asyncio.to_thread(_pg_answers, dsn)
        # A minute of activity without PostgreSQL; the writer child is killed in the middle of it.
        script = [
            (3, end, 2, "leave"),
            (6, join, 2, "b"),
            (9, end, 1, "disconnect"),
            (12, end, 2, "silent"),
            (20, end, 2, "leave"),
            (25, join, 3, "c"),
            (40, end, 1, "disconnect"),
            (45, join, 2, "d"),
            (50, end, 1, "silent"),
            (55, end, 2, "leave"),
        ]
        killed = None
        held = 0
        while time.monotonic() - down_at < PG_DOWN_S:
            now = time.monotonic() - down_at
            while script and script[0][0] <= now:
                _, action, count, arg = script.pop(0)
                await action(count, arg)
            if killed is None and now >= KILL_WRITER_AT_S:
                held = pending(redis_sync)  # entries the writer read and could not write
                killed = node.services.writer_proc
                killed.send_signal(signal.SIGKILL)
                await asyncio.to_thread(killed.wait, 5)
                await wait_until(
                    lambda k=killed: node.services.writer_proc is not k, 5, what="writer restarted"
                )
            status, body = await get_json(ready)
            assert status == 503 and body["components"]["postgres"]["status"] == "DOWN", body
            assert all(m.connected and m.sid in node.presence.sessions for m in beating)
            await asyncio.sleep(0.5)
        assert killed is not None and held > 0, held
        backlog = redis_sync.xlen(keys.EVENTS_STREAM)

        await asyncio.to_thread(pg.start, False)  # no migrations: it is the same database
        back_at = time.monotonic()
        await end(len(beating), "leave")
        node.presence.flush_history()
        assert await node.store.flush(10)
        rows = await poll_pg(
            dsn, SESSIONS_SQL, lambda rows: len(rows) >= len(plan) and all(r["ended_at"] for r in rows), 60
        )
        caught_up_s = time.monotonic() - back_at
        assert {r["session_id"]: (r["end_reason"], r["heartbeat_count"]) for r in rows} == {
            sid: (reason, m.sent) for sid, (reason, m) in plan.items()
        }
        reasons = [reason for reason, _ in plan.values()]
        want = {
            "joins": len(plan),
            "leaves": reasons.count("leave"),
            "timeouts": reasons.count("timeout"),
            "disconnects": reasons.count("disconnect"),
        }
        stats = await poll_pg(dsn, STATS_SQL, lambda rows: rows and rows[0] == want, 20)
        assert stats[0] == want
        assert node.metrics.sessions_ended.labels(reason="timeout")._value.get() == 3
        print(
            f"\npostgres down {PG_DOWN_S:.0f}s: {len(plan)} sessions, writer killed holding {held} entries, "
            f"stream backlog {backlog} at the end of the outage, all in PostgreSQL {caught_up_s:.1f}s after it "
            f"came back"
        )
        await node.stop()
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _start_server(
    redis_url: str, dsn: str, node_id: str, data_dir: Path
) -> tuple[subprocess.Popen, int, int]:
    """``spidi serve`` with its writer child; returns (process, port, writer pid)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_POSTGRES_DSN=dsn,
        SPIDI_JWT_SECRET=TEST_SECRET,
        SPIDI_NODE_ID=node_id,
        SPIDI_LOG_LEVEL="warning",
        SPIDI_WRITER_FLUSH_INTERVAL_S="0.2",
        SPIDI_ALERTING="false",
        SPIDI_CHECKPOINT_INTERVAL_S="0.5",
        SPIDI_GRACE_PERIOD_MS="0",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spidi_server.cli",
            "serve",
            "--dev",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--ops-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    banner = read_banner(proc)
    writer_pid = int(re.search(r"History writer:\s+pid (\d+)", banner).group(1))
    return proc, port, writer_pid


@pytest.mark.hardening(
    "fault",
    "spidi serve SIGKILLed while its Redis is gone too (redis-server SIGKILLed first), its history writer "
    "retrying Redis",
    "The orphaned writer notices its parent is gone while it waits to retry, and exits within seconds: no "
    "process is left",
)
async def test_the_writer_of_a_killed_server_exits_while_redis_is_down(own_redis, pg_dsn, tmp_path):
    server = own_redis()
    proc, _, writer_pid = _start_server(server.url, pg_dsn, "orphan", tmp_path / "data")
    try:
        server.process.kill()  # Redis first: the writer's reads fail, it waits to retry
        server.process.wait(5)
        assert running(writer_pid)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 5)
        gone_s = await wait_until(lambda: not running(writer_pid), 10, 0.05, "the orphaned writer to exit")
        print(f"\nserver and Redis SIGKILLed: the orphaned writer exited {gone_s:.2f}s after its server")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if running(writer_pid):
            os.kill(writer_pid, signal.SIGKILL)


def _room_stats_sql(room: str) -> str:
    return (
        "SELECT coalesce(sum(joins), 0)::int AS joins, coalesce(sum(leaves), 0)::int AS leaves,"
        " coalesce(sum(disconnects), 0)::int AS disconnects FROM dat_spd_room_stats"
        f" WHERE room_id = '{room_id_for('default', room)}'"
    )


@pytest.mark.hardening(
    "fault",
    "spidi serve SIGKILLed while 5 clients are connected, its writer child alive; then restarted under the "
    "same node id",
    "The writer writes what the stream holds and exits by itself; the restarted node ends the 5 sessions "
    "(reason node_lost, heartbeat counts kept) and every session is in PostgreSQL once; both rooms' joins, "
    "leaves and disconnects are exact (counted from session events; only the killed process's unsent "
    "partial-minute online and latency sample is lost: see docs/operations.md, History in PostgreSQL)",
)
async def test_server_sigkill_with_the_writer_alive(settings, redis_url, redis_sync, pg_dsn):
    data_dir = Path(tempfile.mkdtemp(prefix="spidi-sigkill-"))
    procs: list[subprocess.Popen] = []
    members: list[Member] = []
    try:
        proc, port, writer_pid = _start_server(redis_url, pg_dsn, "victim", data_dir)
        procs.append(proc)
        node = SimpleNamespace(ws_url=f"ws://127.0.0.1:{port}/ws", settings=settings)
        calm = [await Member.join(node, "calm", f"calm{i}") for i in range(4)]
        doomed = [await Member.join(node, "doomed", f"doomed{i}") for i in range(5)]
        members += calm + doomed
        for m in calm + doomed:
            m.start(0.1)
        await asyncio.sleep(1.0)
        for m in calm:
            await m.leave()  # the room empties: its minute sample goes out now
        for m in doomed:
            await m.stop()
        expect = {m.sid: ("leave", m.sent) for m in calm} | {m.sid: (None, m.sent) for m in doomed}
        # The writer is alive and writing: checkpoints carried every heartbeat into PostgreSQL.
        rows = await poll_pg(
            pg_dsn,
            SESSIONS_SQL,
            lambda rows: {r["session_id"]: (r["end_reason"], r["heartbeat_count"]) for r in rows} == expect,
            20,
        )
        assert len(rows) == 9
        calm_stats = {"joins": 4, "leaves": 4, "disconnects": 0}
        assert (await poll_pg(pg_dsn, _room_stats_sql("calm"), lambda r: r and r[0] == calm_stats, 10)) == [
            calm_stats
        ]

        assert running(writer_pid)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 5)
        # The orphaned writer notices (its parent pid changed), writes what it read and exits.
        gone_s = await wait_until(lambda: not running(writer_pid), 10, 0.05, "the orphaned writer to exit")
        assert redis_sync.hget(keys.WRITER_STATUS, "state") == "stopped"
        for m in doomed:
            await asyncio.wait_for(m.client.closed.wait(), 5)

        again, port, _ = _start_server(redis_url, pg_dsn, "victim", data_dir)  # ends what "victim" left
        procs.append(again)
        expect |= {m.sid: ("node_lost", m.sent) for m in doomed}
        rows = await poll_pg(
            pg_dsn,
            SESSIONS_SQL,
            lambda rows: {r["session_id"]: (r["end_reason"], r["heartbeat_count"]) for r in rows} == expect,
            20,
        )
        assert {r["session_id"]: (r["end_reason"], r["heartbeat_count"]) for r in rows} == expect
        assert all(r["node_id"] == "victim" for r in rows)
        # Exact, whatever minute the kill fell in: the 5 joins from the session_started events the
        # killed process sent, the 5 disconnects from the session_ended events (reason node_lost)
        # the restarted node's reaper sent for its sessions.
        doomed_stats = {"joins": 5, "leaves": 0, "disconnects": 5}
        (stats,) = await poll_pg(pg_dsn, _room_stats_sql("doomed"), lambda r: r and r[0] == doomed_stats, 10)
        assert stats == doomed_stats, stats
        assert (await poll_pg(pg_dsn, _room_stats_sql("calm"), lambda r: True)) == [calm_stats]
        again.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(again.wait, 30) == 0
        print(
            f"\nserver SIGKILL: the orphaned writer finished and exited {gone_s:.2f}s after its server died"
        )
    finally:
        for m in members:
            m.client._reader.cancel()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
