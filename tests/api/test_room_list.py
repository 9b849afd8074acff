"""One list of the tenant's rooms (issue 16, rows 2, 9 and 11): REST, /topic/rooms and spidi_rooms_total.

Real nodes on the test Redis and PostgreSQL, real WebSocket clients. The REST list, /topic/rooms
(what the dashboard shows) and the cluster-wide ``spidi_rooms_total`` list the same rooms: stored
ones (joined or not) and auto-created ones with live state; a deleted room leaves them at once;
an empty room's keys expire (after its ``ttl_s`` if it has one), and an auto-created room is then
gone; a join before that keeps it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import pytest

from spidi_server.rooms import room_id_for
from spidi_server.stores import keys

from ..conftest import token_for
from ..stomp_client import connected
from .conftest import ApiClient, check_shape, create_room

SWEEP_S = 0.2


@pytest.fixture
async def rooms_node(node_factory, pg_dsn):
    """A node with PostgreSQL, rooms auto-created, a quick rooms sweep and /topic/rooms."""
    return await node_factory(
        postgres_dsn=pg_dsn, writer="external", auto_create_rooms=True, room_sweep_interval_s=SWEEP_S
    )


async def poll(predicate, what: str, timeout: float = 5.0):
    """Call ``predicate()`` (awaiting what it returns if awaitable) until it gives something truthy;
    that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)


async def listed(api: ApiClient, **params) -> dict[str, dict]:
    """GET /api/v1/rooms as a monitor: code -> item."""
    reply = await api.get("/api/v1/rooms", role="monitor", params=params or None)
    assert reply.status == 200, reply.body
    assert reply.body["total"] == len(reply.body["items"])
    return {item["code"]: item for item in reply.body["items"]}


async def topic_rooms(node) -> dict[str, dict]:
    """A fresh /topic/rooms snapshot from ``node``: code -> room."""
    mon = await connected(node.ws_url, token_for(node.settings, "mon", "spidi:monitor"))
    try:
        await mon.subscribe("/topic/rooms")
        return {r["roomCode"]: r for r in (await mon.json("/topic/rooms"))["rooms"]}
    finally:
        await mon.close()


async def user(node, sub: str):
    return await connected(node.ws_url, token_for(node.settings, sub, "spidi:user"))


async def test_an_auto_created_room_reads_as_listed_and_a_write_stores_it(http, rooms_node, pg):
    api = ApiClient(http, rooms_node)
    alice = await user(rooms_node, "alice")
    await alice.hello("drop-in")
    room_id = room_id_for("default", "drop-in")

    # GET of one room is its item of the list, stored or not.
    got = await api.get(f"/api/v1/rooms/{room_id}", role="monitor")
    assert got.status == 200, got.body
    assert got.body == (await listed(api))["drop-in"]
    assert (got.body["stored"], got.body["online"], got.body["code"]) == (False, 1, "drop-in")
    doc = (await api.get("/api/openapi.json", role=None)).body
    check_shape(doc["components"]["schemas"]["RoomListItem"], got.body, doc, "one room")

    # Another tenant's caller, and an id no room has, find nothing.
    assert (await api.get(f"/api/v1/rooms/{room_id}", tenant="other")).status == 404
    unknown = room_id_for("default", "never-joined")
    assert (await api.get(f"/api/v1/rooms/{unknown}")).status == 404
    assert (await api.patch(f"/api/v1/rooms/{unknown}", {"capacity": 3})).status == 404

    # A PATCH stores its definition: same id and code, the fields given, the rest defaults.
    wrong = await api.patch(f"/api/v1/rooms/{room_id}", {"code": "other-code", "capacity": 3})
    assert wrong.status == 400 and "cannot change" in str(wrong.body)
    patched = await api.patch(f"/api/v1/rooms/{room_id}", {"capacity": 3, "name": "Drop-in"})
    assert patched.status == 200, patched.body
    assert (patched.body["id"], patched.body["code"], patched.body["capacity"]) == (room_id, "drop-in", 3)
    assert patched.body["name"] == "Drop-in" and patched.body["createdBy"] == "admin-of-default"
    row = pg.execute("SELECT code, capacity FROM dat_spd_room WHERE id = %s", [room_id]).fetchone()
    assert tuple(row) == ("drop-in", 3)
    item = (await listed(api))["drop-in"]
    assert (item["stored"], item["capacity"], item["online"]) == (True, 3, 1)

    # The stored capacity is in force at once: 1 online + 2 more fill it.
    for sub in ("bob", "carol"):
        await (await user(rooms_node, sub)).hello("drop-in")
    dave = await user(rooms_node, "dave")
    await dave.app("/app/hello", {"roomCode": "drop-in", "clientId": "c1", "appVersion": "1.0.0"})
    frame = await dave.next(timeout=5, command="MESSAGE")
    assert frame[1]["destination"] == "/user/queue/errors" and json.loads(frame[2])["code"] == "ROOM_FULL"


async def test_auto_created_and_stored_rooms_are_one_list_with_live_figures(http, rooms_node):
    api = ApiClient(http, rooms_node)
    quiet = await create_room(api, "quiet", capacity=7, name="Quiet room")
    alice = await user(rooms_node, "alice")
    sid = (await alice.hello("auto-1"))["sessionId"]
    await alice.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 40}, receipt="hb")
    await alice.next(command="RECEIPT")

    async def with_latency():
        rooms = await listed(api)
        return rooms if rooms["auto-1"]["avgLatencyMs"] == 40.0 else None

    rooms = await poll(with_latency, "the heartbeat's latency in the list")
    assert list(rooms) == ["auto-1", "quiet"]  # by code
    auto = rooms["auto-1"]
    assert auto["id"] == room_id_for("default", "auto-1")
    assert (auto["stored"], auto["online"], auto["users"], auto["peak"]) == (False, 1, 1, 1)
    assert auto["capacity"] == rooms_node.settings.default_room_capacity
    assert (auto["status"], auto["type"], auto["name"], auto["createdAt"]) == ("active", None, None, None)
    stored = rooms["quiet"]
    assert stored["id"] == quiet["id"] and stored["name"] == "Quiet room" and stored["stored"] is True
    assert (stored["online"], stored["users"], stored["peak"], stored["capacity"]) == (0, 0, 0, 7)
    assert stored["avgLatencyMs"] == 0.0 and stored["createdBy"] == "admin-of-default"

    # Both kinds as the OpenAPI document describes the list.
    doc = (await api.get("/api/openapi.json", role=None)).body
    check_shape(doc["components"]["schemas"]["RoomList"], (await api.get("/api/v1/rooms")).body, doc, "list")

    # Filters and pages apply to the whole list.
    assert list(await listed(api, codePrefix="AUTO")) == ["auto-1"]
    assert list(await listed(api, status="disabled")) == []
    page = (await api.get("/api/v1/rooms", params={"limit": 1, "offset": 1})).body
    assert [i["code"] for i in page["items"]] == ["quiet"] and page["total"] == 2

    # /topic/rooms (the dashboard's feed) lists the same rooms with the same figures.
    topic = await topic_rooms(rooms_node)
    assert list(topic) == ["auto-1", "quiet"]
    for code, room in topic.items():
        item = rooms[code]
        assert room["roomId"] == item["id"]
        assert {k: room[k] for k in ("online", "users", "peak", "capacity", "avgLatencyMs")} == {
            k: item[k] for k in ("online", "users", "peak", "capacity", "avgLatencyMs")
        }
    # Another tenant sees none of them.
    assert (await api.get("/api/v1/rooms", tenant="other")).body["items"] == []
    await alice.close()


async def test_a_deleted_room_leaves_every_list_at_once_on_every_node(http, node_factory, pg_dsn):
    a = await node_factory(
        postgres_dsn=pg_dsn, writer="external", auto_create_rooms=True, rooms_topic_interval_ms=50
    )
    b = await node_factory(
        postgres_dsn=pg_dsn, writer="external", auto_create_rooms=True, rooms_topic_interval_ms=50
    )
    api = ApiClient(http, a)
    stored = await create_room(api, "stored-room")
    joined = await create_room(api, "joined-room")
    on_b = await user(b, "bob")
    await on_b.hello("joined-room")
    await on_b.hello("auto-room")
    mon_b = await connected(b.ws_url, token_for(b.settings, "mon", "spidi:monitor"))
    await mon_b.subscribe("/topic/rooms")

    async def b_lists(codes: set[str]):
        rooms = (await mon_b.json("/topic/rooms"))["rooms"]
        return {r["roomCode"] for r in rooms} == codes

    everything = {"stored-room", "joined-room", "auto-room"}
    await poll(lambda: b_lists(everything), "node B lists the three rooms")
    assert set(await listed(api)) == everything

    assert (await api.delete(f"/api/v1/rooms/{stored['id']}")).status == 204
    assert set(await listed(api)) == {"joined-room", "auto-room"}  # at once, on the node that took it
    assert set(await topic_rooms(a)) == {"joined-room", "auto-room"}
    started = time.monotonic()
    await poll(lambda: b_lists({"joined-room", "auto-room"}), "node B drops the deleted room", 1.0)
    assert time.monotonic() - started < 1.0

    # A deleted room someone is in: out of the lists too (the session stays until it ends).
    assert (await api.delete(f"/api/v1/rooms/{joined['id']}")).status == 204
    assert set(await listed(api)) == {"auto-room"}
    await poll(lambda: b_lists({"auto-room"}), "node B drops the deleted occupied room", 1.0)
    # An auto-created room can be deleted as well: it leaves the list (a HELLO creates it again).
    auto_id = room_id_for("default", "auto-room")
    assert (await api.delete(f"/api/v1/rooms/{auto_id}")).status == 204
    assert set(await listed(api)) == set() and set(await topic_rooms(a)) == set()
    assert (await api.delete(f"/api/v1/rooms/{auto_id}")).status == 404
    for c in (on_b, mon_b):
        await c.close()


async def test_an_empty_rooms_keys_expire_and_an_auto_created_room_is_then_gone(
    http, node_factory, pg_dsn, redis_sync
):
    node = await node_factory(
        postgres_dsn=pg_dsn,
        writer="external",
        auto_create_rooms=True,
        room_sweep_interval_s=SWEEP_S,
        room_empty_ttl_s=1,
    )
    api = ApiClient(http, node)
    alice = await user(node, "alice")
    room_id = room_id_for("default", "brief")
    sid = (await alice.hello("brief"))["sessionId"]
    await node.store.flush()
    assert redis_sync.ttl(keys.room_metrics(room_id)) == -1  # occupied: no expiry
    await alice.app("/app/leave", {"sessionId": sid}, receipt="bye")
    await alice.next(command="RECEIPT")
    await node.store.flush()
    assert 0 < redis_sync.ttl(keys.room_metrics(room_id)) <= 1  # empty: its live state expires
    assert (await listed(api))["brief"]["online"] == 0  # listed until then

    async def gone():
        return "brief" not in await listed(api)

    await poll(gone, "the auto-created room gone from the list")
    assert redis_sync.exists(*keys.room_keys(room_id)) == 0
    assert "brief" not in await topic_rooms(node)
    await poll(
        lambda: not redis_sync.hexists(keys.tenant_rooms("default"), room_id),
        "the sweep unindexes the expired room",
    )
    await alice.close()


async def test_the_sweep_gives_lingering_empty_rooms_an_expiry(http, node_factory, pg_dsn, redis_sync):
    # A room emptied by a path that set no expiry (the reaper, an older version): the sweep does.
    node = await node_factory(
        postgres_dsn=pg_dsn,
        writer="external",
        auto_create_rooms=True,
        room_sweep_interval_s=SWEEP_S,
        room_empty_ttl_s=1,
    )
    room_id = room_id_for("default", "old")
    redis_sync.hset(keys.room_metrics(room_id), mapping={"code": "old", "tenant": "default", "capacity": 5})
    redis_sync.hset(keys.tenant_rooms("default"), room_id, "old")
    redis_sync.sadd(keys.TENANTS, "default")
    assert "old" in await listed(ApiClient(http, node))
    await poll(lambda: redis_sync.ttl(keys.room_metrics(room_id)) > 0, "an expiry")
    await poll(
        lambda: not redis_sync.hexists(keys.tenant_rooms("default"), room_id),
        "the expired room unindexed",
    )
    assert "old" not in await listed(ApiClient(http, node))


async def test_ttl_s_removes_an_empty_rooms_state_unless_a_join_comes_first(http, rooms_node, redis_sync):
    api = ApiClient(http, rooms_node)
    short = await create_room(api, "short", ttlSeconds=1)
    kept = await create_room(api, "kept", ttlSeconds=2)
    alice = await user(rooms_node, "alice")

    # Empty for ttl_s: its live state goes (peak included); the stored room stays listed.
    sid = (await alice.hello("short"))["sessionId"]
    await alice.app("/app/leave", {"sessionId": sid}, receipt="bye")
    await alice.next(command="RECEIPT")
    await rooms_node.store.flush()
    assert 0 < redis_sync.ttl(keys.room_metrics(short["id"])) <= 1
    assert (await listed(api))["short"]["peak"] == 1
    await poll(lambda: not redis_sync.exists(keys.room_metrics(short["id"])), "expiry")
    item = (await listed(api))["short"]
    assert (item["stored"], item["online"], item["peak"], item["capacity"]) == (True, 0, 0, 1000)

    # A join before ttl_s ran out cancels the removal.
    sid = (await alice.hello("kept"))["sessionId"]
    await alice.app("/app/leave", {"sessionId": sid}, receipt="bye")
    await alice.next(command="RECEIPT")
    await rooms_node.store.flush()
    assert 0 < redis_sync.ttl(keys.room_metrics(kept["id"])) <= 2
    left_at = time.monotonic()
    await alice.hello("kept")
    await rooms_node.store.flush()
    assert redis_sync.ttl(keys.room_metrics(kept["id"])) == -1
    # Past the moment it would have expired: still there, occupied.
    await asyncio.sleep(max(0.0, left_at + 2.5 - time.monotonic()))
    assert redis_sync.exists(keys.room_metrics(kept["id"]))
    assert (await listed(api))["kept"]["online"] == 1
    await alice.close()


async def _rooms_total(http, node) -> dict[str, float]:
    async with http.get(f"{node.ops.url}/metrics") as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("spidi_rooms_total{") or line.startswith("spidi_node_rooms "):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_rooms_total_counts_the_tenants_rooms_cluster_wide(http, node_factory, pg_dsn):
    common = {"postgres_dsn": pg_dsn, "writer": "external", "auto_create_rooms": True}
    a = await node_factory(node_id="node-a", room_sweep_interval_s=SWEEP_S, **common)
    b = await node_factory(node_id="node-b", room_sweep_interval_s=SWEEP_S, **common)
    api = ApiClient(http, a)
    await create_room(api, "nobody-yet")
    await create_room(api, "elsewhere", tenant="acme")
    on_a, on_b = await user(a, "ann"), await user(b, "bob")
    await on_a.hello("room-a")
    await on_b.hello("room-b")
    expected = {
        'spidi_rooms_total{tenant="default"}': 3.0,
        'spidi_rooms_total{tenant="acme"}': 1.0,
        "spidi_node_rooms": 1.0,
    }

    async def both_show():
        figures = [await _rooms_total(http, n) for n in (a, b)]
        return figures if figures[0] == figures[1] == expected else None

    await poll(both_show, "spidi_rooms_total on both nodes")
    assert len(await listed(api)) == 3  # the figure is the list's length
    for c in (on_a, on_b):
        await c.close()


async def test_a_node_without_postgresql_lists_its_configured_and_auto_created_rooms(http, node_factory):
    node = await node_factory(auto_create_rooms=True, rooms={"hall": 20})
    assert node.dsn is None
    alice = await user(node, "alice")
    await alice.hello("auto-2")
    rooms = await listed(ApiClient(http, node))
    assert {code: (r["stored"], r["online"], r["capacity"]) for code, r in rooms.items()} == {
        "auto-2": (False, 1, node.settings.default_room_capacity),
        "hall": (False, 0, 20),
    }
    assert set(await topic_rooms(node)) == {"auto-2", "hall"}
    await alice.close()
