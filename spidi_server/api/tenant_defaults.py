"""Defaults shipped (ADR-0001): what a tenant finds on its first use of the API.

The room types WebRTC, Chat and Notification (``history.sql.defaults.DEFAULT_ROOM_TYPES``) and
the three built-in rules below, scope tenant, in-app only. They are ordinary rows: the tenant's
administrators edit and delete them through ``/api/v1/room-types`` and ``/api/v1/alert-rules``,
and a deleted one stays deleted (seeding happens once per tenant, recorded in
``spd_tenant_defaults``). With ``tenant_defaults`` on, ``Api.db`` calls :func:`seed` before a
tenant's first statement on this process, and the node's periodic step (``Api.seed_tenants``) for
the tenants of its rooms, whose first use may be a client's HELLO.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..alerting import rules
from ..history.sql import defaults

ACTOR = "spidi-defaults"  # created_by / updated_by of the rows seeding adds

# (name, kind): each at its kind's default threshold (rules.DEFAULT_THRESHOLDS).
DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    ("Room above 80 % of capacity", "capacity"),
    ("Latency above 500 ms", "latency"),
    ("A session silent for 60 s", "heartbeat"),
)


def default_rules(hysteresis: float) -> list[dict[str, Any]]:
    """The built-in rules a tenant starts with, as ``dat_spd_alert_rule`` columns."""
    out = []
    for name, kind in DEFAULT_RULES:
        fire, resolve, threshold = rules.make_rule_expressions(kind, None, None, None, hysteresis)
        out.append(
            {
                "name": name,
                "scope": "tenant",
                "kind": kind,
                "threshold": threshold,
                "expression": fire,
                "resolve_expression": resolve,
                "severity": "warning",
                "for_seconds": 0,
                "channels": [{"type": "in_app"}],
                "enabled": True,
            }
        )
    return out


def seed(conn: psycopg.Connection, tenant: str, hysteresis: float) -> bool:
    """Give ``tenant`` its defaults unless it had them (inside its tenant transaction); True if now."""
    return defaults.seed_tenant(conn, tenant, default_rules(hysteresis), actor=ACTOR)
