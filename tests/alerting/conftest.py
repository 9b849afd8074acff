"""Fixtures of the alerting tests: an asyncio Redis client and a local webhook receiver."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from .receivers import WebhookReceiver


@pytest.fixture
async def aredis(redis_url, redis_sync):
    """An asyncio client (bytes replies, as the server's) on the emptied test Redis."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def receiver():
    """A webhook receiver on 127.0.0.1 recording every POST."""
    server = await WebhookReceiver().start()
    yield server
    await server.stop()
