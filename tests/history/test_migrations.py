"""Migrations from an empty database, idempotent replay, and schema facts the code relies on."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from spidi_server.alerting.rules import VARIABLES, AlertRule
from spidi_server.history import partitions
from spidi_server.history.migrate import available_migrations, migrate
from spidi_server.history.partitions import ROOM_STATS, SESSIONS, PartitionManager
from spidi_server.history.sql import alerts, rooms, sessions
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.rooms import room_id_for
from spidi_server.stores import events

from .helpers import dt


def test_migrate_from_empty_then_replay_is_a_no_op(empty_pg_dsn):
    versions = [m.version for m in available_migrations()]
    assert versions == sorted(versions) and versions[0] == "0001"
    assert migrate(empty_pg_dsn) == versions
    assert migrate(empty_pg_dsn) == []  # idempotent
    with psycopg.connect(empty_pg_dsn, autocommit=True) as conn:
        assert migrate(conn) == []
        recorded = conn.execute("SELECT version FROM spd_schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in recorded] == versions
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        }
        parents = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
            ).fetchall()
        }
        assert {
            "tba_spd_room_type",
            "dat_spd_room",
            "dat_spd_room_attr",
            "dat_spd_alert_rule",
            "dat_spd_alert_event",
            "spd_schema_migrations",
        } <= tables
        assert parents == {"dat_spd_session", "dat_spd_room_stats", "spd_event_ledger"}
        assert (
            conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'spd_archive'").fetchone()[0] == 1
        )
        forced = conn.execute(
            "SELECT n.nspname = 'spd_archive', c.relname FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE c.relforcerowsecurity AND c.relrowsecurity ORDER BY 1, 2"
        ).fetchall()
        hot = [
            "dat_spd_room",
            "dat_spd_room_attr",
            "dat_spd_session",
            "dat_spd_room_stats",
            "dat_spd_alert_rule",
            "dat_spd_alert_event",
            "tba_spd_room_type",
            "spd_tenant_defaults",
            "dat_spd_slo",
            "spd_export_chain",  # 0013: the export chain head and record
            "dat_spd_export",
            "dat_spd_anomaly",
        ]
        # The archive's tables are tenant data under the same policy (0011).
        archive = ["dat_spd_session", "dat_spd_room_stats", "dat_spd_alert_event"]
        assert forced == [(False, t) for t in sorted(hot)] + [(True, t) for t in sorted(archive)]
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename IN ('dat_spd_session', 'dat_spd_room_stats')"
            ).fetchall()
        }
        for column in (
            "(room_id, started_at)",
            "(user_id)",
            "(last_heartbeat_at, session_id)",
            "(room_id, ended_at, started_at)",
            "(room_id, ts_bucket)",
        ):
            assert any(column in d for d in indexes), column
        # 0017 dropped the session indexes others cover (room, room's ends, last heartbeat alone).
        for name in (
            "dat_spd_session_room_idx",
            "dat_spd_session_room_ended_idx",
            "dat_spd_session_last_hb_idx",
        ):
            assert not any(f"INDEX {name} " in d for d in indexes), name


def test_0006_gives_each_tenant_its_own_copy_of_a_shared_room_type(empty_pg_dsn, tmp_path):
    """A database at 0005 whose shared room types are used by two tenants: after 0006 every room
    and rule names its own tenant's type, with the same effective capacity as before."""
    for migration in available_migrations():
        if migration.version <= "0005":
            (tmp_path / f"{migration.version}_{migration.name}.sql").write_text(migration.sql)
    assert migrate(empty_pg_dsn, tmp_path)[-1] == "0005"
    with psycopg.connect(empty_pg_dsn, autocommit=True) as conn:

        def new_type(code: str, capacity: int | None, deleted: bool = False) -> str:
            return conn.execute(
                """INSERT INTO tba_spd_room_type (code, name, default_capacity, created_by, deleted_at)
                   VALUES (%s, %s, %s, 'ops', CASE WHEN %s THEN now() END) RETURNING id::text""",
                [code, code.title(), capacity, deleted],
            ).fetchone()[0]

        shared, alpha_only, unused = new_type("class", 30), new_type("hall", 200), new_type("booth", 2)
        new_type("old", 9, deleted=True)
        for tenant, code, type_id, capacity, deleted in [
            ("alpha", "a1", shared, None, False),
            ("alpha", "a2", alpha_only, None, False),
            ("alpha", "a3", shared, 12, False),  # its own capacity wins
            ("bravo", "b1", shared, None, False),
            ("bravo", "b2", shared, None, True),  # a deleted room keeps a valid reference too
            ("bravo", "b3", None, 4, False),
        ]:
            conn.execute(
                """INSERT INTO dat_spd_room (id, unidad_negocio_id, code, room_type_id, capacity, deleted_at)
                   VALUES (%s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)""",
                [room_id_for(tenant, code), tenant, code, type_id, capacity, deleted],
            )
        conn.execute(
            """INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, room_type_id, kind, expression)
               VALUES ('bravo', 'classes', 'room_type', %s, 'custom', 'true')""",
            [shared],
        )
        # Effective capacities as 0005's code computed them (a type of any tenant).
        before = dict(
            conn.execute(
                """SELECT r.id::text, coalesce(r.capacity, t.default_capacity) FROM dat_spd_room AS r
                   LEFT JOIN tba_spd_room_type AS t ON t.id = r.room_type_id WHERE r.deleted_at IS NULL"""
            ).fetchall()
        )

        assert migrate(conn)[:1] == ["0006"]

        assert {r["id"]: r["capacity"] for r in rooms.list_all(conn)} == before
        pairs = conn.execute(
            """SELECT r.code, r.unidad_negocio_id, t.unidad_negocio_id, t.code, t.id::text
               FROM dat_spd_room AS r JOIN tba_spd_room_type AS t ON t.id = r.room_type_id ORDER BY r.code"""
        ).fetchall()
        assert all(room_tenant == type_tenant for _, room_tenant, type_tenant, _, _ in pairs)
        ids = {code: type_id for code, _, _, _, type_id in pairs}
        # alpha (first by name) keeps the original row; bravo's rooms and rule moved to its copy.
        assert ids["a1"] == ids["a3"] == shared and ids["a2"] == alpha_only
        assert ids["b1"] == ids["b2"] != shared
        rule = conn.execute("SELECT room_type_id::text FROM dat_spd_alert_rule").fetchone()[0]
        assert rule == ids["b1"]
        catalogue = conn.execute(
            """SELECT unidad_negocio_id, code, default_capacity, created_by, deleted_at IS NOT NULL
               FROM tba_spd_room_type ORDER BY 1, 2"""
        ).fetchall()
        assert catalogue == [
            ("alpha", "booth", 2, "ops", False),  # unused: every tenant gets it
            ("alpha", "class", 30, "ops", False),
            ("alpha", "hall", 200, "ops", False),
            ("bravo", "booth", 2, "ops", False),
            ("bravo", "class", 30, "ops", False),
            ("default", "old", 9, "ops", True),  # deleted and unused: history only
        ]
        assert unused in {r[0] for r in conn.execute("SELECT id::text FROM tba_spd_room_type")}

        # From now on a change of alpha's type leaves bravo's rooms alone.
        conn.execute("UPDATE tba_spd_room_type SET default_capacity = 1 WHERE id = %s", [shared])
        after = {r["code"]: r["capacity"] for r in rooms.list_all(conn)}
        assert (after["a1"], after["a3"], after["b1"]) == (1, 12, 30)


def test_0009_turns_stored_heartbeat_rules_into_rate_drop_rules_that_still_fire(empty_pg_dsn, tmp_path):
    """Rules of kind heartbeat stored before 0009 measured the heartbeat-rate drop: after it they
    are of kind heartbeat_rate, with the same expressions (they fire as before), their past events
    too; tenants already set up are marked as given their defaults (an upgrade adds none)."""
    for migration in available_migrations():
        if migration.version < "0009":
            (tmp_path / f"{migration.version}_{migration.name}.sql").write_text(migration.sql)
    migrate(empty_pg_dsn, tmp_path)
    old_fire, old_resolve = (
        "staleSessions > 0 || heartbeatRateDrop > 0.5",
        "staleSessions == 0 && heartbeatRateDrop < 0.45",
    )
    with psycopg.connect(empty_pg_dsn, autocommit=True) as conn:
        rule_id = conn.execute(
            """INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, kind, expression,
                   resolve_expression, threshold)
               VALUES ('alpha', 'beats', 'tenant', 'heartbeat', %s, %s, 0.5) RETURNING id::text""",
            [old_fire, old_resolve],
        ).fetchone()[0]
        conn.execute(
            """INSERT INTO dat_spd_alert_event (rule_id, unidad_negocio_id, state, kind, value)
               VALUES (%s, 'alpha', 'firing', 'heartbeat', 0.75)""",
            [rule_id],
        )
        conn.execute(
            "INSERT INTO tba_spd_room_type (unidad_negocio_id, code, name) VALUES ('bravo', 'class', 'Class')"
        )

        assert migrate(conn)[:1] == ["0009"]

        rule = alerts.load_rules(conn)[0]
        assert (rule["kind"], rule["expression"], rule["resolve_expression"], rule["share"]) == (
            "heartbeat_rate",
            old_fire,
            old_resolve,
            None,
        )
        assert conn.execute("SELECT kind FROM dat_spd_alert_event").fetchone()[0] == "heartbeat_rate"
        converted = AlertRule(
            rule["rule_id"],
            "alpha",
            rule["name"],
            rule["kind"],
            rule["expression"],
            rule["resolve_expression"],
        ).compile()
        quiet = {
            name: (0.0 if t == "double" else "" if t == "string" else 0) for name, (t, _) in VARIABLES.items()
        }
        assert converted.fires({**quiet, "heartbeatRateDrop": 0.75}) and not converted.fires(quiet)
        assert converted.value({**quiet, "heartbeatRateDrop": 0.75}) == 0.75
        seeded = conn.execute("SELECT unidad_negocio_id FROM spd_tenant_defaults ORDER BY 1").fetchall()
        assert [r[0] for r in seeded] == ["alpha", "bravo"]
        # A share belongs to heartbeat rules only, as a ratio.
        for kind, share in (("capacity", 0.5), ("heartbeat", 1.5)):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(
                    """INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, kind, expression, share)
                       VALUES ('alpha', 'x', 'tenant', %s, 'true', %s)""",
                    [kind, share],
                )


def test_0014_adds_the_anomaly_kind_and_keeps_kinds_added_before_it(empty_pg_dsn, tmp_path):
    """0014 rebuilds the kind check from the kinds it allows, so a kind another migration added
    before it (here by hand: 'slo_burn') stays allowed beside 'anomaly'; others are still refused."""
    for migration in available_migrations():
        if migration.version < "0014":
            (tmp_path / f"{migration.version}_{migration.name}.sql").write_text(migration.sql)
    migrate(empty_pg_dsn, tmp_path)
    with psycopg.connect(empty_pg_dsn, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE dat_spd_alert_rule DROP CONSTRAINT dat_spd_alert_rule_kind_chk,"
            " ADD CONSTRAINT dat_spd_alert_rule_kind_chk CHECK (kind IN"
            " ('capacity', 'latency', 'heartbeat', 'heartbeat_rate', 'custom', 'slo_burn'))"
        )
        assert migrate(conn) == [m.version for m in available_migrations() if m.version >= "0014"]

        def insert(kind: str) -> None:
            conn.execute(
                "INSERT INTO dat_spd_alert_rule (unidad_negocio_id, name, scope, kind, expression)"
                " VALUES ('t', 'r', 'tenant', %s, 'online > 1')",
                [kind],
            )

        for kind in ("capacity", "heartbeat_rate", "custom", "anomaly"):
            insert(kind)
        with pytest.raises(psycopg.errors.CheckViolation):
            insert("cpu")
        # slo_burn rows need an SLO (0012's own check): the kind check still names it.
        (check,) = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'dat_spd_alert_rule_kind_chk'"
        ).fetchone()
        assert "slo_burn" in check and "anomaly" in check


def test_0011_makes_tables_archived_before_it_readable_per_tenant(empty_pg_dsn, tmp_path):
    """Partitions that retention moved to spd_archive before 0011 (loose tables, unreadable to the
    API) become partitions of the archive's tables, under row-level security."""
    for migration in available_migrations():
        if migration.version < "0011":
            (tmp_path / f"{migration.version}_{migration.name}.sql").write_text(migration.sql)
    migrate(empty_pg_dsn, tmp_path)
    with psycopg.connect(empty_pg_dsn, autocommit=True) as conn:
        manager = PartitionManager()
        manager.ensure(conn, SESSIONS, date(2025, 3, 1))
        manager.ensure(conn, ROOM_STATS, date(2025, 1, 1))
        for tenant in ("alpha", "bravo"):
            conn.execute(
                "INSERT INTO dat_spd_session (session_id, started_at, unidad_negocio_id, user_id)"
                " VALUES (gen_random_uuid(), '2025-03-10T10:00Z', %s, %s)",
                [tenant, f"user-of-{tenant}"],
            )
            conn.execute(
                "INSERT INTO dat_spd_room_stats (room_id, ts_bucket, unidad_negocio_id, online_max)"
                " VALUES (%s, '2025-02-01T10:00Z', %s, 7)",
                [room_id_for(tenant, "lobby"), tenant],
            )
        # What retention did before 0011.
        for parent, name in (
            ("dat_spd_session", "dat_spd_session_p2025_03"),
            ("dat_spd_room_stats", "dat_spd_room_stats_p2025_q1"),
        ):
            conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {name}")
            conn.execute(f"ALTER TABLE {name} SET SCHEMA spd_archive")

        assert "0011" in migrate(conn)

        attached = conn.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent IN ('spd_archive.dat_spd_session'::regclass, 'spd_archive.dat_spd_room_stats'::regclass)"
            " ORDER BY 1"
        ).fetchall()
        assert [r[0] for r in attached] == ["dat_spd_room_stats_p2025_q1", "dat_spd_session_p2025_03"]
        with tenant_transaction(conn, "alpha"):
            assert conn.execute("SELECT user_id FROM spd_archive.dat_spd_session").fetchall() == [
                ("user-of-alpha",)
            ]
            assert conn.execute(
                "SELECT unidad_negocio_id, online_secs FROM spd_archive.dat_spd_room_stats"
            ).fetchall() == [("alpha", [])]
            found = sessions.find(conn, dt("2025-03-01T00:00"), dt("2025-04-01T00:00"), archive=True)
            assert [r["user_id"] for r in found] == ["user-of-alpha"]
            assert sessions.find(conn, dt("2025-03-01T00:00"), dt("2025-04-01T00:00")) == []


def test_sql_histogram_bounds_match_the_events_contract(pg):
    assert sessions.latency_bounds(pg) == [float(b) for b in events.LATENCY_BUCKETS_MS]


def test_a_broken_migration_rolls_back_whole(empty_pg_dsn, tmp_path):
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE spd_first (x int);")
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE spd_half_done (x int);\nSELECT * FROM no_such_table;"
    )
    with pytest.raises(psycopg.errors.UndefinedTable):
        migrate(empty_pg_dsn, tmp_path)
    with psycopg.connect(empty_pg_dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT to_regclass('spd_first') IS NOT NULL, to_regclass('spd_half_done')"
        ).fetchone() == (True, None)
        assert [r[0] for r in conn.execute("SELECT version FROM spd_schema_migrations")] == ["0001"]
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE spd_half_done (x int);")
    assert migrate(empty_pg_dsn, tmp_path) == ["0002"]


@pytest.mark.parametrize(
    ("table", "day", "name", "start", "end"),
    [
        (
            partitions.SESSIONS,
            date(2026, 1, 31),
            "dat_spd_session_p2026_01",
            date(2026, 1, 1),
            date(2026, 2, 1),
        ),
        (
            partitions.SESSIONS,
            date(2026, 12, 5),
            "dat_spd_session_p2026_12",
            date(2026, 12, 1),
            date(2027, 1, 1),
        ),
        (
            partitions.ROOM_STATS,
            date(2026, 3, 31),
            "dat_spd_room_stats_p2026_q1",
            date(2026, 1, 1),
            date(2026, 4, 1),
        ),
        (
            partitions.ROOM_STATS,
            date(2026, 11, 1),
            "dat_spd_room_stats_p2026_q4",
            date(2026, 10, 1),
            date(2027, 1, 1),
        ),
        (
            partitions.LEDGER,
            date(2026, 2, 28),
            "spd_event_ledger_p2026_02_28",
            date(2026, 2, 28),
            date(2026, 3, 1),
        ),
    ],
)
def test_partition_names_round_trip(table, day, name, start, end):
    assert partitions.period_start(table, day) == start
    assert partitions.partition_name(table, start) == name
    assert partitions.parse_partition_name(name) == (table, start, end)
    assert partitions.parse_partition_name("dat_spd_session_p2026_q1") is None
    assert partitions.parse_partition_name("something_else_p2026_01") is None
