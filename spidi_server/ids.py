"""UUID version-4 text without a ``UUID`` object: the one place for the version and variant bits.

Session ids (``presence/session_ids.py``) and history event ids (``stores/events.py``) are both
written in this form, from random bits drawn in bulk.
"""

from __future__ import annotations

# The 17th hex digit of an RFC 4122 id keeps its two low bits under the variant bits 10: 8, 9, a, b.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def format_uuid4(hex32: str) -> str:
    """``str(uuid.UUID(hex=hex32, version=4))`` for 32 lower-case hex digits: the version and
    variant bits set, written 8-4-4-4-12."""
    h = hex32
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
