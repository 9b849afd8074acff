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

log = logging.getLogger("spidi.history.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_MIGRATION_LOCK = 0x5350_4944_4931  # pg_advisory_lock key "SPIDI1" (retention.py has "SPIDI2")


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


# -- the record of applied migrations -----------------------------------------------------------


def migration_lock(conn: psycopg.Connection) -> None:
    """Serialise migrations of concurrent nodes (session-level advisory lock)."""
    conn.execute("SELECT pg_advisory_lock(%s)", [_MIGRATION_LOCK])


def migration_unlock(conn: psycopg.Connection) -> None:
    """Release the migration lock."""
    conn.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATION_LOCK])


def ensure_migrations_table(conn: psycopg.Connection) -> None:
    """Create ``spd_schema_migrations`` (the record of applied migrations) if missing."""
    conn.execute(
        """CREATE TABLE IF NOT EXISTS spd_schema_migrations (
               version    text PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now(),
               applied_by text NOT NULL DEFAULT current_user)"""
    )


def applied_migrations(conn: psycopg.Connection) -> dict[str, str]:
    """version -> checksum of every applied migration."""
    return dict(conn.execute("SELECT version, checksum FROM spd_schema_migrations").fetchall())


def record_migration(conn: psycopg.Connection, version: str, name: str, checksum: str) -> None:
    """Note a migration as applied (inside its own transaction)."""
    conn.execute(
        "INSERT INTO spd_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
        [version, name, checksum],
    )


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
        migration_lock(conn)
        try:
            ensure_migrations_table(conn)
            done = applied_migrations(conn)
            for migration in available_migrations(directory):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        # An applied file was edited: never re-run it, but say so.
                        logs.event(
                            log,
                            "migration_changed",
                            logging.WARNING,
                            version=migration.version,
                            migration=migration.name,
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    record_migration(conn, migration.version, migration.name, migration.checksum)
                applied_now.append(migration.version)
                logs.event(log, "migration_applied", version=migration.version, migration=migration.name)
        finally:
            migration_unlock(conn)
    finally:
        conn.autocommit = was_autocommit
    return applied_now
