"""Presence driven directly: a real hot store on the test Redis, clients without sockets.

A ``FakeClient`` is what a connection offers presence (``presence.model.Client``): a real sans-I/O
``StompConnection`` (connected, subscribed to the session and error queues) whose queued frames
the tests read back, an IP, its sessions, and ``push`` (counted).
"""

from __future__ import annotations

import asyncio
import itertools
import time

import orjson
import pytest

from spidi_core import FrameParserPy, serialize_frame
from spidi_server.auth import TokenVerifier
from spidi_server.metrics import NodeMetrics
from spidi_server.presence import Presence
from spidi_server.protocol import destinations as dest
from spidi_server.protocol.stomp import StompConnection
from spidi_server.rooms import RoomCatalog
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import HotStore

from ..conftest import token_for

NODE_ID = "unit-node"
_ids = itertools.count(1)


class FakeClient:
    """A client connection as presence sees it, with the frames presence queued for it."""

    def __init__(
        self,
        settings,
        user: str = "ann",
        role: str = "spidi:user",
        tenant: str = "default",
        ip: str = "10.0.0.1",
    ):
        self.conn_id = f"c-{next(_ids)}"
        self.lane_key = next(_ids)  # never opened in the lane: heartbeats take the full path
        self.ip = ip
        self.sessions: tuple = ()
        self.pushes = 0
        self.stomp = StompConnection(TokenVerifier(settings), self.conn_id)
        token = token_for(settings, user, role, tenant)
        self.stomp.receive_data(serialize_frame("CONNECT", {"accept-version": "1.2", "passcode": token}))
        for sub_id, destination in (("s", dest.USER_SESSION), ("e", dest.USER_ERRORS)):
            self.stomp.receive_data(serialize_frame("SUBSCRIBE", {"id": sub_id, "destination": destination}))
        self._parser = FrameParserPy()
        self.stomp.data_to_send()  # CONNECTED

    def push(self) -> None:
        self.pushes += 1

    def messages(self, destination: str | None = None) -> list[dict]:
        """The JSON bodies of the MESSAGEs queued since the last call (to ``destination``)."""
        out = []
        for chunk in self.stomp.data_to_send():
            for frame in self._parser.feed(chunk):
                if frame.command == "MESSAGE" and destination in (None, frame.headers["destination"]):
                    out.append(orjson.loads(frame.body))
        return out


async def wait_for(predicate, timeout: float = 3.0, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


@pytest.fixture
async def store(redis_url, redis_sync):
    """A started hot store on the (emptied) test Redis."""
    hot = HotStore(connect(redis_url), node_id=NODE_ID)
    await hot.start()
    yield hot
    await hot.close()


@pytest.fixture
def presence_factory(settings, store):
    """Presence services on the one store, with setting overrides."""
    import dataclasses

    def make(**overrides) -> Presence:
        s = dataclasses.replace(settings, **overrides).validate() if overrides else settings
        return Presence(s, store, RoomCatalog(s), NodeMetrics(), NODE_ID)

    return make


@pytest.fixture
def presence(presence_factory) -> Presence:
    return presence_factory()


@pytest.fixture
def client_factory(settings):
    def make(user: str = "ann", role: str = "spidi:user", **kwargs) -> FakeClient:
        return FakeClient(settings, user, role, **kwargs)

    return make
