"""A real 3-master Redis Cluster (tests/redis_cluster.py) for the tests of this folder."""

from __future__ import annotations

import pytest

from ..redis_cluster import LocalRedisCluster


@pytest.fixture(scope="session")
def redis_cluster_server():
    """Three masters on loopback TCP ports, started once for the run."""
    with LocalRedisCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(redis_cluster_server) -> LocalRedisCluster:
    """The cluster, emptied before each test."""
    redis_cluster_server.flushall()
    return redis_cluster_server
