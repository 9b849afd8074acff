"""PostgreSQL for the tests: one real server per run (embedded via pgserver, or
SPIDI_TEST_POSTGRES_DSN), and a fresh, migrated database per test cloned from a template.

The fixtures are imported by tests/conftest.py so every directory shares the one server.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from spidi_server.history.embedded_pg import EmbeddedPostgres
from spidi_server.history.migrate import migrate
from spidi_server.processes import read_pidfile

from . import watchdog

TEMPLATE_DB = "spidi_test_template"


@dataclasses.dataclass
class PgServer:
    """The test PostgreSQL: its admin DSN, and the embedded server when we run it (else None)."""

    dsn: str
    embedded: EmbeddedPostgres | None

    def database_dsn(self, name: str, **extra) -> str:
        return make_conninfo(self.dsn, dbname=name, **extra)


def private_pg_dir() -> Path:
    """A directory for an embedded PostgreSQL, outside pytest's temporary tree.

    As root, pgserver runs PostgreSQL as an unprivileged user and opens up the directories above
    the data directory for it; any pytest run (another checkout, a colleague's) resets
    /tmp/pytest-of-<user> to mode 0700, which would cut the server off its own files.
    """
    return Path(tempfile.mkdtemp(prefix="spidi-test-pg-"))


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    dsn = os.environ.get("SPIDI_TEST_POSTGRES_DSN")
    embedded = None
    base = None
    if not dsn:
        base = private_pg_dir()
        embedded = EmbeddedPostgres(base / "postgres")
        dsn = embedded.start(apply_migrations=False)
        # pg_ctl detaches the postmaster from pytest: stopped by the watchdog if pytest is killed.
        postmaster = read_pidfile(base / "postgres" / "postmaster.pid")
        if postmaster is not None:
            watchdog.guard(postmaster)
    server = PgServer(dsn, embedded)
    # A migrated template makes every test's database a cheap CREATE DATABASE ... TEMPLATE.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    migrate(server.database_dsn(TEMPLATE_DB))
    try:
        yield server
    finally:
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(base, ignore_errors=True)


def _create_db(server: PgServer, template: str | None) -> str:
    name = f"spidi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return name


def _drop_db(server: PgServer, name: str) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_dsn(pg_server) -> str:
    """A fresh, migrated database of its own for this test."""
    name = _create_db(pg_server, TEMPLATE_DB)
    yield pg_server.database_dsn(name)
    _drop_db(pg_server, name)


@pytest.fixture
def empty_pg_dsn(pg_server) -> str:
    """A fresh database with no schema at all."""
    name = _create_db(pg_server, None)
    yield pg_server.database_dsn(name)
    _drop_db(pg_server, name)


@pytest.fixture
def pg(pg_dsn):
    """An autocommit connection to this test's database."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn
