"""Failures: a writer killed with SIGKILL mid-batch, a writer that died holding entries, and
PostgreSQL stopped for a while. Nothing may be lost, nothing doubled."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import psycopg

from spidi_server.history import writer_loop
from spidi_server.history.embedded_pg import EmbeddedPostgres
from spidi_server.history.partitions import (
    LEDGER,
    ROOM_STATS,
    SESSIONS,
    PartitionManager,
    period_start,
    utc_day,
)
from spidi_server.history.writer import start_writer_process, stop_writer_process
from spidi_server.history.writer_loop import STATUS_KEY
from spidi_server.stores import events

from ..pg_fixtures import private_pg_dir
from .helpers import FakeSession, pending, push, room_sample, running_writer, wait_for, written

# Recent events: the writer applies retention when it starts, and the ledger keeps event ids for
# LEDGER_KEEP_DAYS of event time only.
T0 = int(time.time() // 3600 * 3_600_000) - 3_600_000


def _workload(n_sessions: int = 40, n_samples: int = 20):
    evs, sessions = [], []
    for i in range(n_sessions):
        s = FakeSession("acme", f"room-{i % 4}", f"user-{i}", T0 + i)
        evs.append(s.started())
        for k in range(i % 5):
            s.beat(T0 + 1000 * (k + 1), 10 + k)
        evs.append(s.checkpoint())
        sessions.append(s)
    # Room samples are additive: a sample applied twice would show in the sums.
    evs += [
        room_sample(
            "acme", f"room-{i % 4}", T0 + 60_000 * (i // 4), node=f"n{i}", online=[2, 3], latencies=[15]
        )
        for i in range(n_samples)
    ]
    return sessions, evs


def _check(conn, sessions, evs, n_samples: int = 20) -> None:
    # Room samples and session starts are in the ledger exactly once each (checkpoints do not need it).
    counted = sum(1 for e in evs if e["kind"] != events.SESSION_CHECKPOINT)
    assert conn.execute("SELECT count(*) FROM spd_event_ledger").fetchone()[0] == counted
    rows = dict(conn.execute("SELECT session_id::text, heartbeat_count FROM dat_spd_session").fetchall())
    assert rows == {s.session_id: s.heartbeats for s in sessions}
    # Samples and session starts are additive: one applied twice would show in the sums.
    joins, nodes, latency_count = conn.execute(
        "SELECT sum(joins), sum(node_samples), sum(latency_count) FROM dat_spd_room_stats"
    ).fetchone()
    assert (joins, nodes, latency_count) == (len(sessions), n_samples, n_samples)


def _prepare_partitions(conn) -> None:
    """Create every partition the batch needs up front: creating one needs a lock on the parent,
    and the test holds that lock to freeze the batch in flight."""
    manager = PartitionManager()
    manager.ensure_ahead(conn)
    day = utc_day(T0)
    for table in (SESSIONS, ROOM_STATS, LEDGER):
        manager.ensure(conn, table, period_start(table, day))


def test_sigkill_mid_batch_then_restart(history_settings, redis_sync, redis_url, pg_dsn, pg):
    sessions, evs = _workload()
    _prepare_partitions(pg)
    push(redis_sync, evs)
    locker = psycopg.connect(pg_dsn)
    locker.execute("LOCK TABLE dat_spd_room_stats IN ACCESS EXCLUSIVE MODE")  # held until rollback
    proc = start_writer_process(history_settings, redis_url, pg_dsn, consumer="crash-writer")
    try:
        # The batch is in flight: all entries pending for the writer, its INSERT waiting on our lock.
        wait_for(lambda: pending(redis_sync) == len(evs), timeout=15)
        wait_for(
            lambda: (
                pg.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'spidi-writer' "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                == 1
            ),
            timeout=15,
            what="writer blocked",
        )
        proc.kill()
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        locker.rollback()
        locker.close()
    # The killed batch committed nothing (ledger rows and sessions were already inserted in it).
    wait_for(
        lambda: (
            pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'spidi-writer'"
            ).fetchone()[0]
            == 0
        )
    )
    assert pg.execute("SELECT count(*) FROM spd_event_ledger").fetchone()[0] == 0
    assert pg.execute("SELECT count(*) FROM dat_spd_session").fetchone()[0] == 0
    assert pending(redis_sync) == len(evs)

    # Restarted under the same consumer name: it re-reads its own pending entries first.
    proc = start_writer_process(history_settings, redis_url, pg_dsn, consumer="crash-writer")
    try:
        wait_for(lambda: pending(redis_sync) == 0, timeout=15)
    finally:
        assert stop_writer_process(proc, timeout=10) == 0  # SIGTERM: a clean exit
    _check(pg, sessions, evs)
    assert redis_sync.hget(STATUS_KEY, "state") == "stopped"


def test_entries_of_a_dead_writer_are_claimed_by_another(history_settings, redis_sync, pg):
    sessions, evs = _workload(10, 4)
    push(redis_sync, evs)
    # A writer under another name read everything and died before writing.
    redis_sync.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)
    redis_sync.xreadgroup(events.GROUP, "dead-writer", {events.STREAM: ">"}, count=1000)
    assert pending(redis_sync) == len(evs)
    time.sleep(0.3)
    stop = threading.Event()
    thread = threading.Thread(
        target=writer_loop.run_writer,
        args=(history_settings, stop),
        kwargs={"consumer": "live-writer", "reclaim_idle_s": 0.2},
        daemon=True,
    )
    thread.start()
    try:
        wait_for(lambda: pending(redis_sync) == 0)
    finally:
        stop.set()
        thread.join(10)
    _check(pg, sessions, evs, 4)


def test_own_pending_entries_are_read_again_on_start(history_settings, redis_sync, pg):
    sessions, evs = _workload(6, 2)
    push(redis_sync, evs)
    redis_sync.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)
    redis_sync.xreadgroup(events.GROUP, "test-writer", {events.STREAM: ">"}, count=1000)
    with running_writer(history_settings, consumer="test-writer"):
        wait_for(lambda: written(redis_sync) == len(evs))
    _check(pg, sessions, evs, 2)


def test_postgres_down_then_back_loses_nothing(
    history_settings, redis_sync, pg_server, tmp_path, monkeypatch
):
    monkeypatch.setattr(writer_loop, "BACKOFF_MAX_S", 0.4)
    server = pg_server.embedded
    settings = history_settings
    own = server is None  # an external test PostgreSQL is not ours to stop: use a private one
    if own:
        base = private_pg_dir()
        server = EmbeddedPostgres(base / "postgres")
        settings = dataclasses.replace(history_settings, postgres_dsn=server.start())
    sessions, evs = _workload(20, 8)
    first, second = evs[:20], evs[20:]
    try:
        with running_writer(settings):
            push(redis_sync, first)
            wait_for(lambda: written(redis_sync) == len(first))
            server.stop()
            push(redis_sync, second)
            wait_for(lambda: redis_sync.hget(STATUS_KEY, "state") == "postgres_unavailable", timeout=10)
            time.sleep(1.0)  # a few failed attempts, with backoff
            assert written(redis_sync) == len(first)
            assert pending(redis_sync) == len(second)
            server.start(apply_migrations=False)
            wait_for(lambda: written(redis_sync) == len(evs), timeout=15)
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            _check(conn, sessions, evs, 8)
    finally:
        if own:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)
