"""rooms.RoomCatalog.lookup: a stored room first, else a configured one, else (HELLO, when rooms
are auto-created) the default; the same answers when the definition it made is reused."""

from __future__ import annotations

from spidi_server import rooms
from spidi_server.rooms import RoomCatalog, RoomDef, room_id_for
from spidi_server.settings import Settings


def _catalog(tmp_path, **overrides) -> RoomCatalog:
    settings = Settings(
        data_dir=str(tmp_path),
        rooms={"lobby": 10, "acme/annex": 5},
        default_room_capacity=100,
        room_empty_ttl_s=60,
        **overrides,
    )
    return RoomCatalog(settings)


def test_lookup_answers_the_same_every_time(tmp_path):
    catalog = _catalog(tmp_path, auto_create_rooms=True)
    for _ in range(3):  # the first lookup makes a definition, the next ones reuse it
        assert catalog.lookup("acme", "lobby") == RoomDef(
            room_id_for("acme", "lobby"), "acme", "lobby", 10, True, 60
        )
        assert catalog.lookup("acme", "annex").capacity == 5
        assert catalog.lookup("other", "annex", create=True).capacity == 100  # "acme/annex" is acme's only
        # An unknown room exists only for HELLO (create), whatever was asked before.
        assert catalog.lookup("acme", "new") is None
        made = catalog.lookup("acme", "new", create=True)
        assert made == RoomDef(room_id_for("acme", "new"), "acme", "new", 100, True, 60)
        assert catalog.lookup("acme", "new", create=True) is made  # one frozen definition per room
        assert catalog.lookup("acme", "new") is None
    # A stored room wins over what was made for it, and the made one comes back once it is gone.
    stored = RoomDef(room_id_for("acme", "new"), "acme", "new", 7, False, 5)
    catalog.replace_stored([stored])
    assert catalog.lookup("acme", "new") is stored and catalog.lookup("acme", "new", create=True) is stored
    catalog.replace_stored([])
    assert catalog.lookup("acme", "new") is None
    assert catalog.lookup("acme", "new", create=True).capacity == 100


def test_without_auto_creation_unknown_rooms_do_not_exist(tmp_path):
    catalog = _catalog(tmp_path, auto_create_rooms=False)
    for _ in range(2):
        assert catalog.lookup("acme", "new", create=True) is None
        assert catalog.lookup("acme", "lobby", create=True).capacity == 10


def test_the_made_definitions_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(rooms, "MADE_MAX", 8)
    catalog = _catalog(tmp_path, auto_create_rooms=True)
    for i in range(50):  # room codes come from clients: the table does not grow with them
        assert catalog.lookup("acme", f"r{i}", create=True).code == f"r{i}"
        assert len(catalog._made) <= 8
    assert catalog.lookup("acme", "r0", create=True).room_id == room_id_for("acme", "r0")
