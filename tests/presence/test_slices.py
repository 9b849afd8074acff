"""Long synchronous steps run in slices with the loop given back between them, so a node with
thousands of sessions is not held for a whole pass: the periodic checkpoints
(Presence.checkpoint_all), a big room's roster read (stores/reads.roster) and the hot store's
pipelines of a backlog (hot_store._MAX_BATCH_OPS)."""

from __future__ import annotations

from spidi_server.rooms import room_id_for
from spidi_server.stores import events, hot_store, keys, reads

LOBBY = room_id_for("default", "lobby")


async def _sessions(presence, client_factory, n: int) -> list:
    sessions = []
    for i in range(n):
        client = client_factory(user=f"u{i}")
        await presence.hello(client, {"roomCode": "lobby", "clientId": f"t{i}", "appVersion": "1"})
        session = next(iter(client.sessions))
        presence.heartbeat(client, session.session_id, 1.0)
        sessions.append(session)
    return sessions


async def test_checkpoint_pass_yields_between_slices_and_skips_ended_sessions(
    presence, client_factory, store, redis_sync
):
    sessions = await _sessions(presence, client_factory, 5)
    # Driven by hand: each yield is where the loop would run everything else.
    pass_ = presence.checkpoint_all(chunk=2)
    pass_.send(None)
    assert [s.checkpointed for s in sessions] == [1, 1, 0, 0, 0]  # one slice, then a yield
    presence.end(sessions[3], "leave")  # ends while the pass is paused
    pass_.send(None)
    assert [s.checkpointed for s in sessions] == [1, 1, 1, 0, 0]
    try:
        pass_.send(None)
    except StopIteration as done:
        assert done.value == 4  # three slices, two yields; the ended session was skipped
    else:
        raise AssertionError("a third yield: slices of 2 over 5 sessions are three")
    assert sessions[4].checkpointed == 1
    await store.flush()
    checkpointed = [
        f["session_id"]
        for _, f in redis_sync.xrange(keys.EVENTS_STREAM)
        if f["kind"] == events.SESSION_CHECKPOINT
    ]
    assert sorted(checkpointed) == sorted(s.session_id for i, s in enumerate(sessions) if i != 3)


class _CountingRedis:
    """The store's real Redis client, counting the pipelines opened through it."""

    def __init__(self, redis):
        self._redis = redis
        self.pipelines = 0

    def pipeline(self, **kwargs):
        self.pipelines += 1
        return self._redis.pipeline(**kwargs)


class _Source:
    def __init__(self, store):
        self.redis = _CountingRedis(store.redis)
        self.scripts = store.scripts
        self.flush = store.flush


async def test_roster_read_takes_one_pipeline_per_slice(presence, client_factory, store):
    await _sessions(presence, client_factory, 5)
    source = _Source(store)
    sliced = await reads.roster(source, LOBBY, chunk=2)
    assert source.redis.pipelines == 1 + 3  # members and latencies, then 2 + 2 + 1 sessions
    whole = await store.roster(LOBBY)
    assert sliced == whole and len(whole) == 5
    assert all(entry["clientId"].startswith("t") for entry in sliced)


async def test_a_backlog_of_events_goes_out_in_bounded_pipelines(store, redis_sync):
    pipelines = []
    store.on_flush = lambda commands, seconds, ok: pipelines.append(commands)
    backlog = 2 * hot_store._MAX_BATCH_OPS + 10  # a checkpoint pass queues one event per session
    for i in range(backlog):
        store.event({"kind": "probe", "n": i})
    await store.flush()
    assert sum(pipelines) >= backlog and len(pipelines) >= 3
    assert max(pipelines) <= hot_store._MAX_BATCH_OPS + 5  # + the node's marker, if due
    assert redis_sync.xlen(keys.EVENTS_STREAM) == backlog
