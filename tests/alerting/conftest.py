"""Fixtures of the alerting tests: an asyncio Redis client and a local webhook receiver.

The receivers listen on 127.0.0.1, an address webhooks may not reach by default, so these tests'
``settings`` allow loopback explicitly; ``test_egress.py`` takes it away again.
"""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as aioredis

from .receivers import WebhookReceiver

LOOPBACK = ["127.0.0.0/8"]


@pytest.fixture
def settings(settings):
    """The test node's settings with webhooks allowed to reach the loopback receivers."""
    return dataclasses.replace(settings, webhook_allowed_networks=LOOPBACK).validate()


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
