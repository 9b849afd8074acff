"""Retention: hot partitions older than retention_hot_days move to spd_archive, anything older
than retention_drop_days is dropped."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

from spidi_server.history.partitions import (
    LEDGER,
    ROOM_STATS,
    SESSIONS,
    PartitionManager,
    list_archived,
    list_partitions,
)
from spidi_server.history.retention import apply_retention, run_retention
from spidi_server.history.sql.sessions import find

from .helpers import FakeSession, ms, push, room_sample, running_writer, wait_for, written

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_archive_then_drop(history_settings, redis_sync, pg):
    # Sessions in 2023-06 (older than 730 days), 2025-03 (between 90 and 730), 2026-10 (hot);
    # statistics in the matching quarters.
    dates = ("2023-06-10T10:00", "2025-03-10T10:00", "2026-10-10T10:00")
    sessions = [FakeSession("acme", "lobby", f"u{i}", ms(d)) for i, d in enumerate(dates)]
    evs = [s.started() for s in sessions] + [room_sample("acme", "lobby", ms(d)) for d in dates]
    push(redis_sync, evs)
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == len(evs))
    # A straddling partition stays hot: 2026 Q3 ends 2026-10-01, 62 days before NOW.
    PartitionManager().ensure(pg, ROOM_STATS, date(2026, 7, 1))

    settings = dataclasses.replace(history_settings, retention_hot_days=90, retention_drop_days=730)
    report = run_retention(settings, now=NOW)
    assert sorted(report.archived) == ["dat_spd_room_stats_p2025_q1", "dat_spd_session_p2025_03"]
    assert {"dat_spd_session_p2023_06", "dat_spd_room_stats_p2023_q2"} <= set(report.dropped)
    # Ledger days older than a week go too.
    assert "spd_event_ledger_p2025_03_10" in report.dropped

    hot_sessions = set(list_partitions(pg, SESSIONS.name))
    assert "dat_spd_session_p2026_10" in hot_sessions
    assert not hot_sessions & {"dat_spd_session_p2025_03", "dat_spd_session_p2023_06"}
    assert "dat_spd_room_stats_p2026_q3" in list_partitions(pg, ROOM_STATS.name)
    assert list_archived(pg) == ["dat_spd_room_stats_p2025_q1", "dat_spd_session_p2025_03"]
    # The archive keeps the rows; the hot table no longer shows them.
    archived_user = pg.execute("SELECT user_id FROM spd_archive.dat_spd_session_p2025_03").fetchone()[0]
    assert archived_user == "u1"
    assert [r[0] for r in pg.execute("SELECT user_id FROM dat_spd_session")] == ["u2"]
    assert pg.execute("SELECT count(*) FROM dat_spd_room_stats").fetchone()[0] == 1

    # Nothing left to do on a second run the same day.
    again = run_retention(settings, now=NOW)
    assert again.archived == [] and again.dropped == []

    # Two years on, the archive itself is dropped and 2026-10 is archived.
    later = run_retention(settings, now=datetime(2027, 4, 1, tzinfo=UTC))
    assert "spd_archive.dat_spd_session_p2025_03" in later.dropped
    assert "spd_archive.dat_spd_room_stats_p2025_q1" in later.dropped
    assert "dat_spd_session_p2026_10" in later.archived
    assert "dat_spd_session_p2025_03" not in list_archived(pg)


def test_a_column_added_to_the_hot_tables_reaches_the_archive(history_settings, redis_sync, pg):
    # A later migration adds columns to the hot tables only; retention still archives, and the
    # archived rows read back through the hot row type.
    old = FakeSession("acme", "lobby", "u-old", ms("2025-03-10T10:00"))
    evs = [old.started(), room_sample("acme", "lobby", ms("2025-03-10T10:00"))]
    push(redis_sync, evs)
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == len(evs))
    for table in ("dat_spd_session", "dat_spd_room_stats", "dat_spd_alert_event"):
        pg.execute(f"ALTER TABLE {table} ADD COLUMN trace_hint text NOT NULL DEFAULT 'none'")
    pg.execute("UPDATE dat_spd_session SET trace_hint = 'kept'")

    report = apply_retention(pg, hot_days=90, drop_days=730, now=NOW)
    assert sorted(report.archived) == ["dat_spd_room_stats_p2025_q1", "dat_spd_session_p2025_03"]
    for table in ("dat_spd_session", "dat_spd_room_stats", "dat_spd_alert_event"):
        assert pg.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'trace_hint'",
            [f"spd_archive.{table}"],
        ).fetchone() == (1,), table
    (row,) = find(pg, datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC), archive=True)
    assert (row["user_id"], row["trace_hint"]) == ("u-old", "kept")


def test_ledger_partitions_are_kept_a_week(pg):
    manager = PartitionManager()
    for day in (date(2026, 11, 20), date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 30)):
        manager.ensure(pg, LEDGER, day)
    # A week before NOW is 2026-11-23 12:00: only days that ended by then go.
    report = apply_retention(pg, hot_days=90, drop_days=730, now=NOW)
    assert report.dropped == ["spd_event_ledger_p2026_11_20"] and report.archived == []
    assert list_partitions(pg, LEDGER.name) == [
        "spd_event_ledger_p2026_11_23",
        "spd_event_ledger_p2026_11_24",
        "spd_event_ledger_p2026_11_30",
    ]
