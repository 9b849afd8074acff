"""Two processes' worth of nodes on one Redis: a subscriber on one sees the whole room."""

from __future__ import annotations

import asyncio

from .conftest import token_for
from .stomp_client import connected


async def test_monitor_on_one_node_sees_sessions_of_the_other(node_factory):
    a = await node_factory(node_id="node-a")
    b = await node_factory(node_id="node-b")
    mon = await connected(a.ws_url, token_for(a.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms/shared/roster")
    snapshot = await mon.json("/topic/rooms/shared/roster")
    await mon.subscribe("/topic/rooms/shared/metrics")
    await mon.json("/topic/rooms/shared/metrics")
    assert snapshot["users"] == [] and snapshot["seq"] == 1

    on_a = await connected(a.ws_url, token_for(a.settings, "ann", "spidi:user"))
    on_b = await connected(b.ws_url, token_for(b.settings, "bob", "spidi:user"))
    sa = (await on_a.hello("shared", "phone-a"))["sessionId"]
    sb = (await on_b.hello("shared", "phone-b", device="Pixel"))["sessionId"]
    joined, seqs = {}, []
    while len(joined) < 2:
        delta = await mon.json("/topic/rooms/shared/roster")
        seqs.append(delta["seq"])
        joined.update({e["sessionId"]: e for e in delta["joined"]})
    assert set(joined) == {sa, sb} and joined[sb]["device"] == "Pixel" and joined[sb]["userId"] == "bob"

    await on_b.app("/app/heartbeat", {"sessionId": sb, "latencyMs": 88})
    while True:
        delta = await mon.json("/topic/rooms/shared/roster")
        seqs.append(delta["seq"])
        if delta["updated"]:
            break
    assert delta["updated"][0]["sessionId"] == sb and delta["updated"][0]["latencyMs"] == 88
    # Only bob reported a latency; the metrics message after his heartbeat says so (earlier ones
    # still queued in the client are skipped).
    while (metrics := await mon.json("/topic/rooms/shared/metrics"))["avgLatencyMs"] != 88.0:
        pass
    assert metrics["online"] == 2 and metrics["users"] == 2

    await on_b.app("/app/leave", {"sessionId": sb})
    while True:
        delta = await mon.json("/topic/rooms/shared/roster")
        seqs.append(delta["seq"])
        if delta["left"]:
            break
    assert delta["left"] == [{"sessionId": sb, "reason": "leave"}]
    assert seqs == list(range(2, 2 + len(seqs)))  # gap-free per subscription

    # A snapshot taken on node B shows node A's session.
    mon_b = await connected(b.ws_url, token_for(b.settings, "mon2", "spidi:monitor"))
    await mon_b.subscribe("/topic/rooms/shared/roster")
    assert [u["sessionId"] for u in (await mon_b.json("/topic/rooms/shared/roster"))["users"]] == [sa]
    for c in (mon, mon_b, on_a, on_b):
        await c.close()


async def test_watch_claims_reach_a_node_that_starts_later(node_factory):
    a = await node_factory(node_id="node-a")
    mon = await connected(a.ws_url, token_for(a.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms/late/roster")
    await mon.json("/topic/rooms/late/roster")
    b = await node_factory(node_id="node-b")  # learns the watched rooms when it starts
    on_b = await connected(b.ws_url, token_for(b.settings, "bob", "spidi:user"))
    sid = (await on_b.hello("late"))["sessionId"]
    delta = await mon.json("/topic/rooms/late/roster")
    assert [e["sessionId"] for e in delta["joined"]] == [sid]
    await asyncio.gather(mon.close(), on_b.close())


async def test_a_join_made_before_the_node_heard_of_the_watcher_still_reaches_it(node_factory):
    # The watch announcement can arrive after a join (on a Redis Cluster it crosses the cluster
    # bus): node A holds it back here, so A's session joins a room A does not know is watched.
    a = await node_factory(node_id="node-a")
    b = await node_factory(node_id="node-b", metrics_interval_ms=1000)  # B's windows: 1 s
    held: list = []
    deliver = a.presence.watched_changed
    a.presence.watched_changed = held.append
    a.presence.watched = set(a.presence.watched)  # (the fanout updates its own set in place)
    mon = await connected(b.ws_url, token_for(b.settings, "mon", "spidi:monitor"))
    await mon.subscribe("/topic/rooms/late-news/roster")
    assert (await mon.json("/topic/rooms/late-news/roster"))["users"] == []
    on_a = await connected(a.ws_url, token_for(a.settings, "ann", "spidi:user"))
    sid = (await on_a.hello("late-news"))["sessionId"]
    (room,) = [r for r in a.presence.rooms.values() if sid in r.sessions]
    assert not room.watched  # A did not publish the join
    on_b = await connected(b.ws_url, token_for(b.settings, "bob", "spidi:user"))
    sb = (await on_b.hello("late-news"))["sessionId"]
    delta = await mon.json("/topic/rooms/late-news/roster")  # B's window opens now, for 1 s
    assert [e["sessionId"] for e in delta["joined"]] == [sb]

    a.presence.watched_changed = deliver
    deliver(held[-1])  # A hears of the watcher now: it re-announces its sessions of the room
    await a.store.flush()
    # A leave right behind, in the same window of B: neither may swallow the other (the
    # re-announced join may be a session a subscriber's snapshot already showed).
    await on_a.app("/app/leave", {"sessionId": sid}, receipt="bye")
    await on_a.next(command="RECEIPT")
    seen = {"joined": set(), "left": {}}
    while sid not in seen["left"]:
        delta = await mon.json("/topic/rooms/late-news/roster")
        seen["joined"] |= {e["sessionId"] for e in delta["joined"]}
        seen["left"].update({e["sessionId"]: e["reason"] for e in delta["left"]})
    assert seen["left"] == {sid: "leave"}
    await asyncio.gather(mon.close(), on_a.close(), on_b.close())
