"""The SLO breakdown's groups: which client app version and which OS a room's latencies count under.

Operators ask first which release (or which OS) made latency worse, so a room's minute sample
carries, besides its latency histogram, one histogram per app version and one per OS. Their
number is bounded per room: the heartbeat lane counts them in group *slots* (``set_groups``,
two increments per heartbeat, no Python object), and ``GroupSlots`` gives them out per room and
dimension:

* slot 0 is ``other``: the sessions whose value found no free slot;
* a value already slotted keeps its slot (counted by its live sessions), a new value takes a free
  slot while fewer than ``top_n`` are used, else it goes to ``other``;
* a slot whose last session left is freed only after the next take of the room's histograms
  (``settle``): what the lane counted for it before then is still that value's.

A session without an OS counts under the OS label ``""`` (HELLO refuses an empty os, so no
client's value collides with it). The writer bounds the stored groups again across nodes
(``history/sql/ingest.py``).
"""

from __future__ import annotations

from ..stores.events import BREAKDOWN_DIMENSIONS

OTHER_SLOT = 0


class GroupSlots:
    """One dimension's slots of one room (slot 0: other; 1..top_n: one value each)."""

    __slots__ = ("top_n", "labels", "by_value", "refs", "retiring")

    def __init__(self, top_n: int):
        self.top_n = top_n
        self.labels: dict[int, str] = {}  # slot -> value (slots in use or retiring)
        self.by_value: dict[str, int] = {}
        self.refs: dict[int, int] = {}  # slot -> live sessions
        self.retiring: set[int] = set()  # no session left: freed at the next settle

    def join(self, value: str) -> int:
        """The slot of a session with ``value`` (counted until ``leave``)."""
        slot = self.by_value.get(value)
        if slot is None:
            if len(self.labels) >= self.top_n:
                slot = OTHER_SLOT
            else:
                slot = next(s for s in range(1, self.top_n + 1) if s not in self.labels)
                self.labels[slot] = value
                self.by_value[value] = slot
        self.refs[slot] = self.refs.get(slot, 0) + 1
        self.retiring.discard(slot)
        return slot

    def leave(self, slot: int) -> None:
        """A session of ``slot`` left (its slot retires when it was the last)."""
        left = self.refs[slot] - 1
        if left:
            self.refs[slot] = left
            return
        del self.refs[slot]
        if slot != OTHER_SLOT:
            self.retiring.add(slot)

    def label(self, slot: int) -> str | None:
        """The value a slot counts for (None: other)."""
        return None if slot == OTHER_SLOT else self.labels[slot]

    def settle(self) -> None:
        """The lane's histograms were taken: retiring slots are free again."""
        for slot in self.retiring:
            del self.by_value[self.labels.pop(slot)]
        self.retiring.clear()


class RoomGroups:
    """A room's slots in each breakdown dimension (``BREAKDOWN_DIMENSIONS``, the lane's order)."""

    __slots__ = ("dims",)

    def __init__(self, top_n: int):
        self.dims = tuple(GroupSlots(top_n) for _ in BREAKDOWN_DIMENSIONS)

    def join(self, app_version: str, os: str | None) -> tuple[int, ...]:
        """A session's slots (app version, OS)."""
        versions, systems = self.dims  # BREAKDOWN_DIMENSIONS' order (unpacked: one per connect)
        return (versions.join(app_version), systems.join(os or ""))

    def leave(self, slots: tuple[int, ...]) -> None:
        for d, slot in zip(self.dims, slots, strict=True):
            d.leave(slot)

    def labelled(self, taken: list[tuple[int, int, list[int]]]) -> list[tuple[str, str | None, list[int]]]:
        """The lane's ``take_room_groups`` as (dimension name, value or None for other, histogram);
        retiring slots are freed afterwards."""
        out = [(BREAKDOWN_DIMENSIONS[dim], self.dims[dim].label(slot), hist) for dim, slot, hist in taken]
        for d in self.dims:
            d.settle()
        return out
