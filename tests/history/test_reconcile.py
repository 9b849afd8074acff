"""History keeps no session open for ever, and counts each session's end once.

The writer's reconciliation sweep ends the sessions PostgreSQL holds as open, silent for longer than
writer_sweep_after_s, that Redis forgot (their node died or restarted) (``node_lost``, at the last heartbeat PostgreSQL knows); an end arriving later
for one of them changes nothing. A session ended twice (its node was cut off, the others reaped it,
then it ended it itself) counts once in its room's minute.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from psycopg.rows import dict_row

from spidi_server.stores import keys

from .helpers import FakeSession, push, running_writer, wait_for, writer_status, written


def _rows(pg, query: str, *args) -> list[dict]:
    with pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, args).fetchall()


def _sessions(pg) -> dict[str, dict]:
    rows = _rows(
        pg,
        "SELECT session_id::text, end_reason, (extract(epoch FROM ended_at) * 1000)::bigint AS ended_ms"
        " FROM dat_spd_session",
    )
    return {r["session_id"]: r for r in rows}


def _ends(pg) -> dict[str, int]:
    """Every room's ends by kind, summed over its minutes."""
    row = _rows(
        pg,
        "SELECT coalesce(sum(joins), 0)::int AS joins, coalesce(sum(leaves), 0)::int AS leaves,"
        " coalesce(sum(timeouts), 0)::int AS timeouts, coalesce(sum(disconnects), 0)::int AS disconnects"
        " FROM dat_spd_room_stats",
    )[0]
    return dict(row)


def test_sweep_ends_sessions_of_dead_nodes_redis_forgot(history_settings, redis_sync, pg):
    """Sessions of a dead node in two rooms, checkpointed 5 min ago, unknown to Redis: the sweep
    ends them (node_lost, at their last checkpointed heartbeat, one disconnect each in the room's
    minute), even one still in the dead node's index. A session in a live node's index, and a dead
    node's session whose key Redis still holds, stay open. The node's own ends, arriving afterwards, change nothing."""
    now = int(time.time() * 1000)
    started = now - 600_000
    lost = [
        FakeSession("acme", room, f"u{i}", started + i, node="node-dead") for i, room in enumerate("aabbb")
    ]
    alive = FakeSession("acme", "a", "live", started, node="node-live")
    held = FakeSession("acme", "b", "held", started, node="node-dead")
    everyone = [*lost, alive, held]
    for i, s in enumerate(everyone):
        s.beat(now - 300_000 + i * 1000, 20.0)
    redis_sync.hset(keys.node_sessions("node-live"), alive.session_id, alive.room_id)
    redis_sync.set(keys.node_alive("node-live"), now, px=60_000)
    # A dead node's index never expires: it does not keep its sessions open.
    redis_sync.hset(keys.node_sessions("node-dead"), lost[0].session_id, lost[0].room_id)
    redis_sync.hset(keys.session(held.room_id, held.session_id), mapping={"userId": "held"})
    settings = dataclasses.replace(history_settings, writer_sweep_interval_s=0.2, writer_sweep_after_s=120)
    try:
        with running_writer(settings):
            evs = [e for s in everyone for e in (s.started(), s.checkpoint())]
            push(redis_sync, evs)
            wait_for(lambda: sum(1 for r in _sessions(pg).values() if r["end_reason"]) == len(lost), 20)
            rows = _sessions(pg)
            assert {sid: r["end_reason"] for sid, r in rows.items() if r["end_reason"]} == {
                s.session_id: "node_lost" for s in lost
            }
            assert all(rows[s.session_id]["ended_ms"] == s.last_heartbeat_at for s in lost)
            assert rows[alive.session_id]["ended_ms"] is None and rows[held.session_id]["ended_ms"] is None
            assert _ends(pg) == {"joins": 7, "leaves": 0, "timeouts": 0, "disconnects": 5}
            per_room = _rows(
                pg, "SELECT room_code, sum(disconnects)::int AS n FROM dat_spd_room_stats GROUP BY 1"
            )
            assert {r["room_code"]: r["n"] for r in per_room} == {"a": 2, "b": 3}
            assert int(writer_status(redis_sync)["sessions_swept"]) == 5

            # The dead node's own ends (say its stream entries were late): already ended, so nothing
            # moves, whether they carry the session's end id or another (an older node's).
            before = written(redis_sync)
            late = [s.ended(now - 1000, "timeout") for s in lost]
            late[0]["id"] = str(uuid.uuid4())
            push(redis_sync, late)
            wait_for(lambda: int(writer_status(redis_sync).get("events_duplicate", 0)) >= len(late), 20)
            assert written(redis_sync) == before
        assert _ends(pg) == {"joins": 7, "leaves": 0, "timeouts": 0, "disconnects": 5}
        assert {
            r["end_reason"]
            for sid, r in _sessions(pg).items()
            if sid not in (alive.session_id, held.session_id)
        } == {"node_lost"}
    finally:
        redis_sync.delete(
            keys.node_sessions("node-live"),
            keys.node_sessions("node-dead"),
            keys.node_alive("node-live"),
            keys.session(held.room_id, held.session_id),
        )


def test_a_session_ended_twice_counts_once(history_settings, redis_sync, pg):
    """A node cut off from Redis longer than the reaping window: the others end its sessions
    (node_lost at the last heartbeat), then it ends them itself when it notices (timeout, later, in
    another minute). In separate batches or one, history keeps the first end and counts it once."""
    now = int(time.time() * 1000)
    minute = now - now % 60_000 - 600_000
    sessions = [FakeSession("acme", "cut", f"u{i}", minute + i) for i in range(4)]
    for s in sessions:
        s.beat(minute + 5_000, 10.0)
    reaped = [s.ended(minute + 5_000, "node_lost", room_code="cut") for s in sessions]
    own = [s.ended(minute + 125_000, "timeout", room_code="cut") for s in sessions]
    with running_writer(history_settings):
        push(redis_sync, [s.started() for s in sessions])
        wait_for(lambda: written(redis_sync) == 4)
        push(redis_sync, reaped[:2])  # two reaped, then their own ends in a later batch
        wait_for(lambda: written(redis_sync) == 6)
        push(redis_sync, own[:2])
        push(redis_sync, [reaped[2], own[2], reaped[3], own[3]])  # both ends in one batch
        wait_for(lambda: int(writer_status(redis_sync).get("events_duplicate", 0)) >= 4, 20)
    rows = _sessions(pg)
    assert {sid: (r["end_reason"], r["ended_ms"]) for sid, r in rows.items()} == {
        s.session_id: ("node_lost", minute + 5_000) for s in sessions
    }
    assert _ends(pg) == {"joins": 4, "leaves": 0, "timeouts": 0, "disconnects": 4}
