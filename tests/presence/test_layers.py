"""Lower layers never import higher ones: each module imported alone in a fresh interpreter.

As multidict's test_circular_imports: an import cycle or a reach upwards fails here instead of
depending on import order.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABOVE_PRESENCE = (
    "spidi_server.node",
    "spidi_server.connection",
    "spidi_server.fanout",
    "spidi_server.transport",
    "spidi_server.api",
    "spidi_server.alerting",
    "spidi_server.ops",
)


def imported_alone(module: str) -> set[str]:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-I", "-W", "error", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    [
        "spidi_server.presence",
        "spidi_server.presence.model",
        "spidi_server.presence.sessions",
        "spidi_server.presence.subscriptions",
        "spidi_server.presence.crossnode",
        "spidi_server.presence.sampling",
        "spidi_server.protocol.stomp",
        "spidi_server.protocol.payloads",
    ],
)
def test_presence_and_protocol_import_nothing_above_them(module):
    loaded = imported_alone(module)
    assert not [m for m in loaded if m.startswith(ABOVE_PRESENCE)]


def test_connection_does_not_import_the_node_nor_presence():
    loaded = imported_alone("spidi_server.connection")
    assert not [
        m
        for m in loaded
        if m.startswith(("spidi_server.node", "spidi_server.presence", "spidi_server.transport"))
    ]
