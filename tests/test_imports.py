"""The package's structure, checked: every module imports alone, and lower layers never import the node.

- Each module of ``spidi_server`` and ``spidi_core`` is imported by itself in a fresh interpreter
  (``python -I -W error``, this tree first on ``sys.path``), as multidict's
  ``test_circular_imports.py`` does: an import cycle, or a module that works only because another
  was imported first, fails here instead of depending on import order; so does a warning raised
  at import time.
- No module below ``node.py`` imports ``spidi_server.node``: each states what it needs from its
  host as a small ``typing.Protocol`` (the house style). Imports are read with ``ast``,
  those under ``TYPE_CHECKING`` included, so a new one fails whatever it is for.
- The modules' import-time graph has no cycle. Importing alone cannot see every cycle: a package's
  ``__init__`` runs first and may import the two modules in the one order that works (as
  ``api/__init__.py`` once did for ``handlers`` and ``alerts``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spidi_server", "spidi_core")

# Modules that sit above the node: they build one and run it.
ABOVE_NODE = {"spidi_server.node", "spidi_server.cli", "spidi_server.supervisor"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).parts)
    parts[-1] = parts[-1].split(".", 1)[0]  # foo.py, _frames_c.cpython-311-x86_64-linux-gnu.so
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _modules() -> list[str]:
    """Every importable module of the packages: Python sources and built extensions."""
    found = {_module_name(p) for p in _source_files()}
    found |= {_module_name(p) for package in PACKAGES for p in (ROOT / package).rglob("*.so")}
    return sorted(found)


MODULES = _modules()

_IMPORT_ALONE = """
import importlib, pathlib, sys
sys.path.insert(0, {root!r})
module = importlib.import_module({name!r})
where = pathlib.Path(module.__file__).resolve()
assert where.is_relative_to({root!r}), f"imported from {{where}}, not this tree"
"""


def _import_alone(name: str) -> tuple[int, str]:
    code = _IMPORT_ALONE.format(root=str(ROOT), name=name)
    # -I: no PYTHONPATH, no user site, no current directory; the tree is put first explicitly. The
    # environment is kept otherwise (SPIDI_NO_EXTENSIONS and the like apply).
    done = subprocess.run(
        [sys.executable, "-I", "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stderr


@cache
def _imported_alone() -> dict[str, tuple[int, str]]:
    """Every module imported alone, a few interpreters at a time (about 60 imports of ~1 s each)."""
    with ThreadPoolExecutor(max_workers=max(2, min(8, (os.cpu_count() or 2) * 2))) as pool:
        return dict(zip(MODULES, pool.map(_import_alone, MODULES), strict=True))


def test_the_packages_are_all_found():
    assert {"spidi_server.node", "spidi_server.api.rooms", "spidi_core.frames_py"} <= set(MODULES)
    assert len(MODULES) > 50


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(name):
    status, stderr = _imported_alone()[name]
    assert status == 0, f"python -I -W error -c 'import {name}' failed:\n{stderr}"


def _imports_of(path: Path) -> set[str]:
    """The absolute names of the modules (and package members) ``path`` imports, wherever it does."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # ``from . import node`` imports the submodule under its package's name.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _import_time_edges(path: Path) -> set[str]:
    """The modules of the packages that importing ``path`` imports first: module-level imports only
    (not inside functions, not under ``TYPE_CHECKING``), its own parent packages left out."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = set(MODULES)
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for stmt in statements:
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                visit(stmt.orelse)
            elif isinstance(stmt, ast.If | ast.Try | ast.With):
                visit(
                    getattr(stmt, "body", []) + getattr(stmt, "orelse", []) + getattr(stmt, "finalbody", [])
                )
                for handler in getattr(stmt, "handlers", []):
                    visit(handler.body)
            elif isinstance(stmt, ast.Import):
                found.update(alias.name for alias in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                module = stmt.module or ""
                if stmt.level:
                    base = package.split(".")
                    module = ".".join(base[: len(base) - (stmt.level - 1)] + ([module] if module else []))
                members = {f"{module}.{alias.name}" for alias in stmt.names} & modules
                found.update(members or {module})

    visit(ast.parse(path.read_text(), str(path)).body)
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def test_no_import_cycle_at_import_time():
    graph = {_module_name(path): _import_time_edges(path) for path in _source_files()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for other in sorted(graph.get(name, ())):
            if state.get(other) == 1:
                cycles.append(" -> ".join([*path[path.index(other) :], other]))
            elif other not in state:
                visit(other)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles (give the shared part a module of its own):\n" + "\n".join(cycles)


def _node_importers() -> dict[str, set[str]]:
    out = {}
    for path in _source_files():
        name = _module_name(path)
        if name in ABOVE_NODE:
            continue
        upward = {m for m in _imports_of(path) if m in ABOVE_NODE or m.startswith("spidi_server.node.")}
        if upward:
            out[name] = upward
    return out


def test_no_module_below_the_node_imports_it():
    offenders = {name: sorted(upward) for name, upward in _node_importers().items()}
    assert not offenders, (
        "these modules import what sits above them; state what they need from their host as a "
        f"typing.Protocol in the module instead: {offenders}"
    )


def test_the_import_reader_sees_every_form(tmp_path, monkeypatch):
    # Relative, absolute, package-member and TYPE_CHECKING-only imports of the node all count.
    package = tmp_path / "spidi_server" / "sub"
    package.mkdir(parents=True)
    sample = package / "mod.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .. import node\n"
        "import spidi_server.cli\n"
        "if TYPE_CHECKING:\n"
        "    from ..supervisor import run_supervisor\n"
        "from .sibling import thing\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _imports_of(sample)
    assert found >= ABOVE_NODE
    assert "spidi_server.sub.sibling" in found


def test_the_node_is_the_host_every_module_below_it_asks_for(tmp_path):
    # The Protocols are checked structurally (runtime_checkable: every member present), so a
    # member renamed on one side fails here rather than in a running node.
    from spidi_server.api.service import ApiHost
    from spidi_server.dashboard import DashboardHost
    from spidi_server.node import Node
    from spidi_server.ops import OpsHost
    from spidi_server.settings import Settings
    from spidi_server.transport.websocket import TransportHost

    node = Node(Settings(dev=True, data_dir=str(tmp_path), port=0, ops_port=0).validate())
    for host in (TransportHost, ApiHost, DashboardHost, OpsHost):
        assert isinstance(node, host), f"Node no longer provides what {host.__qualname__} asks for"
