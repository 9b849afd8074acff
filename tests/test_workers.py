"""`spidi serve --workers N` as real processes: one supervisor, shared ports, node-wide metrics,
restart and reaping of a dead worker, ordered shutdown; plus the pure pieces (settings through the
environment, adding up the workers' metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spidi_server.auth import mint_token
from spidi_server.history.embedded_pg import resolve_dsn
from spidi_server.metrics import NodeMetrics
from spidi_server.ops import merge_exposition
from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings, load_settings
from spidi_server.supervisor import settings_env

from .conftest import running
from .stomp_client import connected
from .test_capacity import hello_outcome
from .test_cli import SPIDI, free_port, read_banner

WORKER_LINE = re.compile(r"^\s+(\S+-w\d+)\s+pid (\d+)\s+http://127\.0\.0\.1:(\d+)/metrics/local$", re.M)
CLIENTS = 20
METRICS_TOKEN = "workers-metrics-token-0123456789"  # the supervisor fixture's metrics_token
AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


# -- pure pieces ---------------------------------------------------------------------------------


def test_settings_reach_a_worker_unchanged_through_the_environment():
    s = dataclasses.replace(
        Settings(),
        port=4321,
        dev=True,
        jwt_leeway_s=1.5,
        redis_flush_interval_ms=2.5,
        rooms={"lobby": 50, "acme/vault": 20},
        jwt_algorithms=["HS256"],
        worker_metrics=["127.0.0.1:1", "127.0.0.1:2"],
        reuse_port=True,
        ops_private_port=7,
        history=False,
    )
    assert load_settings(env=settings_env(s)) == s
    s = dataclasses.replace(s, auto_create_rooms=False, rooms={})
    assert load_settings(env=settings_env(s)) == s


def _values(text: bytes) -> dict[tuple, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_worker_metrics_add_up():
    a, b = NodeMetrics(), NodeMetrics()
    a.websocket_connections.set(3)
    b.websocket_connections.set(5)
    a.sessions_ended.labels(reason="leave").inc(2)
    b.sessions_ended.labels(reason="leave").inc()
    b.errors.labels(code="4001").inc()  # a label only one worker has
    a.hot.latency_hist[0] += 1
    a.hot.latency_sum += 4
    b.hot.latency_hist[0] += 2
    b.hot.latency_hist[-1] += 1
    b.hot.latency_sum += 9000
    a.event_loop_lag.observe(0.01)
    b.event_loop_lag.observe(0.2)
    a.event_loop_lag_max.set(0.01)
    b.event_loop_lag_max.set(0.2)
    a.writer_backlog.set(7)  # the answering worker's fresh copy of a node-wide figure
    b.writer_backlog.set(99)  # a sibling's stale copy
    a.node_rooms.set(2)
    b.node_rooms.set(2)
    a.rooms_total.labels(tenant="t").set(5)  # cluster-wide, read from Redis: the same on every worker
    b.rooms_total.labels(tenant="t").set(5)
    ta, tb = generate_latest(a.registry), generate_latest(b.registry)

    assert merge_exposition([ta.decode()]) == ta  # one worker: the text is untouched
    merged = _values(
        merge_exposition([ta.decode(), tb.decode()], rooms_total=3, extra={"spidi_workers": ("help", 2)})
    )
    assert merged[("spidi_websocket_connections", ())] == 8
    assert merged[("spidi_sessions_ended_total", (("reason", "leave"),))] == 3
    assert merged[("spidi_errors_total", (("code", "4001"),))] == 1
    assert merged[("spidi_heartbeat_latency_ms_bucket", (("le", "5.0"),))] == 3
    assert merged[("spidi_heartbeat_latency_ms_bucket", (("le", "+Inf"),))] == 4
    assert merged[("spidi_heartbeat_latency_ms_count", ())] == 4
    assert merged[("spidi_heartbeat_latency_ms_sum", ())] == 9004
    assert merged[("spidi_event_loop_lag_seconds_count", ())] == 2  # a histogram: the workers' add up
    assert merged[("spidi_event_loop_lag_seconds_bucket", (("le", "0.1"),))] == 1
    assert merged[("spidi_event_loop_lag_max_seconds", ())] == 0.2  # the worst worker's
    assert merged[("spidi_writer_backlog_events", ())] == 7
    assert merged[("spidi_node_rooms", ())] == 3  # distinct rooms, not 2 + 2
    assert merged[("spidi_rooms_total", (("tenant", "t"),))] == 5  # not 5 + 5
    assert merged[("spidi_workers", ())] == 2
    created = ("spidi_sessions_ended_created", (("reason", "leave"),))
    assert merged[created] == min(_values(ta)[created], _values(tb)[created])


# -- real processes ------------------------------------------------------------------------------


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} missing from:\n{text}"
    return float(match.group(1))


async def _get(http: aiohttp.ClientSession, url: str, headers: dict | None = AUTH) -> tuple[int, str]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


def _spawn(args: list[str], env: dict, stderr) -> subprocess.Popen:
    return subprocess.Popen(
        [*SPIDI, "serve", *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )


@pytest.fixture
def workdir():
    # Not under pytest's tmp_path: pgserver (run as root) needs its parents traversable.
    path = Path(tempfile.mkdtemp(prefix="spidi-workers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def supervisor(workdir):
    """``spidi serve --dev --workers 2`` on embedded Redis and PostgreSQL; its stderr in a file."""
    with _supervisor(workdir) as running:
        yield running


@contextlib.contextmanager
def _supervisor(workdir: Path, **extra_env: str):
    """``supervisor``, with more settings through the environment (``SPIDI_...``)."""
    port, ops = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env["SPIDI_SHUTDOWN_TIMEOUT_S"] = "3"
    env["SPIDI_ROOMS"] = "small=3"  # one capacity for both workers
    env["SPIDI_METRICS_TOKEN"] = METRICS_TOKEN  # the workers present it to each other
    env.update(extra_env)
    with open(workdir / "stderr.log", "w") as err:
        # stderr to a file: three processes' logs would fill a pipe nobody reads and block them.
        proc = _spawn(
            [
                "--dev",
                "--workers",
                "2",
                "--data-dir",
                str(workdir / "data"),
                "--port",
                str(port),
                "--ops-port",
                str(ops),
            ],
            env,
            err,
        )
    banner = ""
    try:
        banner = read_banner(proc, timeout=60)
        yield proc, banner, port, ops, workdir
    finally:
        _kill_all(proc, banner)


def _kill_all(proc: subprocess.Popen, banner: str) -> None:
    """After a failed test: the supervisor and every child the banner named."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in map(int, re.findall(r"pid (\d+)", banner)):
        if running(pid):
            os.kill(pid, signal.SIGKILL)


async def test_workers_share_the_ports_and_report_the_whole_node(supervisor):
    proc, banner, port, ops, workdir = supervisor
    data = workdir / "data"
    workers = WORKER_LINE.findall(banner)
    assert "Workers:           2" in banner and len(workers) == 2, banner
    assert "PostgreSQL:        embedded under" in banner and "History writer:    pid" in banner
    node_ids = [w[0] for w in workers]
    pids = {w[0]: int(w[1]) for w in workers}
    private = {w[0]: int(w[2]) for w in workers}
    base = re.search(r"^Spidi \S+ node (\S+)$", banner, re.M).group(1)
    assert node_ids == [f"{base}-w0", f"{base}-w1"]
    writer_pid = int(re.search(r"History writer:    pid (\d+)", banner).group(1))
    settings = Settings(data_dir=str(data), dev=True)  # the dev secret the supervisor created
    ws_url = f"ws://127.0.0.1:{port}/ws"
    ops_url = f"http://127.0.0.1:{ops}"
    redis_url = re.search(r"Redis:\s+embedded at (\S+)", banner).group(1)

    async def local(http, node_id: str) -> str:
        status, text = await _get(http, f"http://127.0.0.1:{private[node_id]}/metrics/local")
        assert status == 200
        return text

    # 20 clients on the one port: the kernel spreads them over both workers.
    clients, sids = [], []
    for i in range(CLIENTS):
        client = await connected(ws_url, mint_token(settings, f"u{i}", ["spidi:user"], "default", 600))
        sids.append((await client.hello("lobby", f"c{i}"))["sessionId"])
        clients.append(client)
    async with aiohttp.ClientSession() as http:
        per_worker = {}
        for node_id in node_ids:
            text = await local(http, node_id)
            per_worker[node_id] = _sample(text, "spidi_sessions_active")
            assert _sample(text, "spidi_websocket_connections") == per_worker[node_id]
        assert all(n > 0 for n in per_worker.values()), per_worker
        assert sum(per_worker.values()) == CLIENTS

        # Room capacity is one count for both workers: 3 places, HELLOs racing on both at once.
        async def connections() -> dict[str, float]:
            return {n: _sample(await local(http, n), "spidi_websocket_connections") for n in node_ids}

        base_conns, small = await connections(), []
        while len(small) < 6 or min(c - base_conns[n] for n, c in (await connections()).items()) < 2:
            assert len(small) < 40, "the kernel put every connection on one worker"
            token = mint_token(settings, f"s{len(small)}", ["spidi:user"], "default", 600)
            small.append(await connected(ws_url, token))
        outcomes = await asyncio.gather(*(hello_outcome(c, "small", f"s{i}") for i, c in enumerate(small)))
        welcomed = [(c, o) for c, o in zip(small, outcomes, strict=True) if o.get("type") == "WELCOME"]
        assert len(welcomed) == 3, outcomes
        assert sum(o.get("code") == "ROOM_FULL" for o in outcomes) == len(small) - 3, outcomes
        async with aioredis.Redis.from_url(redis_url) as r:
            assert await r.zcard(f"spidi:room:{{{room_id_for('default', 'small')}}}:online") == 3
        for client, welcome in welcomed:
            await client.app("/app/leave", {"sessionId": welcome["sessionId"]}, receipt="bye")
            await client.next(command="RECEIPT")
        for client in small:
            await client.close()
        for _ in range(50):  # the rest of the test counts connections again
            if sum((await connections()).values()) == CLIENTS:
                break
            await asyncio.sleep(0.1)

        # The shared /metrics adds up every worker, whichever answers. A keep-alive connection
        # stays with one worker: ask it who it is, then scrape it, until both have answered.
        answered = set()
        for _ in range(40):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one:
                _, health = await _get(one, f"{ops_url}/health")
                status, text = await _get(one, f"{ops_url}/metrics")
            assert status == 200
            assert _sample(text, "spidi_websocket_connections") == CLIENTS
            assert _sample(text, "spidi_sessions_active") == CLIENTS
            assert _sample(text, "spidi_workers") == 2 and _sample(text, "spidi_workers_unreachable") == 0
            assert _sample(text, "spidi_node_rooms") == 1  # one room on both workers
            answered.add(re.search(r'"node":\s*"([^"]+)"', health).group(1))
            if answered == set(node_ids):
                break
        assert answered == set(node_ids)
        # Without the token: neither the shared /metrics nor a worker's private figures.
        for url in (f"{ops_url}/metrics", *(f"http://127.0.0.1:{p}/metrics/local" for p in private.values())):
            for headers in (None, {"Authorization": "Bearer wrong-token-0123456789"}):
                status, _ = await _get(http, url, headers)
                assert status == 401, url
        status, _ = await _get(http, f"http://127.0.0.1:{private[node_ids[0]]}/worker/state", None)
        assert status == 401
        async with http.get(f"{ops_url}/health/ready") as resp:
            ready = await resp.json()
        assert resp.status == 200, ready
        assert ready["components"]["workers"] == {
            "status": "UP",
            "answering": 2,
            "expected": 2,
            "unreachable": [],
        }

        # A monitor on either worker sees the whole room; note which worker it landed on.
        before = {n: _sample(await local(http, n), "spidi_websocket_connections") for n in node_ids}
        mon = await connected(ws_url, mint_token(settings, "mon", ["spidi:monitor"], "default", 600))
        after = {n: _sample(await local(http, n), "spidi_websocket_connections") for n in node_ids}
        mon_worker = next(n for n in node_ids if after[n] == before[n] + 1)
        await mon.subscribe("/topic/rooms/lobby/roster")
        snapshot = await mon.json("/topic/rooms/lobby/roster", timeout=5)
        assert sorted(u["sessionId"] for u in snapshot["users"]) == sorted(sids)

        # kill -9 the other worker: restarted under the same id, its sessions end at once.
        victim = next(n for n in node_ids if n != mon_worker)
        lost = int(per_worker[victim])
        os.kill(pids[victim], signal.SIGKILL)
        reaper = importlib.util.find_spec("spidi_server.reaper") is not None
        if reaper:
            left = {}
            deadline = time.monotonic() + 5
            while len(left) < lost:
                wait = max(0.1, deadline - time.monotonic())
                delta = await mon.json("/topic/rooms/lobby/roster", timeout=wait)
                left.update({e["sessionId"]: e["reason"] for e in delta["left"]})
            assert set(left.values()) == {"node_lost"} and set(left) <= set(sids)
            async with aioredis.Redis.from_url(redis_url) as r:
                online = await r.zcard(f"spidi:room:{{{room_id_for('default', 'lobby')}}}:online")
            assert online == CLIENTS - lost
        new_pid = None
        for _ in range(100):  # restart after a 0.5 s backoff, then a second or so to start
            try:
                status, text = await _get(http, f"http://127.0.0.1:{private[victim]}/health/local")
                new_pid = int(re.search(r'"pid":\s*(\d+)', text).group(1))
                assert f'"node":"{victim}"' in text.replace(" ", "")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        assert new_pid is not None and new_pid != pids[victim]
        pids[victim] = new_pid
        for _ in range(50):  # /metrics: the surviving worker's sessions, both workers answering
            _, text = await _get(http, f"{ops_url}/metrics")
            if _sample(text, "spidi_workers") == 2:
                break
            await asyncio.sleep(0.1)
        assert _sample(text, "spidi_workers") == 2
        if reaper:
            assert _sample(text, "spidi_sessions_active") == CLIENTS - lost
        assert _sample(text, "spidi_websocket_connections") == CLIENTS - lost + 1  # + the monitor
        print(
            f"per worker {per_worker}, monitor on {mon_worker}, killed {victim} ({lost} sessions), "
            f"restarted as pid {new_pid}, /metrics answered by {sorted(answered)}"
        )
        logs = (workdir / "stderr.log").read_text()
        assert '"event":"worker_exited"' in logs and '"event":"worker_restarting"' in logs
        if not reaper:
            pytest.skip("spidi_server.reaper.reap_node is not there yet: the dead worker's sessions stay")

    # SIGTERM: workers hand their sessions over and close their clients with 1012 (service
    # restart), then everything stops, exit 0.
    survivors = [c for c in clients if not c.closed.is_set()]
    assert len(survivors) == CLIENTS - lost
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in survivors)), 15)
    assert {c.ws.close_code for c in survivors} == {1012}
    assert await asyncio.to_thread(proc.wait, 40) == 0
    for pid in (*pids.values(), writer_pid):
        assert not running(pid), pid
    assert not (data / "redis" / "redis.sock").exists() or not _running_redis(data)


async def test_two_workers_store_the_room_wide_online_max(workdir):
    # Clients in one room spread over two workers: each worker samples only its own sessions, and
    # the minute stored in history must have the room's maximum (every client at once), not the
    # busier worker's, which would be below the room's average. The supervisor's SIGTERM makes
    # the workers record their partial minute and the writer store it: no wait for a minute's end.
    with _supervisor(workdir, SPIDI_WRITER_FLUSH_INTERVAL_S="0.2") as (proc, banner, port, _, workdir):
        data = workdir / "data"
        settings = Settings(data_dir=str(data), dev=True)
        private = {w[0]: int(w[2]) for w in WORKER_LINE.findall(banner)}
        clients = []
        for i in range(CLIENTS):
            token = mint_token(settings, f"u{i}", ["spidi:user"], "default", 600)
            client = await connected(f"ws://127.0.0.1:{port}/ws", token)
            await client.hello("crowd", f"c{i}")
            clients.append(client)
        async with aiohttp.ClientSession() as http:
            per_worker = [
                _sample((await _get(http, f"http://127.0.0.1:{p}/metrics/local"))[1], "spidi_sessions_active")
                for p in private.values()
            ]
            assert sum(per_worker) == CLIENTS and min(per_worker) > 0, per_worker
            # The once-a-second tick samples the rooms, then grades the sessions: a liveness gauge
            # counting every client of a worker says its tick sampled all of them.
            deadline = time.monotonic() + 15
            for p, count in zip(private.values(), per_worker, strict=True):
                while _liveness_total((await _get(http, f"http://127.0.0.1:{p}/metrics/local"))[1]) != count:
                    assert time.monotonic() < deadline, "a worker's sampler never counted its clients"
                    await asyncio.sleep(0.05)
        # The room's count of a second adds the workers' samples of that second: one more tick of
        # each (a second apart, later under load) and both have sampled everyone in one same second.
        await asyncio.sleep(2.0)
        dsn, pg = resolve_dsn(settings)  # joins the supervisor's PostgreSQL (kept up after it stops)
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in clients)), 15)
            assert await asyncio.to_thread(proc.wait, 40) == 0

            def minutes() -> list[tuple]:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    return conn.execute(
                        "SELECT online_max, online_avg, node_samples FROM dat_spd_room_stats WHERE room_id = %s",
                        [room_id_for("default", "crowd")],
                    ).fetchall()

            stored = await asyncio.to_thread(minutes)
        finally:
            pg.stop()
        assert any(m[0] == CLIENTS for m in stored), f"no minute with every client at once: {stored}"
        assert all(m[0] <= CLIENTS for m in stored), stored
        for online_max, online_avg, node_samples in stored:
            if online_max == CLIENTS:
                assert node_samples == 2 and online_avg <= online_max, stored


def _liveness_total(text: str) -> float:
    """The sum of ``spidi_sessions_liveness`` over its grades (0 before the first tick)."""
    return sum(float(v) for v in re.findall(r"^spidi_sessions_liveness\{[^}]*\} (\S+)$", text, re.M))


def _running_redis(data: Path) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(data / "redis" / "redis.sock"))
        return True
    except OSError:
        return False


async def test_picows_workers_share_the_port_and_stop_when_the_supervisor_dies(redis_url, workdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    # Redis of the test run, no history: nothing of the supervisor's own would outlive its SIGKILL.
    env.update(
        SPIDI_REDIS_URL=redis_url, SPIDI_HISTORY="0", SPIDI_SHUTDOWN_TIMEOUT_S="1", SPIDI_TRANSPORT="picows"
    )
    proc = _spawn(
        ["--dev", "--workers", "2", "--data-dir", str(workdir / "data"), "--port", "0", "--ops-port", "0"],
        env,
        subprocess.DEVNULL,
    )
    banner = ""
    try:
        banner = read_banner(proc, timeout=30)
        pids = [int(w[1]) for w in WORKER_LINE.findall(banner)]
        assert len(pids) == 2 and all(map(running, pids))
        ws_url = re.search(r"WebSocket \(STOMP\): (\S+)", banner).group(1)
        ops_url = re.search(r"Ops:\s+(\S+)/metrics", banner).group(1)
        token = re.search(r"^\s+user\s+(\S+)$", banner, re.M).group(1)
        clients = [await connected(ws_url, token, subscribe_user=False) for _ in range(8)]
        async with aiohttp.ClientSession() as http:
            _, text = await _get(http, f"{ops_url}/metrics")
        assert _sample(text, "spidi_websocket_connections") == 8 and _sample(text, "spidi_workers") == 2
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while any(map(running, pids)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(map(running, pids))
        await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in clients)), 5)
    finally:
        _kill_all(proc, banner)


def test_a_port_in_use_is_a_configuration_error(redis_url, workdir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
        env.update(SPIDI_REDIS_URL=redis_url, SPIDI_HISTORY="0")
        result = subprocess.run(
            [
                *SPIDI,
                "serve",
                "--dev",
                "--workers",
                "2",
                "--data-dir",
                str(workdir / "data"),
                "--port",
                str(taken.getsockname()[1]),
                "--ops-port",
                "0",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        port = taken.getsockname()[1]
    assert result.returncode == 2, result.stderr
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
