"""The operations guide documents every metric the node exports."""

from __future__ import annotations

from pathlib import Path

from spidi_server.metrics import NodeMetrics

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def test_every_metric_is_in_the_metrics_table():
    text = GUIDE.read_text()
    table = text[text.index("## Metrics") :]
    table = table[: table.index("\n## ")]
    missing = []
    for family in NodeMetrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        if f"`{name}`" not in table and f"`{name}{{" not in table:
            missing.append(name)
    assert not missing, f"add these to the Metrics table of docs/operations.md: {missing}"
