"""The codec fuzz target (fuzzing/fuzz_codec.py) stays runnable: its property holds on the seed
frames and on a short bounded hypothesis run. `make fuzz` runs it for real (minutes, atheris)."""

from __future__ import annotations

import pytest

from fuzzing import fuzz_codec
from spidi_core import HAVE_EXTENSIONS

pytestmark = pytest.mark.skipif(not HAVE_EXTENSIONS, reason="the Cython codec is not built (make build)")


@pytest.mark.parametrize("seed", fuzz_codec.SEEDS)
@pytest.mark.parametrize("limits", [b"\xff\xff\xff\x00", b"\x10\x02\x08\x03\x05\x09\x40"])
@pytest.mark.hardening(
    "hostile",
    "The fuzz target's seed frames, under tight and loose parser limits, fed to the Cython and the pure-Python STOMP parsers",
    "Both parsers agree and raise nothing but FrameError",
)
def test_seeds_satisfy_the_property(seed, limits):
    fuzz_codec.check(limits + seed)


@pytest.mark.hardening(
    "hostile",
    "2 s of random and mutated frames (hypothesis), split at random points",
    "Both parsers agree and raise nothing but FrameError",
)
def test_short_hypothesis_run():
    assert fuzz_codec.run_hypothesis(seconds=2) == 0
