"""Row-level security: a reader scoped to one tenant sees none of another's rows; the writer sees
and writes every tenant, as a superuser (embedded) and as a plain table owner (external)."""

from __future__ import annotations

import dataclasses
import uuid

import psycopg
import pytest

from spidi_server.history.migrate import migrate
from spidi_server.history.sql import rooms, sessions
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for

from .helpers import FakeSession, dt, ms, push, room_sample, running_writer, wait_for, written

T0 = ms("2026-05-04T10:00")
FROM, TO = dt("2026-05-04T00:00"), dt("2026-05-05T00:00")


def _two_tenants(settings, redis_sync, conn) -> None:
    for tenant in ("tenant-a", "tenant-b"):
        rooms.create(conn, tenant, "lobby", capacity=10, attrs={"floor": tenant}, actor="test")
    evs = []
    for tenant in ("tenant-a", "tenant-b"):
        s = FakeSession(tenant, "lobby", f"user-of-{tenant}", T0)
        evs += [s.started(), room_sample(tenant, "lobby", T0, joins=1, latencies=[10])]
    push(redis_sync, evs)
    with running_writer(settings):
        wait_for(lambda: written(redis_sync) == len(evs))


def _visible(conn, tenant: str) -> dict:
    other = "tenant-b" if tenant == "tenant-a" else "tenant-a"
    with tenant_transaction(conn, tenant):
        return {
            "sessions": {r[0] for r in conn.execute("SELECT unidad_negocio_id FROM dat_spd_session")},
            "stats": {r[0] for r in conn.execute("SELECT unidad_negocio_id FROM dat_spd_room_stats")},
            "rooms": {r[0] for r in conn.execute("SELECT unidad_negocio_id FROM dat_spd_room")},
            "attrs": {r[0] for r in conn.execute("SELECT attr_value FROM dat_spd_room_attr")},
            "fn_sessions": {r["user_id"] for r in sessions.find(conn, FROM, TO)},
            "fn_stats": {str(r["room_id"]) for r in sessions.room_stats(conn, None, FROM, TO, "1h")},
            "listed": [r["code"] for r in rooms.list_of(conn, tenant)],
            "other_room": rooms.get(conn, other, room_id_for(other, "lobby")),
        }


def _assert_isolated(conn) -> None:
    a = _visible(conn, "tenant-a")
    assert a["sessions"] == a["stats"] == a["rooms"] == a["attrs"] == {"tenant-a"}
    assert a["fn_sessions"] == {"user-of-tenant-a"} and a["fn_stats"] == {room_id_for("tenant-a", "lobby")}
    assert a["listed"] == ["lobby"] and a["other_room"] is None
    b = _visible(conn, "tenant-b")
    assert b["sessions"] == b["stats"] == b["rooms"] == {"tenant-b"}
    # A reader with no tenant set sees nothing at all.
    with conn.transaction():
        conn.execute("SET LOCAL ROLE spidi_reader")
        assert conn.execute("SELECT count(*) FROM dat_spd_session").fetchone()[0] == 0
    # Readers cannot write, not even their own tenant's rows.
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, "tenant-a"):
        conn.execute("UPDATE dat_spd_session SET user_id = 'x'")
    # Outside a tenant transaction the owner sees everything again (the role was SET LOCAL).
    assert conn.execute("SELECT count(DISTINCT unidad_negocio_id) FROM dat_spd_session").fetchone()[0] == 2


def test_reader_of_one_tenant_sees_nothing_of_another(history_settings, redis_sync, pg):
    _two_tenants(history_settings, redis_sync, pg)
    _assert_isolated(pg)


def test_tenant_transaction_refuses_to_nest(pg):
    with (
        pg.transaction(),
        pytest.raises(psycopg.ProgrammingError),
        tenant_transaction(pg, "tenant-a"),
    ):
        pass
    with pytest.raises(ValueError):
        tenant_transaction(pg, "").__enter__()


def test_external_postgres_as_plain_owner(history_settings, redis_sync, pg_server):
    """An external PostgreSQL: the application's login role is no superuser and has no BYPASSRLS;
    it owns the tables, and is a member of spidi_writer and spidi_reader, granted by a DBA."""
    role = f"spidi_app_{uuid.uuid4().hex[:8]}"
    database = f"spidi_ext_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE")
        # Run once per cluster by a DBA (migration 0003 says so when it cannot do it itself).
        admin.execute(
            "DO $$ BEGIN CREATE ROLE spidi_reader NOLOGIN; EXCEPTION WHEN duplicate_object THEN END $$"
        )
        admin.execute(
            "DO $$ BEGIN CREATE ROLE spidi_writer NOLOGIN; EXCEPTION WHEN duplicate_object THEN END $$"
        )
        admin.execute(f"GRANT spidi_reader, spidi_writer TO {role}")
        admin.execute(f"CREATE DATABASE {database} OWNER {role}")
    dsn = pg_server.database_dsn(database, user=role)
    try:
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute(
                "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
            ).fetchone() == (False,)
            _two_tenants(dataclasses.replace(history_settings, postgres_dsn=dsn), redis_sync, conn)
            _assert_isolated(conn)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_migration_without_role_privileges_says_what_to_do(pg_server):
    role = f"spidi_weak_{uuid.uuid4().hex[:8]}"
    database = f"spidi_weak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {database} OWNER {role}")
        # Roles exist (an earlier test or migration made them) but this user is no member.
        admin.execute(
            "DO $$ BEGIN CREATE ROLE spidi_reader NOLOGIN; EXCEPTION WHEN duplicate_object THEN END $$"
        )
    try:
        with pytest.raises(psycopg.errors.RaiseException) as info:
            migrate(pg_server.database_dsn(database, user=role))
        assert "must be a member of roles spidi_reader and spidi_writer" in str(info.value)
        assert f"GRANT spidi_reader, spidi_writer TO {role}" in info.value.diag.message_hint
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")
