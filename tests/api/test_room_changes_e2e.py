"""Room changes made through the API reach every node within a second; WebSocket clients feel them.

Two nodes share one Redis and one PostgreSQL, rooms are not auto-created: lowering a room's
capacity below its online count refuses new HELLOs (ROOM_FULL) and drops nobody; disabling it
refuses HELLO with ROOM_DISABLED, on the node that took the call and on the other one.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ..stomp_client import connected
from .conftest import ApiClient


@pytest.fixture
async def two_nodes(node_factory, pg_dsn):
    a = await node_factory(postgres_dsn=pg_dsn, writer="external", auto_create_rooms=False)
    b = await node_factory(postgres_dsn=pg_dsn, writer="external", auto_create_rooms=False)
    return a, b


async def _hello(client, code: str) -> dict:
    """HELLO; the WELCOME or the application error that answered it."""
    await client.app("/app/hello", {"roomCode": code, "clientId": "c", "appVersion": "1.0.0"}, receipt="h")
    frame = await client.next(command="RECEIPT")
    assert frame[1]["receipt-id"] == "h"
    for destination in ("/user/queue/errors", "/user/queue/session"):
        try:
            return await client.json(destination, timeout=0.01)
        except TimeoutError:
            continue
    raise AssertionError("HELLO got neither WELCOME nor an error")


async def _within_a_second(predicate, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < 1.0, f"{what} took over a second"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_capacity_lowering_and_disabling_reach_every_node(http, two_nodes):
    node_a, node_b = two_nodes
    api = ApiClient(http, node_a)
    users = [await connected(node_a.ws_url, api.token("user", sub=f"u{i}")) for i in range(4)]
    on_b = await connected(node_b.ws_url, api.token("user", sub="remote"))
    assert (await _hello(on_b, "stage"))["code"] == "ROOM_NOT_FOUND"

    room = (await api.post("/api/v1/rooms", {"code": "stage", "capacity": 3})).body
    # The node that took the call refreshed before answering; the other one hears it on pub/sub.
    assert node_a.catalog.lookup("default", "stage").capacity == 3
    await _within_a_second(
        lambda: node_b.catalog.lookup("default", "stage") is not None, "creation on node B"
    )

    sessions = [(await _hello(u, "stage"))["sessionId"] for u in users[:3]]
    assert all(sessions)

    # Capacity 2 with 3 online: nobody is dropped, nobody new gets in.
    lowered = await api.patch(f"/api/v1/rooms/{room['id']}", {"capacity": 2})
    assert lowered.status == 200 and lowered.body["capacity"] == 2
    refused = await _hello(users[3], "stage")
    assert (refused["type"], refused["code"]) == ("ERROR", "ROOM_FULL") and "(2 sessions)" in refused[
        "message"
    ]
    await _within_a_second(
        lambda: node_b.catalog.lookup("default", "stage").capacity == 2, "capacity on node B"
    )
    roster = (await api.get(f"/api/v1/rooms/{room['id']}/sessions", role="monitor")).body["items"]
    assert sorted(e["sessionId"] for e in roster) == sorted(sessions)
    for user, sid in zip(users[:3], sessions, strict=True):  # still alive: heartbeats are accepted
        await user.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 5}, receipt="hb")
        await user.next(command="RECEIPT")
    for user in users:
        with pytest.raises(TimeoutError):
            await user.json("/user/queue/session", timeout=0.05, type_="SESSION_ENDED")
        with pytest.raises(TimeoutError):
            await user.json("/user/queue/errors", timeout=0.01)
    # Two leave: one below the new capacity, so the next HELLO is welcome.
    for user, sid in zip(users[:2], sessions[:2], strict=True):
        await user.app("/app/leave", {"sessionId": sid}, receipt="bye")
        await user.next(command="RECEIPT")
    assert (await _hello(users[3], "stage"))["type"] == "WELCOME"

    # Disabled: HELLO is refused on both nodes, within a second on the other one.
    disabled = await api.patch(f"/api/v1/rooms/{room['id']}", {"status": "disabled"})
    assert disabled.status == 200 and disabled.body["status"] == "disabled"
    assert (await _hello(users[0], "stage"))["code"] == "ROOM_DISABLED"
    await _within_a_second(
        lambda: not node_b.catalog.lookup("default", "stage").active, "disabling on node B"
    )
    refused = await _hello(on_b, "stage")
    assert refused["code"] == "ROOM_DISABLED" and refused["message"] == "room 'stage' is disabled"
    # Sessions already in the room stay.
    roster = (await api.get(f"/api/v1/rooms/{room['id']}/sessions")).body["items"]
    assert len(roster) == 2

    # Enabled again: welcome on node B too, once a place is free (capacity counts both nodes:
    # node B holds none of the 2 sessions, and the room is still full).
    assert (await api.patch(f"/api/v1/rooms/{room['id']}", {"status": "active"})).status == 200
    await _within_a_second(lambda: node_b.catalog.lookup("default", "stage").active, "enabling on node B")
    assert (await _hello(on_b, "stage"))["code"] == "ROOM_FULL"
    await users[2].app("/app/leave", {"sessionId": sessions[2]}, receipt="bye")
    await users[2].next(command="RECEIPT")
    assert (await _hello(on_b, "stage"))["type"] == "WELCOME"

    # Deleted: the room is gone everywhere (no auto-creation on these nodes).
    assert (await api.delete(f"/api/v1/rooms/{room['id']}")).status == 204
    await _within_a_second(lambda: node_b.catalog.lookup("default", "stage") is None, "deletion on node B")
    assert (await _hello(users[0], "stage"))["code"] == "ROOM_NOT_FOUND"
    for client in (*users, on_b):
        await client.close()
