"""The dashboard's vendored modules (spidi_server/dashboard/static/vendor/, see its README.md) are
exact copies of their sources, so that they cannot drift silently: the JavaScript SDK of this
repository (clients/js/src) and @stomp/stompjs at the version clients/js pins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spidi_server.dashboard import STATIC_DIR

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "clients" / "js"
VENDOR = STATIC_DIR / "vendor"
STOMPJS = "@stomp/stompjs"


def _files(root: Path, pattern: str = "*.js") -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob(pattern))}


def test_the_vendored_sdk_is_clients_js_src():
    vendored, source = _files(VENDOR / "spidi-client"), _files(JS / "src")
    assert source, "clients/js/src has no modules"
    assert sorted(vendored) == sorted(source), "vendor/spidi-client/ lists other files than clients/js/src/"
    stale = [name for name in source if vendored[name] != source[name]]
    assert not stale, f"vendor/spidi-client/ differs from clients/js/src/ in {stale}: copy them again"
    assert (VENDOR / "spidi-client" / "LICENSE").is_file()


def test_the_vendored_stompjs_is_the_pinned_version():
    pinned = json.loads((JS / "package.json").read_text())["dependencies"][STOMPJS]
    locked = json.loads((JS / "package-lock.json").read_text())["packages"][f"node_modules/{STOMPJS}"]
    vendored = json.loads((VENDOR / "stompjs" / "package.json").read_text())
    assert (vendored["name"], vendored["version"]) == (STOMPJS, pinned) == (STOMPJS, locked["version"])
    assert vendored["license"] == "Apache-2.0"
    assert "Apache License" in (VENDOR / "stompjs" / "LICENSE").read_text()


def test_the_vendored_stompjs_files_are_the_installed_packages():
    """Byte for byte against the package npm installed from the lockfile (`make test-js` or `npm ci`
    in clients/js installs it)."""
    installed = JS / "node_modules" / STOMPJS
    if not (installed / "package.json").is_file():
        pytest.skip("clients/js/node_modules is not installed (cd clients/js && npm ci)")
    assert (
        json.loads((installed / "package.json").read_text())["version"]
        == (json.loads((VENDOR / "stompjs" / "package.json").read_text())["version"])
    ), "node_modules holds another stompjs than the vendored one: npm ci in clients/js"
    vendored, source = _files(VENDOR / "stompjs"), _files(installed / "esm6")
    assert sorted(vendored) == sorted(source)
    stale = [name for name in source if vendored[name] != source[name]]
    assert not stale, f"vendor/stompjs/ differs from {STOMPJS}'s esm6/ in {stale}"
    for name in ("LICENSE", "package.json"):
        assert (VENDOR / "stompjs" / name).read_bytes() == (installed / name).read_bytes(), name
