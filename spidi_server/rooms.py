"""Room definitions: which rooms exist and their capacity.

Today they come from configuration (and auto-creation in development); the history issue moves
them to PostgreSQL behind the same ``RoomCatalog.lookup`` contract.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from .settings import Settings

ROOM_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NAMESPACE = uuid.UUID("6f0f3c55-2a8e-4f57-9d0f-5b1f3a7c9e21")


def room_id_for(tenant: str, code: str) -> str:
    """A room's id: stable for (tenant, code), the same on every node."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}/{code}"))


@dataclass(frozen=True, slots=True)
class RoomDef:
    room_id: str
    tenant: str
    code: str
    capacity: int


class RoomCatalog:
    """Looks up room definitions for a tenant; creates them on demand when allowed."""

    def __init__(self, settings: Settings):
        self.auto_create = settings.rooms_auto_created
        self.default_capacity = settings.default_room_capacity
        # "code" applies to every tenant, "tenant/code" to one.
        self.defined = dict(settings.rooms)

    def lookup(self, tenant: str, code: str, *, create: bool = False) -> RoomDef | None:
        """The room ``code`` of ``tenant``; None if it does not exist (and may not be created)."""
        capacity = self.defined.get(f"{tenant}/{code}") or self.defined.get(code)
        if capacity is None:
            if not (create and self.auto_create):
                return None
            capacity = self.default_capacity
        return RoomDef(room_id_for(tenant, code), tenant, code, capacity)

    def may_exist(self, tenant: str, code: str) -> bool:
        """Whether a monitor may subscribe to this room (it exists, or would be created on HELLO)."""
        return self.auto_create or self.lookup(tenant, code) is not None
