"""Differential tests of the heartbeat lane: generated and mutated heartbeats against the full
path (the lane never takes what the full path would refuse or read otherwise), and the Cython
build against the pure reference on the same messages and the same bookkeeping."""

from __future__ import annotations

import json
import math
import random

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spidi_core.lane_py import HeartbeatLanePy, pack_beats
from spidi_server.stores.events import LATENCY_BUCKETS_MS

from .test_lane import (
    HYPOTHESIS,
    OTHER_SID,
    SID,
    full_path,
    loadgen_frame,
    new_lane,
    receipt_of,
    stomp,
    stompjs_frame,
)

try:
    from spidi_core._lane_c import HeartbeatLaneC
except ImportError:  # extension not built
    HeartbeatLaneC = None

# -- differential: lane vs the full path, C vs Py -----------------------------------------------

RECEIPTS = st.text("abcXYZ019._-", min_size=1, max_size=64)
INT_LATENCY = st.integers(0, 3_599_999)
FLOAT_LATENCY = st.floats(0, 3_600_000, allow_nan=False).filter(lambda x: x < 3_600_000)


@st.composite
def heartbeat_messages(draw):
    """Ordinary heartbeats with variations: header order, which headers, spaces, key order, numbers."""
    latency = draw(st.one_of(INT_LATENCY, FLOAT_LATENCY))
    text = draw(
        st.sampled_from(
            [
                repr(latency),
                json.dumps(latency),
                f"{latency:.3f}" if isinstance(latency, float) else str(latency),
            ]
        )
    )
    sid = draw(st.sampled_from([SID, SID, SID, OTHER_SID, "nobody", SID[:-1]]))
    sp = lambda: " " * draw(st.integers(0, 2))  # noqa: E731
    pairs = [f'"sessionId"{sp()}:{sp()}"{sid}"', f'"latencyMs"{sp()}:{sp()}{text}']
    if draw(st.booleans()):
        pairs.reverse()
    body = f"{sp()}{{{sp()}{pairs[0]}{sp()},{sp()}{pairs[1]}{sp()}}}{sp()}".encode()
    headers = [("destination", "/app/heartbeat")]
    if draw(st.booleans()):
        headers.append(("receipt", draw(RECEIPTS)))
    if draw(st.booleans()):
        headers.append(
            ("content-type", draw(st.sampled_from(["application/json", "application/json;charset=utf-8"])))
        )
    if draw(st.booleans()):
        headers.append(("content-length", str(len(body))))
    headers = draw(st.permutations(headers))
    return stomp("SEND", headers, body)


@st.composite
def mutated(draw, messages=None):
    """A generated (or given) heartbeat with one to three bytes inserted, deleted or replaced."""
    message = bytearray(draw(messages if messages is not None else heartbeat_messages()))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(message)))
        kind = draw(st.integers(0, 2))
        byte = draw(st.sampled_from(b'\x00\n\r\\:" ,{}.-0123456789eEaz\xc3'))
        if kind == 0:
            message.insert(at, byte)
        elif kind == 1 and at < len(message):
            del message[at]
        elif at < len(message):
            message[at] = byte
    return bytes(message)


CORPUS = [loadgen_frame(), loadgen_frame(receipt="hb-3", latency=0.5), stompjs_frame(receipt="m-1")]


def check_against_full_path(lane, message: bytes) -> bytes | None:
    answer = lane.offer(1, message)
    if answer is not None:
        heard = full_path(message)
        assert not isinstance(heard, str), f"the lane took what the full path refuses: {heard}"
        assert heard.session_id == SID
        assert lane.stats(SID)[1] == heard.latency_ms
        assert type(lane.stats(SID)[1]) is type(heard.latency_ms)
        assert answer == receipt_of(heard.receipt)
    return answer


@pytest.mark.skipif(HeartbeatLaneC is None, reason="spidi_core._lane_c not built")
@HYPOTHESIS
@given(message=st.one_of(heartbeat_messages(), mutated(), mutated(st.sampled_from(CORPUS))))
def test_differential_lane_vs_full_path_and_c_vs_py(message):
    py = new_lane(HeartbeatLanePy)
    c = new_lane(HeartbeatLaneC)
    for lane in (py, c):
        lane.set_groups(SID, 2, 0)  # the fast lane counts the session's groups too
    assert check_against_full_path(py, message) == check_against_full_path(c, message)
    assert py.stats(SID)[1:] == c.stats(SID)[1:]
    assert py.take_counters() == c.take_counters()
    assert py.take_room_sample(10) == c.take_room_sample(10)
    assert py.take_room_groups(10) == c.take_room_groups(10)


@pytest.mark.skipif(HeartbeatLaneC is None, reason="spidi_core._lane_c not built")
@HYPOTHESIS
@given(
    ops=st.lists(
        st.tuples(
            st.integers(0, 7),
            st.integers(0, 5),
            st.one_of(INT_LATENCY, FLOAT_LATENCY, st.none()),  # None: a heartbeat without latencyMs
            st.integers(0, 3_000),
        ),
        max_size=60,
    )
)
def test_differential_bookkeeping_c_vs_py(ops):
    lanes = [HeartbeatLanePy((5, 10, 100), 1000), HeartbeatLaneC((5, 10, 100), 1000)]
    clock = 0
    for op, who, latency, step in ops:
        sid, room = f"s{who}", who % 3
        clock += step
        outs = []
        for lane in lanes:
            if op == 0:
                outs.append(lane.add_session(sid, who, room, clock, clock / 1000))
            elif op in (1, 2, 3):
                outs.append(lane.beat(sid, latency, clock, clock / 1000) if lane.stats(sid) else None)
            elif op == 4:
                outs.append(lane.remove_session(sid))
            elif op == 5:
                outs.append(lane.set_watched(room, latency is not None and latency > 1000))
            elif op == 7:
                # group slots: none (-1) or 0..4 per dimension, moved while beats are counted
                groups = (step % 6 - 1, step // 7 % 6 - 1)
                outs.append(lane.set_groups(sid, *groups) if lane.stats(sid) else None)
            else:
                outs.append(
                    (
                        lane.take_beats(),
                        lane.take_ttl_due(),
                        lane.take_updated(room),
                        lane.pending(),
                        lane.take_room_groups(room),
                    )
                )
            outs.append((lane.stats(sid), lane.last_beat(sid), lane.pending()))
        assert outs[: len(outs) // 2] == outs[len(outs) // 2 :]
    final = [
        (
            lane.take_beats(),
            lane.take_ttl_due(),
            [lane.take_room_sample(r) for r in range(3)],
            [lane.take_room_groups(r) for r in range(3)],
            lane.take_counters(),
        )
        for lane in lanes
    ]
    assert final[0] == final[1]
    for packed in final[0][0].values():  # floats as repr, ints as ints, exactly as str() writes them
        members, latencies = unpacked(packed)
        assert len(members) == 2 * packed.count and len(latencies) == 2 * packed.latencies_count
        assert len(set(members[1::2])) == packed.count  # the newest beat per session only
        for value in latencies[1::2]:  # (a beat without latency writes none)
            value = value.decode()
            assert value == repr(float(value)) or (value.isdigit() and str(int(value)) == value)
            assert math.isfinite(float(value))


@pytest.mark.skipif(HeartbeatLaneC is None, reason="spidi_core._lane_c not built")
def test_grading_c_vs_py():
    # Sessions added, beating, removed and added again (records and slots reused), a watched
    # room's updates taken, graded every step: the same counts and the same moved sessions.
    rng = random.Random(16)
    lanes = [HeartbeatLanePy(LATENCY_BUCKETS_MS, 1000), HeartbeatLaneC(LATENCY_BUCKETS_MS, 1000)]
    for lane in lanes:
        lane.set_watched(0, True)
    now = 0.0
    for step in range(3_000):
        now += rng.random() * 0.2
        who = rng.randrange(300)
        sid, room = f"session-{who}", who % 4
        action = rng.random()
        for lane in lanes:
            if action < 0.1:
                lane.add_session(sid, who, room, step, now)
            elif action < 0.15:
                lane.remove_session(sid)
            elif action < 0.2:
                lane.take_updated(0)
            elif lane.stats(sid) is not None:
                lane.beat(sid, 5, step, now)
        counts = [lane.grade(now, 1.5, 2.0) for lane in lanes]
        assert counts[0][:3] == counts[1][:3] and sorted(counts[0][3]) == sorted(counts[1][3])
        assert lanes[0].session_count() == lanes[1].session_count() == sum(counts[0][:3])


def unpacked(packed) -> tuple[list[bytes], list[bytes]]:
    """A room's ``PackedBeats`` read back by hiredis: the ZADD's and the HSET's arguments."""
    reader = hiredis.Reader()
    reader.feed(b"*%d\r\n%s" % (2 * packed.count, packed.members))
    reader.feed(b"*%d\r\n%s" % (2 * packed.latencies_count, packed.latencies))
    return reader.gets(), reader.gets()


@pytest.mark.skipif(HeartbeatLaneC is None, reason="spidi_core._lane_c not built")
@given(
    beats=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=40),  # any session id the full path hands over (UTF-8)
            st.integers(-(2**63), 2**63 - 1),
            st.one_of(INT_LATENCY, FLOAT_LATENCY, st.none()),
        ),
        max_size=20,
    )
)
def test_packed_beats_c_vs_py(beats):
    """Both builds write the same RESP bytes, and Redis reads back what went in: ids with spaces,
    CR/LF or any UTF-8, the full range of times, latencies as str() writes them, none if absent."""
    lanes = [HeartbeatLanePy((5, 10, 100), 1000), HeartbeatLaneC((5, 10, 100), 1000)]
    newest: dict[str, tuple] = {}
    for sid, ms, latency in beats:
        for lane in lanes:
            if lane.stats(sid) is None:
                lane.add_session(sid, 0, 1, 0, 0.0)
            lane.beat(sid, latency, ms, 1.0)
        kept = newest.get(sid, (None, None))[1]  # a pending beat keeps the latency it had
        newest[sid] = (ms, kept if latency is None else latency)
    py, c = (lane.take_beats() for lane in lanes)
    assert py == c
    assert py == ({1: pack_beats([(sid, ms, lat) for sid, (ms, lat) in newest.items()])} if beats else {})
    if beats:
        members, latencies = unpacked(py[1])
        assert members[1::2] == [sid.encode() for sid in newest]
        assert members[0::2] == [str(ms).encode() for ms, _ in newest.values()]
        assert latencies == [
            v
            for sid, (_, lat) in newest.items()
            if lat is not None
            for v in (sid.encode(), str(lat).encode())
        ]


@pytest.mark.skipif(HeartbeatLaneC is None, reason="spidi_core._lane_c not built")
def test_many_sessions_connections_and_rooms_c_vs_py():
    # Enough keys to grow every table several times and reuse deleted slots and records.
    rng = random.Random(15)
    lanes = [HeartbeatLanePy(LATENCY_BUCKETS_MS, 1000), HeartbeatLaneC(LATENCY_BUCKETS_MS, 1000)]
    live: set[int] = set()
    for step in range(20_000):
        who = rng.randrange(3_000)
        sid, conn, room = f"session-{who}", who % 700, who % 90
        latency = rng.choice((rng.randrange(3_000), rng.random() * 500, None))
        action = rng.random()
        for lane in lanes:
            if action < 0.3:
                lane.open(conn, 0.0, 0.0, 0.0)
                lane.set_ready(conn, True)
                lane.add_session(sid, conn, room, step, 0.0)
                if who % 5:  # most sessions in groups (slots up to 40: rows grow), some in none
                    lane.set_groups(sid, who % 41, who % 7 - 1)
            elif action < 0.4:
                lane.remove_session(sid)
            elif action < 0.45:
                lane.close(conn)
            elif who in live:
                lane.beat(sid, latency, step * 7, step / 10)
        if action < 0.3:
            live.add(who)
        elif action < 0.4:
            live.discard(who)
        if step % 2_000 == 0:
            assert lanes[0].take_beats() == lanes[1].take_beats()
    for who in range(3_000):
        sid = f"session-{who}"
        assert lanes[0].stats(sid) == lanes[1].stats(sid), sid
        assert lanes[0].last_beat(sid) == lanes[1].last_beat(sid)
    message = loadgen_frame(sid=f"session-{max(live)}")
    conn = max(live) % 700
    for lane in lanes:
        lane.open(conn, 0.0, 0.0, 0.0)
        lane.set_ready(conn, True)
    assert lanes[0].offer(conn, message) == lanes[1].offer(conn, message) == b""
    assert lanes[0].take_beats().keys() == lanes[1].take_beats().keys()
    assert lanes[0].take_ttl_due() == lanes[1].take_ttl_due()
    assert [lanes[0].take_room_sample(r) for r in range(90)] == [
        lanes[1].take_room_sample(r) for r in range(90)
    ]
    groups = [lanes[0].take_room_groups(r) for r in range(90)]
    assert groups == [lanes[1].take_room_groups(r) for r in range(90)]
    assert sum(len(g) for g in groups) > 90  # the groups did count
    assert lanes[0].take_counters() == lanes[1].take_counters()
