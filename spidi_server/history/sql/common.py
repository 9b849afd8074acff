"""What the statement modules share: the conflict error, one page of a query, soft deletes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


class ConflictError(Exception):
    """The change collides with live rows: a duplicate code, or a room type still in use."""


def page(
    conn: psycopg.Connection, query: str, params: dict[str, Any], order_by: str
) -> tuple[list[dict], int]:
    """One page (``params`` has limit and offset) of ``query``'s rows in ``order_by``, and how many in all."""
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM ({query}) AS q", params).fetchone()["n"]
        rows = cur.execute(
            f"{query} ORDER BY {order_by} LIMIT %(limit)s OFFSET %(offset)s", params
        ).fetchall()
    return rows, total


def soft_delete(conn: psycopg.Connection, table: str, where: str, params: Sequence, actor: str) -> int:
    """Mark the live rows of ``table`` matching ``where`` (SQL of these modules, never user text)
    deleted: rows stay for history and audit. Returns how many."""
    query = sql.SQL(
        "UPDATE {} SET deleted_at = now(), updated_at = now(), updated_by = %s WHERE deleted_at IS NULL AND "
    ).format(sql.Identifier(table)) + sql.SQL(where)
    return conn.execute(query, [actor, *params]).rowcount
