"""The Cython builds are the ones that run, unless they are turned off on purpose.

``spidi_core`` falls back to the pure-Python references when its extensions do not import, which
keeps a checkout without a compiler usable, and would also hide a broken build behind a slower
node (multidict's ``test_c_extension_preferred_by_default`` guards the same). The test suite is
run on the Cython build (``make test`` builds it first), so here a missing or broken extension
fails; ``SPIDI_NO_EXTENSIONS=1`` is the one way to the references, and it is checked too.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import spidi_core

ROOT = Path(__file__).resolve().parents[1]
TURNED_OFF = os.environ.get("SPIDI_NO_EXTENSIONS", "") in ("1", "true", "yes")

# The plain name -> (its Cython build, its pure-Python reference), as spidi_core exports them.
PAIRS = {
    "FrameParser": ("FrameParserC", "FrameParserPy"),
    "serialize_frame": ("serialize_frame_c", "serialize_frame_py"),
    "HeartbeatWheel": ("HeartbeatWheelC", "HeartbeatWheelPy"),
    "WsStream": ("WsStreamC", "WsStreamPy"),
    "encode_text": ("encode_text_c", "encode_text_py"),
    "encode_frames": ("encode_frames_c", "encode_frames_py"),
    "encode_close": ("encode_close_c", "encode_close_py"),
}

_REPORT = """
import sys
sys.path.insert(0, {root!r})
import spidi_core
pairs = {pairs!r}
print(spidi_core.USE_EXTENSIONS)
for plain, (c, py) in pairs.items():
    chosen = getattr(spidi_core, plain)
    print(plain, "c" if chosen is getattr(spidi_core, c) else "py" if chosen is getattr(spidi_core, py) else "?")
"""


def _chosen_in_fresh_interpreter(no_extensions: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "SPIDI_NO_EXTENSIONS"}
    if no_extensions is not None:
        env["SPIDI_NO_EXTENSIONS"] = no_extensions
    code = _REPORT.format(root=str(ROOT), pairs=PAIRS)
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[:-1]


@pytest.mark.parametrize("name", ["spidi_core._frames_c", "spidi_core._wheel_c", "spidi_core._ws_c"])
def test_the_extension_is_built_and_imports(name):
    # Imported directly: a build that does not load says why here, instead of falling back.
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().is_relative_to(ROOT / "spidi_core")


@pytest.mark.skipif(TURNED_OFF, reason="SPIDI_NO_EXTENSIONS is set: the references run on purpose")
def test_c_extension_preferred_by_default():
    assert spidi_core.HAVE_EXTENSIONS and spidi_core.USE_EXTENSIONS
    for plain, (c, _) in PAIRS.items():
        assert getattr(spidi_core, plain) is getattr(spidi_core, c), f"spidi_core.{plain} is not {c}"
    assert spidi_core.FrameParser is spidi_core.FrameParserC
    assert spidi_core.HeartbeatWheel is spidi_core.HeartbeatWheelC


@pytest.mark.skipif(not TURNED_OFF, reason="only under SPIDI_NO_EXTENSIONS=1 (see the subprocess test)")
def test_references_when_turned_off_in_this_process():
    assert spidi_core.HAVE_EXTENSIONS and not spidi_core.USE_EXTENSIONS
    for plain, (_, py) in PAIRS.items():
        assert getattr(spidi_core, plain) is getattr(spidi_core, py), f"spidi_core.{plain} is not {py}"


def test_the_switch_in_a_fresh_interpreter():
    cython = ["True"] + [f"{plain} c" for plain in PAIRS]
    pure = ["False"] + [f"{plain} py" for plain in PAIRS]
    assert _chosen_in_fresh_interpreter(None) == cython
    assert _chosen_in_fresh_interpreter("0") == cython
    for value in ("1", "true", "yes"):
        assert _chosen_in_fresh_interpreter(value) == pure
