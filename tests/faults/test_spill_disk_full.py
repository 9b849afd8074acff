"""No room on disk for the spill file: the node says so once, counts what it drops, keeps serving,
and rebuilds Redis from its live sessions once Redis is back."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from spidi_server.rooms import room_id_for

from .conftest import Member, expected_view, get_json, matches, metric, redis_view, wait_until

ROOM = "full"


@pytest.mark.hardening(
    "fault",
    "Redis stopped with a 100-operation memory buffer and the spill file on a full disk (/dev/full: ENOSPC); "
    "a client leaves and another joins meanwhile",
    "spill_failed logged once with the path; spidi_spill_failures_total and spidi_redis_dropped_ops_total "
    "count, readiness shows the drops; clients stay connected and HELLO admits; once Redis is back the node "
    "rebuilds it: the newcomer is there, the leaver whose LEAVE was dropped is gone",
)
async def test_spill_on_a_full_disk_drops_counts_and_keeps_serving(own_redis, tmp_path, caplog, node_factory):
    caplog.set_level(logging.INFO, logger="spidi")
    server = own_redis(persistent=True)  # Redis keeps its data: the dropped LEAVE leaves a ghost there
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    spill_file = spill_dir / "redis-diskfull.jsonl"
    spill_file.symlink_to("/dev/full")  # every write fails with ENOSPC
    node = await node_factory(
        redis_url=server.url,
        node_id="diskfull",
        redis_spill_dir=str(spill_dir),
        redis_buffer_max_ops=100,
        checkpoint_interval_s=0.2,
        heartbeat_interval_ms=1000,
        heartbeat_timeout_ms=5000,
        grace_period_ms=0,
        alerting=False,
    )
    ready = f"{node.ops.url}/health/ready"
    room_id = room_id_for("default", ROOM)
    members = [await Member.join(node, ROOM, f"f{i}") for i in range(10)]
    for m in members:
        m.start(0.1)
    await wait_until(lambda: _members_in_redis(server.url, node), 5, what="the members in Redis")

    await asyncio.to_thread(server.stop)
    await asyncio.sleep(0.3)
    leaver = members.pop(0)
    await leaver.leave()  # its LEAVE is among the oldest buffered writes: the first to be dropped
    newcomer = await Member.join(node, ROOM, "late")
    newcomer.start(0.1)
    members.append(newcomer)
    await wait_until(
        lambda: node.store.spill.failures >= 3 and node.store.dropped >= 150, 15, 0.1, "three failed spills"
    )
    status, body = await get_json(ready)
    r = body["components"]["redis"]
    assert status == 503 and r["status"] == "DOWN" and r["dropped"] >= 150 and r["spilled"] == 0, r
    assert await metric(node, "spidi_spill_failures_total") >= 3
    assert await metric(node, "spidi_redis_dropped_ops_total") >= 150
    failed = [rec for rec in caplog.records if rec.getMessage() == "spill_failed"]
    assert len(failed) == 1 and failed[0].path == str(spill_file) and "space" in failed[0].error.lower()
    assert all(m.connected and m.sid in node.presence.sessions for m in members)
    assert os.readlink(spill_file) == "/dev/full"  # left alone

    await asyncio.to_thread(server.start)
    for m in members:
        await m.stop()
    took = await wait_until(
        lambda: matches(
            redis_view(server.url, room_id, node.node_id), expected_view(node, ROOM), node.node_id
        ),
        10,
    )
    view = redis_view(server.url, room_id, node.node_id)
    assert newcomer.sid in view["online"] and leaver.sid not in view["online"]
    assert leaver.sid not in view["node"] and leaver.user not in view["users"]
    assert await metric(node, "spidi_redis_reasserts_total") >= 1
    assert any(rec.getMessage() == "ghost_sessions_removed" for rec in caplog.records)
    _, body = await get_json(ready)
    r = body["components"]["redis"]
    assert (
        r["status"] == "UP"
        and r["mode"] == "ok"
        and r["buffered"] < 100
        and r["dropped"] == node.store.dropped
    )
    for m in members:
        await m.leave()
    print(
        f"\nspill on a full disk: {node.store.spill.failures} failed chunks, {node.store.dropped} writes dropped; "
        f"Redis rebuilt {took * 1000:.0f} ms after it answered"
    )


def _members_in_redis(url: str, node) -> bool:
    """The room's members are in Redis (their scores move while they beat)."""
    view = redis_view(url, room_id_for("default", ROOM), node.node_id)
    return set(view["online"]) == set(expected_view(node, ROOM)["online"])
