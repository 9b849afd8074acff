"""The hot store's buffered operations, and the Redis commands each one queues on a pipeline.

Sans-I/O: ``build`` only queues commands on a pipeline object the flusher (stores/hot_store.py)
then sends. An operation is a tuple whose first item is its kind:

    ("join", PendingJoin)                        join.lua, the tenant's rooms, the user's and the node's index
    ("unindex", session_id, tenant, user_id)     a refused join's indexes taken back
    ("leave", room_id, session_id, user_id, tenant)
    ("touch", room_id, session_id, ttl_s, fields, tenant, user_id)
    ("event", fields)                            XADD to the history stream (fields already encoded)
    ("publish", channel, payload)                sent after every write of its batch
    ("capacity", room_id, capacity)
    ("marker",)                                  the node's marker (stores/recovery.py) and its NODES entry

Heartbeats are not operations: they come packed per room (heartbeats.lua's argument, see
``HotStore._take``) and are written as one heartbeats.lua call per room. The spill file stores operations as JSON lists (stores/recovery.py).
"""

from __future__ import annotations

from typing import Protocol

from . import events, keys
from .client import pipeline_publish
from .scripts import Scripts

MARKER_TTL_MS = 3_600_000  # the marker of a node that died goes away by itself within the hour


class Target(Protocol):
    """What ``build`` needs from the hot store it builds for."""

    scripts: Scripts
    node_id: str
    marker_key: str | None  # None: no marker written or checked


def build(
    pipe, ops: list[tuple], beats: dict, joins: list, check: bool, target: Target
) -> tuple[int, int | None, bool]:
    """Queue ``ops`` and ``beats`` on ``pipe``; returns (command count, index of the marker
    check's reply or None, whether the batch writes the marker). Every command adds one
    reply, so a join's script reply is at the index ``commands`` had when queued: ``joins``
    receives (index, PendingJoin)."""
    commands = 0
    publishes = []
    marks = False
    scripts = target.scripts
    node_id, marker_key = target.node_id, target.marker_key
    node_key = keys.node_sessions(node_id)
    for op in ops:
        kind = op[0]
        if kind == "join":
            j = op[1]
            room_id, session_id = j.room_id, j.session_id
            joins.append((commands, j))
            scripts.queue(pipe, "join", [*keys.room_keys(room_id), keys.session(room_id, session_id)], j.args)
            pipe.hset(keys.tenant_rooms(j.tenant), room_id, j.code)
            # The user's index lives in its own slot: plain commands, not part of the script.
            # (Written with the join, not after its answer, to save a round trip; a refused
            # join takes them back with an "unindex".)
            user_key = keys.user_sessions(j.tenant, j.user_id)
            pipe.hset(user_key, session_id, room_id)
            pipe.expire(user_key, j.ttl_s)
            # The node's index: what to end if this process dies without a word.
            pipe.hset(node_key, session_id, room_id)
            commands += 5
        elif kind == "unindex":
            _, session_id, tenant, user_id = op
            pipe.hdel(keys.user_sessions(tenant, user_id), session_id)
            pipe.hdel(node_key, session_id)
            commands += 2
        elif kind == "leave":
            _, room_id, session_id, user_id, tenant = op
            scripts.queue(
                pipe,
                "leave",
                [*keys.room_keys(room_id), keys.session(room_id, session_id)],
                [session_id, user_id],
            )
            pipe.hdel(keys.user_sessions(tenant, user_id), session_id)
            pipe.hdel(node_key, session_id)
            commands += 3
        elif kind == "touch":
            _, room_id, session_id, ttl_s, fields, tenant, user_id = op
            key = keys.session(room_id, session_id)
            if fields:
                pipe.hset(key, mapping={k: ("" if v is None else v) for k, v in fields.items()})
                commands += 1
            pipe.expire(key, ttl_s)
            pipe.expire(keys.user_sessions(tenant, user_id), ttl_s)
            commands += 2
        elif kind == "event":
            pipe.xadd(events.STREAM, op[1], maxlen=events.STREAM_MAXLEN, approximate=True)
            commands += 1
        elif kind == "publish":
            publishes.append(op)
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
    for room_id, packed in beats.items():
        scripts.queue(pipe, "heartbeats", [keys.room_online(room_id), keys.room_latency(room_id)], [packed])
        commands += 1
    # Announcements last: whoever hears one and reads Redis sees every write it announces.
    for _, channel, payload in publishes:
        pipeline_publish(pipe, channel, payload)
        commands += 1
    marker_at = None
    if check and marker_key is not None:
        # Last, so a marker written earlier in this very batch counts: nil means Redis lost it.
        marker_at = commands
        pipe.set(marker_key, node_id, xx=True, px=MARKER_TTL_MS)
        commands += 1
    return commands, marker_at, marks
