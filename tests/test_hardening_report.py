"""The hardening table comes out the same, and whole, when the tests run in several xdist workers
(``make test`` runs ``-n``): the workers' parts are merged on the controller."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from . import hardening_report

pytest_plugins = ["pytester"]
pytest.importorskip("xdist", reason="pytest-xdist is a dev dependency (pyproject.toml)")

# Every kind of row: passed, failed, skipped, xfailed, parametrised cases, a failing setup, and an
# unmarked test around them.
SUITE = """
import pytest

pytestmark = pytest.mark.hardening("fault", "a scenario", "what is expected")


def test_passes():
    pass


def test_fails():
    assert False


@pytest.mark.parametrize("n", range(6))
def test_cases(n):
    pass


@pytest.mark.parametrize("n", range(4))
def test_one_case_fails(n):
    assert n != 2


def test_skipped():
    pytest.skip("no such thing here")


@pytest.mark.xfail(reason="known")
def test_xfailed():
    assert False


@pytest.fixture
def broken():
    raise RuntimeError("setup")


def test_setup_error(broken):
    pass


@pytest.mark.hardening("security", "another scenario", "other expectations")
def test_security():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    """A project laid out as Spidi's: tests/ with this plugin loaded by its conftest."""
    tests = pytester.mkpydir("tests")
    shutil.copy(Path(hardening_report.__file__), tests / "hardening_report.py")
    (tests / "conftest.py").write_text('pytest_plugins = ["tests.hardening_report"]\n')
    (tests / "test_marked.py").write_text(SUITE)
    (tests / "test_plain.py").write_text("def test_unmarked():\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    return pytester


def _table(project: pytest.Pytester, *args: str) -> str:
    result = project.runpytest_subprocess("-p", "no:cacheprovider", *args, "tests")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    table = (project.path / hardening_report.ARTIFACT).read_text()
    (project.path / hardening_report.ARTIFACT).unlink()
    return table


def test_table_from_several_workers_is_the_serial_runs(project):
    serial = _table(project, "-p", "no:xdist")
    parallel = _table(project, "-n", "3")
    assert hardening_report.PARTIAL not in parallel
    assert hardening_report.comparable(parallel) == hardening_report.comparable(serial)
    rows = {line.rsplit("|", 1)[-1].strip(" `"): line for line in hardening_report.comparable(parallel)}
    assert "passed (6 cases)" in rows["tests/test_marked.py::test_cases"]
    assert "**FAILED** (1 of 4)" in rows["tests/test_marked.py::test_one_case_fails"]
    assert "**FAILED**" in rows["tests/test_marked.py::test_setup_error"]
    assert "skipped: no such thing here" in rows["tests/test_marked.py::test_skipped"]
    assert "8 tests, 16 cases, 3 failing" in parallel


def test_deselection_in_workers_makes_a_partial_table(project):
    project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "-k", "not security", "tests")
    assert not (project.path / hardening_report.ARTIFACT).exists()
    partial = (project.path / hardening_report.PARTIAL_ARTIFACT).read_text()
    assert "1 marked test(s) deselected" in partial
