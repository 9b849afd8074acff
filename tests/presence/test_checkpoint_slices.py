"""The periodic checkpoint pass runs in slices with a yield to the loop between them, so a node
with thousands of sessions is not held for the whole pass (Presence.checkpoint_all)."""

from __future__ import annotations

from spidi_server.stores import events, keys


async def test_checkpoint_pass_yields_between_slices_and_skips_ended_sessions(
    presence, client_factory, store, redis_sync
):
    sessions = []
    for i in range(5):
        client = client_factory(user=f"u{i}")
        await presence.hello(client, {"roomCode": "lobby", "clientId": f"t{i}", "appVersion": "1"})
        session = next(iter(client.sessions))
        presence.heartbeat(client, session.session_id, 1.0)
        sessions.append(session)
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
