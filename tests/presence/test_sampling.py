"""presence.sampling: room samples and session checkpoints, read back from the events stream."""

from __future__ import annotations

from spidi_server.presence.model import now_ms
from spidi_server.rooms import room_id_for
from spidi_server.stores import events, keys

LOBBY = room_id_for("default", "lobby")


def stream(redis_sync, kind: str) -> list[dict]:
    return [fields for _, fields in redis_sync.xrange(keys.EVENTS_STREAM) if fields["kind"] == kind]


async def test_a_finished_minute_becomes_a_room_sample(presence, client_factory, store, redis_sync):
    client = client_factory()
    await presence.hello(client, {"roomCode": "lobby", "clientId": "t", "appVersion": "1"})
    sid = next(iter(client.sessions)).session_id
    presence.heartbeat(client, sid, 40.0)
    bucket = presence.rooms[LOBBY].sample.bucket
    presence.sample_rooms(bucket + 1_000)
    presence.sample_rooms(bucket + 2_000)
    presence.sample_rooms(bucket + 60_000)  # the next minute: the first one is emitted
    await store.flush()
    (sample,) = stream(redis_sync, events.ROOM_SAMPLE)
    assert sample["bucket"] == str(bucket) and sample["room_id"] == LOBBY
    assert (sample["online_sum"], sample["online_samples"], sample["online_max"]) == ("2", "2", "1")
    assert sample["latency_count"] == "1"
    assert presence.rooms[LOBBY].sample.bucket == bucket + 60_000


async def test_checkpoints_only_sessions_that_heartbeated(presence, client_factory, store, redis_sync):
    client = client_factory()
    await presence.hello(client, {"roomCode": "lobby", "clientId": "t", "appVersion": "1"})
    sid = next(iter(client.sessions)).session_id
    assert presence.checkpoint_sessions() == 0
    presence.heartbeat(client, sid, 1.0)
    assert presence.checkpoint_sessions() == 1
    assert presence.checkpoint_sessions() == 0
    await store.flush()
    (checkpoint,) = stream(redis_sync, events.SESSION_CHECKPOINT)
    assert checkpoint["session_id"] == sid and checkpoint["heartbeats"] == "1"


async def test_flush_history_emits_the_partial_minute(presence, client_factory, store, redis_sync):
    await presence.hello(client_factory(), {"roomCode": "lobby", "clientId": "t", "appVersion": "1"})
    presence.sample_rooms(now_ms())
    presence.flush_history()
    await store.flush()
    (sample,) = stream(redis_sync, events.ROOM_SAMPLE)
    assert sample["online_samples"] == "1" and sample["online_max"] == "1"


async def test_nothing_is_recorded_without_history(presence_factory, client_factory, store, redis_sync):
    presence = presence_factory(history=False)
    client = client_factory()
    await presence.hello(client, {"roomCode": "lobby", "clientId": "t", "appVersion": "1"})
    presence.heartbeat(client, next(iter(client.sessions)).session_id, 1.0)
    presence.sample_rooms(now_ms())
    assert presence.checkpoint_sessions() == 0
    presence.end_all()
    await store.flush()
    assert redis_sync.xlen(keys.EVENTS_STREAM) == 0
