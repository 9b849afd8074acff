"""stores/client.py: the one Redis URL parser (both cluster schemes, credentials, TLS), the settings
validation that calls it, the client ``connect`` picks, and modules that import alone."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from spidi_server.errors import ConfigError
from spidi_server.settings import Settings
from spidi_server.stores.client import connect, is_cluster, is_cluster_url, parse_cluster_url, text


@pytest.mark.parametrize(
    ("url", "nodes", "options"),
    [
        ("redis+cluster://10.0.0.1:7000", [("10.0.0.1", 7000)], {"ssl": False}),
        (
            "redis+cluster://a:7000,b:7001, c:7002",
            [("a", 7000), ("b", 7001), ("c", 7002)],
            {"ssl": False},
        ),
        ("rediss+cluster://h:6380", [("h", 6380)], {"ssl": True}),
        ("redis+cluster://h", [("h", 6379)], {"ssl": False}),  # no port: Redis's own
        ("redis+cluster://[::1]:7002,[fe80::1]:7003", [("::1", 7002), ("fe80::1", 7003)], {"ssl": False}),
        (
            "redis+cluster://spidi:p%40ss@h:7000",
            [("h", 7000)],
            {"ssl": False, "username": "spidi", "password": "p@ss"},
        ),
        ("redis+cluster://:secret@h:7000", [("h", 7000)], {"ssl": False, "password": "secret"}),
        ("redis+cluster://spidi@h:7000", [("h", 7000)], {"ssl": False, "username": "spidi"}),
        # Only the first colon splits user from password; only the last @ ends the credentials.
        ("redis+cluster://u:p:w@h:7000", [("h", 7000)], {"ssl": False, "username": "u", "password": "p:w"}),
        ("redis+cluster://u:p@w@h:7000", [("h", 7000)], {"ssl": False, "username": "u", "password": "p@w"}),
        (
            "rediss+cluster://u:pw@h1:7000,h2:7001/0?ssl_cert_reqs=none",  # a cluster has only db 0
            [("h1", 7000), ("h2", 7001)],
            {"ssl": True, "username": "u", "password": "pw"},
        ),
    ],
)
def test_cluster_urls_parse(url, nodes, options):
    assert is_cluster_url(url)
    assert parse_cluster_url(url) == (nodes, options)
    Settings(redis_url=url).validate()  # settings accept what the parser accepts


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://h:x",
        "redis+cluster://h:7000,h2:x",
        "redis+cluster://h:0",
        "redis+cluster://h:65536",
        "redis+cluster://h:-1",
        "redis+cluster://h:7000,",
        "rediss+cluster://u:pw@",
    ],
)
def test_bad_cluster_urls_refused(url):
    with pytest.raises(ConfigError, match="redis_url"):
        parse_cluster_url(url)
    with pytest.raises(ConfigError, match="redis_url"):  # by the same parser
        Settings(redis_url=url).validate()


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://:pw@h:6380", "unix:///tmp/redis.sock", "redis+sentinel://h"]
)
def test_other_urls_are_not_cluster_urls(url):
    assert not is_cluster_url(url)
    with pytest.raises(ConfigError, match="not a redis\\+cluster:// URL"):
        parse_cluster_url(url)


async def test_connect_picks_the_client():
    plain = connect("redis://:pw@localhost:6390/2")
    tls = connect("rediss://localhost:6391")
    cluster = connect("rediss+cluster://u:pw@localhost:7000,localhost:7001")
    try:
        assert isinstance(plain, aioredis.Redis) and not is_cluster(plain)
        assert plain.connection_pool.connection_kwargs["password"] == "pw"
        assert plain.connection_pool.connection_kwargs["db"] == 2
        assert "SSL" in tls.connection_pool.connection_class.__name__
        assert isinstance(cluster, RedisCluster) and is_cluster(cluster)
    finally:
        await plain.aclose()
        await tls.aclose()
        await cluster.aclose()


def test_text():
    assert text(b"caf\xc3\xa9") == "café" and text("x") == "x" and text(3) == "3"


@pytest.mark.parametrize(
    "module",
    [
        "spidi_server.settings",
        "spidi_server.stores.client",
        "spidi_server.stores.scripts",
        "spidi_server.stores.commands",
        "spidi_server.stores.reads",
        "spidi_server.stores.recovery",
        "spidi_server.stores.hot_store",
    ],
)
def test_imports_alone(module):
    """Each module imports in a fresh interpreter: an import cycle fails here, not by import order."""
    subprocess.run([sys.executable, "-W", "error", "-c", f"import {module}"], check=True)


def test_settings_import_no_more_than_the_client():
    """The settings validate Redis URLs with stores/client.py and pull in nothing else of the stores
    (``redact``, a leaf, hides passwords in the parser's errors)."""
    code = "import sys, spidi_server.settings; print(sorted(m for m in sys.modules if m.startswith('spidi_server')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == str(
        [
            "spidi_server",
            "spidi_server.errors",
            "spidi_server.redact",
            "spidi_server.settings",
            "spidi_server.stores",
            "spidi_server.stores.client",
        ]
    )
