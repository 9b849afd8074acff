"""Heartbeat timing wheel: every test runs against the pure reference and the Cython build."""

from __future__ import annotations

import math
import random
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spidi_core.wheel_py import HeartbeatWheelPy

try:
    from spidi_core._wheel_c import HeartbeatWheelC
except ImportError:  # extension not built: the C half of each test is skipped
    HeartbeatWheelC = None

NO_C = "spidi_core._wheel_c is not built (run `make build`)"

IMPLS = [
    pytest.param(HeartbeatWheelPy, id="py"),
    pytest.param(HeartbeatWheelC, id="c", marks=pytest.mark.skipif(HeartbeatWheelC is None, reason=NO_C)),
]


@pytest.fixture(params=IMPLS, scope="module")
def Wheel(request):
    """The wheel class under test (module-scoped so hypothesis tests may use it)."""
    return request.param


# -- basics ----------------------------------------------------------------------------------------


def test_add_len_contains_deadline(Wheel):
    w = Wheel()
    assert len(w) == 0
    assert "a" not in w
    assert w.deadline("a") is None
    w.add("a", 1.5)
    w.add(("tuple", 1), 2)
    assert len(w) == 2
    assert "a" in w and ("tuple", 1) in w
    assert w.deadline("a") == 1.5
    d = w.deadline(("tuple", 1))
    assert d == 2.0 and isinstance(d, float)


def test_defaults_and_properties(Wheel):
    w = Wheel()
    assert (w.tick, w.slots, w.now) == (0.1, 4096, 0.0)
    w = Wheel(tick=0.5, slots=16, now=100.0)
    assert (w.tick, w.slots, w.now) == (0.5, 16, 100.0)
    w.advance(101.25)
    assert w.now == 101.25
    w.advance(50.0)  # going back does not move the wheel's time
    assert w.now == 101.25
    assert "keys=0" in repr(w)


def test_remove(Wheel):
    w = Wheel()
    w.add("a", 1.0)
    assert w.remove("a") is True
    assert w.remove("a") is False
    assert w.remove("never") is False
    assert len(w) == 0 and "a" not in w
    assert w.advance(10.0) == []


def test_remove_after_lazy_touch(Wheel):
    w = Wheel(tick=0.1, slots=8)
    w.add("a", 0.2)
    w.touch("a", 50.0)  # lazily still in the bucket of 0.2
    assert w.remove("a")
    assert w.advance(0.2) == []
    assert w.advance(100.0) == []


def test_expires_at_deadline_inclusive(Wheel):
    w = Wheel(tick=0.1)
    w.add("a", 1.0)
    assert w.advance(0.99) == []
    assert w.advance(1.0) == ["a"]  # deadline <= now
    assert "a" not in w and len(w) == 0
    assert w.advance(2.0) == []  # exactly once


def test_expiry_within_the_current_tick(Wheel):
    w = Wheel(tick=1.0)
    w.add("early", 0.2)
    w.add("late", 0.8)
    assert w.advance(0.5) == ["early"]
    assert w.advance(0.7) == []
    assert w.advance(0.8) == ["late"]


def test_past_deadline_at_add_expires_on_next_advance(Wheel):
    w = Wheel(tick=0.1, now=10.0)
    w.add("old", 3.0)
    w.add("now", 10.0)
    w.add("neg", -1e12)
    assert len(w) == 3
    assert sorted(w.advance(10.0)) == ["neg", "now", "old"]  # same time: still expires


def test_advance_backwards_returns_nothing(Wheel):
    w = Wheel(tick=0.1, now=5.0)
    w.add("a", 4.0)
    w.add("b", 6.0)
    assert w.advance(4.5) == []
    assert len(w) == 2
    assert w.advance(5.0) == ["a"]
    assert w.advance(1.0) == []
    assert w.advance(6.0) == ["b"]


def test_touch_absent_raises_keyerror(Wheel):
    w = Wheel()
    with pytest.raises(KeyError):
        w.touch("ghost", 1.0)
    w.add("a", 1.0)
    w.advance(1.0)
    with pytest.raises(KeyError):
        w.touch("a", 2.0)


def test_touch_later_postpones_expiry(Wheel):
    w = Wheel(tick=0.1, slots=64)
    w.add("a", 1.0)
    w.touch("a", 3.0)
    assert w.advance(1.0) == []
    assert w.deadline("a") == 3.0
    w.touch("a", 20.0)  # beyond a rotation (6.4 s)
    for step in range(1, 198):  # uneven steps, up to 19.84
        assert w.advance(3.0 + step * 0.0855) == []
    assert w.advance(19.999) == []
    assert w.advance(20.0) == ["a"]


def test_touch_earlier_expires_on_time(Wheel):
    w = Wheel(tick=0.1, slots=4096)
    w.add("a", 10.0)
    w.advance(1.0)
    w.touch("a", 2.0)
    assert w.advance(1.95) == []
    assert w.advance(2.0) == ["a"]


def test_touch_earlier_into_the_past_expires_next_advance(Wheel):
    w = Wheel(tick=0.1, slots=16)
    w.add("a", 100.0)
    w.advance(5.0)
    w.touch("a", 1.0)
    assert w.advance(5.0) == ["a"]


def test_touch_earlier_after_lazy_later(Wheel):
    # later (lazy: stays in the 0.5 bucket), then earlier than the original bucket
    w = Wheel(tick=0.1, slots=8)
    w.add("a", 0.5)
    w.touch("a", 30.0)
    w.touch("a", 0.25)
    assert w.advance(0.2) == []
    assert w.advance(0.25) == ["a"]


def test_touch_earlier_across_rotations(Wheel):
    w = Wheel(tick=0.1, slots=8)  # rotation 0.8 s
    w.add("a", 5.0)
    w.touch("a", 0.3)
    assert w.advance(0.25) == []
    assert w.advance(0.3) == ["a"]
    w.add("b", 50.0)
    w.advance(10.0)
    w.touch("b", 10.75)
    assert w.advance(10.7) == []
    assert w.advance(10.75) == ["b"]


def test_readd_acts_like_touch(Wheel):
    w = Wheel(tick=0.1)
    w.add("a", 1.0)
    w.add("a", 5.0)
    assert len(w) == 1
    assert w.advance(1.0) == []
    w.add("a", 2.0)  # earlier again
    assert w.deadline("a") == 2.0
    assert w.advance(2.0) == ["a"]


def test_equal_keys_are_one_key(Wheel):
    w = Wheel()
    w.add(1, 1.0)
    w.add(1.0, 2.0)  # 1 == 1.0 with the same hash, as in a dict
    assert len(w) == 1
    assert w.advance(1.5) == []
    assert w.advance(2.0) == [1]


def test_long_deadlines_span_many_rotations(Wheel):
    w = Wheel(tick=0.1, slots=8)  # rotation 0.8 s
    deadlines = {f"s{i}": 0.35 + i * 0.77 for i in range(40)}  # up to ~38 rotations out
    for key, d in deadlines.items():
        w.add(key, d)
    now, seen = 0.0, []
    while now < 40.0:
        now = round(now + 0.05, 10)
        got = w.advance(now)
        for key in got:
            assert deadlines[key] <= now < deadlines[key] + 0.05 + 1e-9
        seen += got
    assert sorted(seen) == sorted(deadlines)


def test_far_future_advance_is_bounded_and_correct(Wheel):
    w = Wheel(tick=1e-6, slots=4096)  # one rotation is ~4 ms; the jump below is ~1e15 ticks
    for i in range(1000):
        w.add(i, i * 1e3)
    w.add("later", 2e9)
    t0 = time.perf_counter()
    got = w.advance(1e9)
    assert time.perf_counter() - t0 < 2.0
    assert sorted(got) == list(range(1000))
    assert list(w.advance(2e9)) == ["later"]


def test_advance_to_infinity_expires_everything(Wheel):
    w = Wheel(tick=0.1, slots=32)
    w.add("a", 5.0)
    w.add("b", 1e300)
    w.add("c", math.inf)
    assert w.advance(1e299) == ["a"]
    assert sorted(w.advance(math.inf)) == ["b", "c"]
    w.add("d", 1.0)  # in the past now
    assert w.advance(math.inf) == ["d"]


def test_huge_deadline_not_expired_early(Wheel):
    w = Wheel(tick=0.1, slots=16)
    w.add("a", 1e300)
    assert w.advance(1e299) == []
    assert w.advance(1e300) == ["a"]


def test_single_slot_wheel(Wheel):
    w = Wheel(tick=0.1, slots=1)
    w.add("a", 0.3)
    w.add("b", 0.05)
    assert w.advance(0.1) == ["b"]
    assert w.advance(0.29) == []
    assert w.advance(0.3) == ["a"]


def test_validation(Wheel):
    with pytest.raises(ValueError):
        Wheel(tick=0.0)
    with pytest.raises(ValueError):
        Wheel(tick=-1.0)
    with pytest.raises(ValueError):
        Wheel(tick=math.inf)
    with pytest.raises(ValueError):
        Wheel(slots=0)
    with pytest.raises(ValueError):
        Wheel(now=math.nan)
    w = Wheel()
    with pytest.raises(ValueError):
        w.add("a", math.nan)
    w.add("a", 1.0)
    with pytest.raises(ValueError):
        w.touch("a", math.nan)
    assert w.deadline("a") == 1.0
    with pytest.raises(ValueError):
        w.advance(math.nan)
    with pytest.raises(TypeError):
        w.add(["unhashable"], 1.0)
    with pytest.raises(TypeError):
        w.touch(["unhashable"], 1.0)


def test_holds_100k_sessions(Wheel):
    n = 100_000
    rng = random.Random(7)
    w = Wheel(tick=0.1, slots=4096)
    deadlines = {f"session-{i}": rng.uniform(0.0, 30.0) for i in range(n)}
    for key, d in deadlines.items():
        w.add(key, d)
    assert len(w) == n
    for key, d in deadlines.items():  # one heartbeat each: all move 30 s later
        w.touch(key, d + 30.0)
    expired = []
    for second in range(1, 31):
        expired += w.advance(float(second))
    assert expired == []
    assert len(w) == n
    expired = w.advance(45.0)
    assert len(expired) == len(set(expired))
    assert set(expired) == {k for k, d in deadlines.items() if d + 30.0 <= 45.0}
    expired += w.advance(60.0)
    assert len(w) == 0
    assert Counter(expired) == Counter(list(deadlines))


# -- property tests against a trivial model ----------------------------------------------------------

KEYS = st.sampled_from(["s0", "s1", "s2", 0, ("t", 1)])
# near-boundary offsets hit exact tick edges; plain floats cover the rest, up to many rotations
OFFSETS = st.one_of(
    st.integers(-20, 200).map(lambda i: i * 0.05),
    st.floats(-5.0, 100.0, allow_nan=False),
    st.sampled_from([0.0, 1e6, math.inf]),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), KEYS, OFFSETS),
        st.tuples(st.just("touch"), KEYS, OFFSETS),
        st.tuples(st.just("remove"), KEYS),
        st.tuples(st.just("advance"), st.one_of(OFFSETS, st.floats(0.0, 2.0))),
        st.tuples(st.just("advance_to"), KEYS),  # exactly onto a key's deadline
    ),
    max_size=60,
)
# negative times give negative tick numbers; late ones put the wheel's tick far past slot indexes
STARTS = st.sampled_from([0.0, -50.0, 1000.3, 86400.0])
# rotations from 3 ms (every deadline is many rotations out) to 4096 s (none is)
GEOMETRY = st.tuples(st.sampled_from([0.003, 0.1, 0.25, 1.0]), st.sampled_from([1, 2, 7, 64, 4096]))


class Model:
    """The spec in its simplest form: a dict of deadlines."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.deadlines: dict = {}

    def add(self, key, deadline):
        self.deadlines[key] = deadline

    def touch(self, key, deadline):
        if key not in self.deadlines:
            raise KeyError(key)
        self.deadlines[key] = deadline

    def remove(self, key):
        return self.deadlines.pop(key, None) is not None

    def advance(self, now):
        if now < self.now:
            return []
        self.now = now
        due = [k for k, d in self.deadlines.items() if d <= now]
        for k in due:
            del self.deadlines[k]
        return due


def run_ops(wheel, start, ops):
    """Apply ``ops`` to ``wheel`` and to a fresh Model, checking each step; return the results."""
    model = Model(start)
    results = []
    for op in ops:
        kind = op[0]
        if kind in ("add", "touch"):
            deadline = model.now + op[2]
            outcome = []
            for target in (model, wheel):
                try:
                    getattr(target, kind)(op[1], deadline)
                    outcome.append(None)
                except KeyError:
                    outcome.append(KeyError)
            assert outcome[0] == outcome[1]
            results.append(outcome[1])
        elif kind == "remove":
            got = wheel.remove(op[1])
            assert got == model.remove(op[1])
            results.append(got)
        else:
            now = model.now + op[1] if kind == "advance" else model.deadlines.get(op[1], model.now)
            got = Counter(wheel.advance(now))
            assert got == Counter(model.advance(now)), now
            results.append(got)
        assert len(wheel) == len(model.deadlines)
        for key, d in model.deadlines.items():
            assert key in wheel
            assert wheel.deadline(key) == d
    return results


@settings(max_examples=250, deadline=None)
@given(geometry=GEOMETRY, start=STARTS, ops=OPS)
def test_matches_model(Wheel, geometry, start, ops):
    """Random add/touch/remove/advance sequences behave exactly like a dict of deadlines."""
    tick, slots = geometry
    w = Wheel(tick=tick, slots=slots, now=start)
    run_ops(w, start, ops)
    # and finally everything left expires exactly once
    rest = w.advance(math.inf)
    assert len(rest) == len(set(rest))
    assert len(w) == 0


STEPS = st.one_of(
    st.integers(0, 60).map(lambda i: i * 0.05), st.floats(0.0, 3.0), st.sampled_from([0.0, 1e4])
)
MOVES = st.lists(
    st.one_of(
        st.tuples(st.just("move"), st.booleans(), OFFSETS),  # by add (True) or touch (False)
        st.tuples(st.just("step"), STEPS),
    ),
    max_size=40,
)


@settings(max_examples=250, deadline=None)
@given(geometry=GEOMETRY, start=STARTS, first=OFFSETS, events=MOVES)
def test_moved_deadline_expires_exactly_when_due(Wheel, geometry, start, first, events):
    """One key's deadline moved back and forth, among neighbours: it expires exactly when due."""
    tick, slots = geometry
    w = Wheel(tick=tick, slots=slots, now=start)
    for i in range(40):  # neighbours sharing buckets with it
        w.add(i, start + i * 0.37)
    now = start
    due = now + first
    w.add("k", due)
    for event in events:
        if event[0] == "move":
            due = now + event[2]
            if event[1] or "k" not in w:
                w.add("k", due)
            else:
                w.touch("k", due)
        else:
            present = "k" in w
            now += event[1]
            assert ("k" in w.advance(now)) == (present and due <= now)
            assert ("k" in w) == (present and due > now)
            assert w.deadline("k") == (due if "k" in w else None)


@pytest.mark.skipif(HeartbeatWheelC is None, reason=NO_C)
@settings(max_examples=150, deadline=None)
@given(geometry=GEOMETRY, start=STARTS, ops=OPS)
def test_c_and_py_agree(geometry, start, ops):
    """The same operations give the same results on both builds (and match the model)."""
    tick, slots = geometry
    py = HeartbeatWheelPy(tick=tick, slots=slots, now=start)
    c = HeartbeatWheelC(tick=tick, slots=slots, now=start)
    assert run_ops(py, start, ops) == run_ops(c, start, ops)
    assert Counter(py.advance(math.inf)) == Counter(c.advance(math.inf))
