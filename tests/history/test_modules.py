"""Every history module imports alone in a fresh interpreter: an import cycle between the split
modules (sql/, staging, stream, batch, the writer loop and process) fails here, not by import order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import spidi_server.history

HISTORY = Path(spidi_server.history.__file__).parent
MODULES = sorted(
    "spidi_server." + ".".join(path.relative_to(HISTORY.parent).with_suffix("").parts)
    for path in HISTORY.rglob("*.py")
    if path.name != "__init__.py"
)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    root = str(HISTORY.parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {module}"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
