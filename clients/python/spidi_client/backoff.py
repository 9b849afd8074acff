"""Reconnection delays: exponential backoff with full jitter.

Attempt ``n`` (1, 2, 3, ... after a connection was lost) waits
``uniform(0, min(cap_s, base_s * 2 ** (n - 1)))``: the first retry within ``base_s``, the window
doubling up to ``cap_s``. Full jitter spreads the clients of a restarted node over the whole
window instead of bringing them back together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]

_MAX_EXPONENT = 60  # 2**60 * any sane base is far beyond any cap: no float overflow


@dataclass(frozen=True)
class Backoff:
    """The backoff policy: ``base_s`` (0.5 s) and ``cap_s`` (30 s)."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self):
        if not (self.base_s > 0 and self.cap_s >= self.base_s):
            raise ValueError(f"backoff needs base_s > 0 and cap_s >= base_s, got {self.base_s}, {self.cap_s}")

    def window(self, attempt: int) -> float:
        """The longest wait before attempt ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        return min(self.cap_s, self.base_s * 2 ** min(attempt - 1, _MAX_EXPONENT))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A random wait before attempt ``attempt``, uniform over its window (full jitter)."""
        return (rng or random).uniform(0.0, self.window(attempt))
