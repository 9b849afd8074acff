"""Fixtures of the client SDK tests: the SDK on sys.path, ``spidi serve`` processes that can be
killed and restarted under the same node id and port, and a TCP relay whose connections a test can
cut (a network drop, without touching the node).

The processes use the test Redis (``redis_url``), so a node killed with SIGKILL leaves its
sessions there for the restarted one, and an in-process node on the same Redis sees the same
rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ..conftest import TEST_SECRET
from ..test_cli import free_port, read_banner

CLIENTS_PY = Path(__file__).resolve().parents[2] / "clients" / "python"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "clients"  # ignored by git
if str(CLIENTS_PY) not in sys.path:  # the SDK is not installed in the server's venv
    sys.path.insert(0, str(CLIENTS_PY))


async def until(condition, timeout: float, what: str, interval: float = 0.02):
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)


class NodeProcess:
    """``spidi serve --dev`` on the test Redis as node ``node_id``, on a fixed port: it can be
    killed (SIGKILL, SIGTERM) and started again on the same port and id."""

    def __init__(self, redis_url: str, node_id: str, **env: str):
        self.redis_url = redis_url
        self.node_id = node_id
        self.port = free_port()
        self.ops_port = free_port()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.data_dir = tempfile.mkdtemp(prefix=f"{node_id}-", dir=ARTIFACTS)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen] = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> NodeProcess:
        """Start it and return once the banner is out (it listens)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
        env.update(
            SPIDI_REDIS_URL=self.redis_url,
            SPIDI_JWT_SECRET=TEST_SECRET,
            SPIDI_WRITER="external",
            SPIDI_NODE_ID=self.node_id,
            SPIDI_LOG_LEVEL="warning",
            SPIDI_SHUTDOWN_TIMEOUT_S="3",
        )
        env.update(self.env)
        cmd = [sys.executable, "-m", "spidi_server.cli", "serve", "--dev", "--data-dir", self.data_dir]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--ops-port", str(self.ops_port)]
        cmd += ["--node-id", self.node_id]  # SPIDI_NODE_ID too: it marks the processes to clean up
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: killed as a whole
        )
        self.procs.append(self.proc)
        read_banner(self.proc, timeout=30)
        return self

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int:
        """Send ``sig`` to the node's process group and wait for the node to exit."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        marker = f"SPIDI_NODE_ID={self.node_id}".encode()
        deadline = time.monotonic() + 5
        while (left := _running_with(marker)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        assert not left, f"processes left behind by node {self.node_id}: {left}"


def _running_with(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(v.startswith(marker) for v in (entry / "environ").read_bytes().split(b"\0")):
                    found.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile, or not ours
    return found


@pytest.fixture
def node_process(redis_url, redis_sync):
    """``node_process(node_id, **env)``: a NodeProcess (not started); all are killed afterwards."""
    made: list[NodeProcess] = []

    def make(node_id: str, **env: str) -> NodeProcess:
        node = NodeProcess(redis_url, f"{node_id}-{os.getpid()}", **env)
        made.append(node)
        return node

    yield make
    for node in made:
        node.cleanup()


class Relay:
    """A TCP relay on loopback in front of ``target``: ``cut()`` drops every connection through
    it (both sides see the TCP connection go, as on a network failure); ``down`` refuses new
    ones (accepted and closed at once) until set back to False."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.down = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> Relay:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader, writer) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in pair:
                w.transport.abort()
            self._pairs.discard(pair)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    def cut(self) -> int:
        """Abort every connection through the relay; how many there were."""
        pairs = list(self._pairs)
        for pair in pairs:
            for w in pair:
                w.transport.abort()
        return len(pairs)

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


@pytest.fixture
async def relay_factory():
    """``await relay_factory(port)``: a Relay to a node's port, closed after the test."""
    relays: list[Relay] = []

    async def make(port: int) -> Relay:
        relay = await Relay(port).start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.close()


@pytest.fixture
async def clients():
    """A list to put SpidiClients in: each is closed after the test, whatever happened."""
    made: list = []
    yield made
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)
