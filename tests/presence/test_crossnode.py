"""presence.crossnode: what this node publishes for watched rooms, and when.

The fan-out here is a recorder of ``publish`` calls (the ``crossnode.Fanout`` protocol): the
Redis side of the fan-out is tested in tests/test_two_nodes.py.
"""

from __future__ import annotations

import itertools
import time

from spidi_server.presence.crossnode import OUT_WINDOW_S
from spidi_server.rooms import room_id_for

from .conftest import wait_for

LOBBY = room_id_for("default", "lobby")


class RecordingFanout:
    def __init__(self):
        self.published: list[tuple] = []
        self.times: list[float] = []  # time.monotonic() of each publish
        self.watching: set[str] = set()

    def publish(self, room_id, joined, left, updated):
        self.published.append((room_id, joined, dict(left), updated))
        self.times.append(time.monotonic())

    async def watch(self, room_id):
        self.watching.add(room_id)

    async def unwatch(self, room_id):
        self.watching.discard(room_id)


async def joined(presence, client) -> str:
    await presence.hello(client, {"roomCode": "lobby", "clientId": "t", "appVersion": "1"})
    return next(iter(client.sessions)).session_id


async def test_nothing_is_published_for_an_unwatched_room(presence, client_factory):
    presence.fanout = fanout = RecordingFanout()
    client = client_factory()
    sid = await joined(presence, client)
    presence.heartbeat(client, sid, 5.0)
    presence.leave(client, sid)
    assert LOBBY not in presence.rooms and fanout.published == []


async def test_changes_of_a_watched_room_go_out_at_most_once_per_window(presence, client_factory):
    presence.fanout = fanout = RecordingFanout()
    presence.watched_changed({LOBBY})
    client = client_factory()
    sid = await joined(presence, client)
    presence.heartbeat(client, sid, 5.0)
    # The join goes out at once; the heartbeat's update with it or in the next window, as the
    # loop orders the drain and the publish (asyncio's and uvloop's differ).
    assert await wait_for(lambda: any(updated for *_, updated in fanout.published))
    assert [e["sessionId"] for _, joined_entries, _, _ in fanout.published for e in joined_entries] == [sid]
    updates = [e for *_, updated in fanout.published for e in updated]
    assert [e["sessionId"] for e in updates] == [sid] and updates[0]["latencyMs"] == 5.0
    assert all(left == {} for _, _, left, _ in fanout.published)
    presence.leave(client, sid)
    assert await wait_for(lambda: fanout.published[-1][2] == {sid: "leave"})
    assert fanout.published[-1][1] == []
    gaps = [later - earlier for earlier, later in itertools.pairwise(fanout.times)]
    assert all(gap >= OUT_WINDOW_S - 0.005 for gap in gaps), gaps


async def test_a_join_and_a_leave_in_a_quiet_watched_room_go_out_as_they_happen(presence, client_factory):
    presence.fanout = fanout = RecordingFanout()
    presence.watched_changed({LOBBY})
    client = client_factory()
    sid = await joined(presence, client)
    # Published with the admission itself, not from a timer a turn of the loop later.
    assert [[e["sessionId"] for e in j] for _, j, _, _ in fanout.published] == [[sid]]
    presence.rooms[LOBBY].out_published_at = 0.0  # the join's window is over
    presence.leave(client, sid)
    assert fanout.published[-1][1:3] == ([], {sid: "leave"})


async def test_a_room_that_becomes_watched_reannounces_its_sessions(presence, client_factory):
    presence.fanout = fanout = RecordingFanout()
    client = client_factory()
    sid = await joined(presence, client)
    assert not presence.rooms[LOBBY].watched
    presence.heartbeat(client, sid, 5.0)
    assert not presence.drain.urgent()  # heartbeats may wait for the heartbeat interval
    presence.watched_changed({LOBBY})
    assert presence.watched == {LOBBY} and presence.rooms[LOBBY].watched
    assert presence.drain.urgent()  # its roster updates ride on the heartbeats: no waiting
    assert await wait_for(lambda: fanout.published)
    assert [e["sessionId"] for e in fanout.published[0][1]] == [sid]
    presence.heartbeat(client, sid, 6.0)
    presence.watched_changed(set())
    assert not presence.rooms[LOBBY].watched and not presence.drain.urgent()


async def test_only_a_watched_room_of_this_node_makes_heartbeats_urgent(presence, client_factory):
    presence.watched_changed({room_id_for("default", "elsewhere")})  # watched, not here
    client = client_factory()
    sid = await joined(presence, client)
    presence.heartbeat(client, sid, 5.0)
    assert not presence.drain.urgent()
    presence.watched_changed({LOBBY, room_id_for("default", "elsewhere")})
    assert presence.drain.urgent()  # a beat of a watched room waits
    presence.leave(client, sid)  # the room is dropped with its last session
    assert LOBBY not in presence.rooms and not presence.drain.urgent()


async def test_a_subscriber_watches_and_the_last_one_unwatches(presence, client_factory):
    from spidi_server.protocol import destinations as dest

    presence.fanout = fanout = RecordingFanout()
    monitor = client_factory("mon", "spidi:monitor")
    await presence.subscribe(monitor, "r", dest.parse_subscription(dest.room_roster("lobby")))
    assert fanout.watching == {LOBBY}
    presence.unsubscribe(monitor, "r")
    assert await wait_for(lambda: not fanout.watching)
