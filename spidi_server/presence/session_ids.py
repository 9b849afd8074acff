"""Session ids: random version-4 UUIDs, drawn from the kernel in batches.

A session id lets its holder resume the session and send its heartbeats, so it must stay
unguessable: 122 random bits from ``os.urandom`` (the kernel's CSPRNG), as ``uuid.uuid4`` gives.
``uuid4`` asks the kernel for 16 bytes per call and builds a ``UUID`` object to format it: ~4 us
per HELLO here. This draws 256 ids' worth at once (hex) and formats the text directly (same
format, same bits). A forked child drops what its parent drew, so two processes never share a draw.
"""

from __future__ import annotations

import os

from ..ids import format_uuid4

_BATCH = 256  # ids per draw: 4 KiB from the kernel


class SessionIds:
    """A source of session ids: call it for the next one."""

    __slots__ = ("pool", "pos")

    def __init__(self) -> None:
        self.pool = ""  # hex digits of the current draw, 32 per id
        self.pos = 0

    def drop(self) -> None:
        """Forget the undrawn bytes (a forked child must not hand out its parent's ids)."""
        self.pool = ""
        self.pos = 0

    def __call__(self) -> str:
        pos = self.pos
        if pos >= len(self.pool):
            self.pool = os.urandom(16 * _BATCH).hex()
            pos = 0
        self.pos = pos + 32
        return format_uuid4(self.pool[pos : pos + 32])


new_session_id = SessionIds()
os.register_at_fork(after_in_child=new_session_id.drop)
