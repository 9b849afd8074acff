"""Roles, and which role may do what: the one place STOMP, the REST API and the dashboard ask.

A token carries one or more of three roles (ADR-0001):

    spidi:user     a client app: joins rooms (HELLO), heartbeats, leaves
    spidi:monitor  an operator who watches, read-only: room and roster subscriptions (without
                   IP addresses), REST reads, alerts
    spidi:admin    everything: also REST writes (rooms, room types, alert rules), acknowledging
                   alerts, session history, clients' IP addresses, alert channels' secrets

Callers name an *action* and ask a :class:`Policy` (``policy.allows(claims_roles, action)``). Two
settings widen what monitors may do (``monitors_may_acknowledge``, ``monitors_see_ip``), so the
node builds its policy once at start (``policy(settings)``) and hands it to the REST API, presence
(HELLO, subscriptions) and the dashboard; a policy change is one line here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

ADMIN = "spidi:admin"
MONITOR = "spidi:monitor"
USER = "spidi:user"
ALL = (ADMIN, MONITOR, USER)

# Actions.
JOIN = "join"  # STOMP: HELLO, HEARTBEAT, LEAVE
OBSERVE = "observe"  # STOMP: subscribe to rooms, rosters, /topic/*; REST reads; the dashboard
ADMINISTER = "administer"  # REST writes: rooms, room types, alert rules
ACKNOWLEDGE = "acknowledge"  # REST: acknowledge an alert
VIEW_IP = "view_ip"  # see clients' IP addresses in rosters and sessions (STOMP and REST)
VIEW_SESSIONS = "view_sessions"  # REST: session history, a user's sessions across rooms
VIEW_SECRETS = "view_secrets"  # REST: alert rule channels' URLs and routing keys unmasked

_BASE: dict[str, tuple[str, ...]] = {
    JOIN: (USER, ADMIN),
    OBSERVE: (MONITOR, ADMIN),
    ADMINISTER: (ADMIN,),
    ACKNOWLEDGE: (ADMIN,),
    VIEW_IP: (ADMIN,),
    VIEW_SESSIONS: (ADMIN,),
    VIEW_SECRETS: (ADMIN,),
}

# What the dashboard's development token carries (``--dev`` only).
DEV_DASHBOARD = (ADMIN,)


class PolicySettings(Protocol):
    """The settings a policy is built from (``settings.Settings``)."""

    monitors_may_acknowledge: bool
    monitors_see_ip: bool


@dataclass(frozen=True)
class Policy:
    """Which roles may perform each action, under one node's settings. Immutable."""

    permissions: Mapping[str, tuple[str, ...]]

    def allowed(self, action: str) -> tuple[str, ...]:
        """The roles that may perform ``action`` (KeyError for an unknown action: a typo fails loudly)."""
        return self.permissions[action]

    def allows(self, held: Iterable[str], action: str) -> bool:
        """Whether a token holding the roles ``held`` may perform ``action``."""
        allowed = self.permissions[action]
        if isinstance(held, (set, frozenset)):  # a token's Claims.roles: one C call (every HELLO asks)
            return not held.isdisjoint(allowed)
        return any(role in held for role in allowed)

    def describe(self, action: str) -> str:
        """``allowed(action)`` for people: ``"spidi:monitor or spidi:admin"``."""
        return " or ".join(self.allowed(action))


def policy(settings: PolicySettings | None = None) -> Policy:
    """The policy under ``settings`` (None: the defaults, nothing granted to monitors beyond reading)."""
    table = dict(_BASE)
    if settings is not None and settings.monitors_may_acknowledge:
        table[ACKNOWLEDGE] = (MONITOR, ADMIN)
    if settings is not None and settings.monitors_see_ip:
        table[VIEW_IP] = (MONITOR, ADMIN)
    return Policy(MappingProxyType(table))


# The policy under default settings (e.g. the OpenAPI document built without a node).
DEFAULT = policy()
