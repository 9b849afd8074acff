"""presence.model: plain objects, no store and no loop."""

from __future__ import annotations

from spidi_core import HeartbeatLane
from spidi_server.presence.model import Room, RoomSample, Session, Subscription, minute, public_metrics
from spidi_server.protocol.payloads import HelloPayload
from spidi_server.rooms import RoomDef
from spidi_server.stores import events

ROOM = RoomDef("room-1", "acme", "lobby", 10)
HELLO = HelloPayload("lobby", "tablet", "2.1", "iPad", None, None)


def make_session(room: Room | None = None, sid: str = "s-1") -> Session:
    return Session(sid, room or Room(ROOM), "ann", HELLO, "10.0.0.1", 1_000)


def test_session_takes_its_fields_from_the_checked_hello():
    session = make_session()
    assert session.static_fields() == {
        "userId": "ann",
        "clientId": "tablet",
        "appVersion": "2.1",
        "device": "iPad",
        "os": None,
        "ip": "10.0.0.1",
        "connectedAt": 1_000,
        "roomCode": "lobby",
        "tenant": "acme",
        "nodeId": "",
    }
    entry = session.entry()
    assert entry["sessionId"] == "s-1" and entry["latencyMs"] is None and entry["lastHeartbeatAt"] == 1_000
    assert session.client_info() == {
        "clientId": "tablet",
        "device": "iPad",
        "os": None,
        "appVersion": "2.1",
        "ip": "10.0.0.1",
    }


def test_session_history_events():
    lane = HeartbeatLane((5.0, 50.0), 1_000)
    session = Session("s-1", Room(ROOM, 1), "ann", HELLO, "10.0.0.1", 1_000, lane)
    lane.add_session("s-1", 7, 1, 1_000, 0.0)
    lane.beat("s-1", 10.0, 2_000, 1.0)
    lane.beat("s-1", 20.0, 3_000, 2.0)  # the figures are the lane's
    session.node_id = "n-1"
    assert (session.heartbeats, session.latency_sum, session.latency_min, session.latency_max) == (
        2,
        30.0,
        10.0,
        20.0,
    )
    assert session.entry()["lastHeartbeatAt"] == 3_000 and session.entry()["latencyMs"] == 20.0
    started = session.started_event()
    assert started["kind"] == events.SESSION_STARTED and started["node_id"] == "n-1"
    checkpoint = session.checkpoint_event()
    assert checkpoint["kind"] == events.SESSION_CHECKPOINT and checkpoint["latency_count"] == 2
    ended = session.end_event("leave", 5_000)
    assert ended["kind"] == events.SESSION_ENDED and ended["reason"] == "leave" and ended["ended_at"] == 5_000
    assert ended["latency_max"] == 20.0 and ended["room_code"] == "lobby"
    session.close_figures()
    lane.remove_session("s-1")  # a session that left the lane keeps its last figures
    assert session.end_event("leave", 5_000)["heartbeats"] == 2 and session.last_heartbeat_at == 3_000


def test_room_idle_and_observed():
    room = Room(ROOM)
    assert room.idle and not room.observed
    room.pending_subs = 1
    assert not room.idle and room.observed
    room.pending_subs = 0
    room.joining = 1
    assert not room.idle and not room.observed
    room.joining = 0
    room.sessions["s-1"] = make_session(room)
    assert not room.idle and not room.observed


def test_merge_remote_keeps_the_last_word_per_session():
    room = Room(ROOM)
    a, b = {"sessionId": "a", "latencyMs": 1}, {"sessionId": "b", "latencyMs": 2}
    room.merge_remote({"j": [a], "l": {}, "u": [b]})
    assert room.joined == {"a": a} and room.updated == {"b": b} and room.left == {}
    a2 = {"sessionId": "a", "latencyMs": 5}
    room.merge_remote({"u": [a2]})  # an update of a join in the same window stays a join
    assert room.joined == {"a": a2}
    room.merge_remote({"l": {"a": "leave", "b": "timeout"}})
    assert room.joined == {} and room.updated == {} and room.left == {"a": "leave", "b": "timeout"}
    room.merge_remote({"u": [b]})  # a late update of a session that left is dropped
    assert room.updated == {}
    room.merge_remote({"j": [a]})  # joined again: the leave is superseded
    assert room.joined == {"a": a} and "a" not in room.left


def test_room_sample_event_and_emptiness():
    sample = RoomSample(minute(125_000))
    assert sample.bucket == 120_000 and sample.empty
    sample.online_sum, sample.online_samples, sample.online_max = 3, 2, 2
    assert not sample.empty
    event = sample.event(Room(ROOM), "n-1")
    assert event["kind"] == events.ROOM_SAMPLE and event["bucket"] == 120_000 and event["node_id"] == "n-1"


def test_room_sample_keeps_the_count_of_each_second():
    sample = RoomSample(120_000)
    sample.add_online(2, 123_400)  # second 3: nothing before it to carry
    sample.add_online(4, 126_100)  # a late tick: seconds 4 and 5 held the count of second 3
    sample.add_online(5, 126_900)  # two ticks in second 6: the later one stands
    assert list(sample.online_secs[:8]) == [0, 0, 0, 2, 2, 2, 5, 0]
    sample.add_online(1, 250_000)  # past the minute's end: its last second (5 held until then)
    assert list(sample.online_secs[6:]) == [5] * 53 + [1]
    assert (sample.online_sum, sample.online_samples, sample.online_max) == (12, 4, 5)
    event = sample.event(Room(ROOM), "n-1")
    assert event["online_secs"] == ",".join(map(str, sample.online_secs))
    # A minute that follows a sampled one starts from the count the last one ended with.
    after = RoomSample(180_000, held=3)
    after.add_online(3, 181_200)
    assert list(after.online_secs[:3]) == [3, 3, 0]
    assert RoomSample(0).event(Room(ROOM), "n-1")["online_secs"] == ""  # trailing zeros left out


def test_subscription_numbers_its_messages():
    class Stomp:
        def __init__(self):
            self.sent = []

        def send_json(self, destination, payload, sub_id=None):
            self.sent.append((destination, dict(payload), sub_id))
            return True

    class Client:
        def __init__(self):
            self.stomp, self.pushes = Stomp(), 0

        def push(self):
            self.pushes += 1

    client = Client()
    sub = Subscription(client, "sub-1")
    sub.send("/topic/rooms", {"type": "ROOMS"})
    sub.send("/topic/rooms", {"type": "ROOMS"})
    assert [p["seq"] for _, p, _ in client.stomp.sent] == [1, 2]
    assert client.stomp.sent[0][2] == "sub-1" and client.pushes == 2


def test_public_metrics_hides_the_tenant():
    metrics = {"roomId": "r", "tenant": "acme", "online": 1}
    assert public_metrics(metrics) == {"roomId": "r", "online": 1}
    assert metrics["tenant"] == "acme"  # a copy
