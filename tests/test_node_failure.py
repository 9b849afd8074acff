"""A node that dies without a word leaves no ghost presences; one that comes back resurrects none."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from spidi_server.rooms import room_id_for
from spidi_server.stores import events, keys

from .conftest import TEST_SECRET, token_for
from .stomp_client import connected
from .test_cli import free_port, read_banner


def start_node(redis_url: str, node_id: str, **env_extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_JWT_SECRET=TEST_SECRET,
        SPIDI_WRITER="external",
        SPIDI_NODE_ID=node_id,
        SPIDI_LOG_LEVEL="warning",
        **env_extra,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spidi_server.cli",
            "serve",
            "--dev",
            "--data-dir",
            tempfile.mkdtemp(),
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
    read_banner(proc)
    return proc, port


@pytest.fixture
async def victims():
    """Node processes (killed at the end if still running) and the clients they held."""
    procs, clients = [], []
    yield procs, clients
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for client in clients:
        client._reader.cancel()


async def _join(port: int, settings, count: int, room: str, keep: list) -> list[str]:
    """``count`` clients in ``room``; they stay in ``keep`` (open) until the node dies under them."""
    sids = []
    for i in range(count):
        client = await connected(f"ws://127.0.0.1:{port}/ws", token_for(settings, f"v{i}", "spidi:user"))
        keep.append(client)
        sids.append((await client.hello(room, f"c{i}"))["sessionId"])
    return sids


async def test_sigkilled_node_sessions_end_with_node_lost(node_factory, redis_url, redis_sync, victims):
    survivor = await node_factory(node_id="survivor")
    mon = await connected(survivor.ws_url, token_for(survivor.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms/ghost/roster")
    await mon.json("/topic/rooms/ghost/roster")
    procs, clients = victims
    proc, port = start_node(redis_url, "victim")
    procs.append(proc)
    sids = await _join(port, survivor.settings, 3, "ghost", clients)
    joined = set()
    while joined != set(sids):
        joined |= {e["sessionId"] for e in (await mon.json("/topic/rooms/ghost/roster"))["joined"]}
    room_id = room_id_for("default", "ghost")
    assert (
        redis_sync.zcard(keys.room_online(room_id)) == 3
        and redis_sync.hlen(keys.node_sessions("victim")) == 3
    )

    killed_at = int(time.time() * 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    started = time.monotonic()
    left = {}
    while len(left) < 3:
        left.update(
            {e["sessionId"]: e["reason"] for e in (await mon.json("/topic/rooms/ghost/roster", 15))["left"]}
        )
    took = time.monotonic() - started
    assert left == dict.fromkeys(sids, "node_lost")
    assert took < survivor.settings.heartbeat_timeout_ms / 1000  # well within the session timeout
    deadline = time.monotonic() + 3  # the reaper finishes (and counts) after it announced
    while survivor.metrics.sessions_reaped._value.get() != 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert survivor.metrics.sessions_reaped._value.get() == 3
    assert redis_sync.zcard(keys.room_online(room_id)) == 0
    assert redis_sync.hlen(keys.room_users(room_id)) == 0
    assert not redis_sync.exists(keys.node_sessions("victim"))
    assert "victim" not in redis_sync.smembers(keys.NODES)
    ended = [f for _, f in redis_sync.xrange(keys.EVENTS_STREAM) if f["kind"] == events.SESSION_ENDED]
    assert {f["session_id"]: f["reason"] for f in ended} == dict.fromkeys(sids, "node_lost")
    # Ended when last heard of, before the kill, not when reaped.
    assert all(f["ended_at"] == f["last_heartbeat_at"] != "" for f in ended)
    assert all(int(f["ended_at"]) < killed_at for f in ended)
    # What the writer counts the room's disconnects from (no room sample of the reaper's: a dead
    # node's online figures are gone with it).
    assert all((f["room_id"], f["room_code"]) == (room_id, "ghost") for f in ended)
    samples = [f for _, f in redis_sync.xrange(keys.EVENTS_STREAM) if f["kind"] == events.ROOM_SAMPLE]
    assert not any("disconnects" in f for f in samples)
    await mon.close()


async def test_node_back_with_the_same_id_resurrects_nothing(redis_url, redis_sync, settings, victims):
    procs, clients = victims
    proc, port = start_node(redis_url, "phoenix")
    procs.append(proc)
    sids = await _join(port, settings, 2, "nest", clients)
    room_id = room_id_for("default", "nest")
    # WELCOME does not wait for Redis; let the joins land before the crash.
    deadline = time.monotonic() + 3
    while redis_sync.zcard(keys.room_online(room_id)) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert redis_sync.zcard(keys.room_online(room_id)) == 2  # nobody else is there to reap
    # At once, long before its old key would expire. Without a grace period nothing is held for
    # resume (with one, the sessions wait for their clients: tests/crash/test_reconnect_storm.py).
    again, _ = start_node(redis_url, "phoenix", SPIDI_GRACE_PERIOD_MS="0")
    procs.append(again)
    assert redis_sync.zcard(keys.room_online(room_id)) == 0
    assert not redis_sync.exists(*(keys.session(room_id, sid) for sid in sids))
    again.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(again.wait, 20) == 0
