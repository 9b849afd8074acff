"""Fault tests: real redis-server and PostgreSQL processes stopped and started under load.

Helpers shared by the tests of this directory: a private redis-server on a TCP port of its own
(so a test can stop and restart it under the node), clients that heartbeat by themselves, and
readers of the node's Redis state and of the history in PostgreSQL.

Tests ask for ``own_redis`` and ``pg_dsn`` before ``node_factory``: fixtures are torn down in
reverse order, so the node stops while the services it flushes to still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
import psycopg
import pytest
import redis
from psycopg.rows import dict_row

from spidi_server.rooms import room_id_for
from spidi_server.stores import keys
from spidi_server.stores.embedded_redis import EmbeddedRedis

from ..conftest import token_for
from ..stomp_client import Client, connected
from ..test_cli import free_port


@pytest.fixture
def own_redis():
    """Start private redis-servers on TCP ports (``persistent``: AOF with fsync always, so a stop
    and start keeps every acknowledged write, as a network cut would); stopped after the test."""
    started: list[tuple[EmbeddedRedis, Path]] = []

    def start(persistent: bool = False) -> EmbeddedRedis:
        path = Path(tempfile.mkdtemp(prefix="spidi-fault-redis-"))
        extra = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else []
        server = EmbeddedRedis(path, port=free_port(), extra_args=extra).start()
        started.append((server, path))
        return server

    yield start
    for server, path in started:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)


class Member:
    """One client with one session that heartbeats by itself every ``every`` seconds.

    ``sent`` counts the heartbeats written to the socket: once the session ends with a receipt
    (LEAVE, DISCONNECT) the server has processed exactly that many.
    """

    def __init__(self, client: Client, session_id: str, user: str):
        self.client = client
        self.sid = session_id
        self.user = user
        self.sent = 0
        self.latency = 0.0
        self._running = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @classmethod
    async def join(cls, node, room: str, user: str) -> Member:
        client = await connected(node.ws_url, token_for(node.settings, user, "spidi:user"))
        welcome = await client.hello(room, f"client-{user}")
        return cls(client, welcome["sessionId"], user)

    def start(self, every: float) -> None:
        self._running = True
        self._wake.clear()
        self._task = asyncio.get_running_loop().create_task(self._beat(every))

    async def _beat(self, every: float) -> None:
        while self._running:
            self.latency = float(5 + self.sent % 40)
            await self.client.app("/app/heartbeat", {"sessionId": self.sid, "latencyMs": self.latency})
            self.sent += 1
            with contextlib.suppress(TimeoutError):  # woken early by stop()
                await asyncio.wait_for(self._wake.wait(), every)

    async def stop(self) -> None:
        """Stop heartbeating (the last heartbeat sent is counted: no cancellation mid-send)."""
        self._running = False
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def leave(self) -> None:
        await self.stop()
        await self.client.app("/app/leave", {"sessionId": self.sid}, receipt=f"leave-{self.sid}")
        await self.client.next(10, command="RECEIPT")

    async def disconnect(self) -> None:
        await self.stop()
        await self.client.send("DISCONNECT", {"receipt": f"bye-{self.sid}"})
        await self.client.next(10, command="RECEIPT")
        await self.client.close()

    @property
    def connected(self) -> bool:
        return not self.client.closed.is_set()


async def get_json(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def metric(node, name: str) -> float:
    """One sample of the node's /metrics (0 when absent)."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.ops.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def redis_view(url: str, room_id: str, node_id: str) -> dict:
    """What Redis holds for one room and one node: online scores, latencies, users, session
    hashes, node index, metrics hash."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        online = {
            sid: int(score) for sid, score in client.zrange(keys.room_online(room_id), 0, -1, withscores=True)
        }
        pipe = client.pipeline(transaction=False)
        for sid in online:
            pipe.hgetall(keys.session(room_id, sid))
        hashes = dict(zip(online, pipe.execute(), strict=True))
        return {
            "online": online,
            "latency": {k: float(v) for k, v in client.hgetall(keys.room_latency(room_id)).items()},
            "users": {k: int(v) for k, v in client.hgetall(keys.room_users(room_id)).items()},
            "sessions": hashes,
            "node": client.hgetall(keys.node_sessions(node_id)),
            "metrics": client.hgetall(keys.room_metrics(room_id)),
            "nodes": client.smembers(keys.NODES),
        }
    finally:
        client.close()


def expected_view(node, room_code: str) -> dict:
    """What Redis should hold for the room, from the node's own sessions."""
    room_id = room_id_for("default", room_code)
    sessions = [s for s in node.presence.sessions.values() if s.room.room_id == room_id]
    users: dict[str, int] = {}
    for s in sessions:
        users[s.user_id] = users.get(s.user_id, 0) + 1
    return {
        "online": {s.session_id: s.last_heartbeat_at for s in sessions},
        "latency": {s.session_id: s.latency_ms for s in sessions if s.latency_ms is not None},
        "users": users,
        "node": {s.session_id: room_id for s in node.presence.sessions.values()},
    }


def matches(view: dict, expected: dict, node_id: str) -> bool:
    """Whether Redis holds exactly the node's sessions, with their newest heartbeats."""
    return (
        view["online"] == expected["online"]
        and view["latency"] == expected["latency"]
        and view["users"] == expected["users"]
        and view["node"] == expected["node"]
        and all(h.get("userId") and h.get("nodeId") == node_id for h in view["sessions"].values())
        and view["metrics"].get("code") is not None
        and node_id in view["nodes"]
    )


async def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition") -> float:
    """Poll ``predicate`` (sync or async) until true; returns the seconds it took."""
    started = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def fetch(dsn: str, query: str, *args) -> list[dict]:
    with (
        psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        return cur.execute(query, args or None).fetchall()


async def poll_pg(dsn: str, query: str, predicate, timeout: float = 30.0) -> list[dict]:
    """Rows of ``query`` once ``predicate(rows)`` holds (or the last rows at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = await asyncio.to_thread(fetch, dsn, query)
        except psycopg.OperationalError:
            rows = []
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.25)


SESSIONS_SQL = (
    "SELECT session_id::text, user_id, end_reason, heartbeat_count, ended_at, node_id FROM dat_spd_session"
)
STATS_SQL = (
    "SELECT coalesce(sum(joins), 0)::int AS joins, coalesce(sum(leaves), 0)::int AS leaves,"
    " coalesce(sum(timeouts), 0)::int AS timeouts, coalesce(sum(disconnects), 0)::int AS disconnects"
    " FROM dat_spd_room_stats"
)
