"""What the API's resources share: paging and time-range query fields, the list envelope,
timestamps, the code pattern of rooms and room types.

Used by every resource module (``rooms``, ``room_types``, ``sessions``, ``alert_rules``,
``alerts``), so none imports another for these.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..rooms import ROOM_CODE
from .problems import field_error, invalid
from .validation import Flag, Integer, Timestamp

# A room's code and a room type's code: the pattern of ``rooms.ROOM_CODE`` (its length is the
# fields' max_length), and the hint a validation message gives.
CODE_PATTERN = ROOM_CODE.pattern.removeprefix("^").removesuffix("$").replace("{1,64}", "+")
CODE_HINT = "1 to 64 of letters, digits and _ . : -"


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


def window(query: dict, default: timedelta) -> tuple[datetime, datetime]:
    """``from`` and ``to`` of a query, with defaults (``to`` now, ``from`` = ``to`` - default)."""
    end = query["to"] or datetime.now(UTC)
    start = query["from"] or end - default
    if start >= end:
        raise invalid(
            [field_error("query", "from", f"must be before to ({iso(start)} is not before {iso(end)})")]
        )
    return start, end


# The history reads (sessions, room statistics, alerts): with archive=true, the rows retention moved
# to the archive (older than retention_hot_days) are read too, under the same tenant isolation.
ARCHIVE = Flag(
    "archive",
    "archive",
    "Also read archived history (moved out of the hot tables after retention_hot_days); default false",
    default=False,
)
OFFSET = Integer("offset", "offset", "Items to skip before the page", default=0, minimum=0, maximum=10**9)
FROM = Timestamp("from", "from", "Start of the range (inclusive), ISO 8601; without an offset: UTC")
TO = Timestamp("to", "to", "End of the range (exclusive), ISO 8601; default now")
