"""What a node hands the history writer: events in the Redis stream, never one per heartbeat."""

from __future__ import annotations

from spidi_server.rooms import room_id_for
from spidi_server.stores import events

from .conftest import token_for
from .stomp_client import connected


def stream(redis_sync) -> list[dict]:
    return [fields for _, fields in redis_sync.xrange(events.STREAM)]


async def test_session_events_and_room_samples(node, redis_sync):
    client = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    welcome = await client.hello("lobby", "phone", device="Pixel", os="Android")
    sid = welcome["sessionId"]
    for latency in (10, 30, 800):
        await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": latency}, receipt="r")
        await client.next(command="RECEIPT")
    presence = node.presence
    room = presence.rooms[room_id_for("default", "lobby")]
    bucket = room.sample.bucket
    presence.sample_rooms(bucket + 1000)
    presence.sample_rooms(bucket + 2000)
    assert presence.checkpoint_sessions() == 1
    assert presence.checkpoint_sessions() == 0  # nothing new since
    await client.app("/app/leave", {"sessionId": sid}, receipt="l")
    await client.next(command="RECEIPT")
    await node.store.flush()

    entries = stream(redis_sync)
    # 3 heartbeats became no events of their own.
    session_events = [e for e in entries if e["kind"] != events.ROOM_SAMPLE]
    kinds = [e["kind"] for e in session_events]
    assert kinds == [events.SESSION_STARTED, events.SESSION_CHECKPOINT, events.SESSION_ENDED]
    started, checkpoint, ended = session_events
    assert (
        started["session_id"] == sid and started["device"] == "Pixel" and started["node_id"] == node.node_id
    )
    assert started["room_id"] == room_id_for("default", "lobby") and started["ip"] == "127.0.0.1"
    assert checkpoint["heartbeats"] == "3" and float(checkpoint["latency_sum"]) == 840
    assert ended["reason"] == "leave" and ended["heartbeats"] == "3"
    assert float(ended["latency_min"]) == 10 and float(ended["latency_max"]) == 800
    assert int(ended["ended_at"]) >= int(ended["last_heartbeat_at"]) >= int(started["started_at"])
    # The room's activity: one sample per minute (the node's own 1 s sampler may have crossed a
    # minute boundary during the test, so add the samples up).
    samples = [e for e in entries if e["kind"] == events.ROOM_SAMPLE]
    assert samples and len({e["id"] for e in entries}) == len(entries)
    # Joins, leaves, timeouts and disconnects are not sampled: the writer counts the session events.
    assert not {"joins", "leaves", "timeouts", "disconnects"} & {k for s in samples for k in s}
    assert ended["room_code"] == started["room_code"] == "lobby" and ended["room_id"] == started["room_id"]
    assert max(int(s["online_max"]) for s in samples) == 1
    assert sum(int(s["online_sum"]) for s in samples) >= 2
    hist = [sum(col) for col in zip(*(events.decode_hist(s["latency_hist"]) for s in samples), strict=True)]
    assert sum(hist) == 3 and hist[events.LATENCY_BUCKETS_MS.index(10)] == 1
    assert hist[events.LATENCY_BUCKETS_MS.index(1000)] == 1
    await client.close()


async def test_minute_rollover_emits_a_sample_per_minute(node, redis_sync):
    client = await connected(node.ws_url, token_for(node.settings, "bob", "spidi:user"))
    await client.hello("lobby")
    room = node.presence.rooms[room_id_for("default", "lobby")]
    first = room.sample.bucket
    node.presence.sample_rooms(first + 30_000)
    node.presence.sample_rooms(first + 60_000)  # the next minute: the first one is emitted
    await node.store.flush()
    samples = [e for e in stream(redis_sync) if e["kind"] == events.ROOM_SAMPLE]
    assert samples and int(samples[0]["bucket"]) == first
    assert room.sample.bucket == first + 60_000 and room.sample.online_sum == 1
    await client.close()


async def test_history_off_emits_nothing(node_factory, redis_sync):
    node = await node_factory(history=False)
    client = await connected(node.ws_url, token_for(node.settings, "c", "spidi:user"))
    sid = (await client.hello("lobby"))["sessionId"]
    await client.app("/app/leave", {"sessionId": sid}, receipt="l")
    await client.next(command="RECEIPT")
    await node.store.flush()
    assert redis_sync.xlen(events.STREAM) == 0
    await client.close()
