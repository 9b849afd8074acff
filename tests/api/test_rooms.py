"""Rooms and room types through the REST API: create, read, list, update, delete, conflicts, audit."""

from __future__ import annotations

import logging

import psycopg

from spidi_server.rooms import room_id_for

from .conftest import assert_problem, create_room

ROOM_KEYS = {
    "id",
    "code",
    "name",
    "type",
    "capacity",
    "ttlSeconds",
    "status",
    "attributes",
    "createdAt",
    "createdBy",
    "updatedAt",
    "updatedBy",
}


async def test_room_crud_round_trip(api, pg_dsn, caplog):
    caplog.set_level(logging.INFO, "spidi.api")
    reply = await api.post(
        "/api/v1/rooms",
        {
            "code": "lobby",
            "name": "Lobby",
            "capacity": 50,
            "ttlSeconds": 3600,
            "attributes": {"floor": "3", "wing": None},
        },
        sub="alice",
    )
    assert reply.status == 201, reply.body
    room = reply.body
    assert set(room) == ROOM_KEYS
    assert room["id"] == room_id_for("default", "lobby")
    assert reply.headers["Location"] == f"/api/v1/rooms/{room['id']}"
    assert (
        room["code"],
        room["name"],
        room["type"],
        room["capacity"],
        room["ttlSeconds"],
        room["status"],
    ) == ("lobby", "Lobby", None, 50, 3600, "active")
    assert room["attributes"] == {"floor": "3", "wing": None}
    assert room["createdBy"] == room["updatedBy"] == "alice"
    assert room["createdAt"].endswith("Z") and room["createdAt"] == room["updatedAt"]

    # One room reads as the list shows it: the stored definition, and its live figures.
    got = await api.get(f"/api/v1/rooms/{room['id']}", role="monitor")
    assert got.status == 200 and {k: got.body[k] for k in ROOM_KEYS} == room
    assert (got.body["stored"], got.body["online"], got.body["users"], got.body["peak"]) == (True, 0, 0, 0)

    patched = await api.patch(
        f"/api/v1/rooms/{room['id']}", {"capacity": 10, "attributes": {"floor": "4"}}, sub="bob"
    )
    assert patched.status == 200, patched.body
    assert patched.body["capacity"] == 10 and patched.body["attributes"] == {"floor": "4"}
    assert patched.body["name"] == "Lobby" and patched.body["ttlSeconds"] == 3600  # untouched
    assert patched.body["createdBy"] == "alice" and patched.body["updatedBy"] == "bob"
    assert patched.body["updatedAt"] > room["updatedAt"]

    # PUT replaces the whole definition: what is left out takes its default.
    put = await api.put(
        f"/api/v1/rooms/{room['id']}", {"code": "lobby", "name": "Main lobby", "status": "disabled"}
    )
    assert put.status == 200, put.body
    assert (put.body["name"], put.body["status"], put.body["ttlSeconds"], put.body["attributes"]) == (
        "Main lobby",
        "disabled",
        None,
        {},
    )
    # No capacity of its own and no type: the server's default capacity is the one in force.
    assert put.body["capacity"] == api.node.settings.default_room_capacity

    # The stored rows carry the actor, and the node's catalog already has the change.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT created_by, updated_by, status FROM dat_spd_room WHERE code = 'lobby'"
        ).fetchone()
    assert row == ("alice", "admin-of-default", "disabled")
    assert api.node.catalog.lookup("default", "lobby").active is False

    deleted = await api.delete(f"/api/v1/rooms/{room['id']}")
    assert deleted.status == 204 and deleted.body is None
    assert_problem(await api.get(f"/api/v1/rooms/{room['id']}"), 404, "not-found")
    assert_problem(await api.delete(f"/api/v1/rooms/{room['id']}"), 404, "not-found")
    assert_problem(await api.patch(f"/api/v1/rooms/{room['id']}", {"capacity": 3}), 404, "not-found")
    assert api.node.catalog.stored.get(("default", "lobby")) is None

    events = [(r.getMessage(), getattr(r, "actor", None)) for r in caplog.records if r.name == "spidi.api"]
    assert events == [
        ("room_created", "alice"),
        ("room_updated", "bob"),
        ("room_updated", "admin-of-default"),
        ("room_deleted", "admin-of-default"),
    ]
    updated = [r for r in caplog.records if r.getMessage() == "room_updated"][0]
    assert updated.changes == {
        "capacity": [50, 10],
        "attributes": [{"floor": "3", "wing": None}, {"floor": "4"}],
    }


async def test_duplicate_code_conflicts_and_a_deleted_code_can_be_reused(api):
    room = await create_room(api, "dup", capacity=5)
    body = assert_problem(await api.post("/api/v1/rooms", {"code": "dup"}), 409, "conflict")
    assert "dup" in body["detail"]
    assert (await api.delete(f"/api/v1/rooms/{room['id']}")).status == 204
    again = await create_room(api, "dup", name="Second life", attributes={"a": "b"})
    assert again["id"] == room["id"] and again["capacity"] == api.node.settings.default_room_capacity
    assert again["name"] == "Second life" and again["attributes"] == {"a": "b"}
    assert again["createdAt"] > room["createdAt"]


async def test_code_cannot_change(api):
    room = await create_room(api, "fixed")
    same = await api.patch(f"/api/v1/rooms/{room['id']}", {"code": "fixed", "name": "ok"})
    assert same.status == 200 and same.body["name"] == "ok"
    body = assert_problem(
        await api.patch(f"/api/v1/rooms/{room['id']}", {"code": "other"}), 400, "validation-error"
    )
    assert body["errors"] == [
        {"in": "body", "field": "code", "message": "cannot change (is 'fixed'); create a new room"}
    ]


async def test_list_filters_and_pagination(api):
    for code, status in [
        ("alpha-1", "active"),
        ("alpha-2", "disabled"),
        ("Beta-ALPHA", "active"),
        ("gamma", "active"),
        ("delta", "disabled"),
    ]:
        await create_room(api, code, status=status)
    await api.post("/api/v1/room-types", {"code": "class", "name": "Classroom", "defaultCapacity": 30})
    await create_room(api, "typed", type="class")

    async def codes(**params) -> tuple[list[str], dict]:
        reply = await api.get("/api/v1/rooms", params=params, role="monitor")
        assert reply.status == 200, reply.body
        return [r["code"] for r in reply.body["items"]], reply.body

    everything, body = await codes()
    assert everything == sorted(everything) and len(everything) == 6  # byte order: "B" < "a"
    assert (body["total"], body["limit"], body["offset"]) == (6, 50, 0)
    assert (await codes(codePrefix="ALPHA"))[0] == ["alpha-1", "alpha-2"]
    assert (await codes(codeContains="alpha"))[0] == ["Beta-ALPHA", "alpha-1", "alpha-2"]
    assert (await codes(codeContains="%"))[0] == []  # literal, not a wildcard
    assert (await codes(status="disabled"))[0] == ["alpha-2", "delta"]
    assert (await codes(type="class"))[0] == ["typed"]
    assert (await codes(codeContains="a", status="active"))[0] == ["Beta-ALPHA", "alpha-1", "gamma"]
    page, body = await codes(limit="2", offset="1")
    assert page == everything[1:3] and (body["total"], body["limit"], body["offset"]) == (6, 2, 1)
    page, body = await codes(offset="100")
    assert page == [] and body["total"] == 6


async def test_room_types_crud_and_their_effect_on_rooms(api):
    created = await api.post(
        "/api/v1/room-types", {"code": "class", "name": "Classroom", "defaultCapacity": 30}, sub="carol"
    )
    assert created.status == 201, created.body
    rt = created.body
    assert set(rt) == {
        "id",
        "code",
        "name",
        "defaultCapacity",
        "createdAt",
        "createdBy",
        "updatedAt",
        "updatedBy",
    }
    assert (rt["code"], rt["name"], rt["defaultCapacity"], rt["createdBy"]) == (
        "class",
        "Classroom",
        30,
        "carol",
    )
    assert created.headers["Location"] == f"/api/v1/room-types/{rt['id']}"
    assert_problem(await api.post("/api/v1/room-types", {"code": "class", "name": "Again"}), 409, "conflict")

    room = await create_room(api, "r101", type="class")
    assert room["type"] == "class" and room["capacity"] == 30  # the type's default is in force
    assert api.node.catalog.lookup("default", "r101").capacity == 30

    patched = await api.patch(f"/api/v1/room-types/{rt['id']}", {"defaultCapacity": 25})
    assert (
        patched.status == 200
        and patched.body["defaultCapacity"] == 25
        and patched.body["name"] == "Classroom"
    )
    assert (await api.get(f"/api/v1/rooms/{room['id']}")).body["capacity"] == 25
    assert api.node.catalog.lookup("default", "r101").capacity == 25

    listed = await api.get("/api/v1/room-types", role="monitor")
    assert listed.status == 200 and [t["code"] for t in listed.body["items"]] == ["class"]
    listed = await api.get("/api/v1/room-types", role="monitor", tenant="other")
    assert listed.status == 200 and listed.body["items"] == []  # each tenant has its own catalogue
    assert (await api.get(f"/api/v1/room-types/{rt['id']}", role="monitor")).body["defaultCapacity"] == 25

    other = await api.post("/api/v1/room-types", {"code": "hall", "name": "Hall"})
    renamed = await api.put(f"/api/v1/room-types/{other.body['id']}", {"code": "class", "name": "Clash"})
    assert_problem(renamed, 409, "conflict")
    put = await api.put(f"/api/v1/room-types/{other.body['id']}", {"code": "big-hall", "name": "Big hall"})
    assert put.status == 200 and (put.body["code"], put.body["defaultCapacity"]) == ("big-hall", None)

    # In use by a room: cannot be deleted.
    body = assert_problem(await api.delete(f"/api/v1/room-types/{rt['id']}"), 409, "conflict")
    assert "used" in body["detail"]
    # Another tenant's type of the same code is its own: its rooms do not hold this one.
    theirs = await api.post("/api/v1/room-types", {"code": "big-hall", "name": "Their hall"}, tenant="other")
    assert theirs.status == 201 and theirs.body["id"] != put.body["id"]
    assert (await create_room(api, "theirs", tenant="other", type="big-hall"))["type"] == "big-hall"
    assert (await api.delete(f"/api/v1/room-types/{put.body['id']}")).status == 204

    assert (await api.patch(f"/api/v1/rooms/{room['id']}", {"type": None})).body["type"] is None
    assert (await api.delete(f"/api/v1/room-types/{rt['id']}")).status == 204
    assert_problem(await api.get(f"/api/v1/room-types/{rt['id']}"), 404, "not-found")
    assert_problem(await api.delete(f"/api/v1/room-types/{rt['id']}"), 404, "not-found")
    body = assert_problem(
        await api.post("/api/v1/rooms", {"code": "x", "type": "class"}), 400, "validation-error"
    )
    assert body["errors"] == [{"in": "body", "field": "type", "message": "unknown room type 'class'"}]
