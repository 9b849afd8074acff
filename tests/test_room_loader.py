"""The node's room refresh (``node.RoomLoader``): one PostgreSQL connection kept between refreshes,
and a refresh that still succeeds after that connection died (PostgreSQL restarted).

Real PostgreSQL (the test server's database of this test)."""

from __future__ import annotations

import psycopg
import pytest

from spidi_server.history.sql import rooms
from spidi_server.node import RoomLoader
from spidi_server.rooms import RoomCatalog, room_id_for
from spidi_server.settings import Settings


def _backend(loader: RoomLoader) -> int:
    return loader._conn.info.backend_pid


def test_refreshes_share_one_connection_and_survive_its_loss(pg, pg_dsn, tmp_path):
    catalog = RoomCatalog(Settings(data_dir=str(tmp_path)))
    rooms.create(pg, "acme", "lobby", capacity=10, actor="test")
    loader = RoomLoader(pg_dsn)
    try:
        assert [r.room_id for r in loader.load(catalog)] == [room_id_for("acme", "lobby")]
        backend = _backend(loader)
        rooms.create(pg, "acme", "annex", capacity=5, actor="test")
        loaded = loader.load(catalog)
        assert sorted(r.code for r in loaded) == ["annex", "lobby"]
        assert _backend(loader) == backend  # no new connection per refresh

        # The server ends the connection (as a restart would): the next refresh reconnects.
        pg.execute("SELECT pg_terminate_backend(%s)", (backend,))
        rooms.create(pg, "acme", "cellar", actor="test")
        assert sorted(r.code for r in loader.load(catalog)) == ["annex", "cellar", "lobby"]
        assert _backend(loader) != backend
    finally:
        loader.close()
    assert loader._conn is None


def test_a_refresh_fails_when_a_new_connection_would(tmp_path):
    catalog = RoomCatalog(Settings(data_dir=str(tmp_path)))
    loader = RoomLoader("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(psycopg.OperationalError):
        loader.load(catalog)
    assert loader._conn is None
