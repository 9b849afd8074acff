"""``@pytest.mark.exclusive(reason)``: a test that must not share the machine with other tests.

``make test`` runs the suite in several pytest-xdist workers on a 2-core machine. A test whose
outcome depends on how quickly the node gets the CPU (a race between a burst of events and an
evaluator's tick, say) fails when the other workers load the cores; it is marked, with the reason,
and runs while no other worker runs a test.

Two ``flock`` files in the run's temporary directory, shared by the workers: every test holds
``room`` shared while it runs (setup, call and teardown), an exclusive test holds it exclusively.
The ``turnstile`` gives a waiting exclusive test priority: it holds the turnstile while it waits
and runs, and a test takes its shared hold only by passing the turnstile, so no new test starts
meanwhile, and the exclusive one waits only for the tests already running. Without xdist, or in a
serial run, this does nothing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

MARKER = "exclusive"


class ExclusiveLock:
    """The run's two lock files, as seen from one xdist worker."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.turnstile = os.open(directory / "spidi-exclusive.turnstile", os.O_RDWR | os.O_CREAT, 0o600)
        self.room = os.open(directory / "spidi-exclusive.room", os.O_RDWR | os.O_CREAT, 0o600)

    def enter(self, exclusive: bool) -> None:
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        if exclusive:
            fcntl.flock(self.room, fcntl.LOCK_EX)  # the turnstile stays held: nobody new starts
        else:
            try:
                fcntl.flock(self.room, fcntl.LOCK_SH)
            finally:
                fcntl.flock(self.turnstile, fcntl.LOCK_UN)

    def leave(self, exclusive: bool) -> None:
        fcntl.flock(self.room, fcntl.LOCK_UN)
        if exclusive:
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)


class ExclusivePlugin:
    def __init__(self, lock: ExclusiveLock):
        self.lock = lock

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item):
        exclusive = item.get_closest_marker(MARKER) is not None
        self.lock.enter(exclusive)
        try:
            yield
        finally:
            self.lock.leave(exclusive)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(reason): runs while no other xdist worker runs a test (tests/exclusive.py); "
        "for a test whose outcome depends on having the CPU",
    )
    if not hasattr(config, "workerinput"):
        return  # not an xdist worker: nothing runs beside it
    # xdist gives each worker the temporary directory <the run's>/popen-gw<N>: the parent is shared.
    shared = Path(config.option.basetemp).parent
    config.pluginmanager.register(ExclusivePlugin(ExclusiveLock(shared)), "spidi-exclusive")
