"""Tenant isolation: the transaction every tenant-facing read and write runs inside.

Row-level security (migrations/0003_security.sql) shows role ``spidi_reader`` only the rows of the
tenant named in the ``spidi.tenant`` setting; the writer and the server's own lookups run as the
connecting user, which sees every tenant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import sql

READER_ROLE = "spidi_reader"


@contextlib.contextmanager
def tenant_transaction(
    conn: psycopg.Connection, tenant: str, trace_id: str | None = None
) -> Iterator[psycopg.Connection]:
    """A transaction that sees only ``tenant``'s rows (row-level security), as role spidi_reader.

    ``trace_id`` (the REST request's W3C trace id) goes in the ``spidi.trace_id`` setting, which
    the rows it writes record in their ``trace_id`` column (migrations/0010_trace_id.sql).
    Must start outside any transaction: the role and tenant are SET LOCAL, and inside an outer
    transaction they would outlive this block. Commits on success, rolls back on error.
    """
    if not tenant:
        raise ValueError("tenant_transaction needs a tenant")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise psycopg.ProgrammingError("tenant_transaction must start outside a transaction")
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(READER_ROLE)))
        conn.execute(
            "SELECT set_config('spidi.tenant', %s, true), set_config('spidi.trace_id', %s, true)",
            [tenant, trace_id or ""],
        )
        yield conn
