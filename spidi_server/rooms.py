"""Room definitions: which rooms exist, their capacity and status.

Rooms stored in PostgreSQL (``dat_spd_room``) come first; the node keeps them in memory and
refreshes them every few seconds (``replace_stored``). Then rooms from configuration, then, when
allowed, auto-creation on first HELLO with the default capacity.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass

from .settings import Settings

ROOM_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NAMESPACE = uuid.UUID("6f0f3c55-2a8e-4f57-9d0f-5b1f3a7c9e21")


@functools.lru_cache(maxsize=4096)  # a uuid5 (SHA-1) per HELLO otherwise; a node serves few rooms
def room_id_for(tenant: str, code: str) -> str:
    """A room's id: stable for (tenant, code), the same on every node and in PostgreSQL."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}/{code}"))


@dataclass(frozen=True, slots=True)
class RoomDef:
    room_id: str
    tenant: str
    code: str
    capacity: int
    active: bool = True


class RoomCatalog:
    """Looks up room definitions for a tenant; creates them on demand when allowed."""

    def __init__(self, settings: Settings):
        self.auto_create = settings.rooms_auto_created
        self.default_capacity = settings.default_room_capacity
        # "code" applies to every tenant, "tenant/code" to one.
        self.defined = dict(settings.rooms)
        self.stored: dict[tuple[str, str], RoomDef] = {}

    def effective_capacity(self, stored: int | None) -> int:
        """The capacity a room is held to: its own, else its type's default (both as the SQL
        coalesces them into ``stored``), else the configured ``default_room_capacity``.

        What HELLO is checked against and what the REST API shows as a room's ``capacity``.
        """
        return stored or self.default_capacity

    def replace_stored(self, rooms: list[RoomDef]) -> None:
        """Install a fresh copy of the rooms stored in PostgreSQL."""
        self.stored = {(r.tenant, r.code): r for r in rooms}

    def lookup(self, tenant: str, code: str, *, create: bool = False) -> RoomDef | None:
        """The room ``code`` of ``tenant``; None if it does not exist (and may not be created)."""
        stored = self.stored.get((tenant, code))
        if stored is not None:
            return stored
        capacity = self.defined.get(f"{tenant}/{code}") or self.defined.get(code)
        if capacity is None:
            if not (create and self.auto_create):
                return None
            capacity = self.default_capacity
        return RoomDef(room_id_for(tenant, code), tenant, code, capacity)
