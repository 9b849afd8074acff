"""``kill -9`` of a ``spidi serve`` holding clients: its sessions end with ``node_lost``, once.

Real processes on the test Redis (shared by the nodes, so the dead node's state survives it) and a
per-test PostgreSQL; each ``spidi serve`` runs its writer as a child and is started in a process
group of its own, killed whole in a ``finally``; the test then checks in /proc that none of its
processes is left. Sessions end in Redis (no ghost in a monitor's roster or ROOM_METRICS) and in
PostgreSQL (``end_reason='node_lost'``, ``ended_at`` = the last heartbeat Redis knew), and every
room minute counts each join and each end once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis
from psycopg.rows import dict_row

from spidi_server.errors import StartupError
from spidi_server.preflight import check_port
from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

from ..conftest import TEST_SECRET, token_for
from ..stomp_client import Client, connected
from ..test_cli import free_port, read_banner
from ..test_workers import WORKER_LINE

ROOMS = ("north", "south", "east")


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


async def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Serves:
    """``spidi serve`` processes, each the leader of its own process group; ``kill_all`` kills
    every group and asserts that nothing of them is left."""

    def __init__(self, redis_url: str, dsn: str):
        self.redis_url, self.dsn = redis_url, dsn
        self.data_dir = tempfile.mkdtemp(prefix="spidi-crash-")
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    def start(self, node_id: str, *extra: str, **env_extra: str) -> tuple[subprocess.Popen, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
        env.update(
            SPIDI_REDIS_URL=self.redis_url,
            SPIDI_POSTGRES_DSN=self.dsn,
            SPIDI_WRITER="child",
            SPIDI_NODE_ID=node_id,
            SPIDI_JWT_SECRET=TEST_SECRET,
            SPIDI_LOG_LEVEL="warning",
            SPIDI_WRITER_FLUSH_INTERVAL_S="0.2",
            SPIDI_CHECKPOINT_INTERVAL_S="1",
            SPIDI_SHUTDOWN_TIMEOUT_S="3",
            **env_extra,
        )
        with open(Path(self.data_dir) / f"stderr-{len(self.procs)}.log", "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "spidi_server.cli", "serve", "--dev", "--data-dir", self.data_dir]
                + ["--port", str(self.port), "--ops-port", str(free_port()), *extra],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                start_new_session=True,
            )
        self.procs.append(proc)
        try:
            return proc, read_banner(proc, timeout=60)
        except AssertionError as exc:  # say why: the node's own stderr
            raise AssertionError(f"{exc}\nstderr: {Path(err.name).read_text()[-3000:]}") from None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def gone(self, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        """Wait until every process of ``proc``'s group has exited (its writer child included)."""
        await _until(lambda: not _group(proc.pid), timeout, f"process group {proc.pid} to exit")

    def kill_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_group(p.pid) for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = {p.pid: _group(p.pid) for p in self.procs if _group(p.pid)}
        assert not left, f"processes left behind: {left}"


class Beater:
    """One client, one session, a heartbeat every 0.2 s until stopped."""

    def __init__(self, client: Client, sid: str, room: str):
        self.client, self.sid, self.room = client, sid, room
        self.task: asyncio.Task | None = None

    @classmethod
    async def join(cls, url: str, settings, room: str, user: str) -> Beater:
        client = await connected(url, token_for(settings, user, "spidi:user"))
        welcome = await client.hello(room, f"c-{user}")
        beater = cls(client, welcome["sessionId"], room)
        beater.task = asyncio.get_running_loop().create_task(beater._beat())
        return beater

    async def _beat(self) -> None:
        with contextlib.suppress(Exception):  # the node died under it
            while True:
                await self.client.app("/app/heartbeat", {"sessionId": self.sid, "latencyMs": 12.0})
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def leave(self) -> None:
        await self.stop()
        await self.client.app("/app/leave", {"sessionId": self.sid}, receipt=f"leave-{self.sid}")
        await self.client.next(10, command="RECEIPT")

    async def drop(self) -> None:
        await self.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 2)


def _pg(dsn: str, query: str, *args) -> list[dict]:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, args).fetchall()


def _sessions(dsn: str) -> dict[str, dict]:
    rows = _pg(
        dsn,
        "SELECT session_id::text AS sid, room_code, end_reason,"
        " (extract(epoch FROM ended_at) * 1000)::bigint AS ended_ms FROM dat_spd_session",
    )
    return {r["sid"]: r for r in rows}


def _room_counts(dsn: str) -> dict[str, tuple[int, int, int, int]]:
    """(joins, leaves, timeouts, disconnects) per room code, over all its minutes."""
    rows = _pg(
        dsn,
        "SELECT room_code, sum(joins)::int AS j, sum(leaves)::int AS l, sum(timeouts)::int AS t,"
        " sum(disconnects)::int AS d FROM dat_spd_room_stats GROUP BY room_code",
    )
    return {r["room_code"]: (r["j"], r["l"], r["t"], r["d"]) for r in rows}


def _last_beats(redis_url: str, beaters: list[Beater]) -> dict[str, int]:
    """The last heartbeat Redis holds for each session (its score in the room's online set)."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        return {
            b.sid: int(r.zscore(keys.room_online(room_id_for("default", b.room)), b.sid)) for b in beaters
        }


def _port_free(port: int) -> bool:
    """Whether ``spidi serve`` would find ``port`` free (its own start-up check)."""
    try:
        check_port("127.0.0.1", port)
    except StartupError:
        return False
    return True


async def _no_ghosts_within(url: str, settings, rooms, timeout: float) -> None:
    """``_no_ghosts`` holds within ``timeout`` seconds (sessions handed over at a stop wait for
    their grace period first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await _no_ghosts(url, settings, rooms)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _no_ghosts(url: str, settings, rooms) -> None:
    """A monitor on the node sees nobody in the rooms: roster snapshot and ROOM_METRICS."""
    mon = await connected(url, token_for(settings, "mon", "spidi:monitor"))
    try:
        for room in rooms:
            await mon.subscribe(f"/topic/rooms/{room}/roster")
            roster = await mon.json(f"/topic/rooms/{room}/roster", 5)
            assert roster["users"] == [], (room, roster)
            await mon.subscribe(f"/topic/rooms/{room}/metrics")
            metrics = await mon.json(f"/topic/rooms/{room}/metrics", 5, type_="ROOM_METRICS")
            assert (metrics["online"], metrics["users"]) == (0, 0), (room, metrics)
    finally:
        await mon.close()


async def test_kill_9_then_restart_under_the_same_id_ends_its_sessions_node_lost(
    redis_url, redis_sync, settings, pg_dsn
):
    """12 clients in three rooms, one per room leaves; kill -9 of the serve process; restarted
    under the same id it ends the 9 others before serving: node_lost at their last heartbeat, in
    Redis and in PostgreSQL, each room's minute counting 4 joins, 1 leave, 3 disconnects."""
    serves = Serves(redis_url, pg_dsn)
    beaters: list[Beater] = []
    try:
        proc, _ = serves.start("crashy", SPIDI_WRITER_SWEEP_AFTER_S="600")
        for room in ROOMS:
            for i in range(4):
                beaters.append(await Beater.join(serves.ws_url, settings, room, f"{room}-{i}"))
        leavers = [beaters[4 * k] for k in range(len(ROOMS))]
        for b in leavers:
            await b.leave()
        stayers = [b for b in beaters if b not in leavers]
        await _until(
            lambda: (
                sum(1 for r in _sessions(pg_dsn).values() if r["end_reason"] == "leave") == 3
                and len(_sessions(pg_dsn)) == 12
            ),
            20,
            "12 sessions and 3 leaves in PostgreSQL",
        )

        proc.send_signal(signal.SIGKILL)
        await serves.gone(proc)  # its writer child noticed and exited
        for b in beaters:
            await b.drop()
        last = _last_beats(redis_url, stayers)
        assert redis_sync.hlen(keys.node_sessions("crashy")) == 9  # nobody else to reap it

        # The restarted node holds its sessions for the grace period (their clients may resume
        # them: tests/crash/test_reconnect_storm.py); nobody comes back, so they end node_lost.
        again, _ = serves.start("crashy", SPIDI_WRITER_SWEEP_AFTER_S="600", SPIDI_GRACE_PERIOD_MS="1000")
        await _until(
            lambda: not redis_sync.exists(keys.node_sessions("crashy")), 10, "the grace period to run out"
        )
        await _no_ghosts(serves.ws_url, settings, ROOMS)
        rows = await _until(
            lambda: (s := _sessions(pg_dsn)) and all(r["end_reason"] for r in s.values()) and s,
            20,
            "every session ended in PostgreSQL",
        )
        assert len(rows) == 12
        assert {sid: (r["end_reason"], r["ended_ms"]) for sid, r in rows.items() if sid in last} == {
            sid: ("node_lost", at) for sid, at in last.items()
        }
        assert {rows[b.sid]["end_reason"] for b in leavers} == {"leave"}
        await _until(lambda: len(_room_counts(pg_dsn)) == 3, 10, "room minutes")
        assert _room_counts(pg_dsn) == dict.fromkeys(ROOMS, (4, 1, 0, 3))
        again.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(again.wait, 20) == 0
        await serves.gone(again)
        assert _room_counts(pg_dsn) == dict.fromkeys(ROOMS, (4, 1, 0, 3))  # nothing counted twice
    finally:
        for b in beaters:
            await b.drop()
        serves.kill_all()


async def test_sessions_redis_forgot_are_ended_by_the_writers_sweep(redis_url, redis_sync, settings, pg_dsn):
    """kill -9, then Redis loses everything (FLUSHALL) before the node comes back: nothing is left
    to reap, and the restarted node's writer sweeps the sessions PostgreSQL still holds as open
    (node_lost, at their last heartbeat known to PostgreSQL), counting each once."""
    serves = Serves(redis_url, pg_dsn)
    beaters: list[Beater] = []
    sweep = {"SPIDI_WRITER_SWEEP_AFTER_S": "3", "SPIDI_WRITER_SWEEP_INTERVAL_S": "0.5"}
    try:
        proc, _ = serves.start("amnesiac", **sweep)
        for room in ROOMS[:2]:
            for i in range(3):
                beaters.append(await Beater.join(serves.ws_url, settings, room, f"{room}-{i}"))
        await _until(lambda: len(s := _sessions(pg_dsn)) == 6 and s, 20, "6 sessions in PostgreSQL")
        await asyncio.sleep(1.5)  # a checkpoint of each past its first heartbeats
        proc.send_signal(signal.SIGKILL)
        await serves.gone(proc)
        for b in beaters:
            await b.drop()
        redis_sync.flushall()
        checkpointed = {
            r["sid"]: r["hb"]
            for r in _pg(
                pg_dsn,
                "SELECT session_id::text AS sid, (extract(epoch FROM last_heartbeat_at) * 1000)::bigint AS hb"
                " FROM dat_spd_session",
            )
        }

        serves.start("amnesiac", **sweep)
        await _no_ghosts(serves.ws_url, settings, ROOMS[:2])
        rows = await _until(
            lambda: (s := _sessions(pg_dsn)) and all(r["end_reason"] for r in s.values()) and s,
            30,
            "the sweep to end every session",
        )
        assert {sid: (r["end_reason"], r["ended_ms"]) for sid, r in rows.items()} == {
            sid: ("node_lost", hb) for sid, hb in checkpointed.items()
        }
        assert _room_counts(pg_dsn) == dict.fromkeys(ROOMS[:2], (3, 0, 0, 3))
    finally:
        for b in beaters:
            await b.drop()
        serves.kill_all()


async def test_kill_9_of_a_worker_ends_its_sessions_node_lost(redis_url, redis_sync, settings, pg_dsn):
    """``--workers 2``: kill -9 of the worker holding sessions; the supervisor ends them at once
    (node_lost at their last heartbeat) and restarts it; the other worker's sessions live on."""
    serves = Serves(redis_url, pg_dsn)
    beaters: list[Beater] = []
    try:
        proc, banner = serves.start("pair", "--workers", "2", SPIDI_WRITER_SWEEP_AFTER_S="600")
        workers = {w[0]: int(w[1]) for w in WORKER_LINE.findall(banner)}
        assert len(workers) == 2, banner
        for i in range(10):  # the kernel spreads them over both workers
            beaters.append(await Beater.join(serves.ws_url, settings, ROOMS[i % 2], f"w{i}"))
        await _until(lambda: len(_sessions(pg_dsn)) == 10, 20, "10 sessions in PostgreSQL")
        held = {w: set(redis_sync.hkeys(keys.node_sessions(w))) for w in workers}
        victim = max(held, key=lambda w: len(held[w]))
        doomed = [b for b in beaters if b.sid in held[victim]]
        assert doomed and sum(map(len, held.values())) == 10
        for b in doomed:  # silent first, so the last heartbeat Redis knows is final
            await b.stop()
        await asyncio.sleep(0.3)
        last = _last_beats(redis_url, doomed)

        os.kill(workers[victim], signal.SIGKILL)
        rows = await _until(
            lambda: (
                (s := _sessions(pg_dsn))
                and sum(1 for r in s.values() if r["end_reason"]) == len(doomed)
                and s
            ),
            20,
            "the dead worker's sessions ended in PostgreSQL",
        )
        assert {sid: (r["end_reason"], r["ended_ms"]) for sid, r in rows.items() if r["end_reason"]} == {
            sid: ("node_lost", at) for sid, at in last.items()
        }
        online = sum(redis_sync.zcard(keys.room_online(room_id_for("default", room))) for room in ROOMS[:2])
        assert online == 10 - len(doomed)
        per_room = {room: sum(1 for b in doomed if b.room == room) for room in ROOMS[:2]}
        await _until(
            lambda: _room_counts(pg_dsn) == {room: (5, 0, 0, n) for room, n in per_room.items()},
            10,
            "room minutes: 5 joins and the dead worker's ends per room",
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        await serves.gone(proc)
    finally:
        for b in beaters:
            await b.drop()
        serves.kill_all()


async def test_a_node_cut_off_then_back_counts_each_end_once(node_factory, redis_sync, settings, pg_dsn):
    """A node stops renewing its liveness (cut off longer than the reaping window): another ends
    its sessions (node_lost). When its clients then leave, it ends them again itself: history keeps
    the first end, and each room minute counts one end per session."""
    from spidi_server.tasks import cancel_and_wait

    from ..history.helpers import running_writer

    writer_settings = dataclasses.replace(
        settings, postgres_dsn=pg_dsn, writer_flush_interval_s=0.2, writer_sweep_interval_s=0
    ).validate()
    beaters: list[Beater] = []
    with running_writer(writer_settings):
        await node_factory(node_id="keeper")
        cut = await node_factory(node_id="cutoff", history=True)
        for i in range(3):
            beaters.append(await Beater.join(cut.ws_url, settings, "island", f"i{i}"))
        try:
            await _until(lambda: len(_sessions(pg_dsn)) == 3, 20, "3 sessions in PostgreSQL")
            # Cut off: its liveness key is gone and not renewed; the keeper reaps it.
            await cancel_and_wait(cut.liveness._tasks)
            redis_sync.delete(keys.node_alive("cutoff"))
            rows = await _until(
                lambda: (s := _sessions(pg_dsn)) and all(r["end_reason"] for r in s.values()) and s,
                20,
                "the keeper's ends in PostgreSQL",
            )
            assert {r["end_reason"] for r in rows.values()} == {"node_lost"}
            # Back: its clients leave, and it ends their sessions itself.
            for b in beaters:
                await b.leave()
            await _until(
                lambda: (
                    sum(
                        1
                        for _, f in redis_sync.xrange(keys.EVENTS_STREAM)
                        if f["kind"] == "session_ended" and f["reason"] == "leave"
                    )
                    == 3
                ),
                10,
                "its own ends in the stream",
            )
            await _until(
                lambda: int(redis_sync.hget("spidi:writer:status", "events_duplicate") or 0) >= 3,
                20,
                "the second ends to reach the writer",
            )
        finally:
            for b in beaters:
                await b.drop()
    assert {sid: r["end_reason"] for sid, r in _sessions(pg_dsn).items()} == {
        b.sid: "node_lost" for b in beaters
    }
    assert _room_counts(pg_dsn) == {"island": (3, 0, 0, 3)}


async def test_kill_9_of_the_supervisor_then_restart_ends_every_session_once(
    redis_url, redis_sync, settings, pg_dsn
):
    """``--workers 2``: kill -9 of the supervisor; its workers and writer go with it. Started again
    under the same id, every session of the first run is ended in PostgreSQL once (handed over
    by its worker on the way out and ended ``shutdown`` when nobody resumed it within the grace
    period, or node_lost by the restarted workers), nothing left in Redis, each room's minutes
    counting 4 joins and 4 ends."""
    serves = Serves(redis_url, pg_dsn)
    beaters: list[Beater] = []
    grace = {"SPIDI_WRITER_SWEEP_AFTER_S": "600", "SPIDI_GRACE_PERIOD_MS": "1000"}
    try:
        proc, banner = serves.start("orphans", "--workers", "2", **grace)
        assert len(WORKER_LINE.findall(banner)) == 2, banner
        for i in range(8):
            beaters.append(await Beater.join(serves.ws_url, settings, ROOMS[i % 2], f"o{i}"))
        await _until(lambda: len(_sessions(pg_dsn)) == 8, 20, "8 sessions in PostgreSQL")

        proc.send_signal(signal.SIGKILL)
        await serves.gone(proc, 20)  # workers and writer follow their supervisor
        for b in beaters:
            await b.drop()
        # The workers closed their clients on the way out: until those connections finish closing
        # (FIN_WAIT, not TIME_WAIT, which SO_REUSEADDR ignores) the port cannot be bound again.
        await _until(lambda: _port_free(serves.port), 20, "the port to be free")

        serves.start("orphans", "--workers", "2", **grace)
        await _no_ghosts_within(serves.ws_url, settings, ROOMS[:2], 10)
        rows = await _until(
            lambda: (s := _sessions(pg_dsn)) and all(r["end_reason"] for r in s.values()) and s,
            20,
            "every session ended in PostgreSQL",
        )
        assert len(rows) == 8 and {r["end_reason"] for r in rows.values()} <= {"shutdown", "node_lost"}
        assert not any(redis_sync.zcard(keys.room_online(room_id_for("default", r))) for r in ROOMS[:2])
        await _until(
            lambda: _room_counts(pg_dsn) == dict.fromkeys(ROOMS[:2], (4, 0, 0, 4)), 10, "room minutes"
        )
    finally:
        for b in beaters:
            await b.drop()
        serves.kill_all()
