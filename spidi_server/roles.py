"""Roles, and which role may do what: the one place STOMP, the REST API and the dashboard ask.

A token carries one or more of three roles (ADR-0001):

    spidi:user     a client app: joins rooms (HELLO), heartbeats, leaves
    spidi:monitor  an operator who watches: room and roster subscriptions, REST reads, alerts
    spidi:admin    everything: also REST writes (rooms, room types, alert rules)

Callers name an *action*; ``allowed(action)`` says which roles may perform it, so a policy change
(say, acknowledging alerts becoming admin-only) is one line here.
"""

from __future__ import annotations

ADMIN = "spidi:admin"
MONITOR = "spidi:monitor"
USER = "spidi:user"
ALL = (ADMIN, MONITOR, USER)

# Actions.
JOIN = "join"  # STOMP: HELLO, HEARTBEAT, LEAVE
OBSERVE = "observe"  # STOMP: subscribe to rooms, rosters, /topic/*; REST reads; the dashboard
ADMINISTER = "administer"  # REST writes: rooms, room types, alert rules
ACKNOWLEDGE = "acknowledge"  # REST: acknowledge an alert

_PERMISSIONS: dict[str, tuple[str, ...]] = {
    JOIN: (USER, ADMIN),
    OBSERVE: (MONITOR, ADMIN),
    ADMINISTER: (ADMIN,),
    ACKNOWLEDGE: (MONITOR, ADMIN),
}

# What the dashboard's development token carries (``--dev`` only).
DEV_DASHBOARD = (ADMIN,)


def allowed(action: str) -> tuple[str, ...]:
    """The roles that may perform ``action`` (KeyError for an unknown action: a typo fails loudly)."""
    return _PERMISSIONS[action]


def describe(action: str) -> str:
    """``allowed(action)`` for people: ``"spidi:monitor or spidi:admin"``."""
    return " or ".join(allowed(action))
