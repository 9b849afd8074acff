"""The WebSocket frame fuzz target (fuzzing/fuzz_ws.py) stays runnable: its properties hold on the
seed streams and on a short bounded hypothesis run. `make fuzz` runs it for real (minutes)."""

from __future__ import annotations

import pytest

from fuzzing import fuzz_ws
from spidi_core import HAVE_EXTENSIONS

pytestmark = pytest.mark.skipif(not HAVE_EXTENSIONS, reason="the Cython codec is not built (make build)")

# Cap, flags (cut count, close() after a chunk), cut bytes: whole, split in three, closed midway.
PREFIXES = [b"\x0d\x00", b"\x04\x02\x11\x45", b"\x07\x23\x02\x30\x99"]


@pytest.mark.parametrize("seed", fuzz_ws.SEEDS)
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.hardening(
    "hostile",
    "The WebSocket fuzz target's seed streams, whole and split, fed to the Cython and the pure-Python frame "
    "decoders and to the websockets library's parser",
    "All three agree on messages, pongs and close codes; nothing but the expected close is raised",
)
def test_seeds_satisfy_the_properties(seed, prefix):
    fuzz_ws.check(prefix + seed)


def test_the_websockets_model_reads_what_websockets_reads():
    # The model is the other side of the comparison: it must see messages, pongs, closes and faults.
    model = fuzz_ws.WebsocketsModel(1000)
    model.feed(
        fuzz_ws.mask_frame(0x01, b"he") + fuzz_ws.mask_frame(0x89, b"hi") + fuzz_ws.mask_frame(0x80, b"llo")
    )
    assert (model.messages, model.pongs, model.error) == ([b"hello"], [b"hi"], None)
    model.feed(fuzz_ws.mask_frame(0x88, (4000).to_bytes(2, "big") + b"bye"))
    assert model.peer_close == (4000, "bye")
    for frame, code in [
        (fuzz_ws.mask_frame(0x81, b"x", masked=False), 1002),
        (fuzz_ws.mask_frame(0x81, b"\xc3("), 1007),
        (fuzz_ws.mask_frame(0x82, b"x" * 1001), 1009),
        (fuzz_ws.mask_frame(0x88, (1005).to_bytes(2, "big")), 1002),
    ]:
        model = fuzz_ws.WebsocketsModel(1000)
        model.feed(frame)
        assert model.error == code, frame


@pytest.mark.hardening(
    "hostile",
    "2 s of random, scripted and mutated WebSocket frames (hypothesis), split at random points",
    "The Cython and pure-Python decoders and websockets agree; nothing but the expected close is raised",
)
def test_short_hypothesis_run():
    assert fuzz_ws.run_hypothesis(seconds=2) == 0
