"""What the API's collections share: paging and time-range query fields, the list envelope, timestamps.

Used by ``handlers`` (rooms, sessions) and ``alerts`` (rules, alert events) alike, so neither
imports the other.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .validation import Integer, Timestamp


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z, e.g. 2026-05-04T10:00:00.000Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def page(items: list, total: int, query: dict) -> dict:
    """The list envelope of every collection."""
    return {"items": items, "total": total, "limit": query["limit"], "offset": query["offset"]}


def page_limit(default: int, maximum: int) -> Integer:
    """The ``limit`` query field of a collection: its page size, with a default and a cap."""
    return Integer("limit", "limit", "Page size", default=default, minimum=1, maximum=maximum)


OFFSET = Integer("offset", "offset", "Items to skip before the page", default=0, minimum=0, maximum=10**9)
FROM = Timestamp("from", "from", "Start of the range (inclusive), ISO 8601; without an offset: UTC")
TO = Timestamp("to", "to", "End of the range (exclusive), ISO 8601; default now")
