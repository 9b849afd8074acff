"""Versioned SQL migrations: ``migrations/NNNN_name.sql`` applied in order, each in its own transaction.

Applied versions are recorded in ``spd_schema_migrations`` (with a checksum of the file), so
running ``migrate`` again applies nothing. A session advisory lock serialises nodes that start at
the same time against one database.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .. import logs
from . import queries

log = logging.getLogger("spidi.history.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file: ``NNNN_name.sql``."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, recorded to notice edits of applied migrations."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(match.group(1), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


def migrate(target: str | psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Bring the schema up to date; return the versions applied now (empty when already current).

    ``target`` is a DSN or an open connection (left open, its autocommit mode restored). A
    migration that fails rolls back whole and raises; the ones before it stay applied.
    """
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            return _migrate(conn, directory)
    return _migrate(target, directory)


def _migrate(conn: psycopg.Connection, directory: Path) -> list[str]:
    was_autocommit = conn.autocommit
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    conn.autocommit = True
    applied_now: list[str] = []
    try:
        queries.migration_lock(conn)
        try:
            queries.ensure_migrations_table(conn)
            done = queries.applied_migrations(conn)
            for migration in available_migrations(directory):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        # An applied file was edited: never re-run it, but say so.
                        logs.event(log, "migration_changed", logging.WARNING, version=migration.version,
                                   migration=migration.name)  # fmt: skip
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    queries.record_migration(conn, migration.version, migration.name, migration.checksum)
                applied_now.append(migration.version)
                logs.event(log, "migration_applied", version=migration.version, migration=migration.name)
        finally:
            queries.migration_unlock(conn)
    finally:
        conn.autocommit = was_autocommit
    return applied_now
