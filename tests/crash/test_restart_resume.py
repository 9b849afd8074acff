"""``spidi serve`` restarted on its data directory, by SIGTERM or by kill -9: clients resume.

Real processes on the test Redis, no node id configured: the node keeps the one it made up in
``<data_dir>/node_id``, so after a kill -9 it takes its sessions back under the same id; after a
SIGTERM it has handed them to the grace period (close code 1012). Either way the client's HELLO
with ``resumeSessionId`` resumes the same session and a monitor sees no leave and no join.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from spidi_server.rooms import room_id_for
from spidi_server.settings import Settings
from spidi_server.stores import keys

from ..conftest import TEST_SECRET, token_for
from ..stomp_client import connected
from ..test_cli import free_port
from .test_reconnect_storm import kill_group, start_node

TIMING = {"SPIDI_NODE_ID": "", "SPIDI_GRACE_PERIOD_MS": "20000"}


async def _polled(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
@pytest.mark.timeout(90)
async def test_restarted_node_lets_its_clients_resume(stop, redis_url, redis_sync, tmp_path):
    settings = Settings(jwt_secret=TEST_SECRET)
    port, ops_port = free_port(), free_port()
    data_dir = str(tmp_path / "data")
    url = f"ws://127.0.0.1:{port}/ws"
    room_id = room_id_for("default", "deploys")
    roster = "/topic/rooms/deploys/roster"
    procs, clients = [], []
    try:
        procs.append(start_node(redis_url, port, ops_port, data_dir, **TIMING))
        node_id = (Path(data_dir) / "node_id").read_text().strip()
        assert node_id
        user = await connected(url, token_for(settings, "ann", "spidi:user"))
        clients.append(user)
        sid = (await user.hello("deploys", "phone"))["sessionId"]
        await _polled(lambda: redis_sync.zscore(keys.room_online(room_id), sid), 5, "the session in Redis")
        await _polled(lambda: redis_sync.hget(keys.node_sessions(node_id), sid), 5, "the node's index")

        if stop == "sigterm":
            procs[0].send_signal(signal.SIGTERM)
            await asyncio.wait_for(user.closed.wait(), 10)
            assert user.ws.close_code == 1012
            assert procs[0].wait(15) == 0
            assert redis_sync.zscore(keys.HANDOFF, keys.handoff_member(room_id, sid)) is not None
        else:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
        procs.append(start_node(redis_url, port, ops_port, data_dir, **TIMING))
        assert (Path(data_dir) / "node_id").read_text().strip() == node_id  # same id again

        mon = await connected(url, token_for(settings, "mon", "spidi:monitor"), False)
        clients.append(mon)
        await mon.subscribe(roster)
        snapshot = await mon.json(roster, 5, "ROOM_ROSTER")
        assert [u["sessionId"] for u in snapshot["users"]] == [sid]

        back = await connected(url, token_for(settings, "ann", "spidi:user"))
        clients.append(back)
        welcome = await back.hello("deploys", "phone", resumeSessionId=sid)
        assert (welcome["sessionId"], welcome["resumed"]) == (sid, True)
        await back.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 31})
        while True:
            delta = await mon.json(roster, 5, "ROOM_ROSTER")
            assert not delta["joined"] and not delta["left"], delta
            if delta["updated"]:
                break
        assert delta["updated"][0]["sessionId"] == sid
        assert redis_sync.zcard(keys.HANDOFF) == 0
        ends = [f for _, f in redis_sync.xrange(keys.EVENTS_STREAM) if f["kind"] == "session_ended"]
        assert ends == []
    finally:
        for c in clients:
            await c.close()
        for p in procs:
            kill_group(p)
