"""Room definitions the server reads: create, update, list, lookup, soft delete, attributes, types."""

from __future__ import annotations

import psycopg
import pytest

from spidi_server.history.sql import room_types, rooms
from spidi_server.history.sql.sessions import find as find_sessions
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for

from .helpers import FakeSession, dt, ms, push, running_writer, wait_for, written


def test_rooms_round_trip(pg):
    room_types.create(pg, "acme", "classroom", "Classroom", default_capacity=40, actor="test")
    lobby = rooms.create(
        pg, "acme", "lobby", capacity=100, name="Lobby", attrs={"floor": "1", "wing": "E"}, actor="test"
    )
    assert (
        lobby["id"] == room_id_for("acme", "lobby")
        and lobby["capacity"] == 100
        and lobby["status"] == "active"
    )
    assert lobby["attrs"] == {"floor": "1", "wing": "E"}
    room = rooms.create(pg, "acme", "a-101", room_type="classroom", ttl_s=3600, actor="test")
    assert (
        room["capacity"] == 40 and room["room_type"] == "classroom" and room["ttl_s"] == 3600
    )  # the type's default
    rooms.create(pg, "other", "lobby", capacity=5, actor="test")

    assert [r["code"] for r in rooms.list_of(pg, "acme")] == ["a-101", "lobby"]
    # Attributes replaced as a set; status change.
    changes = {"capacity": 120, "status": "disabled", "attrs": {"floor": "2"}}
    lobby = rooms.update(pg, "acme", lobby["id"], changes, actor="test")
    assert (lobby["capacity"], lobby["status"], lobby["attrs"]) == (120, "disabled", {"floor": "2"})
    assert [r["code"] for r in rooms.list_of(pg, "acme") if r["status"] == "active"] == ["a-101"]
    assert rooms.get(pg, "other", room_id_for("other", "lobby"))["capacity"] == 5
    assert rooms.get(pg, "acme", room_id_for("acme", "nope")) is None

    assert rooms.delete(pg, "acme", lobby["id"], actor="test") is True
    assert rooms.delete(pg, "acme", lobby["id"], actor="test") is False
    assert rooms.get(pg, "acme", lobby["id"]) is None
    # Soft-deleted rows stay for the record; the code can be used again (same id, undeleted).
    assert pg.execute("SELECT count(*) FROM dat_spd_room WHERE deleted_at IS NOT NULL").fetchone()[0] == 1
    again = rooms.create(pg, "acme", "lobby", capacity=7, actor="test")
    assert again["id"] == lobby["id"] and again["capacity"] == 7 and again["attrs"] == {}
    with pytest.raises(ValueError):
        rooms.create(pg, "acme", "x", room_type="no-such-type", actor="test")


def test_a_room_type_belongs_to_one_tenant(pg):
    """Finding 7 of issue 13: each tenant has its own catalogue; a room can only be of its own
    tenant's types, whoever writes it (the lookup, the foreign key, row-level security)."""
    acme = room_types.create(pg, "acme", "hall", "Hall", default_capacity=40, actor="test")
    # The same code in another tenant is another type, not a duplicate.
    other = room_types.create(pg, "other", "hall", "Other hall", default_capacity=5, actor="test")
    assert other["id"] != acme["id"] and other["tenant"] == "other"
    assert [t["id"] for t in room_types.list_page(pg, "acme")[0]] == [acme["id"]]
    assert room_types.get(pg, "other", acme["id"]) is None
    assert room_types.update(pg, "other", acme["id"], {"default_capacity": 1}, actor="test") is None
    assert room_types.delete(pg, "other", acme["id"], actor="test") is False
    assert room_types.get(pg, "acme", acme["id"])["default_capacity"] == 40

    assert rooms.create(pg, "acme", "a", room_type="hall", actor="test")["capacity"] == 40
    assert rooms.create(pg, "other", "b", room_type="hall", actor="test")["capacity"] == 5
    room_types.create(pg, "acme", "stage", "Stage", actor="test")
    with pytest.raises(room_types.UnknownRoomTypeError):
        rooms.create(pg, "other", "c", room_type="stage", actor="test")  # only acme has one
    # Written past the API, another tenant's type id is refused by the schema itself.
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        pg.execute("UPDATE dat_spd_room SET room_type_id = %s WHERE code = 'b'", [acme["id"]])
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        pg.execute(
            """INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, room_type_id, kind, expression)
               VALUES ('other', 'x', 'room_type', %s, 'custom', 'true')""",
            [acme["id"]],
        )
    # A tenant's reader sees only its own types, and cannot write one for another tenant.
    with tenant_transaction(pg, "other"):
        assert [r[0] for r in pg.execute("SELECT id::text FROM tba_spd_room_type")] == [other["id"]]
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(pg, "other"):
        pg.execute("INSERT INTO tba_spd_room_type (unidad_negocio_id, code, name) VALUES ('acme', 'x', 'X')")


def test_session_query(history_settings, redis_sync, pg):
    sessions = [
        FakeSession("acme", room, user, ms(t))
        for room, user, t in [
            ("lobby", "ann", "2026-05-04T09:00"),
            ("lobby", "ben", "2026-05-04T10:00"),
            ("hall", "ann", "2026-05-04T11:00"),
            ("lobby", "cy", "2026-05-05T10:00"),
        ]
    ]
    evs = [s.started() for s in sessions]
    sessions[0].beat(ms("2026-05-04T09:00:15"), 25)
    evs.append(sessions[0].ended(ms("2026-05-04T09:30"), "disconnect"))
    push(redis_sync, evs)
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == len(evs))

    day = (dt("2026-05-04T00:00"), dt("2026-05-05T00:00"))
    assert [s["user_id"] for s in find_sessions(pg, *day)] == ["ann", "ben", "ann"]  # newest first
    lobby = find_sessions(pg, *day, room_id=room_id_for("acme", "lobby"))
    assert [s["user_id"] for s in lobby] == ["ben", "ann"]
    (first,) = find_sessions(pg, *day, user_id="ann", room_id=room_id_for("acme", "lobby"))
    assert (first["end_reason"], first["heartbeat_count"], first["latency_avg"]) == ("disconnect", 1, 25.0)
    assert len(find_sessions(pg, *day, limit=1)) == 1
    # The plain-SQL question: every session with start, end, reason, device, OS, app version, IP,
    # heartbeat count and latency summary.
    rows = pg.execute(
        """SELECT session_id, started_at, ended_at, end_reason, device, os, app_version, ip, heartbeat_count,
                  latency_avg, latency_min, latency_max FROM dat_spd_session ORDER BY started_at"""
    ).fetchall()
    assert len(rows) == 4 and rows[0][3:8] == ("disconnect", "Pixel", "Android", "1.2.3", "10.0.0.7")
