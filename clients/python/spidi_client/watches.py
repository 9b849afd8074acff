"""State a monitor keeps from its subscriptions, without I/O: a room's roster from the snapshot
and the deltas (with ``seq`` checked), the open alerts of the tenant.

Each ``apply`` returns False when the message shows that something was missed (a ``seq`` gap):
the client then subscribes again for a new snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["AlertsState", "RosterState", "Sub", "Watch"]


class RosterState:
    """A room's roster: ``users`` maps sessionId to its entry (docs/protocol.md, ROOM_ROSTER)."""

    def __init__(self):
        self.users: dict[str, dict] = {}
        self.seq: int | None = None

    def reset(self) -> None:
        """Forget everything until the next snapshot (a new subscription)."""
        self.seq = None

    def apply(self, message: dict) -> bool:
        """Apply a snapshot or a delta; False (nothing applied) on a ``seq`` gap or a delta
        before any snapshot."""
        seq = message.get("seq")
        if message.get("full"):
            self.users = {entry["sessionId"]: entry for entry in message.get("users", ())}
            self.seq = seq
            return True
        if self.seq is None or seq != self.seq + 1:
            return False
        self.seq = seq
        # Idempotent, as the protocol asks: a known joiner replaces its entry, an unknown leaver
        # is ignored, an update is merged over what we hold.
        for entry in message.get("joined", ()):
            self.users[entry["sessionId"]] = entry
        for entry in message.get("updated", ()):
            sid = entry["sessionId"]
            self.users[sid] = {**self.users.get(sid, {}), **entry}
        for entry in message.get("left", ()):
            self.users.pop(entry["sessionId"], None)
        return True


class AlertsState:
    """The open alerts of the tenant, keyed by (ruleId, roomId) as docs/protocol.md says."""

    def __init__(self):
        self.alerts: dict[tuple[str, str], dict] = {}

    def apply(self, message: dict) -> bool:
        """Apply ALERTS (the snapshot), ALERT (a transition) or ALERT_ACK; always True."""
        kind = message.get("type")
        if kind == "ALERTS":
            self.alerts = {(a.get("ruleId"), a.get("roomId")): a for a in message.get("alerts", ())}
        elif kind == "ALERT":
            key = (message.get("ruleId"), message.get("roomId"))
            if message.get("state") == "resolved":
                self.alerts.pop(key, None)
            else:
                held = self.alerts.get(key, {})
                ack = {k: held[k] for k in ("acknowledgedBy", "acknowledgedAt") if k in held}
                same_episode = held.get("episodeId") == message.get("episodeId")
                self.alerts[key] = {**message, **(ack if same_episode else {})}
        elif kind == "ALERT_ACK":
            held = self.alerts.get((message.get("ruleId"), message.get("roomId")))
            if held is not None and message.get("alertId") in (held.get("episodeId"), held.get("alertId")):
                held["acknowledgedBy"] = message.get("acknowledgedBy")
                held["acknowledgedAt"] = message.get("acknowledgedAt")
        return True


class _Unwatcher(Protocol):
    async def _unwatch(self, watch: Watch) -> None: ...


class Sub:
    """One subscription of a watch: destination, state (or None) and what to call."""

    def __init__(self, destination: str, state, deliver: Callable[[dict], None]):
        self.destination = destination
        self.state = state
        self.deliver = deliver


class Watch:
    """The subscriptions of one ``watch_*`` call. ``roster`` (watch_room) maps sessionId to its
    roster entry; ``alerts`` (watch_alerts) maps (ruleId, roomId) to the open alert."""

    def __init__(self, client: _Unwatcher, subs: list[Sub]):
        self._client = client
        self._subs = subs
        self.roster: dict[str, dict] = {}
        self.alerts: dict = {}
        self.resubscribed = 0  # times a seq gap made it ask for a new snapshot

    async def close(self) -> None:
        """Unsubscribe (now if connected) and stop calling the handlers."""
        await self._client._unwatch(self)
