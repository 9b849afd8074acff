"""Migrations from an empty database, idempotent replay, and schema facts the code relies on."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from spidi_server.history import partitions
from spidi_server.history.migrate import available_migrations, migrate
from spidi_server.history.sql import sessions
from spidi_server.stores import events


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
            "SELECT relname FROM pg_class WHERE relforcerowsecurity AND relrowsecurity ORDER BY relname"
        ).fetchall()
        assert [r[0] for r in forced] == sorted(
            [
                "dat_spd_room",
                "dat_spd_room_attr",
                "dat_spd_session",
                "dat_spd_room_stats",
                "dat_spd_alert_rule",
                "dat_spd_alert_event",
            ]
        )
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename IN ('dat_spd_session', 'dat_spd_room_stats')"
            ).fetchall()
        }
        for column in ("(room_id)", "(user_id)", "(last_heartbeat_at)", "(room_id, ts_bucket)"):
            assert any(column in d for d in indexes), column


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
