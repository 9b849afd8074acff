"""When CPython's cyclic garbage collector runs on a node, so that it does not walk the whole
heap on a timer.

A full collection walks every tracked object. At 5,000 connections a node holds about 290,000
and walking them held the event loop 140 ms (``spidi_gc_pause_seconds``), paid by every
heartbeat queued behind it as round-trip time. The policy, one ``step`` every
``gc_full_interval_s``:

- the young generations are collected (only objects made since the last step), then every
  survivor is frozen (``gc.freeze``, constant time): long-lived objects are not walked again by
  an ordinary collection, and a step costs well under a millisecond in steady state;
- a full collection (unfreeze, collect everything, freeze again) runs only when the frozen
  objects may hold a fair amount of cyclic garbage: once the connections closed since the last
  one reach a quarter of those open (and at least ``MIN_CLOSED``) - a closed connection leaves 10
  to 150 objects in reference cycles (its transport, futures, a traceback when it was aborted),
  which a frozen object gives back only to a full collection - or once the frozen heap doubled
  beyond what the connections opened since account for (cycles from anything else; a connect
  ramp is growth, not garbage). Objects that die outside a cycle are freed at once by reference
  counting, frozen or not.

A full collection still holds the loop as long as the heap takes to walk; it runs after churn or
growth, not every interval. CPython's own policy runs one whenever the long-lived heap grew by a
quarter, which during a connect ramp means every few seconds.
"""

from __future__ import annotations

import gc

GROWTH = 1.0  # frozen-heap growth (a fraction) that makes the next step a full collection
CHURN = 0.25  # connections closed, as a fraction of those open, that do the same
MIN_CLOSED = 1000  # ... but never fewer than this many
# Tracked objects one open connection holds, until a full collection with connections open
# measures it (about 40 with picows, STOMP and presence state included).
PER_CONNECTION = 100


class GcPolicy:
    """The node's garbage-collection schedule: ``start`` once, ``step`` periodically, ``stop``.

    The node adds one to ``closed`` per closed connection. ``frozen`` counts the objects frozen
    since the last full collection plus its survivors: an upper bound (frozen objects freed by
    reference counting are not subtracted), kept by counting what each step freezes, because
    ``gc.get_freeze_count()`` walks the whole frozen list (60 ms at 290,000 objects under load).
    """

    def __init__(self, growth: float = GROWTH, churn: float = CHURN, min_closed: int = MIN_CLOSED):
        self.growth = growth
        self.churn = churn
        self.min_closed = min_closed
        self.closed = 0  # connections closed since the last full collection
        self.full_collections = 0
        self.young_collections = 0
        self.baseline = 0  # objects frozen right after the last full collection
        self.frozen = 0
        self.per_connection = PER_CONNECTION
        self._idle = 0  # frozen objects right after start: what no connection holds
        self._open_at_full = 0
        self._thresholds: tuple[int, int, int] | None = None

    def start(self) -> None:
        """Collect everything once, freeze it, and take the automatic full collections away
        (a generation-2 threshold nothing reaches); the young generations keep CPython's."""
        self._thresholds = young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1_000_000)
        self.full(0)
        self._idle = self.baseline

    def full_due(self, open_connections: int) -> bool:
        """Whether the next step is a full collection."""
        if self.closed >= max(self.min_closed, self.churn * open_connections):
            return True
        opened = max(0, open_connections - self._open_at_full)
        return self.frozen > self.baseline * (1 + self.growth) + self.per_connection * opened

    def step(self, open_connections: int) -> bool:
        """Collect the young generations and freeze the survivors, or run the full collection
        when ``full_due``. True when it was a full collection."""
        if self.full_due(open_connections):
            self.full(open_connections)
            return True
        gc.collect(1)
        # What survived since the last step now sits in the oldest generation: counting it costs
        # a list of that many references, not a walk of the frozen heap.
        self.frozen += len(gc.get_objects(2))
        gc.freeze()
        self.young_collections += 1
        return False

    def full(self, open_connections: int) -> int:
        """Unfreeze, collect every generation, freeze the survivors; returns what was collected.
        With connections open, what each holds is measured again from what survived."""
        gc.unfreeze()
        found = gc.collect(2)
        self.baseline = self.frozen = len(gc.get_objects(2))
        gc.freeze()
        if open_connections >= 100:
            self.per_connection = max(1.0, (self.baseline - self._idle) / open_connections)
        self._open_at_full = open_connections
        self.closed = 0
        self.full_collections += 1
        return found

    def stop(self) -> None:
        """Give the frozen objects back to the collector and CPython its own schedule (a stopped
        node's objects may die; tests run many nodes in one process)."""
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
            gc.unfreeze()
