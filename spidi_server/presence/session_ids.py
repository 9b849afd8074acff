"""Session ids: random version-4 UUIDs, drawn from the kernel in batches.

A session id lets its holder resume the session and send its heartbeats, so it must stay
unguessable: 122 random bits from ``os.urandom`` (the kernel's CSPRNG), as ``uuid.uuid4`` gives.
``uuid4`` asks the kernel for 16 bytes per call and builds a ``UUID`` object to format it: ~4 us
per HELLO here. This draws 256 ids' worth at once (hex) and formats the text directly (same
format, same bits). A forked child drops what its parent drew, so two processes never share a draw.
"""

from __future__ import annotations

import os

_BATCH = 256  # ids per draw: 4 KiB from the kernel
# The 17th hex digit of an RFC 4122 id keeps its two low bits under the variant bits 10: 8, 9, a, b.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def format_uuid4(hex32: str) -> str:
    """``str(uuid.UUID(hex=hex32, version=4))`` for 32 lower-case hex digits: the version and
    variant bits set, written 8-4-4-4-12."""
    h = hex32
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


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
