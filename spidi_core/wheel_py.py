"""Pure-Python heartbeat timing wheel: the reference that ``_wheel_c.pyx`` must match.

A hashed timing wheel of ``slots`` buckets, each covering ``tick`` seconds. A key whose deadline
falls in absolute tick ``t = floor(deadline / tick)`` lives in bucket ``t % slots``.

The design is *lazy*, because ``touch`` runs once per heartbeat for every session:

* ``touch`` to a later deadline only rewrites the stored deadline; the key stays in its old
  bucket. When ``advance`` reaches that bucket it compares the stored deadline with ``now`` and
  re-buckets the key instead of expiring it. Each key is re-bucketed at most once per timeout
  period, so the cost stays O(1) amortised.
* ``touch`` to an earlier deadline moves the key at once if its bucket would otherwise be
  reached too late.
* A deadline more than one rotation (``slots * tick``) ahead goes into the bucket of its tick
  anyway; the wheel sees it once per rotation and puts it back until it is due (implicit
  "rounds").

The invariant that makes this correct: for every key, the first tick ``>= self._tick_no`` that
maps to the key's bucket is ``<=`` the tick of its stored deadline. ``advance`` scans every tick
from the wheel's current tick to the tick of ``now`` (at most one rotation), so each key is
examined no later than the advance that reaches its deadline, and the final test is always the
exact comparison ``deadline <= now``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

# Tick numbers are clamped to +-2**60 so that the C build can keep them, and their differences,
# in an int64; a deadline clamped down is merely examined early and put back.
TICK_CAP = 1 << 60

__all__ = ["HeartbeatWheelPy", "TICK_CAP"]


class HeartbeatWheelPy:
    """Expire keys whose deadline has passed, with O(1) amortised add/touch/remove/advance.

    ``tick`` is the width of one bucket in seconds, ``slots`` the number of buckets and ``now``
    the wheel's starting time (monotonic seconds, the same clock as every deadline).
    """

    __slots__ = ("_tick", "_nslots", "_now", "_tick_no", "_deadlines", "_slot_of", "_wheel")

    def __init__(self, tick: float = 0.1, slots: int = 4096, now: float = 0.0) -> None:
        tick = float(tick)
        now = float(now)
        if not (tick > 0.0 and math.isfinite(tick)):
            raise ValueError(f"tick must be a positive finite number, not {tick!r}")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, not {slots!r}")
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, not {now!r}")
        self._tick = tick
        self._nslots = int(slots)
        self._now = now
        self._tick_no = self._tick_of(now)  # tick of the wheel's time: the bucket scanned next
        self._deadlines: dict[Hashable, float] = {}  # key -> current deadline (the truth)
        self._slot_of: dict[Hashable, int] = {}  # key -> index of the bucket holding it
        # dicts rather than sets so that iteration order (and so advance's order) is reproducible
        self._wheel: list[dict[Hashable, None]] = [{} for _ in range(self._nslots)]

    # -- helpers -------------------------------------------------------------------------------

    def _tick_of(self, t: float) -> int:
        """Absolute tick number of time ``t``, clamped to +-TICK_CAP."""
        q = t / self._tick
        if q >= TICK_CAP:
            return TICK_CAP
        if q <= -TICK_CAP:
            return -TICK_CAP
        return math.floor(q)

    def _target_tick(self, deadline: float) -> int:
        """Tick whose bucket should hold ``deadline``; past deadlines go to the current bucket."""
        t = self._tick_of(deadline)
        return t if t > self._tick_no else self._tick_no

    def _place(self, key: Hashable, deadline: float) -> None:
        s = self._target_tick(deadline) % self._nslots
        self._wheel[s][key] = None
        self._slot_of[key] = s

    def _pull_in(self, key: Hashable, deadline: float) -> None:
        """Re-bucket ``key`` after its deadline moved earlier, but only if it must move."""
        t = self._target_tick(deadline)
        s = self._slot_of[key]
        # first tick from now on that reaches bucket s; if that is not too late, stay put
        if self._tick_no + (s - self._tick_no) % self._nslots <= t:
            return
        del self._wheel[s][key]
        s = t % self._nslots
        self._wheel[s][key] = None
        self._slot_of[key] = s

    @staticmethod
    def _check(deadline: float) -> float:
        deadline = float(deadline)
        if deadline != deadline:  # NaN compares false with everything and would never expire
            raise ValueError("deadline must not be NaN")
        return deadline

    # -- public API ----------------------------------------------------------------------------

    @property
    def tick(self) -> float:
        """Seconds covered by one bucket."""
        return self._tick

    @property
    def slots(self) -> int:
        """Number of buckets; one rotation spans ``slots * tick`` seconds."""
        return self._nslots

    @property
    def now(self) -> float:
        """The wheel's current time: the largest ``now`` given to the constructor or ``advance``."""
        return self._now

    def add(self, key: Hashable, deadline: float) -> None:
        """Track ``key`` until ``deadline``; re-adding a present key acts like :meth:`touch`.

        A deadline at or before the wheel's time expires on the next :meth:`advance`.
        """
        deadline = self._check(deadline)
        old = self._deadlines.get(key)
        self._deadlines[key] = deadline
        if old is None:
            self._place(key, deadline)
        elif deadline < old:
            self._pull_in(key, deadline)

    def touch(self, key: Hashable, deadline: float) -> None:
        """Move ``key``'s deadline, later or earlier. Raises KeyError if ``key`` is absent."""
        deadline = self._check(deadline)
        deadlines = self._deadlines
        old = deadlines[key]
        deadlines[key] = deadline
        # later: nothing else to do (lazy); earlier: the bucket may be reached too late
        if deadline < old:
            self._pull_in(key, deadline)

    def remove(self, key: Hashable) -> bool:
        """Stop tracking ``key``. Returns True if it was present."""
        s = self._slot_of.pop(key, None)
        if s is None:
            return False
        del self._deadlines[key]
        del self._wheel[s][key]
        return True

    def advance(self, now: float) -> list:
        """Move the wheel's time to ``now``; remove and return every key whose deadline <= now.

        Each expired key is returned exactly once, in no particular order. A ``now`` earlier than
        the wheel's time returns ``[]`` and leaves the wheel unchanged. However far ``now`` jumps,
        at most one rotation of buckets is scanned.
        """
        now = float(now)
        if now != now:
            raise ValueError("now must not be NaN")
        if now < self._now:
            return []
        end = self._tick_of(now)
        start = self._tick_no
        # the current bucket is always rescanned: it holds keys added with past deadlines and
        # keys due later within the current tick
        span = min(end - start + 1, self._nslots)
        wheel = self._wheel
        deadlines = self._deadlines
        slot_of = self._slot_of
        expired = []
        survivors = []
        for t in range(start, start + span):
            s = t % self._nslots
            bucket = wheel[s]
            if not bucket:
                continue
            wheel[s] = {}
            for key in bucket:
                if deadlines[key] <= now:
                    del deadlines[key]
                    del slot_of[key]
                    expired.append(key)
                else:
                    survivors.append(key)
        self._now = now
        self._tick_no = end
        # re-bucket only after the scan, relative to the new tick, so that no key is met twice
        for key in survivors:
            self._place(key, deadlines[key])
        return expired

    def deadline(self, key: Hashable) -> float | None:
        """The key's current deadline, or None if it is not tracked."""
        return self._deadlines.get(key)

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, key: object) -> bool:
        return key in self._deadlines

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} keys={len(self)} now={self._now!r} "
            f"tick={self._tick!r} slots={self._nslots}>"
        )
