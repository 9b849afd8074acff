"""The defaults every tenant gets on first use: room types, and the rules the caller gives.

Seeding happens once per tenant (migration 0009's ``spd_tenant_defaults``): the tenant's row is
inserted first, and only the transaction that inserted it adds the defaults. A concurrent first
request blocks on that row until the first commits, then finds it and adds nothing; defaults an
operator later deleted are never added again. Runs inside ``tenancy.tenant_transaction``, so
row-level security holds the writes to the tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from .alerts import RULE_API_COLUMNS


class DefaultRoomType(NamedTuple):
    """A room type every tenant starts with."""

    code: str
    name: str
    default_capacity: int | None


# ADR-0001's room types. Default capacities: a WebRTC room is a call (a few dozen at most); a chat
# room a channel; a notification room a fan-out list, with none of its own (the server's
# default_room_capacity applies unless the room sets one). Operators edit or delete them freely.
DEFAULT_ROOM_TYPES: tuple[DefaultRoomType, ...] = (
    DefaultRoomType("webrtc", "WebRTC", 50),
    DefaultRoomType("chat", "Chat", 1000),
    DefaultRoomType("notification", "Notification", None),
)


def seed_tenant(
    conn: psycopg.Connection, tenant: str, rules: Sequence[dict[str, Any]], *, actor: str
) -> bool:
    """Give ``tenant`` its default room types and ``rules`` (dicts of alerts.RULE_API_COLUMNS),
    unless it was given them before; True if this call did."""
    with conn.transaction():
        first = conn.execute(
            "INSERT INTO spd_tenant_defaults (unidad_negocio_id, seeded_by) VALUES (%s, %s)"
            " ON CONFLICT (unidad_negocio_id) DO NOTHING RETURNING 1",
            [tenant, actor],
        ).fetchone()
        if first is None:
            return False
        for room_type in DEFAULT_ROOM_TYPES:
            # A type of that code the tenant made itself stays as it is.
            conn.execute(
                """INSERT INTO tba_spd_room_type (unidad_negocio_id, code, name, default_capacity,
                       created_by, updated_by)
                   VALUES (%s, %s, %s, %s, %s, %s)
                   ON CONFLICT (unidad_negocio_id, code) WHERE deleted_at IS NULL DO NOTHING""",
                [tenant, *room_type, actor, actor],
            )
        for rule in rules:
            unknown = set(rule) - set(RULE_API_COLUMNS)
            if unknown:
                raise ValueError(f"not alert rule columns: {sorted(unknown)}")
            columns = list(rule)
            conn.execute(
                "INSERT INTO dat_spd_alert_rule (unidad_negocio_id, created_by, updated_by, {}) VALUES"
                " (%s, %s, %s, {})".format(", ".join(columns), ", ".join(["%s"] * len(columns))),
                [
                    tenant,
                    actor,
                    actor,
                    *(Jsonb(v) if c == "channels" else v for c, v in rule.items()),
                ],
            )
    return True


def seeded(conn: psycopg.Connection, tenant: str) -> bool:
    """Whether ``tenant`` has been given its defaults."""
    return (
        conn.execute("SELECT 1 FROM spd_tenant_defaults WHERE unidad_negocio_id = %s", [tenant]).fetchone()
        is not None
    )
