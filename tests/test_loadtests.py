"""The Locust load test, end to end but small: ``python -m loadtests.run`` against a throw-away node.

Locust is never imported here: it monkey-patches the standard library for gevent, which must not
happen inside the pytest process. It runs in a subprocess, as ``make loadtest`` runs it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.run import Row, _duration, verdict

REPO = Path(__file__).resolve().parent.parent

_missing = [name for name in ("locust", "websocket") if importlib.util.find_spec(name) is None]
needs_locust = pytest.mark.skipif(
    bool(_missing),
    reason=f"load-test dependencies not installed ({', '.join(_missing)}): pip install -e '.[load]'",
)


@needs_locust
@pytest.mark.timeout(90)
def test_loadtest_run_small():
    """10 users for 4 s: exits 0, and Locust's summary shows heartbeats with no failures."""
    cmd = [
        sys.executable,
        "-m",
        "loadtests.run",
        "--users",
        "10",
        "--spawn-rate",
        "10",
        "--duration",
        "4s",
        "--heartbeat-interval",
        "0.5",
        "--rooms",
        "2",
        "--monitors",
        "1",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=75)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    beats = re.search(r"^STOMP\s+heartbeat\s+(\d+)\s+(\d+)\(", output, re.MULTILINE)
    assert beats, f"no heartbeat row in Locust's summary:\n{output}"
    assert int(beats.group(1)) > 0, output
    assert int(beats.group(2)) == 0, output
    for name in ("connect", "hello", "subscribe-metrics", "subscribe-roster"):
        assert re.search(rf"^STOMP\s+{name}\s+\d+\s+0\(", output, re.MULTILINE), (
            f"{name} missing or failed:\n{output}"
        )
    assert "Spidi load test PASSED" in output, output


def test_verdict_and_durations():
    """The pass/fail rule of loadtests.run, without running anything."""
    rows = [Row("heartbeat", 1000, 0, 1, 4), Row("hello", 100, 5, 3, 9)]
    ok, line = verdict(rows, 0.01)
    assert ok and "1100 requests, 5 failures" in line and "heartbeat: 1000 round trips" in line
    assert not verdict([Row("heartbeat", 100, 0, 1, 2), Row("connect", 10, 5, 1, 2)], 0.01)[0]
    assert not verdict([Row("connect", 10, 0, 1, 2)], 0.01)[0]  # no heartbeat measured
    assert not verdict([], 0.01)[0]
    assert [_duration(t) for t in ("20", "20s", "2m", "1h30m", "1.5")] == [20, 20, 120, 5400, 1.5]
