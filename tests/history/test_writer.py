"""The writer end to end: events pushed into the real stream, rows in the real database."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from spidi_server.history.retention import apply_retention
from spidi_server.history.sql.ingest import StageRow
from spidi_server.history.sql.sessions import room_stats
from spidi_server.history.staging import stage_event
from spidi_server.history.stream import DEAD_LETTER_STREAM
from spidi_server.history.writer_loop import STATUS_KEY
from spidi_server.rooms import room_id_for
from spidi_server.stores import events

from .helpers import (
    FakeSession,
    dt,
    ms,
    pending,
    push,
    room_sample,
    running_writer,
    wait_for,
    writer_status,
    written,
)

T0 = ms("2026-05-04T10:00")


def dt_ms(at: int) -> datetime:
    return datetime.fromtimestamp(at / 1000, UTC)


def _sessions(conn) -> dict[str, dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM dat_spd_session ORDER BY started_at").fetchall()
    return {str(r["session_id"]): r for r in rows}


def _snapshot(conn) -> tuple:
    """Everything the writer wrote, minus the bookkeeping timestamps."""
    sessions = conn.execute(
        """SELECT session_id, heartbeat_count, latency_sum, latency_count, latency_min, latency_max,
                  last_heartbeat_at, ended_at, end_reason, user_id FROM dat_spd_session ORDER BY 1"""
    ).fetchall()
    stats = conn.execute(
        """SELECT room_id, ts_bucket, online_sum, online_samples, online_avg, online_max, joins, leaves,
                  timeouts, disconnects, latency_sum, latency_count, latency_hist, node_samples
           FROM dat_spd_room_stats ORDER BY 1, 2"""
    ).fetchall()
    return sessions, stats, conn.execute("SELECT count(*) FROM spd_event_ledger").fetchone()[0]


def _workload(T0: int = T0):  # noqa: N803 - the module's T0 unless given
    alice = FakeSession("acme", "lobby", "alice", T0, device="iPhone", os="iOS", ip="10.1.1.1")
    bob = FakeSession("acme", "lobby", "bob", T0 + 5_000, node="node-b")
    evs = [alice.started(), bob.started()]
    for i, latency in enumerate((20, 40, 600)):
        alice.beat(T0 + 15_000 * (i + 1), latency)
    bob.beat(T0 + 20_000, 12)
    evs += [alice.checkpoint(), bob.checkpoint()]
    alice.beat(T0 + 60_000, 30)
    evs.append(alice.ended(T0 + 61_000, "leave"))
    evs.append(room_sample("acme", "lobby", T0, online=[1, 2, 2], latencies=[20, 40, 600, 12]))
    evs.append(room_sample("acme", "lobby", T0 + 60_000, online=[2, 1], latencies=[30]))
    return alice, bob, evs


def test_events_become_rows(history_settings, redis_sync, pg):
    alice, bob, evs = _workload()
    push(redis_sync, evs)
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == len(evs), what="all events written")
        # Acknowledged, and the acknowledged entries trimmed from the stream.
        wait_for(lambda: pending(redis_sync) == 0)
    assert redis_sync.xlen(events.STREAM) <= len(evs)

    rows = _sessions(pg)
    a, b = rows[alice.session_id], rows[bob.session_id]
    assert a["started_at"] == dt("2026-05-04T10:00") and a["ended_at"] == dt("2026-05-04T10:01:01")
    assert (a["end_reason"], a["device"], a["os"], a["ip"], a["app_version"], a["user_id"]) == (
        "leave",
        "iPhone",
        "iOS",
        "10.1.1.1",
        "1.2.3",
        "alice",
    )
    assert (a["heartbeat_count"], a["latency_count"], a["latency_sum"]) == (4, 4, 690.0)
    assert (a["latency_min"], a["latency_max"], a["latency_avg"]) == (20.0, 600.0, 172.5)
    assert a["last_heartbeat_at"] == dt("2026-05-04T10:01")
    assert str(a["room_id"]) == room_id_for("acme", "lobby") and a["room_code"] == "lobby"
    assert a["unidad_negocio_id"] == "acme" and a["node_id"] == "node-a" and a["created_by"] == "spidi-writer"
    assert b["ended_at"] is None and b["heartbeat_count"] == 1 and b["node_id"] == "node-b"

    stats = room_stats(pg, room_id_for("acme", "lobby"), dt("2026-05-04T10:00"), dt("2026-05-04T10:02"))
    # Counted from the session events: both starts in the first minute, alice's leave in the second.
    assert [s["joins"] for s in stats] == [2, 0] and [s["leaves"] for s in stats] == [0, 1]
    assert [round(s["online_avg"], 4) for s in stats] == [round(5 / 3, 4), 1.5]

    status = redis_sync.hgetall(STATUS_KEY)
    assert status["consumer"] == "test-writer" and int(status["batches"]) >= 1
    assert status["state"] == "stopped" and status["pg_ok"] == "1" and int(status["pending"]) == 0
    assert float(status["last_batch_ms"]) > 0


def _reads(redis_client) -> int:
    return int(redis_client.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0))


def test_a_trickle_of_events_is_read_a_batch_at_a_time(history_settings, redis_sync, pg):
    """Events arriving one at a time (a node's flushes during a ramp of joins) are read several
    per XREADGROUP, not one call each: once the stream is drained the writer waits READ_PAUSE_S
    (never past the batch's deadline) before reading again; every event is written all the same."""
    settings = dataclasses.replace(history_settings, writer_flush_interval_s=1.0).validate()
    sessions = [FakeSession("acme", "lobby", f"u{i}", T0 + i) for i in range(40)]
    with running_writer(settings):
        wait_for(lambda: writer_status(redis_sync).get("state") == "running", what="the writer reading")
        before = _reads(redis_sync)
        for s in sessions:
            push(redis_sync, [s.started()])
            time.sleep(0.01)  # the pace of arrival under test, not a wait for a condition
        wait_for(lambda: written(redis_sync) == len(sessions), what="all events written")
        reads = _reads(redis_sync) - before
    assert set(_sessions(pg)) == {s.session_id for s in sessions}
    assert reads <= len(sessions) // 4, f"{reads} XREADGROUPs for {len(sessions)} events"


def test_a_stop_during_the_read_pause_writes_what_reached_the_stream(history_settings, redis_sync, pg):
    """A stopping node flushes its last events just before its writer is asked to stop: a stop
    that comes while the writer waits READ_PAUSE_S must still read and write them."""
    settings = dataclasses.replace(history_settings, writer_flush_interval_s=5.0).validate()
    first, last = FakeSession("acme", "lobby", "u1", T0), FakeSession("acme", "lobby", "u2", T0 + 1)
    with running_writer(settings):
        wait_for(lambda: writer_status(redis_sync).get("state") == "running", what="the writer reading")
        push(redis_sync, [first.started()])
        # Read into the open batch (pending, not acknowledged: its deadline is 5 s away); the
        # writer now waits READ_PAUSE_S before reading again.
        wait_for(
            lambda: redis_sync.xpending(events.STREAM, events.GROUP)["pending"] == 1, what="the first read"
        )
        push(redis_sync, [last.started()])
    assert set(_sessions(pg)) == {first.session_id, last.session_id}
    assert redis_sync.xpending(events.STREAM, events.GROUP)["pending"] == 0


def test_replayed_events_change_nothing(history_settings, redis_sync, pg):
    # Recent events: the ledger keeps event ids for LEDGER_KEEP_DAYS of event time, and the writer
    # applies retention when it starts.
    _, _, evs = _workload(int(time.time() // 60 * 60_000) - 120_000)
    push(redis_sync, evs)
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == len(evs))
    before = _snapshot(pg)
    # Room samples and session starts and ends (added to their minute) need the ledger; checkpoints
    # carry cumulative figures that only move forward, so a replay of one is a no-op by construction.
    assert before[2] == sum(1 for e in evs if e["kind"] != events.SESSION_CHECKPOINT)
    assert [(s[6], s[7]) for s in before[1]] == [(2, 0), (0, 1)]  # joins, leaves

    # The same event ids again, twice: once across batches, once inside one batch.
    push(redis_sync, evs + evs)
    with running_writer(history_settings):
        wait_for(
            lambda: (
                written(redis_sync) + int(redis_sync.hget(STATUS_KEY, "events_duplicate") or 0)
                == len(evs) * 2
                or None
            ),
            what="replays seen",
        )
    assert _snapshot(pg) == before


def test_order_of_arrival_does_not_matter(history_settings, redis_sync, pg):
    """A checkpoint before its session_started, and a stale checkpoint after the end, in separate
    batches: the row ends up the same as in order."""
    s = FakeSession("acme", "lobby", "carol", T0)
    started = s.started()
    s.beat(T0 + 1000, 10)
    early = s.checkpoint()
    s.beat(T0 + 2000, 30)
    end = s.ended(T0 + 3000, "timeout")
    with running_writer(history_settings):
        for batch, total in (([early], 1), ([end], 2), ([started], 3)):
            push(redis_sync, batch)
            wait_for(lambda total=total: written(redis_sync) == total)
    row = _sessions(pg)[s.session_id]
    assert (row["user_id"], row["device"], row["heartbeat_count"], row["latency_sum"]) == (
        "carol",
        "Pixel",
        2,
        40.0,
    )
    assert (row["ended_at"], row["end_reason"], row["latency_max"]) == (
        dt("2026-05-04T10:00:03"),
        "timeout",
        30.0,
    )


def test_bad_events_go_to_the_dead_letter_stream(history_settings, redis_sync, pg):
    s = FakeSession("acme", "lobby", "dave", T0)
    good = s.started()
    push(
        redis_sync,
        [
            good,
            {"id": "not-a-uuid", "kind": events.SESSION_STARTED, "tenant": "acme"},
            {"id": "6d0c8f0e-8a8e-4b8e-9a57-4f1f00000001", "kind": "mystery", "tenant": "acme"},
        ],
    )
    # Passes the writer's own checks, but PostgreSQL refuses it (integer out of range).
    huge = room_sample("acme", "lobby", T0, online=[1])
    huge["online_max"] = 10**12
    push(redis_sync, [huge])
    with running_writer(history_settings):
        wait_for(lambda: redis_sync.xlen(DEAD_LETTER_STREAM) == 3, what="3 dead letters")
        wait_for(lambda: pending(redis_sync) == 0)
    assert written(redis_sync) == 1 and s.session_id in _sessions(pg)
    errors = [f["_error"] for _, f in redis_sync.xrange(DEAD_LETTER_STREAM)]
    assert any("UUID" in e for e in errors) and any("mystery" in e for e in errors)
    assert any("NumericValueOutOfRange" in e for e in errors)


def test_events_for_an_archived_period_are_dropped(history_settings, redis_sync, pg):
    old = FakeSession("acme", "lobby", "erin", ms("2020-03-10T08:00"))
    push(redis_sync, [old.started()])
    with running_writer(history_settings):
        wait_for(lambda: written(redis_sync) == 1)
    report = apply_retention(pg, hot_days=90, drop_days=36500)
    assert "dat_spd_session_p2020_03" in report.archived
    late = FakeSession("acme", "lobby", "frank", ms("2020-03-11T08:00"))
    push(redis_sync, [late.started()])
    with running_writer(history_settings):
        wait_for(lambda: int(redis_sync.hget(STATUS_KEY, "events_expired") or 0) == 1)
    assert pg.execute("SELECT count(*) FROM dat_spd_session").fetchone()[0] == 0
    assert pg.execute("SELECT count(*) FROM spd_archive.dat_spd_session_p2020_03").fetchone()[0] == 1


def test_stage_event_reads_server_events_verbatim():
    s = FakeSession("acme", "lobby", "gina", T0 + 1500)
    staged = stage_event(events.encode(s.started()))
    assert (
        staged.table.name == "dat_spd_session"
        and staged.table_ms == T0 + 1500
        and staged.event_ms == T0 + 1500
    )
    assert staged.stats_ms == T0  # counted as a join in its minute: it needs that stats partition too
    s.beat(T0 + 500, 7.5)
    end = s.ended(T0 + 61_000) | {"room_code": "lobby"}
    staged = stage_event(events.encode(end))
    assert staged.event_ms == T0 + 61_000 and staged.row.heartbeats == 1 and staged.row.latency_min == 7.5
    assert (
        staged.stats_ms == T0 + 60_000
        and staged.row.room_code == "lobby"
        and staged.row.end_reason == "leave"
    )
    assert stage_event(events.encode(s.checkpoint())).stats_ms is None
    # An old node's sample: its counters are not read (they would count the sessions twice).
    staged = stage_event(events.encode(room_sample("acme", "lobby", T0, joins=3, leaves=2)))
    assert (
        isinstance(staged.row, StageRow)
        and len(staged.row) == len(StageRow._fields)
        and staged.stats_ms is None
    )


def test_a_dead_nodes_sessions_are_counted_once_each(history_settings, redis_sync, pg):
    """Counters come from session events only: a room with sessions and no sample at all (the node
    died before its minute's sample) still has its joins and disconnects, replays count once, and a
    sample arriving later fills in the online figures of the same row."""
    minute = int(time.time() // 60 * 60_000) - 120_000  # recent: inside the ledger's window
    members = [FakeSession("acme", "lost", f"u{i}", minute + i) for i in range(3)]
    starts = [m.started() for m in members]
    ends = [m.ended(minute + 60_000 + i, "disconnect") | {"room_code": "lost"} for i, m in enumerate(members)]
    with running_writer(history_settings):
        push(redis_sync, starts + ends)
        wait_for(lambda: written(redis_sync) == 6)
        push(redis_sync, starts + ends[:1])  # replayed (a writer killed between COMMIT and XACK)
        wait_for(lambda: int(redis_sync.hget(STATUS_KEY, "events_duplicate") or 0) == 4)
        push(redis_sync, [room_sample("acme", "lost", minute, online=[3, 3])])
        wait_for(lambda: written(redis_sync) == 7)
    rows = pg.execute(
        """SELECT ts_bucket, unidad_negocio_id, room_code, joins, leaves, timeouts, disconnects, online_sum,
                  online_avg, online_max, node_samples, latency_count, latency_hist
           FROM dat_spd_room_stats ORDER BY ts_bucket"""
    ).fetchall()
    b0, b1 = dt_ms(minute), dt_ms(minute + 60_000)
    hist = [0] * (len(events.LATENCY_BUCKETS_MS) + 1)
    assert rows == [
        (b0, "acme", "lost", 3, 0, 0, 0, 6, 3.0, 3, 1, 0, hist),
        (b1, "acme", "lost", 0, 0, 0, 3, 0, 0.0, 0, 0, 0, []),
    ]


def test_writer_connection_is_left_clean(history_settings, redis_sync, pg_dsn):
    # The writer migrates on connect: an already-migrated database is untouched.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM spd_schema_migrations").fetchone()[0]
    with running_writer(history_settings):
        wait_for(lambda: redis_sync.hget(STATUS_KEY, "pg_ok") == "1" or None, what="writer connected")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM spd_schema_migrations").fetchone()[0] == before
