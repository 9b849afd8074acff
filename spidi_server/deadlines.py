"""Deadlines that all have the same timeout, on one event-loop timer.

The native transport gives each connection ``handshake_timeout_s`` to upgrade, and HELLO gives
each join ``redis_join_timeout_ms`` for Redis's answer. A timer made and cancelled for each
costs about 1.6 us, twice per connect. Since every item here has the same timeout, the deadlines
come in the order the items were added. So one table in arrival order (a dict: an item leaves it
in O(1) once its step is done) and one timer, for the oldest deadline, do the same work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable


class Deadlines:
    """Items that each expire ``timeout`` seconds after ``add``, unless ``discard`` came first;
    ``expire(item)`` is called for each that does (on the loop, no earlier than its deadline)."""

    __slots__ = ("timeout", "expire", "items", "timer")

    def __init__(self, timeout: float, expire: Callable[[Hashable], object]):
        self.timeout = timeout
        self.expire = expire
        self.items: dict[Hashable, float] = {}  # item -> deadline, oldest first
        self.timer: asyncio.TimerHandle | None = None

    def add(self, item: Hashable, loop: asyncio.AbstractEventLoop) -> None:
        """Start ``item``'s timeout."""
        deadline = loop.time() + self.timeout
        self.items[item] = deadline
        if self.timer is None:
            self.timer = loop.call_at(deadline, self._due, loop)

    def discard(self, item: Hashable) -> None:
        """``item`` is done in time (or gone): it no longer expires."""
        self.items.pop(item, None)

    def __len__(self) -> int:
        return len(self.items)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        """The oldest deadline passed: expire every item whose deadline did, then wait for the
        next one (the timer is made again only while items wait)."""
        self.timer = None
        items = self.items
        now = loop.time()
        expired = []
        for item, deadline in items.items():
            if deadline > now:
                self.timer = loop.call_at(deadline, self._due, loop)
                break
            expired.append(item)
        expire = self.expire
        for item in expired:
            del items[item]
            expire(item)
