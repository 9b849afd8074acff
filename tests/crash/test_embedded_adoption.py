"""Embedded services after a crash (issue 14): ``kill -9`` of a node, of its redis-server, of its
PostgreSQL or of its whole process group, then ``spidi serve`` again on the same data directory.

Afterwards there is exactly one redis-server and one postgres naming the data directory, the node
is ready, and the Redis state written before the crash is there (adopted with the server, or read
back from its AOF). A second serve on a live node's data directory is refused; a normal stop stops
adopted servers too. Each test kills what it started (``crash_site``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import aiohttp
import redis as redis_sync

from spidi_server.processes import process_cmdline
from spidi_server.settings import Settings
from spidi_server.stores import keys
from spidi_server.stores.embedded_redis import EmbeddedRedis

from ..stomp_client import connected
from .conftest import CrashSite, Serve, embedded_of, gone, wait_for

SENTINEL = "crash-test:sentinel"
NONE = {"redis-server": [], "postgres": []}


def one_of_each(site: CrashSite) -> dict[str, int]:
    """The one redis-server and the one postgres of the data directory (asserted)."""
    found = embedded_of(site.data_dir)
    assert len(found["redis-server"]) == 1 and len(found["postgres"]) == 1, found
    return {name: pids[0] for name, pids in found.items()}


async def ready(serve: Serve, timeout: float = 30.0) -> None:
    """Poll /health/ready until it answers 200."""
    deadline = time.monotonic() + timeout
    status = None
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{serve.ops_url}/health/ready") as resp:
                    status = resp.status
                    if status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"/health/ready never answered 200 (last {status})")


async def joined_state(site: CrashSite, serve: Serve, on_disk: bool = False) -> None:
    """A client joins the lobby and a sentinel is written; returns once the session is in Redis
    (``on_disk``: and both are in the AOF, so a redis-server killed now loses neither)."""
    client = await connected(serve.ws_url, serve.token())
    try:
        assert (await client.hello("lobby"))["type"] == "WELCOME"
    finally:
        await client.close()
    r = site.redis()
    r.set(SENTINEL, "before the crash")
    sessions = wait_for(
        lambda: list(r.scan_iter(match=f"{keys.PREFIX}session:*")), 10, "the session in Redis"
    )
    if on_disk:
        aof = site.data_dir / "redis" / "appendonly.aof"
        wait_for(
            lambda: aof.exists() and all(k in aof.read_bytes() for k in [*sessions, SENTINEL.encode()]),
            10,
            "the session and sentinel in the AOF",
        )


def stop_gracefully(serve: Serve, timeout: float = 30.0) -> None:
    """SIGTERM and wait: a normal stop."""
    serve.proc.send_signal(signal.SIGTERM)
    serve.proc.wait(timeout)


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), 10, f"pid {pid} to go")


async def restarted(site: CrashSite, *args: str) -> tuple[Serve, dict[str, int]]:
    """``spidi serve`` again on the data directory: one of each service, ready, the sentinel there."""
    serve = site.serve(*args)
    pids = one_of_each(site)
    await ready(serve)
    assert site.redis().get(SENTINEL) == b"before the crash"
    return serve, pids


async def test_kill_9_of_the_serve_process_adopts_its_redis_and_postgres(crash_site):
    first = crash_site.serve()
    await ready(first)
    await joined_state(crash_site, first)
    before = one_of_each(crash_site)

    sigkill(first.proc.pid)
    first.proc.wait()
    assert one_of_each(crash_site) == before  # orphans, until the next node adopts them

    second, after = await restarted(crash_site)
    # Adopted, not started again: the dead node's hot state is there for the restarted node.
    assert after == before

    # A normal stop stops the adopted servers too.
    stop_gracefully(second)
    assert second.proc.returncode == 0, second.stderr()[-2000:]
    wait_for(lambda: embedded_of(crash_site.data_dir) == NONE, 15, "no services left")
    assert embedded_of(crash_site.data_dir) == NONE


async def test_kill_9_of_the_redis_server_then_restart_reads_the_aof(crash_site):
    first = crash_site.serve()
    await ready(first)
    await joined_state(crash_site, first, on_disk=True)
    sigkill(one_of_each(crash_site)["redis-server"])
    stop_gracefully(first)
    assert embedded_of(crash_site.data_dir) == NONE, first.stderr()[-3000:]

    second, _ = await restarted(crash_site)  # the sentinel came back from the AOF
    stop_gracefully(second)


async def test_kill_9_of_postgres_then_restart(crash_site):
    first = crash_site.serve()
    await ready(first)
    await joined_state(crash_site, first)
    old = one_of_each(crash_site)
    sigkill(old["postgres"])
    stop_gracefully(first)
    assert embedded_of(crash_site.data_dir) == NONE, first.stderr()[-3000:]

    _, pids = await restarted(crash_site)
    assert pids["postgres"] != old["postgres"]


async def test_kill_9_of_the_serve_process_group_then_restart(crash_site):
    first = crash_site.serve()
    await ready(first)
    await joined_state(crash_site, first)
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)

    await restarted(crash_site)


async def test_a_second_serve_on_a_live_data_directory_is_refused(crash_site):
    first = crash_site.serve()
    before = one_of_each(crash_site)
    second = crash_site.spawn()
    assert second.proc.wait(15) == 2
    message = second.stderr()
    assert "in use by another spidi serve" in message and f"pid {first.proc.pid}" in message, message
    assert one_of_each(crash_site) == before
    await ready(first)


async def test_kill_9_of_the_workers_supervisor_then_restart(crash_site):
    first = crash_site.serve("--workers", "2")
    before = one_of_each(crash_site)
    crash_site.redis().set(SENTINEL, "before the crash")
    workers = [
        p for p in _children(first.proc.pid) if "spidi_server.supervisor" in (process_cmdline(p) or [])
    ]
    assert len(workers) == 2
    sigkill(first.proc.pid)
    # The workers see their supervisor gone and stop by themselves.
    wait_for(lambda: all(gone(p) for p in workers), 20, "the orphaned workers to stop")

    _, after = await restarted(crash_site, "--workers", "2")
    assert after == before


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


# -- the embedded redis-server alone --------------------------------------------------------------


def test_the_event_stream_survives_a_sigkill_of_the_embedded_redis(tmp_path):
    path = tmp_path / "redis"
    server = EmbeddedRedis(path, appendonly=Settings().embedded_redis_appendonly).start()
    try:
        r = redis_sync.Redis(unix_socket_path=str(server.socket_path))
        ids = [r.xadd(keys.EVENTS_STREAM, {"n": str(i)}) for i in range(100)]
        aof = path / "appendonly.aof"
        wait_for(lambda: aof.exists() and ids[-1] in aof.read_bytes(), 10, "the last entry in the AOF")
        sigkill(server.pid)
        server.process.wait()
        server.process = None
        server.start()
        assert [entry_id for entry_id, _ in r.xrange(keys.EVENTS_STREAM)] == ids
    finally:
        server.stop()


def test_a_recycled_pid_in_the_pidfile_is_neither_adopted_nor_stopped(tmp_path):
    path = tmp_path / "redis"
    path.mkdir()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (path / "redis.pid").write_text(f"{stranger.pid}\n")
        (path / "redis.sock").touch()  # left by the dead server
        server = EmbeddedRedis(path).start()
        assert server.process is not None and server.pid != stranger.pid
        server.stop()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_an_adopted_memory_only_redis_is_made_durable_and_stopped(tmp_path):
    path = tmp_path / "redis"
    orphan = EmbeddedRedis(path, appendonly=False).start()  # its node is gone without stopping it
    try:
        adopter = EmbeddedRedis(path, appendonly=True).start()
        assert adopter.process is None and adopter.pid == orphan.pid
        r = redis_sync.Redis(unix_socket_path=str(adopter.socket_path))
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("appendfsync") == {"appendfsync": "everysec"}
        # Rewritten only past 512 MiB, not Redis's 64 (a rewrite every 6 s at 100,000 beats/s).
        assert r.config_get("auto-aof-rewrite-min-size") == {
            "auto-aof-rewrite-min-size": str(512 * 1024 * 1024)
        }
        adopter.stop()
        assert orphan.process.wait(10) == 0  # SIGTERM: a clean stop
    finally:
        orphan.stop()


def test_a_started_durable_redis_rewrites_its_aof_only_past_512_mib(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    try:
        r = redis_sync.Redis(unix_socket_path=str(server.socket_path))
        config = r.config_get("a*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        assert config["auto-aof-rewrite-min-size"] == str(512 * 1024 * 1024)
    finally:
        server.stop()
