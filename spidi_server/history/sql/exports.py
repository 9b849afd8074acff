"""Attendance exports: a room's sessions over a period, and the per-tenant export chain
(migrations/0013_export_chain.sql). Run inside ``tenancy.tenant_transaction``: row-level security
keeps both to the caller's tenant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import dict_row

_COLUMNS = """session_id::text, user_id, client_id, device, os, app_version, ip, started_at, ended_at,
               end_reason, heartbeat_count, latency_avg, latency_min, latency_max"""
_OVERLAPS = """room_id = %(room)s AND started_at < %(end)s AND (ended_at IS NULL OR ended_at > %(start)s)
               AND deleted_at IS NULL"""


def attendance(
    conn: psycopg.Connection,
    room_id: str,
    start: datetime,
    end: datetime,
    limit: int,
    archive: bool = False,
) -> list[dict[str, Any]]:
    """Up to ``limit`` sessions of ``room_id`` overlapping [start, end) (started before ``end``,
    not ended by ``start``; open ones included), oldest first, as dicts of dat_spd_session columns;
    with ``archive`` the archived sessions too (migration 0011: same columns, same row security)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT * FROM (
                   SELECT {_COLUMNS} FROM dat_spd_session WHERE {_OVERLAPS}
                   UNION ALL
                   SELECT {_COLUMNS} FROM spd_archive.dat_spd_session WHERE %(archive)s AND {_OVERLAPS}
               ) AS s ORDER BY started_at, session_id LIMIT %(limit)s""",
            {"room": room_id, "start": start, "end": end, "limit": limit, "archive": archive},
        ).fetchall()


class ChainHead(NamedTuple):
    """A tenant's last export: its seq (0 before the first) and hash (None before the first)."""

    seq: int
    hash: str | None


def lock_head(conn: psycopg.Connection, tenant: str) -> ChainHead:
    """The tenant's chain head, locked (FOR UPDATE) until the transaction ends: a concurrent export
    waits here and then reads the head this one leaves. Creates the head on the first export."""
    conn.execute(
        "INSERT INTO spd_export_chain (unidad_negocio_id, seq) VALUES (%s, 0) ON CONFLICT DO NOTHING",
        [tenant],
    )
    seq, head = conn.execute(
        "SELECT seq, head_hash FROM spd_export_chain WHERE unidad_negocio_id = %s FOR UPDATE", [tenant]
    ).fetchone()
    return ChainHead(seq, head)


def append(
    conn: psycopg.Connection,
    tenant: str,
    *,
    seq: int,
    hash: str,
    prev_hash: str | None,
    room_id: str,
    period_from: datetime,
    period_to: datetime,
    fmt: str,
    row_count: int,
    key_id: str,
    generated_at: datetime,
    actor: str,
) -> None:
    """Record export ``seq`` and make it the tenant's head (after ``lock_head``, same transaction)."""
    conn.execute(
        """INSERT INTO dat_spd_export (unidad_negocio_id, seq, hash, prev_hash, room_id, period_from,
               period_to, format, row_count, key_id, generated_at, created_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        [tenant, seq, hash, prev_hash, room_id, period_from, period_to, fmt, row_count, key_id,
         generated_at, actor],
    )  # fmt: skip
    conn.execute(
        "UPDATE spd_export_chain SET seq = %s, head_hash = %s, updated_at = now(), updated_by = %s"
        " WHERE unidad_negocio_id = %s",
        [seq, hash, actor, tenant],
    )


def exports(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The visible tenant's exports, in seq order (tests, diagnostics)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM dat_spd_export ORDER BY unidad_negocio_id, seq").fetchall()
