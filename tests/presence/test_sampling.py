"""presence.sampling: room samples and session checkpoints, read back from the events stream."""

from __future__ import annotations

import orjson

from spidi_server.presence.breakdown import GroupSlots, RoomGroups
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


# -- the SLO breakdown: latencies per app version and OS ----------------------------------------


def test_group_slots_are_bounded_reused_and_freed_after_the_take():
    slots = GroupSlots(2)
    assert [slots.join(v) for v in ("1.0", "2.0", "1.0", "3.0", "4.0")] == [1, 2, 1, 0, 0]
    assert (slots.label(1), slots.label(2), slots.label(0)) == ("1.0", "2.0", None)
    slots.leave(2)  # 2.0's last session: its slot retires, still 2.0's until the take
    assert slots.join("3.0") == 0 and slots.label(2) == "2.0"
    assert slots.join("2.0") == 2  # back before the take: the same slot
    slots.leave(2)
    slots.settle()
    assert slots.join("3.0") == 2 and slots.label(2) == "3.0"  # freed by the take: the next value's
    for slot in (1, 1, 0, 0, 0):
        slots.leave(slot)
    slots.settle()
    assert slots.labels == {2: "3.0"} and slots.refs == {2: 1}


def test_room_groups_label_the_lanes_take():
    groups = RoomGroups(1)
    assert groups.join("1.0", "iOS") == (1, 1)
    assert groups.join("2.0", None) == (0, 0)  # beyond the top 1: other in both dimensions
    hist = [1, 0]
    assert groups.labelled([(0, 0, hist), (0, 1, hist), (1, 1, hist)]) == [
        ("appVersion", None, hist),
        ("appVersion", "1.0", hist),
        ("os", "iOS", hist),
    ]
    groups = RoomGroups(2)
    groups.join("1.0", None)
    assert groups.labelled([(1, 1, hist)]) == [("os", "", hist)]  # no os: the label ""


def breakdown_of(sample: dict) -> dict:
    return orjson.loads(sample["latency_breakdown"]) if sample["latency_breakdown"] else {}


async def test_room_sample_carries_latencies_per_app_version_and_os(
    presence_factory, client_factory, store, redis_sync
):
    presence = presence_factory(slo_breakdown_top_n=2)
    joined = []
    for version, os_name in (
        ("2.0", "iOS"),
        ("2.1", "Android"),
        ("2.1", None),
        ("2.2", "iOS"),
        ("2.3", "Web"),
    ):
        client = client_factory()
        hello = {"roomCode": "lobby", "clientId": "t", "appVersion": version}
        if os_name is not None:
            hello["os"] = os_name
        await presence.hello(client, hello)
        joined.append((client, next(iter(client.sessions)).session_id))
    bucket = presence.rooms[LOBBY].sample.bucket
    fast, slow = events.LATENCY_BUCKETS_MS.index(50), events.LATENCY_BUCKETS_MS.index(300)
    for i, (client, sid) in enumerate(joined):
        for _ in range(i + 1):  # 1, 2, 3, 4 and 5 heartbeats
            presence.heartbeat(client, sid, 40.0 if i != 1 else 250.0)
    presence.heartbeat(joined[0][0], joined[0][1], None)  # no latency: counted nowhere
    presence.sample_rooms(bucket + 1_000)
    presence.sample_rooms(bucket + 60_000)
    await store.flush()
    (sample,) = stream(redis_sync, events.ROOM_SAMPLE)
    empty = [0] * (len(events.LATENCY_BUCKETS_MS) + 1)

    def hist(n_fast: int = 0, n_slow: int = 0) -> list[int]:
        out = list(empty)
        out[fast], out[slow] = n_fast, n_slow
        return out

    # Two slots each: the first two values to join keep theirs, the later ones are other.
    assert breakdown_of(sample) == {
        "appVersion": {"values": {"2.0": hist(1), "2.1": hist(3, 2)}, "other": hist(9)},
        "os": {"values": {"iOS": hist(1 + 4), "Android": hist(0, 2)}, "other": hist(3 + 5)},
    }
    totals = [
        sum(sum(h) for h in [*part["values"].values(), part["other"]])
        for part in breakdown_of(sample).values()
    ]
    assert totals == [int(sample["latency_count"])] * 2 == [15, 15]  # counts conserved

    # The sessions of 2.0 and Android leave: their slots go to the next values once the minute's
    # histograms were taken.
    for client, sid in joined[:2]:
        presence.leave(client, sid)
    presence.sample_rooms(bucket + 61_000)  # the take that frees them
    client = client_factory()
    await presence.hello(client, {"roomCode": "lobby", "clientId": "t", "appVersion": "3.0", "os": "Linux"})
    sid = next(iter(client.sessions)).session_id
    presence.heartbeat(client, sid, 40.0)
    presence.sample_rooms(bucket + 120_000)
    await store.flush()
    second = stream(redis_sync, events.ROOM_SAMPLE)[-1]
    assert breakdown_of(second) == {
        "appVersion": {"values": {"3.0": hist(1)}},
        "os": {"values": {"Linux": hist(1)}},
    }


async def test_no_breakdown_when_turned_off(presence_factory, client_factory, store, redis_sync):
    presence = presence_factory(slo_breakdown_top_n=0)
    client = client_factory()
    await presence.hello(client, {"roomCode": "lobby", "clientId": "t", "appVersion": "1"})
    presence.heartbeat(client, next(iter(client.sessions)).session_id, 40.0)
    bucket = presence.rooms[LOBBY].sample.bucket
    presence.sample_rooms(bucket + 60_000)
    await store.flush()
    (sample,) = stream(redis_sync, events.ROOM_SAMPLE)
    assert sample["latency_count"] == "1" and sample["latency_breakdown"] == ""
