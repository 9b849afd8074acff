"""What a join carries: the answer a caller waits for, and a live session as written again.

A join is the one write whose answer matters: join.lua refuses a session when the room already
holds its capacity of sessions of every node. ``HotStore.join`` returns a ``PendingJoin`` whose
future the flusher (stores/hot_store.py) resolves with the script's result; ``LiveSession`` is
what the node hands the store to write a session again after Redis lost it (stores/recovery.py).
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from .scripts import JOIN_LIMIT_ARG

REFUSED = -1  # join.lua's answer for a session when the room is full


class LiveSession(NamedTuple):
    """A session the node holds, as re-asserting writes it to Redis (``Presence.live_sessions``)."""

    room_id: str
    tenant: str
    code: str
    capacity: int
    session_id: str
    user_id: str
    beat_ms: int  # the newest heartbeat (the join time if none yet)
    latency_ms: float | None  # the newest reported latency
    ttl_s: int
    fields: dict  # the session hash


class PendingJoin:
    """A join on its way to Redis.

    ``result`` resolves to the room's online count once the join is in Redis, to ``REFUSED``
    when the room was already full (counting every node's sessions), or to None when the script
    failed, the store closed or the waiter's deadline passed first (the first answer stands).
    ``force`` makes the join unconditional: the caller admitted the session without Redis's
    answer (Redis down or slow) and Redis must then hold it whatever its count says.
    """

    __slots__ = (
        "room_id",
        "session_id",
        "tenant",
        "code",
        "user_id",
        "ttl_s",
        "args",
        "result",
        "forced",
        "on_answer",
    )

    def __init__(self, room_id, session_id, tenant, code, user_id, ttl_s, args, result):
        self.room_id = room_id
        self.session_id = session_id
        self.tenant = tenant
        self.code = code
        self.user_id = user_id
        self.ttl_s = ttl_s
        self.args = args
        self.result: asyncio.Future = result
        self.forced = False
        # Called with the answer as it is given, before anything else runs: the HELLO's own
        # continuation (presence), one turn of the event loop sooner than a callback on
        # ``result`` (at 100,000 heartbeats/s a turn takes up to tens of milliseconds).
        self.on_answer = None

    def force(self) -> None:
        """Admit whatever Redis counts (degraded mode); a refusal already on its way is redone."""
        self.forced = True
        self.args[JOIN_LIMIT_ARG] = 0

    def resolve(self, value) -> None:
        """Answer whoever waits for ``result`` (the store's side; the first answer stands), and
        call ``on_answer`` with it at once. What ``on_answer`` raises goes to the event loop's
        exception handler, as from a callback: the store's flush goes on."""
        result = self.result
        if result.done():
            return
        result.set_result(value)
        callback, self.on_answer = self.on_answer, None
        if callback is not None:
            try:
                callback(value)
            except Exception as exc:
                result.get_loop().call_exception_handler(
                    {"message": "a join's answer callback failed", "exception": exc, "future": result}
                )
