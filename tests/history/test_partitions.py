"""Partitions: created ahead of time, and on demand for events dated anywhere, across month and
quarter boundaries."""

from __future__ import annotations

from datetime import UTC, datetime

from spidi_server.history.partitions import PartitionManager, list_partitions

from .helpers import FakeSession, dt, ms, push, room_sample, running_writer, wait_for, written


def _where(conn, table: str) -> dict[str, str]:
    """Row key -> the partition holding it."""
    key = "session_id" if table == "dat_spd_session" else "ts_bucket"
    rows = conn.execute(f"SELECT {key}::text, tableoid::regclass::text FROM {table}").fetchall()
    return dict(rows)


def test_ahead_of_time_partitions(pg):
    PartitionManager().ensure_ahead(pg, now=datetime(2026, 12, 30, 23, 0, tzinfo=UTC))
    assert {"dat_spd_session_p2026_12", "dat_spd_session_p2027_01"} <= set(
        list_partitions(pg, "dat_spd_session")
    )
    assert {"dat_spd_room_stats_p2026_q4", "dat_spd_room_stats_p2027_q1"} <= set(
        list_partitions(pg, "dat_spd_room_stats")
    )
    assert {
        "spd_event_ledger_p2026_12_30",
        "spd_event_ledger_p2026_12_31",
        "spd_event_ledger_p2027_01_01",
    } <= set(list_partitions(pg, "spd_event_ledger"))
    # Idempotent, and a fresh manager (another writer) finds them without failing.
    PartitionManager().ensure_ahead(pg, now=datetime(2026, 12, 30, 23, 0, tzinfo=UTC))


def test_events_across_month_and_quarter_boundaries(history_settings, redis_sync, pg):
    jan = FakeSession("acme", "lobby", "u1", ms("2026-01-31T23:59"))
    feb = FakeSession("acme", "lobby", "u2", ms("2026-02-01T00:01"))
    mar = FakeSession("acme", "lobby", "u3", ms("2026-03-31T23:59"))
    apr = FakeSession("acme", "lobby", "u4", ms("2026-04-01T00:01"))
    evs = [s.started() for s in (jan, feb, mar, apr)]
    # jan's session ends in February: its row stays in January's partition.
    jan.beat(ms("2026-02-01T00:00:30"), 20)
    evs.append(jan.ended(ms("2026-02-01T00:02"), "timeout"))
    evs += [
        room_sample("acme", "lobby", ms(t))
        for t in ("2026-01-31T23:59", "2026-02-01T00:00", "2026-03-31T23:59", "2026-04-01T00:00")
    ]
    # Far in the future too: no partition exists for it either.
    future = FakeSession("acme", "lobby", "u5", ms("2031-07-04T12:00"))
    evs.append(future.started())
    push(redis_sync, evs)
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == len(evs))

    where = _where(pg, "dat_spd_session")
    assert where[jan.session_id] == "dat_spd_session_p2026_01"
    assert where[feb.session_id] == "dat_spd_session_p2026_02"
    assert where[mar.session_id] == "dat_spd_session_p2026_03"
    assert where[apr.session_id] == "dat_spd_session_p2026_04"
    assert where[future.session_id] == "dat_spd_session_p2031_07"
    ended = pg.execute(
        "SELECT ended_at, end_reason FROM dat_spd_session WHERE session_id = %s", [jan.session_id]
    ).fetchone()
    assert ended == (dt("2026-02-01T00:02"), "timeout")

    stats = sorted(
        pg.execute("SELECT ts_bucket, tableoid::regclass::text FROM dat_spd_room_stats").fetchall()
    )
    # Samples' minutes, and the minutes the session events count in (joins at each start, the
    # timeout at jan's end): the far-future start needed a room-statistics partition of its own.
    assert [p for _, p in stats] == (
        ["dat_spd_room_stats_p2026_q1"] * 5
        + ["dat_spd_room_stats_p2026_q2"] * 2
        + ["dat_spd_room_stats_p2031_q3"]
    )
    counts = pg.execute(
        "SELECT ts_bucket, joins, timeouts, node_samples FROM dat_spd_room_stats ORDER BY 1"
    ).fetchall()
    assert [(b, j, t, n) for b, j, t, n in counts if b.year == 2026 and b.month == 2] == [
        (dt("2026-02-01T00:00"), 0, 0, 1),
        (dt("2026-02-01T00:01"), 1, 0, 0),
        (dt("2026-02-01T00:02"), 0, 1, 0),
    ]
    ledger = set(list_partitions(pg, "spd_event_ledger"))
    assert {
        "spd_event_ledger_p2026_01_31",
        "spd_event_ledger_p2026_02_01",
        "spd_event_ledger_p2026_04_01",
    } <= ledger
