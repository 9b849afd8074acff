"""Room definitions: which rooms exist, their capacity and status; and the one list of a tenant's rooms.

Rooms stored in PostgreSQL (``dat_spd_room``) come first; the node keeps them in memory and
refreshes them every few seconds (``replace_stored``). Then rooms from configuration, then, when
allowed, auto-creation on first HELLO with the default capacity.

A tenant's rooms, wherever they are shown (``GET /api/v1/rooms``, ``/topic/rooms``, the dashboard,
``spidi_rooms_total``), are ``room_list``'s: its stored and configured rooms, listed always, and the
rooms of the tenant's Redis index (every room a session joined: auto-created ones among them) whose
live state has not expired. An empty room's live state expires after its ``empty_ttl_s`` (the
room's ``ttl_s``, else ``room_empty_ttl_s``); an auto-created room exists only there, so it is then
gone (see room_index.py for the index's upkeep).
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Protocol

from .settings import Settings

ROOM_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NAMESPACE = uuid.UUID("6f0f3c55-2a8e-4f57-9d0f-5b1f3a7c9e21")


MADE_MAX = 4096  # RoomCatalog's definitions of rooms not stored, kept (as room_id_for's ids)


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
    empty_ttl_s: int = 3600  # an empty room's live state expires after this (RoomCatalog.empty_ttl)


class RoomCatalog:
    """Looks up room definitions for a tenant; creates them on demand when allowed."""

    def __init__(self, settings: Settings):
        self.auto_create = settings.rooms_auto_created
        self.default_capacity = settings.default_room_capacity
        self.default_empty_ttl_s = settings.room_empty_ttl_s
        # "code" applies to every tenant, "tenant/code" to one.
        self.defined = dict(settings.rooms)
        self.stored: dict[tuple[str, str], RoomDef] = {}
        # The definitions lookup made for rooms not stored, and whether each is auto-created: the
        # same for a (tenant, code) until the settings change (never, in a process), so one
        # frozen RoomDef per room instead of one per HELLO. Bounded: codes come from clients.
        self._made: dict[tuple[str, str], tuple[RoomDef, bool]] = {}

    def effective_capacity(self, stored: int | None) -> int:
        """The capacity a room is held to: its own, else its type's default (both as the SQL
        coalesces them into ``stored``), else the configured ``default_room_capacity``.

        What HELLO is checked against and what the REST API shows as a room's ``capacity``.
        """
        return stored or self.default_capacity

    def empty_ttl(self, ttl_s: int | None) -> int:
        """Seconds an empty room's live state is kept: its own ``ttl_s``, else ``room_empty_ttl_s``."""
        return ttl_s or self.default_empty_ttl_s

    def stored_room(self, row: dict) -> RoomDef:
        """A room as PostgreSQL stores it (a ``history.sql.rooms`` row), as this catalogue holds it."""
        return RoomDef(
            row["id"],
            row["tenant"],
            row["code"],
            self.effective_capacity(row["capacity"]),
            row["status"] == "active",
            self.empty_ttl(row["ttl_s"]),
        )

    def replace_stored(self, rooms: list[RoomDef]) -> None:
        """Install a fresh copy of the rooms stored in PostgreSQL."""
        self.stored = {(r.tenant, r.code): r for r in rooms}

    def lookup(self, tenant: str, code: str, *, create: bool = False) -> RoomDef | None:
        """The room ``code`` of ``tenant``; None if it does not exist (and may not be created)."""
        key = (tenant, code)
        stored = self.stored.get(key)
        if stored is not None:
            return stored
        made = self._made.get(key)
        if made is None:
            capacity = self.defined.get(f"{tenant}/{code}") or self.defined.get(code)
            auto = capacity is None
            if auto and not self.auto_create:
                return None
            definition = RoomDef(
                room_id_for(tenant, code),
                tenant,
                code,
                self.default_capacity if auto else capacity,
                True,
                self.default_empty_ttl_s,
            )
            if len(self._made) >= MADE_MAX:
                self._made.clear()
            made = self._made[key] = (definition, auto)
        definition, auto = made
        if auto and not create:
            return None
        return definition

    def configured(self, tenant: str) -> dict[str, RoomDef]:
        """The rooms configuration gives ``tenant`` (``rooms``: every tenant's, then its own), by id."""
        out: dict[str, RoomDef] = {}
        for scoped in (False, True):
            for name, capacity in self.defined.items():
                scope, _, code = name.rpartition("/")
                if (scope == tenant) if scoped else not scope:
                    room_id = room_id_for(tenant, code)
                    out[room_id] = RoomDef(room_id, tenant, code, capacity, True, self.default_empty_ttl_s)
        return out

    def known(self, tenant: str, stored: list[RoomDef] | None = None) -> dict[str, RoomDef]:
        """The rooms of ``tenant`` listed whether or not anyone joined them: configured ones, and
        stored ones (``stored``, else this node's copy of PostgreSQL's) in their place; by id."""
        if stored is None:
            stored = [r for r in self.stored.values() if r.tenant == tenant]
        out = self.configured(tenant)
        out.update((r.room_id, r) for r in stored)
        return out


class LiveRooms(Protocol):
    """What ``room_list`` reads (the hot store)."""

    async def tenant_rooms(self, tenant: str) -> dict[str, str]: ...

    async def room_metrics(self, room_ids: list[str]) -> list[dict]: ...


async def room_list(store: LiveRooms, tenant: str, known: dict[str, RoomDef]) -> list[dict]:
    """Every room of ``tenant`` with its live figures, by code: the rooms of ``known`` (stored and
    configured: ``RoomCatalog.known``) and those of the tenant's Redis index whose live state has
    not expired. Each as ``room_metrics`` gives it (``roomId``, ``roomCode``, ``tenant``,
    ``online``, ``users``, ``peak``, ``capacity``, ``avgLatencyMs``); a known room's code and
    capacity are its definition's. Every reader of "the tenant's rooms" goes through here."""
    indexed = await store.tenant_rooms(tenant)
    ids = sorted(set(known) | set(indexed))
    out = []
    for m in await store.room_metrics(ids):
        definition = known.get(m["roomId"])
        if definition is not None:
            m["roomCode"], m["capacity"] = definition.code, definition.capacity
        elif not (m["roomCode"] or m["online"]):
            continue  # its live state expired: an auto-created room gone (the sweep unindexes it)
        else:
            m["roomCode"] = m["roomCode"] or indexed[m["roomId"]]
        m["tenant"] = tenant
        out.append(m)
    out.sort(key=lambda m: m["roomCode"])
    return out
