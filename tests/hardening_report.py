"""The hardening table: what each fault, hostile-input and security test checks, and how it went.

A test joins the table with ``@pytest.mark.hardening(category, scenario, expected)`` (or a module's
``pytestmark``): ``category`` is ``"fault"``, ``"hostile"`` or ``"security"``, ``scenario`` what is
done to the server and ``expected`` what it must do, both in words an operator understands. This
plugin (loaded by ``tests/conftest.py``) records each marked test's outcome and duration and, when
the session ends, renders one row per test function (parametrised cases share the row) into
``test-artifacts/`` (ignored by git) only, so a test run never changes the work tree:

- ``test-artifacts/hardening.md`` after a **full run** of the marked set (``make test``, or
  ``pytest -m hardening``). A run is full when

  1. the whole ``tests`` directory was collected (no file or ``::`` node arguments, no
     ``--ignore``/``--ignore-glob``), without a collection error;
  2. no marked test was deselected (``-k``, ``-m`` other than one keeping them all, ``--deselect``,
     ``--lf``);
  3. every selected marked test finished (no ``-x`` stop, no interrupt).

  Failures count: a failing row is what the table is for.
- ``test-artifacts/hardening-partial.md`` after any other run with at least one marked test, so a
  partial run never replaces the last full table.

Under pytest-xdist (``make test`` runs ``-n``) each worker collects the whole run but runs only its
share: every worker hands the controller its part (the marked tests it collected and any it
deselected, in ``workeroutput``), the controller receives every test's report, and it alone merges
the parts and writes the table when the session ends.

The copy in ``docs/operations.md``, between ``<!-- hardening:begin -->`` and
``<!-- hardening:end -->``, changes only when asked. Run as a module, after a full run::

    python -m tests.hardening_report --check   # exit 1 (and the differing rows) when docs are out of date
    python -m tests.hardening_report --write   # put the full run's table into docs/operations.md

(``make docs-check`` and ``make hardening-docs``). The check compares rows (category, scenario,
expected, outcome, test) and the counts; dates and durations differ on every run and are ignored.
``--write`` replaces only the text between the two markers, read and written back at once (others
edit the rest of the file), atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MARKER = "hardening"
CATEGORIES = ("fault", "hostile", "security")
BEGIN, END = "<!-- hardening:begin -->", "<!-- hardening:end -->"
DOC = Path("docs") / "operations.md"
ARTIFACT = Path("test-artifacts") / "hardening.md"  # the last full run's table
PARTIAL_ARTIFACT = Path("test-artifacts") / "hardening-partial.md"  # the last partial run's
TITLE = "# Hardening tests\n\n"
PARTIAL = "**Partial run**"


@dataclass
class Row:
    """One test function of the table and the outcomes of its cases."""

    key: str  # node id without the parametrisation
    category: str
    scenario: str
    expected: str
    outcomes: dict[str, str] = field(default_factory=dict)  # case node id -> outcome
    seconds: float = 0.0
    skip_reasons: set[str] = field(default_factory=set)

    def outcome(self) -> str:
        """The row's outcome: failed if any case failed, passed if all ran passed, else the mix."""
        values = list(self.outcomes.values())
        n = len(values)
        if not n:
            return "not run"
        bad = sum(v in ("failed", "error") for v in values)
        passed = values.count("passed")
        xfailed = values.count("xfailed")
        skipped = n - bad - passed - xfailed
        if bad:
            return f"**FAILED** ({bad} of {n})" if n > 1 else "**FAILED**"
        if passed == n:
            return f"passed ({n} cases)" if n > 1 else "passed"
        if skipped == n:
            return "skipped: " + "; ".join(sorted(self.skip_reasons)) if self.skip_reasons else "skipped"
        others = ", ".join(f"{k} {label}" for k, label in ((skipped, "skipped"), (xfailed, "xfailed")) if k)
        return f"passed ({passed} of {n}, {others})" if passed else others


def _marker_args(item: pytest.Item) -> tuple[str, str, str]:
    """category, scenario, expected of an item's closest hardening marker; UsageError if malformed."""
    mark = item.get_closest_marker(MARKER)
    names = ("category", "scenario", "expected")
    values = dict(zip(names, mark.args, strict=False)) | {k: v for k, v in mark.kwargs.items() if k in names}
    problems = [n for n in names if not isinstance(values.get(n), str) or not values[n].strip()]
    if problems or values["category"] not in CATEGORIES or len(mark.args) + len(mark.kwargs) != 3:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.hardening(category, scenario, expected) needs three texts, "
            f"category one of {', '.join(CATEGORIES)}; got args={mark.args!r} kwargs={mark.kwargs!r}"
        )
    return values["category"], values["scenario"].strip(), values["expected"].strip()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _row_key(item: pytest.Item) -> str:
    return item.nodeid.split("[", 1)[0]


class HardeningReport:
    """Collects the marked tests' outcomes during a session and writes the table at its end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.root = config.rootpath
        self.rows: dict[str, Row] = {}
        self.case_row: dict[str, Row] = {}  # selected marked case node id -> its row
        self.deselected: list[str] = []
        self.collection_errors = 0
        self.written: Path | None = None
        self.is_worker = hasattr(config, "workerinput")
        # On an xdist controller: every test's report, replayed once the workers' parts say which
        # ones are marked (the controller collects nothing itself).
        self.reports: list[pytest.TestReport] = []

    # -- collection -----------------------------------------------------------------------------

    @pytest.hookimpl
    def pytest_deselected(self, items) -> None:
        self.deselected += [i.nodeid for i in items if i.get_closest_marker(MARKER)]

    @pytest.hookimpl
    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.collection_errors += 1

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            if item.get_closest_marker(MARKER) is None:
                continue
            key = _row_key(item)
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = Row(key, *_marker_args(item))
            self.case_row[item.nodeid] = row

    # -- outcomes -------------------------------------------------------------------------------

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report) -> None:
        if self._is_controller():
            self.reports.append(report)
            return
        self._record(report)

    def _is_controller(self) -> bool:
        """Whether this is an xdist controller (tests run in workers, reports come here)."""
        return not self.is_worker and self.config.pluginmanager.has_plugin("dsession")

    def _record(self, report) -> None:
        row = self.case_row.get(report.nodeid)
        if row is None:
            return
        row.seconds += report.duration
        now = row.outcomes.get(report.nodeid)
        if report.failed:
            # A failure in setup or teardown is an error of the test, as pytest reports it.
            row.outcomes[report.nodeid] = "failed" if report.when == "call" else "error"
        elif report.skipped and now not in ("failed", "error"):
            row.outcomes[report.nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            if isinstance(report.longrepr, tuple):
                row.skip_reasons.add(str(report.longrepr[2]).removeprefix("Skipped: "))
        elif report.when == "call" and report.passed and now is None:
            row.outcomes[report.nodeid] = "passed"

    # -- the end ----------------------------------------------------------------------------------

    def _not_full(self, session: pytest.Session) -> str | None:
        """Why this run is not a full run of the marked set, or None when it is."""
        tests_dir = (self.root / "tests").resolve()
        # Arguments are relative to where pytest was started; the testpaths default, to the rootdir.
        base = self.root if self.config.args_source == pytest.Config.ArgsSource.TESTPATHS else None
        base = base or self.config.invocation_params.dir
        covered = False
        for arg in self.config.args:
            path_text, sep, _ = arg.partition("::")
            path = (base / path_text).resolve()
            if sep or not path.is_dir():
                return f"only {arg} was collected"
            covered = covered or path == tests_dir or path in tests_dir.parents
        if not covered:
            return "the tests directory was not collected as a whole"
        if self.config.getoption("ignore", None) or self.config.getoption("ignore_glob", None):
            return "--ignore or --ignore-glob was given"
        if self.collection_errors:
            return f"{self.collection_errors} collection error(s)"
        if self.deselected:
            return f"{len(self.deselected)} marked test(s) deselected (-k, -m, --deselect or --lf)"
        unfinished = [n for n, row in self.case_row.items() if n not in row.outcomes]
        if unfinished or session.shouldstop or session.shouldfail:
            return f"the run stopped early ({len(unfinished)} marked test(s) not run)"
        return None

    def render(self, full: bool, reason: str | None) -> str:
        """The table (and a line about the run above it)."""
        rows = sorted(
            self.rows.values(), key=lambda r: CATEGORIES.index(r.category)
        )  # stable: collection order
        cases = sum(len(r.outcomes) for r in rows)
        failed = sum(1 for r in rows if r.outcome().startswith("**FAILED**"))
        head = (
            f"Generated by `pytest -m hardening` (tests/hardening_report.py) on "
            f"{time.strftime('%Y-%m-%d', time.gmtime())} UTC: {_count(len(rows), 'test')}, "
            f"{_count(cases, 'case')}, {failed} failing."
        )
        if not full:
            head += f" {PARTIAL}: {reason}."
        lines = [
            head,
            "",
            "| category | scenario | expected | outcome | time | test |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            cells = (r.category, r.scenario, r.expected, r.outcome(), f"{r.seconds:.1f} s", f"`{r.key}`")
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    # -- xdist: each worker's part, merged on the controller -------------------------------------

    def part(self) -> dict:
        """What a worker knows that the controller does not: the marked tests and deselections."""
        return {
            "rows": [[key, r.category, r.scenario, r.expected] for key, r in self.rows.items()],  # in order
            "cases": {nodeid: row.key for nodeid, row in self.case_row.items()},
            "deselected": self.deselected,
            "collection_errors": self.collection_errors,
        }

    def merge(self, part: dict) -> None:
        """Add one worker's part (they overlap: every worker collects the whole run)."""
        for key, category, scenario, expected in part["rows"]:
            self.rows.setdefault(key, Row(key, category, scenario, expected))
        for nodeid, key in part["cases"].items():
            self.case_row.setdefault(nodeid, self.rows[key])
        self.deselected = sorted({*self.deselected, *part["deselected"]})
        self.collection_errors = max(self.collection_errors, part["collection_errors"])

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        part = getattr(node, "workeroutput", {}).get("spidi_hardening")
        if part is not None:  # a crashed worker sends none; the others collected the same tests
            self.merge(part)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            # An xdist worker sees only its share: its part goes to the controller, which writes.
            self.config.workeroutput["spidi_hardening"] = self.part()
            return
        if self.reports:
            # The rows (in collection order) are the workers'; the outcomes, the controller's.
            for report in self.reports:
                self._record(report)
            self.reports = []
        if not any(row.outcomes for row in self.rows.values()):
            return  # no marked test ran: leave the last table where it is
        reason = self._not_full(session)
        table = self.render(reason is None, reason)
        self.written = ARTIFACT if reason is None else PARTIAL_ARTIFACT
        artifact = self.root / self.written
        artifact.parent.mkdir(exist_ok=True)
        _write_atomically(artifact, TITLE + table)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.written == ARTIFACT:
            terminalreporter.write_line(
                f"hardening table: {ARTIFACT} written (full run); `make docs-check` compares it with {DOC}"
            )
        elif self.written is not None:
            terminalreporter.write_line(f"hardening table: {PARTIAL_ARTIFACT} written (partial run)")


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _between_markers(text: str) -> str | None:
    """The text between the markers, or None when they are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN) : end].strip("\n") + "\n"


_DATE = re.compile(r" on \d{4}-\d{2}-\d{2} UTC")


def comparable(table: str) -> list[str]:
    """The lines of a rendered table that say something: the date and each row's time left out."""
    lines = []
    for line in table.strip().splitlines():
        if line.startswith("| ") and not line.startswith("| category |"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]  # a "\|" inside a cell is not a separator
            if len(cells) == 6:
                del cells[4]  # the time column
            line = " | ".join(cell.strip() for cell in cells)
        lines.append(_DATE.sub("", line))
    return lines


def check(doc: Path, artifact: Path) -> tuple[int, str]:
    """(exit status, message): 0 when ``doc``'s table says what the full run in ``artifact`` says."""
    try:
        table = artifact.read_text().removeprefix(TITLE)
    except OSError as exc:
        return 2, f"no full run to compare with ({exc}): run `make test` or `pytest -m hardening` first"
    if PARTIAL in table:
        return 2, f"{artifact} is from a partial run; it cannot say whether {doc} is up to date"
    documented = _between_markers(doc.read_text())
    if documented is None:
        return 2, f"{doc} has no {BEGIN} ... {END}"
    old, new = comparable(documented), comparable(table)
    if old == new:
        return 0, f"{doc}: the hardening table is up to date with {artifact}"
    gone = [line for line in old if line not in new]
    added = [line for line in new if line not in old]
    lines = [
        f"{doc}: the hardening table is out of date ({artifact} differs); `make hardening-docs` rewrites it"
    ]
    lines += [f"- {line}" for line in gone] + [f"+ {line}" for line in added]
    return 1, "\n".join(lines)


def _replace_between_markers(doc: Path, table: str) -> str:
    """Put ``table`` between the markers of ``doc`` (read now, so others' edits stay); what happened."""
    try:
        text = doc.read_text()
    except OSError as exc:
        return f"not updated: {exc}"
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return f"not updated: no {BEGIN} ... {END} in it"
    new = text[: start + len(BEGIN)] + "\n" + table + text[end:]
    if new == text:
        return "unchanged"
    _write_atomically(doc, new)
    return "updated"


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(HardeningReport(config), "spidi-hardening-report")


def main(argv: list[str] | None = None) -> int:
    """``--check``: is docs/operations.md's table the full run's? ``--write``: make it so."""
    parser = argparse.ArgumentParser(prog="python -m tests.hardening_report", description=main.__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--check", action="store_true", help="exit 1 when the documented table is out of date"
    )
    action.add_argument("--write", action="store_true", help="rewrite the documented table from the artifact")
    parser.add_argument("artifact", nargs="?", type=Path, default=ARTIFACT, help=f"default {ARTIFACT}")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"default {DOC}")
    args = parser.parse_args(argv)
    status, message = check(args.doc, args.artifact)
    if args.write and status != 2:
        table = args.artifact.read_text().removeprefix(TITLE)
        message = f"{args.doc}: hardening table {_replace_between_markers(args.doc, table)}"
        status = 0
    print(message, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
