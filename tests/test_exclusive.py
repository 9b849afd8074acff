"""``@pytest.mark.exclusive``: under pytest-xdist, a marked test runs while no other worker runs a
test, and the others still run side by side (tests/exclusive.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytest.importorskip("xdist", reason="pytest-xdist is a dev dependency (pyproject.toml)")

# Each test notes when it ran (its body takes a moment, so that workers overlap if they may).
SUITE = """
import json, os, time
from pathlib import Path

import pytest


def _run(name):
    start = time.monotonic()
    time.sleep(0.3)
    line = json.dumps([name, start, time.monotonic()])
    with open(os.environ["RUNS_FILE"], "a") as fh:
        fh.write(line + "\\n")


@pytest.mark.parametrize("n", range(6))
def test_plain_{tag}(n):
    _run(f"plain-{tag}-{{n}}")


@pytest.mark.exclusive("alone")
def test_alone_{tag}():
    _run("alone-{tag}")
"""


def test_an_exclusive_test_runs_alone_and_the_others_together(pytester: pytest.Pytester, monkeypatch):
    tests = pytester.mkpydir("tests")
    (tests / "exclusive.py").write_text(Path(__file__).with_name("exclusive.py").read_text())
    (tests / "conftest.py").write_text('pytest_plugins = ["tests.exclusive"]\n')
    for tag in ("a", "b", "c"):
        (tests / f"test_{tag}.py").write_text(
            SUITE.replace("{tag}", tag).replace("{{", "{").replace("}}", "}")
        )
    runs_file = pytester.path / "runs.jsonl"
    monkeypatch.setenv("RUNS_FILE", str(runs_file))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "3", "tests")
    result.assert_outcomes(passed=21)
    runs = [json.loads(line) for line in runs_file.read_text().splitlines()]
    alone = [r for r in runs if r[0].startswith("alone")]
    assert len(alone) == 3
    for name, start, end in alone:
        overlapping = [r[0] for r in runs if r[0] != name and r[1] < end and r[2] > start]
        assert not overlapping, f"{name} shared the machine with {overlapping}"
    # The plain ones did run side by side.
    plain = sorted(r for r in runs if r[0].startswith("plain"))
    assert any(a[1] < b[2] and b[1] < a[2] for a in plain for b in plain if a is not b)
