"""History fixtures (the PostgreSQL server and per-test databases come from tests/pg_fixtures.py)."""

from __future__ import annotations

import dataclasses

import pytest


@pytest.fixture
def history_settings(settings, pg_dsn):
    """Node settings pointed at this test's database, with a writer that flushes quickly and a
    retention long enough for the fixed dates the tests use, and no reconciliation sweep (their
    sessions' fixed dates are long past: test_reconcile.py turns it on)."""
    return dataclasses.replace(
        settings,
        postgres_dsn=pg_dsn,
        writer_flush_interval_s=0.1,
        writer_batch_size=1000,
        retention_hot_days=36500,
        retention_drop_days=36500,
        writer_sweep_interval_s=0,
    ).validate()
