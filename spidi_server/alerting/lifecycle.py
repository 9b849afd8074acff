"""The life of one rule's alert in one room: inactive -> pending -> firing -> resolved.

    inactive --condition holds--> pending   (or straight to firing when ``for`` is 0)
    pending  --held for ``for``--> firing
    pending  --condition gone----> resolved (never fired: no notification)
    firing   --resolve holds-----> resolved (hysteresis: the resolve condition, not the
                                             fire condition going false, ends it)

A resolved alert is inactive again: the next time the condition holds a new episode starts.
The state is a plain object so the rules can be tested without Redis, and serialises to the JSON
the evaluator keeps in Redis so that a new evaluator continues where the old one stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

INACTIVE = "inactive"
PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"


@dataclass
class AlertState:
    """Where one rule's alert stands in one room."""

    state: str = INACTIVE
    since_ms: int = 0  # when the condition started to hold (the episode's start)
    changed_ms: int = 0  # the last transition
    episode_id: str = ""  # event id of the episode's first transition (pending or firing)
    tenant: str = ""  # kept so an alert whose rule or room vanished can still be closed
    room_code: str = ""

    def to_json(self) -> bytes:
        """The JSON kept in the evaluator's state hash."""
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> AlertState:
        """Read back ``to_json``'s output; unknown fields are ignored."""
        data = orjson.loads(raw)
        return cls(
            **{
                k: data[k]
                for k in ("state", "since_ms", "changed_ms", "episode_id", "tenant", "room_code")
                if k in data
            }
        )


def step(alert: AlertState, fires: bool, resolves: bool, for_ms: int, now_ms: int) -> str | None:
    """Advance ``alert`` by one evaluation; the transition's new state, or None if none.

    ``fires``: the rule's condition holds now; ``resolves``: its resolve condition holds now
    (only consulted while firing).
    """
    if alert.state == INACTIVE:
        if not fires:
            return None
        alert.since_ms = now_ms
        alert.changed_ms = now_ms
        alert.state = FIRING if for_ms <= 0 else PENDING
        return alert.state
    if alert.state == PENDING:
        if not fires:
            alert.state, alert.changed_ms = INACTIVE, now_ms
            return RESOLVED
        if now_ms - alert.since_ms >= for_ms:
            alert.state, alert.changed_ms = FIRING, now_ms
            return FIRING
        return None
    if resolves:
        alert.state, alert.changed_ms = INACTIVE, now_ms
        return RESOLVED
    return None
