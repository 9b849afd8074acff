"""Shared fixtures: a real Redis (embedded, or SPIDI_TEST_REDIS_URL) and real Spidi nodes on loopback."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import redis

from spidi_server.auth import mint_token
from spidi_server.settings import Settings
from spidi_server.stores.embedded_redis import EmbeddedRedis

from . import watchdog
from .pg_fixtures import empty_pg_dsn, pg, pg_dsn, pg_server  # noqa: F401  (shared fixtures)

# @pytest.mark.hardening: records each fault/hostile/security test's outcome for the table in
# docs/operations.md (rules in the module's docstring). @pytest.mark.exclusive: a test that runs
# while no other xdist worker runs one.
pytest_plugins = ["tests.hardening_report", "tests.exclusive"]


def pytest_configure(config):
    # In the controller and in each xdist worker: what this process starts dies with it.
    watchdog.start()


TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"

# Every WebSocket transport: end-to-end, security and hostile modules run on each (``params=TRANSPORTS``);
# native is the default, websockets the reference.
TRANSPORTS = ["native", "websockets", "picows"]


if os.environ.get("SPIDI_TEST_UVLOOP", "") in ("1", "true", "yes"):

    def pytest_asyncio_loop_factories(config, item):
        """SPIDI_TEST_UVLOOP=1 runs the tests on uvloop, the loop `spidi serve` uses (the native
        transport's Protocol meets uvloop's transports there); asyncio's own loop otherwise."""
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A real Redis for the whole run."""
    url = os.environ.get("SPIDI_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_sync(redis_url):
    """A plain client on the test Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def transport() -> str:
    """The WebSocket transport of test nodes (the default one); test modules may parametrise it."""
    return "native"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis_sync, transport: str) -> Settings:
    """Settings of a test node: ephemeral ports, the test Redis, a fixed secret, short timers."""
    return Settings(
        host="127.0.0.1",
        port=0,
        ops_host="127.0.0.1",
        ops_port=0,
        data_dir=str(tmp_path / "data"),
        dev=True,
        redis_url=redis_url,
        jwt_secret=TEST_SECRET,
        metrics_interval_ms=50,
        rooms_topic_interval_ms=200,
        transport=transport,
        # Events go to the stream; no PostgreSQL or writer per test node (tests/test_history_e2e.py has them).
        writer="external",
        # Tests start from an empty catalogue and no rules; tests/api/test_tenant_defaults.py turns
        # the defaults a tenant gets on first use back on.
        tenant_defaults=False,
    ).validate()


def token_for(settings: Settings, sub: str, role: str, tenant: str = "default", ttl_s: int = 3600) -> str:
    return mint_token(settings, sub, [role], tenant, ttl_s)


def process_state(pid: int) -> str | None:
    """``pid``'s state letter from /proc (S, R, T when stopped, Z for a zombie...); None once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent counts as gone)."""
    return process_state(pid) not in (None, "Z")


@pytest.fixture
async def node_factory(settings):
    """Start nodes with optional setting overrides; all are stopped after the test."""
    from spidi_server.node import Node

    nodes = []

    async def start(**overrides):
        node = Node(dataclasses.replace(settings, **overrides).validate())
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop()


@pytest.fixture
async def node(node_factory):
    return await node_factory()
