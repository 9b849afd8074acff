"""Batched joins against a real Redis: one join.lua call admits a room's joins of a flush, with the
answers and the state that one call per join gave (stores/commands.py, stores/lua/join.lua)."""

from __future__ import annotations

import asyncio

import pytest

from spidi_server.stores import commands, keys
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import REFUSED, HotStore

NOW_MS = 1_767_000_000_000
TTL_S = 120


@pytest.fixture
async def store(redis_url, redis_sync):
    hot = HotStore(connect(redis_url), node_id="joins")
    await hot.start()
    yield hot
    await hot.close()


def join(store: HotStore, room: str, sid: str, user: str, capacity: int, at: int = 0, tenant: str = "t1"):
    fields = {"userId": user, "clientId": f"c-{sid}", "ip": None, "roomCode": f"code-{room}"}
    return store.join(room, tenant, f"code-{room}", capacity, sid, user, NOW_MS + at, TTL_S, fields)


# A scenario: capacity 3, five newcomers (two refused), one admitted whatever the count (forced,
# as after a degraded-mode HELLO), a replayed join of an admitted session, a second user's sessions.
SCENARIO = [("s1", "u1"), ("s2", "u2"), ("s3", "u1"), ("s4", "u3"), ("s5", "u3"), ("s6", "u4"), ("s1", "u1")]
FORCED = {5}
EXPECTED = [1, 2, 3, REFUSED, REFUSED, 4, 4]


def run_scenario(store: HotStore, room: str) -> list:
    pending = []
    for i, (sid, user) in enumerate(SCENARIO):
        j = join(store, room, f"{room}-{sid}", f"{room}-{user}", capacity=3, at=i)
        if i in FORCED:
            j.force()
        pending.append(j)
    return pending


def room_state(r, room: str) -> dict:
    """Everything the joins of ``room`` wrote, with the room's name taken out of keys and values."""

    def strip(value):
        return value.replace(room, "R") if isinstance(value, str) else value

    def strip_map(mapping: dict) -> dict:
        return {strip(k): strip(v) for k, v in mapping.items()}

    sessions = {}
    for member in r.zrange(keys.room_online(room), 0, -1):
        sessions[strip(member)] = strip_map(r.hgetall(keys.session(room, member)))
        assert 0 < r.ttl(keys.session(room, member)) <= TTL_S
    users = {}
    for user in ("u1", "u2", "u3", "u4"):
        index = keys.user_sessions("t1", f"{room}-{user}")
        users[user] = strip_map(r.hgetall(index))
    return {
        "online": [(strip(m), s) for m, s in r.zrange(keys.room_online(room), 0, -1, withscores=True)],
        "users": strip_map(r.hgetall(keys.room_users(room))),
        "metrics": strip_map(r.hgetall(keys.room_metrics(room))),
        "sessions": sessions,
        "user_index": users,
        "node_index": {
            strip(k): strip(v) for k, v in r.hgetall(keys.node_sessions("joins")).items() if room in k
        },
        "tenant_rooms": strip(r.hget(keys.tenant_rooms("t1"), room)),
    }


async def test_a_batch_answers_and_writes_as_one_call_per_join_did(store, redis_sync):
    # Sequential: every join in a pipeline of its own (the old shape, one script call each).
    sequential = []
    for i, (sid, user) in enumerate(SCENARIO):
        j = join(store, "seq", f"seq-{sid}", f"seq-{user}", capacity=3, at=i)
        if i in FORCED:
            j.force()
        assert await store.flush()
        sequential.append(await j.result)
    # Batched: every join queued before the flusher runs, so one pipeline carries them all.
    batched = run_scenario(store, "bat")
    assert await store.flush()
    assert [await j.result for j in batched] == sequential == EXPECTED
    assert await store.flush()  # the refused joins' "unindex"
    assert room_state(redis_sync, "bat") == room_state(redis_sync, "seq")
    state = room_state(redis_sync, "bat")
    assert len(state["online"]) == 4 and state["metrics"]["peak"] == "4"
    assert state["user_index"]["u3"] == {}  # both of u3's joins were refused: nothing indexed
    assert state["users"] == {"R-u1": "2", "R-u2": "1", "R-u4": "1"}


async def test_a_leave_between_joins_stays_in_its_place(store, redis_sync):
    a = join(store, "order", "a1", "ua", capacity=0)
    store.leave("order", "a1", "t1", "ua")  # ends the run: a1's join goes out before it
    b = join(store, "order", "b1", "ub", capacity=0)
    other = join(store, "order2", "c1", "uc", capacity=1)
    store.event({"id": "e1", "kind": "x"})  # does not end the run
    other2 = join(store, "order2", "c2", "ud", capacity=1)
    assert await store.flush()
    assert [await a.result, await b.result, await other.result, await other2.result] == [1, 1, 1, REFUSED]
    assert redis_sync.zrange(keys.room_online("order"), 0, -1) == ["b1"]
    assert redis_sync.hgetall(keys.user_sessions("t1", "ua")) == {}
    assert redis_sync.hget(keys.node_sessions("joins"), "a1") is None
    assert redis_sync.hget(keys.node_sessions("joins"), "b1") == "order"


async def test_more_joins_than_one_script_takes(store, redis_sync):
    count = commands.JOIN_BATCH + 100
    capacity = commands.JOIN_BATCH + 50
    pending = [join(store, "big", f"b{i}", f"u{i}", capacity=capacity, at=i) for i in range(count)]
    assert await store.flush()
    answers = await asyncio.gather(*(j.result for j in pending))
    assert answers == list(range(1, capacity + 1)) + [REFUSED] * (count - capacity)
    assert redis_sync.zcard(keys.room_online("big")) == capacity
    assert await store.flush()
    assert redis_sync.hlen(keys.node_sessions("joins")) == capacity


def test_one_script_call_per_room_and_merged_indexes():
    """What build queues for a run of joins: counted on a recording pipeline (no Redis needed)."""

    class Recorder:
        def __init__(self):
            self.calls = []

        def execute_command(self, *args):
            self.calls.append(args)

        def hset(self, key, mapping):
            self.calls.append(("HSET", key, mapping))

        def expire(self, key, ttl):
            self.calls.append(("EXPIRE", key, ttl))

        def sadd(self, key, member):
            self.calls.append(("SADD", key, member))

    class Target:
        node_id = "n"
        marker_key = None

        class scripts:
            @staticmethod
            def queue(pipe, name, script_keys, args):
                pipe.execute_command("EVALSHA", name, len(script_keys), *script_keys, *args)

    class Join:
        def __init__(self, room, sid, user):
            self.room_id, self.session_id, self.user_id = room, sid, user
            self.tenant, self.code, self.ttl_s = "t", f"code-{room}", 60
            self.args = [sid, 1, user, "h", 60, 0, f"code-{room}", "t", 0, "ip", ""]

    ops = [("join", Join(room, f"{room}{i}", f"u{i % 3}")) for room in ("x", "y") for i in range(10)]
    joins: list = []
    pipe = Recorder()
    count, _, _ = commands.build(pipe, ops, {}, joins, False, Target)
    # 2 scripts, tenant rooms and the tenants set, 3 users, node index
    assert count == len(pipe.calls) == 2 + 2 + 2 * 3 + 1
    assert [(index, position) for index, position, _ in joins] == [(0, i) for i in range(10)] + [
        (1, i) for i in range(10)
    ]


async def test_on_answer_is_called_as_the_answer_is_given_and_its_failure_stops_nothing(store, redis_sync):
    loop = asyncio.get_running_loop()
    failures: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: failures.append(context))
    try:
        seen: list[tuple] = []
        a = join(store, "answers", "a1", "ua", capacity=1)
        b = join(store, "answers", "b1", "ub", capacity=1)
        c = join(store, "answers2", "c1", "uc", capacity=0)

        def broken(value):
            raise RuntimeError("a bug in whoever waits")

        # The callback runs inside the store's resolve, before any callback on ``result`` could.
        a.on_answer = lambda value: seen.append(
            ("a", value, a.result.done(), redis_sync.zcard(keys.room_online("answers")))
        )
        b.on_answer = broken
        c.on_answer = lambda value: seen.append(("c", value))
        assert await store.flush()
        assert seen == [("a", 1, True, 1), ("c", 1)]
        assert [a.result.result(), b.result.result(), c.result.result()] == [1, REFUSED, 1]
        assert [str(f["exception"]) for f in failures] == ["a bug in whoever waits"]
        assert a.on_answer is None and b.on_answer is None  # called once
        a.resolve(7)  # the first answer stands: nothing is called again
        assert len(seen) == 2
        store.event({"id": "after", "kind": "x"})  # the flusher goes on after the failure
        assert await store.flush()
        assert redis_sync.xlen(keys.EVENTS_STREAM) >= 1
    finally:
        loop.set_exception_handler(None)
