"""The hot store's buffered operations, and the Redis commands each one queues on a pipeline.

Sans-I/O: ``build`` only queues commands on a pipeline object the flusher (stores/hot_store.py)
then sends. An operation is a tuple whose first item is its kind:

    ("join", PendingJoin)                        join.lua, the tenant's rooms (and the tenants set), the
                                                 user's and the node's index
                                                 (batched: see below)
    ("unindex", session_id, tenant, user_id)     a refused join's indexes taken back
    ("leave", room_id, session_id, user_id, tenant, empty_ttl_s)
    ("touch", room_id, session_id, ttl_s, fields, tenant, user_id)
    ("event", fields)                            XADD to the history stream (fields already encoded)
    ("publish", channel, payload)                sent after every write of its batch
    ("capacity", room_id, capacity)
    ("marker",)                                  the node's marker (stores/recovery.py) and its NODES entry

Joins are batched: the joins of a run of operations (ended by any operation but another join, a
history event or a publish, so a leave, a TTL touch or a capacity change stays after the joins
queued before it) go out as one join.lua call per room admitting them in order (at most
``JOIN_BATCH`` each), one HSET of the node's index, one HSET + SADD per tenant's rooms and one HSET + EXPIRE per
user's index, instead of five commands per join. A history event never depends on a join of its
own batch (a session's events follow its join's answer), so it does not end the run.

Heartbeats are not operations: they come packed per room (a ``PackedBeats``, see
``BeatBuffer.take`` in stores/beat_buffer.py) and are written as one ZADD XX and one HSET per room
(``beat_buffer.queue_beats``).
The spill file stores operations as JSON lists (stores/recovery.py).
"""

from __future__ import annotations

from itertools import chain
from typing import Protocol

from . import events, handoff, keys
from .beat_buffer import queue_beats
from .client import pipeline_publish, takes_raw
from .scripts import Scripts

MARKER_TTL_MS = 3_600_000  # the marker of a node that died goes away by itself within the hour
JOIN_BATCH = 500  # sessions per join.lua call: bounds one script's run (Redis runs nothing else meanwhile)

# The commands queued for every join, leave and history event go by name, with the very arguments
# redis-py's methods (``xadd``, ``hset(mapping=)``, ``expire``, ``sadd``, ``hdel``) would build, without
# their Python around it (~2-4 µs a command; tests/stores/test_lean_pipeline.py holds them equal).
_XADD_TRIM = (b"MAXLEN", b"~", str(events.STREAM_MAXLEN), "*")  # xadd(maxlen=, approximate=True)
_pairs = chain.from_iterable  # a mapping's items as name, value, name, value...


class Target(Protocol):
    """What ``build`` needs from the hot store it builds for."""

    scripts: Scripts
    node_id: str
    marker_key: str | None  # None: no marker written or checked


def build(
    pipe, ops: list[tuple], beats: dict, joins: list, check: bool, target: Target, late: dict | None = None
) -> tuple[int, int | None, bool]:
    """Queue ``ops`` and ``beats`` on ``pipe``, then the announcements, then ``late`` (heartbeats
    no announcement is about: rooms nobody watches); returns (command count, index of the marker
    check's reply or None, whether the batch writes the marker). Every command adds one
    reply, so a join's answer is item ``position`` of the reply at the index ``commands`` had when
    its script was queued: ``joins`` receives (index, position, PendingJoin).

    Why ``late`` after the announcements: Redis runs a pipeline in order and delivers a PUBLISH as
    it runs it, so a roster change announced ahead of every room's heartbeats reaches the
    subscribers without waiting for them (at 100,000 heartbeats/s, tens of milliseconds)."""
    commands = 0
    publishes = []
    marks = False
    scripts = target.scripts
    node_id, marker_key = target.node_id, target.marker_key
    node_key = keys.node_sessions(node_id)
    run: dict[str, list] = {}  # room_id -> the joins of the current run, in order
    for op in ops:
        kind = op[0]
        if kind == "join":
            j = op[1]
            room_joins = run.get(j.room_id)
            if room_joins is None:
                run[j.room_id] = [j]
            else:
                room_joins.append(j)
            continue
        if kind == "event":
            pipe.execute_command("XADD", events.STREAM, *_XADD_TRIM, *_pairs(op[1].items()))
            commands += 1
            continue
        if kind == "publish":
            publishes.append(op)
            continue
        if run:
            commands = _queue_joins(pipe, run, joins, commands, scripts, node_key)
            run = {}
        if kind == "unindex":
            _, session_id, tenant, user_id = op
            pipe.execute_command("HDEL", keys.user_sessions(tenant, user_id), session_id)
            pipe.execute_command("HDEL", node_key, session_id)
            commands += 2
        elif kind == "leave":
            room_id, session_id, user_id, tenant = op[1:5]
            # (a spill file of an older version holds leaves without the TTL: the sweep sets it)
            empty_ttl_s = op[5] if len(op) > 5 else 0
            scripts.queue(
                pipe,
                "leave",
                [*keys.room_keys(room_id), keys.session(room_id, session_id)],
                [session_id, user_id, empty_ttl_s],
            )
            pipe.execute_command("HDEL", keys.user_sessions(tenant, user_id), session_id)
            pipe.execute_command("HDEL", node_key, session_id)
            commands += 3
        elif kind == "touch":
            _, room_id, session_id, ttl_s, fields, tenant, user_id = op
            key = keys.session(room_id, session_id)
            if fields:
                pipe.execute_command(
                    "HSET", key, *_pairs((k, "" if v is None else v) for k, v in fields.items())
                )
                commands += 1
            pipe.execute_command("EXPIRE", key, ttl_s)
            pipe.execute_command("EXPIRE", keys.user_sessions(tenant, user_id), ttl_s)
            commands += 2
        elif kind == "handoff":
            _, room_id, session_id, deadline_ms, ttl_s = op
            commands += handoff.queue_hand_over(pipe, node_key, room_id, session_id, deadline_ms, ttl_s)
        elif kind == "index":
            _, room_id, session_id = op
            pipe.hset(node_key, session_id, room_id)
            commands += 1
        elif kind == "capacity":
            _, room_id, capacity = op
            pipe.hset(keys.room_metrics(room_id), "capacity", capacity)
            commands += 1
        elif kind == "marker" and marker_key is not None:
            # After the node's first writes or a re-assert: Redis holds this node's state.
            pipe.set(marker_key, node_id, px=MARKER_TTL_MS)
            pipe.sadd(keys.NODES, node_id)  # FLUSHALL took the node off the reapers' list too
            commands += 2
            marks = True
    if run:
        commands = _queue_joins(pipe, run, joins, commands, scripts, node_key)
    if beats:
        raw = takes_raw(pipe)
        for room_id, packed in beats.items():
            commands += queue_beats(pipe, room_id, packed, raw)
    # Announcements after every write they announce: whoever hears one and reads Redis sees them.
    for _, channel, payload in publishes:
        pipeline_publish(pipe, channel, payload)
        commands += 1
    if late:
        raw = takes_raw(pipe)
        for room_id, packed in late.items():
            commands += queue_beats(pipe, room_id, packed, raw)
    marker_at = None
    if check and marker_key is not None:
        # Last, so a marker written earlier in this very batch counts: nil means Redis lost it.
        marker_at = commands
        pipe.set(marker_key, node_id, xx=True, px=MARKER_TTL_MS)
        commands += 1
    return commands, marker_at, marks


def _queue_joins(
    pipe, run: dict[str, list], joins: list, commands: int, scripts: Scripts, node_key: str
) -> int:
    """Queue a run of joins (room_id -> PendingJoins in order); returns the new command count.

    Per room one join.lua call per ``JOIN_BATCH`` sessions; then the indexes, which live in
    other slots than the room's: plain commands, not part of the script. (Written with the
    joins, not after their answers, to save a round trip; a refused join takes them back with an
    "unindex".) Repeated HSETs of one key in one pipeline end as the last one wrote, so merging
    them into one mapping (later joins winning) leaves Redis as the separate commands did.
    """
    tenant_rooms: dict[str, dict] = {}
    users: dict[str, tuple[dict, int]] = {}
    node_index: dict[str, str] = {}
    for room_id, room_joins in run.items():
        room_keys = keys.room_keys(room_id)
        for start in range(0, len(room_joins), JOIN_BATCH):
            batch = room_joins[start : start + JOIN_BATCH]
            script_keys = list(room_keys)
            args: list = []
            for position, j in enumerate(batch):
                joins.append((commands, position, j))
                script_keys.append(keys.session(room_id, j.session_id))
                args.append(len(j.args))
                args.extend(j.args)
            scripts.queue(pipe, "join", script_keys, args)
            commands += 1
        for j in room_joins:
            rooms = tenant_rooms.get(j.tenant)
            if rooms is None:
                rooms = tenant_rooms[j.tenant] = {}
            rooms[room_id] = j.code
            user_key = keys.user_sessions(j.tenant, j.user_id)
            user = users.get(user_key)
            if user is None:
                users[user_key] = ({j.session_id: room_id}, j.ttl_s)
            else:
                user[0][j.session_id] = room_id
                users[user_key] = (user[0], j.ttl_s)  # EXPIRE: the last join's TTL, as before
            # The node's index: what to end if this process dies without a word.
            node_index[j.session_id] = room_id
    for tenant, rooms in tenant_rooms.items():
        pipe.execute_command("HSET", keys.tenant_rooms(tenant), *_pairs(rooms.items()))
        pipe.execute_command("SADD", keys.TENANTS, tenant)  # the rooms sweep visits this tenant's index
    for user_key, (sessions, ttl_s) in users.items():
        pipe.execute_command("HSET", user_key, *_pairs(sessions.items()))
        pipe.execute_command("EXPIRE", user_key, ttl_s)
    pipe.execute_command("HSET", node_key, *_pairs(node_index.items()))
    return commands + 2 * len(tenant_rooms) + 2 * len(users) + 1
