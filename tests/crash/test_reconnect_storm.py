"""A node killed under 2,000 clients comes back on the same port and node id; they all reconnect at
once and resume their sessions: nobody is refused or reset, and a monitor sees no leave, no join.

Real processes: a ``spidi serve`` subprocess (its own process group, killed in a ``finally``) on the
test Redis, which outlives it. The 2,000 clients are raw asyncio protocols (benchmarks/loadgen.py's
``LoadConnection``, HELLO carrying ``resumeSessionId``), cheap enough to all be in flight at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.loadgen import AWAIT_CONNECTED, AWAIT_WELCOME, LoadConnection, client_frame, stomp_frame
from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings
from spidi_server.stores import keys

from ..conftest import TEST_SECRET, TRANSPORTS, token_for
from ..stomp_client import connected
from ..test_cli import free_port, read_banner

CLIENTS = 2000
ROOMS = [f"storm-{i}" for i in range(4)]
NODE_ID = f"storm-{os.getpid()}"
STORM_TIMEOUT_S = 60.0


class Phase:
    """What a ``LoadConnection`` needs from its generator, per phase: its loop and error counts."""

    latency_ms = 5

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.errors: collections.Counter[str] = collections.Counter()
        self.rtts: list = []
        self.late_receipts = 0

    def error(self, reason: str) -> None:
        self.errors[reason[:160]] += 1


class StormClient(LoadConnection):
    """A loadgen connection whose HELLO resumes ``resume`` (when set) and that keeps WELCOME."""

    def __init__(self, phase: Phase, index: int, token: str, room: str, port: int, resume: str | None):
        super().__init__(phase, index, token, room, f"127.0.0.1:{port}", "/ws")
        self.resume = resume
        self.welcome: dict | None = None

    def _stomp(self, frame: bytes) -> None:
        if frame[:9] != b"CONNECTED" or self.state != AWAIT_CONNECTED:
            super()._stomp(frame)
            return
        self.state = AWAIT_WELCOME
        hello = {"roomCode": self.room, "clientId": f"storm-{self.index}", "appVersion": "1.0"}
        if self.resume:
            hello["resumeSessionId"] = self.resume
        self.write(
            client_frame(stomp_frame("SUBSCRIBE", {"id": "s", "destination": "/user/queue/session"}))
            + client_frame(stomp_frame("SUBSCRIBE", {"id": "e", "destination": "/user/queue/errors"}))
            + client_frame(
                stomp_frame(
                    "SEND",
                    {"destination": "/app/hello", "content-type": "application/json"},
                    json.dumps(hello).encode(),
                )
            )
        )

    def _session_message(self, body: bytes) -> None:
        message = json.loads(body)
        if message.get("type") == "WELCOME":
            self.welcome = message
        super()._session_message(body)


async def open_all(phase: Phase, port: int, tokens: list[str], resume: list[str | None], limit: int):
    """Every client through CONNECT and HELLO to WELCOME, at most ``limit`` in flight; the clients."""
    sem = asyncio.Semaphore(limit)
    clients: list[StormClient | None] = [None] * len(tokens)

    async def one(i: int) -> None:
        async with sem:
            try:
                _, conn = await asyncio.wait_for(
                    phase.loop.create_connection(
                        lambda: StormClient(phase, i, tokens[i], ROOMS[i % len(ROOMS)], port, resume[i]),
                        "127.0.0.1",
                        port,
                    ),
                    STORM_TIMEOUT_S,
                )
                clients[i] = conn
                if not await asyncio.wait_for(conn.ready, STORM_TIMEOUT_S):
                    phase.error("no WELCOME")
            except (TimeoutError, OSError) as exc:
                phase.error(f"connect: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(len(tokens))))
    return clients


def start_node(redis_url: str, port: int, ops_port: int, data_dir: str, **extra: str) -> subprocess.Popen:
    """``spidi serve`` in its own process group, listening on ``port`` as node ``NODE_ID``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_JWT_SECRET=TEST_SECRET,
        SPIDI_WRITER="external",
        SPIDI_NODE_ID=NODE_ID,
        SPIDI_LOG_LEVEL="warning",
        # No heartbeats needed during the test; the grace period outlasts the restart by far.
        SPIDI_HEARTBEAT_INTERVAL_MS="60000",
        SPIDI_HEARTBEAT_TIMEOUT_MS="120000",
        SPIDI_GRACE_PERIOD_MS="60000",
    )
    env.update(extra)
    cmd = [sys.executable, "-m", "spidi_server.cli", "serve", "--dev", "--data-dir", data_dir]
    cmd += ["--port", str(port), "--ops-port", str(ops_port)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    read_banner(proc)
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def orphans(wait_s: float = 5.0) -> list[int]:
    """Processes still running with this test's node id (or a worker's) in their environment,
    after up to ``wait_s`` for them to go (a killed process's children are reaped by init)."""
    deadline = time.monotonic() + wait_s
    while (found := _running_with_node_id()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def assert_no_orphans() -> None:
    """Fail if a process of this test outlived its kill, after killing it (by pid)."""
    left = orphans()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"orphaned processes: {left}"


def _running_with_node_id() -> list[int]:
    found = []
    marker = f"SPIDI_NODE_ID={NODE_ID}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(v.startswith(marker) for v in (entry / "environ").read_bytes().split(b"\0")):
                    found.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile, or not ours
    return found


def listen_backlogs(port: int) -> list[int] | None:
    """The accept-queue limit of each socket listening on ``port``, as the kernel holds it (``ss``:
    Send-Q); None without ``ss``."""
    try:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except FileNotFoundError:
        return None
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


async def roster_snapshots(mon, destinations: list[str]) -> set[str]:
    sids = set()
    for destination in destinations:
        snapshot = await mon.json(destination, 10, "ROOM_ROSTER")
        assert snapshot["full"], snapshot
        sids |= {u["sessionId"] for u in snapshot["users"]}
    return sids


@pytest.mark.hardening(
    "fault",
    "node SIGKILLed under 2,000 clients, restarted on the same port and node id; all reconnect at once",
    "every client resumes its session, none refused or reset; monitors see no leave and no join",
)
@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_thousand_clients_resume_after_a_sigkill_restart(redis_url, redis_sync, transport):
    started = time.monotonic()
    settings = Settings(jwt_secret=TEST_SECRET)
    tokens = [token_for(settings, f"user-{i}", "spidi:user") for i in range(CLIENTS)]
    monitor_token = token_for(settings, "watcher", "spidi:monitor")
    port, ops_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp()
    destinations = [f"/topic/rooms/{room}/roster" for room in ROOMS]
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    procs: list[subprocess.Popen] = []
    first = storm = []
    mon = None
    try:
        procs.append(start_node(redis_url, port, ops_port, data_dir, SPIDI_TRANSPORT=transport))
        backlogs = listen_backlogs(port)
        if backlogs is not None:  # 4096 by default, capped by net.core.somaxconn
            assert backlogs == [min(4096, somaxconn)], (backlogs, somaxconn)

        before = Phase()
        first = await open_all(before, port, tokens, [None] * CLIENTS, 200)
        assert not before.errors, before.errors
        sids = [c.welcome["sessionId"] for c in first]
        online = [keys.room_online(room_id_for("default", room)) for room in ROOMS]
        deadline = time.monotonic() + 10
        while sum(redis_sync.zcard(k) for k in online) < CLIENTS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sum(redis_sync.zcard(k) for k in online) == CLIENTS

        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        for client in first:
            client.state = 4  # CLOSING: the lost connection is the point, not an error
        procs.append(start_node(redis_url, port, ops_port, data_dir, SPIDI_TRANSPORT=transport))

        # The monitor comes back first: its snapshot lists every session, the storm adds nobody.
        mon = await connected(f"ws://127.0.0.1:{port}/ws", monitor_token, subscribe_user=False)
        for destination in destinations:
            await mon.subscribe(destination)
        assert await roster_snapshots(mon, destinations) == set(sids)

        after = Phase()
        storm_started = time.perf_counter()
        storm = await open_all(after, port, tokens, sids, CLIENTS)  # all 2,000 in flight at once
        reconnect_s = time.perf_counter() - storm_started
        print(f"\n{transport}: {CLIENTS} clients reconnected and resumed in {reconnect_s:.2f} s")
        assert not after.errors, after.errors
        assert [c.welcome["sessionId"] for c in storm] == sids
        assert all(c.welcome["resumed"] for c in storm)

        # Deltas until a quiet second (they are coalesced over 250 ms): none joins, none leaves.
        joined, left = set(), set()
        while True:
            try:
                frame = await mon.next(1.0, "MESSAGE")
            except TimeoutError:
                break
            delta = json.loads(frame[2])
            joined |= {e["sessionId"] for e in delta.get("joined", ())}
            left |= {e["sessionId"] for e in delta.get("left", ())}
        assert not joined and not left, (len(joined), len(left))
        # A second monitor after the storm: the same 2,000 sessions.
        late = await connected(f"ws://127.0.0.1:{port}/ws", monitor_token, subscribe_user=False)
        try:
            for destination in destinations:
                await late.subscribe(destination)
            assert await roster_snapshots(late, destinations) == set(sids)
        finally:
            await late.close()
        assert time.monotonic() - started < 120
    finally:
        for client in [*first, *storm]:
            if client is not None:
                client.state = 4
                client.transport.abort()
        if mon is not None:
            mon._reader.cancel()
        for proc in procs:
            kill_group(proc)
        assert_no_orphans()


@pytest.mark.hardening(
    "fault",
    "node SIGKILLed and restarted under the same node id; its clients do not come back",
    "sessions taken back wait for the grace period, then end node_lost at their last heartbeat; timed-out ones end at start",
)
@pytest.mark.timeout(60)
async def test_sessions_taken_back_end_when_the_grace_runs_out(redis_url, redis_sync):
    """The restarted node holds its live sessions for the grace period only; one that had already
    timed out (last heartbeat older than heartbeat_timeout_ms) is ended at start."""
    settings = Settings(jwt_secret=TEST_SECRET)
    port, ops_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp()
    timing = {"SPIDI_HEARTBEAT_TIMEOUT_MS": "120000", "SPIDI_GRACE_PERIOD_MS": "1500"}
    room_id = room_id_for("default", "brief")
    roster = "/topic/rooms/brief/roster"
    procs, clients = [], []
    try:
        procs.append(start_node(redis_url, port, ops_port, data_dir, **timing))
        sids = []
        for i in range(3):
            client = await connected(f"ws://127.0.0.1:{port}/ws", token_for(settings, f"u{i}", "spidi:user"))
            clients.append(client)
            sids.append((await client.hello("brief", f"c{i}"))["sessionId"])
        deadline = time.monotonic() + 5
        while redis_sync.zcard(keys.room_online(room_id)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        killed_ms = int(time.time() * 1000)
        # The first session's last heartbeat was long ago: it had timed out when the node died.
        redis_sync.zadd(keys.room_online(room_id), {sids[0]: int(time.time() * 1000) - 200_000})
        procs.append(start_node(redis_url, port, ops_port, data_dir, **timing))
        restarted = time.monotonic()
        mon = await connected(f"ws://127.0.0.1:{port}/ws", token_for(settings, "m", "spidi:monitor"), False)
        clients.append(mon)
        await mon.subscribe(roster)
        snapshot = await mon.json(roster, 5, "ROOM_ROSTER")
        assert {u["sessionId"] for u in snapshot["users"]} == set(sids[1:])
        left = {}
        while len(left) < 2:
            delta = await mon.json(roster, 5, "ROOM_ROSTER")
            left.update({e["sessionId"]: e["reason"] for e in delta["left"]})
            assert not delta["joined"]
        assert left == dict.fromkeys(sids[1:], "node_lost")
        assert 1.0 < time.monotonic() - restarted < 5.0  # at the grace period's end, not before
        assert redis_sync.zcard(keys.room_online(room_id)) == 0
        assert not redis_sync.exists(keys.node_sessions(NODE_ID))
        # History: each ended once, at its last heartbeat (before the kill), not at the grace's end.
        ends = [f for _, f in redis_sync.xrange(keys.EVENTS_STREAM) if f["kind"] == "session_ended"]
        by_session = {f["session_id"]: f for f in ends if f["session_id"] in sids[1:]}
        assert len(by_session) == 2 and all(f["reason"] == "node_lost" for f in by_session.values())
        assert all(int(f["ended_at"]) <= killed_ms for f in by_session.values()), by_session
        # Too late to resume: a new session.
        late = await connected(f"ws://127.0.0.1:{port}/ws", token_for(settings, "u1", "spidi:user"))
        clients.append(late)
        welcome = await late.hello("brief", "c1", resumeSessionId=sids[1])
        assert not welcome["resumed"] and welcome["sessionId"] != sids[1]
    finally:
        for client in clients:
            client._reader.cancel()
        for proc in procs:
            kill_group(proc)
        assert_no_orphans()


@pytest.mark.timeout(60)
def test_workers_listen_with_the_backlog(redis_url):
    """``--workers``: each worker's SO_REUSEPORT socket has its own queue of ``listen_backlog``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_HISTORY="0",
        SPIDI_NODE_ID=NODE_ID,
        SPIDI_LISTEN_BACKLOG="1234",
        SPIDI_SHUTDOWN_TIMEOUT_S="1",
    )
    cmd = [sys.executable, "-m", "spidi_server.cli", "serve", "--dev", "--workers", "2"]
    cmd += ["--data-dir", tempfile.mkdtemp(), "--port", str(port), "--ops-port", str(free_port())]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True
    )
    try:
        read_banner(proc, timeout=30)
        backlogs = listen_backlogs(port)
        if backlogs is None:
            pytest.skip("no ss on this machine")
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert backlogs == [min(1234, somaxconn)] * 2
    finally:
        kill_group(proc)
        assert_no_orphans()
