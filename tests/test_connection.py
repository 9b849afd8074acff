"""connection.ClientConnection without a socket: bytes in, frames out, a real presence and hot store.

The host is what a node gives a connection (``connection.Host``); the writer stands for the
transport (``connection.Writer``) and keeps what it was handed.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from spidi_core import FrameParserPy, serialize_frame
from spidi_server.auth import TokenVerifier
from spidi_server.connection import ClientConnection
from spidi_server.metrics import NodeMetrics
from spidi_server.presence import Presence
from spidi_server.protocol import destinations as dest
from spidi_server.protocol.stomp import StompConnection
from spidi_server.rooms import RoomCatalog
from spidi_server.stores.client import connect
from spidi_server.stores.hot_store import HotStore

from .conftest import token_for


class Host:
    def __init__(self, settings, store):
        self.settings = settings
        self.metrics = NodeMetrics()
        self.presence = Presence(settings, store, RoomCatalog(settings), self.metrics, "conn-node")
        self._verifier = TokenVerifier(settings)

    def new_stomp_connection(self, conn_id, query_token):
        return StompConnection(self._verifier, conn_id, query_token=query_token)


class Writer:
    def __init__(self):
        self.parser = FrameParserPy()
        self.frames: list = []
        self.closed: tuple | None = None
        self.backlog = 0

    def write(self, chunks):
        for chunk in chunks:
            self.frames.extend(self.parser.feed(chunk))

    def buffered(self):
        return self.backlog

    def close(self, code, reason, discard=False):
        self.closed = (code, reason, discard)

    def take(self, command: str | None = None) -> list:
        frames, self.frames = self.frames, []
        return [f for f in frames if command in (None, f.command)]


async def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return bool(predicate())


@pytest.fixture
async def host(settings, redis_url):
    store = HotStore(connect(redis_url), node_id="conn-node")
    await store.start()
    yield Host(settings, store)
    await store.close()


def frame(command: str, body: dict | None = None, **headers) -> bytes:
    return serialize_frame(command, headers, orjson.dumps(body) if body is not None else b"")


async def open_connection(host, user="ann", role="spidi:user") -> tuple[ClientConnection, Writer]:
    writer = Writer()
    conn = ClientConnection(host, writer, "c-1", "10.0.0.9", token_for(host.settings, user, role))
    conn.receive(frame("CONNECT", **{"accept-version": "1.2"}))
    conn.receive(frame("SUBSCRIBE", id="s", destination=dest.USER_SESSION))
    conn.receive(frame("SUBSCRIBE", id="e", destination=dest.USER_ERRORS))
    assert conn.backlog is None  # the connection's own queues: answered at once, nothing awaited
    return conn, writer


def bodies(frames) -> list[dict]:
    return [orjson.loads(f.body) for f in frames]


HELLO = {"roomCode": "lobby", "clientId": "t", "appVersion": "1"}


async def test_hello_then_heartbeat_in_one_message_keep_their_order(host):
    conn, writer = await open_connection(host)
    assert [f.command for f in writer.take()] == ["CONNECTED"]
    data = frame("SEND", HELLO, destination=dest.APP_HELLO, receipt="h")
    conn.receive(data)
    assert await wait_for(lambda: conn.backlog is None and conn.sessions)
    (sid,) = [s.session_id for s in conn.sessions]
    beat = frame("SEND", {"sessionId": sid, "latencyMs": 7}, destination=dest.APP_HEARTBEAT, receipt="b")
    # A HELLO and a heartbeat for the session it is about to get cannot share a message, but a
    # heartbeat right behind a second HELLO waits for it, in order.
    conn.receive(
        frame("SEND", {**HELLO, "roomCode": "other"}, destination=dest.APP_HELLO, receipt="h2") + beat
    )
    assert await wait_for(lambda: conn.backlog is None and len(conn.sessions) == 2)
    frames = writer.take()
    receipts = [f.headers["receipt-id"] for f in frames if f.command == "RECEIPT"]
    assert receipts == ["h", "h2", "b"]
    welcomes = [b for b in bodies(f for f in frames if f.command == "MESSAGE") if b["type"] == "WELCOME"]
    assert [w["roomCode"] for w in welcomes] == ["lobby", "other"]
    assert host.presence.sessions[sid].heartbeats == 1 and host.metrics.frame_counts[0] == 3


async def test_private_queue_subscribes_are_answered_in_the_call_and_in_order(host):
    writer = Writer()
    conn = ClientConnection(host, writer, "c-2", "10.0.0.9", token_for(host.settings, "mo", "spidi:monitor"))
    conn.receive(
        frame("CONNECT", **{"accept-version": "1.2"})
        + frame("SUBSCRIBE", id="s", destination=dest.USER_SESSION, receipt="r1")
        + frame("SUBSCRIBE", id="e", destination=dest.USER_ERRORS, receipt="r2")
        + frame("SUBSCRIBE", id="x", destination=dest.room_metrics("lobby"), receipt="r3")
    )
    # No task for the first two: their receipts are out before receive returns; the room's
    # SUBSCRIBE reads Redis, so its receipt follows once that is done.
    frames = writer.take()
    assert [f.command for f in frames] == ["CONNECTED", "RECEIPT", "RECEIPT"]
    assert [f.headers["receipt-id"] for f in frames[1:]] == ["r1", "r2"]
    assert conn.backlog is not None
    assert await wait_for(lambda: conn.backlog is None)
    frames = writer.take()
    assert orjson.loads(frames[0].body)["type"] == "ROOM_METRICS"  # the snapshot, then the receipt
    assert frames[1].headers["receipt-id"] == "r3"
    assert host.metrics.frame_counts[1] == 3


async def test_an_app_error_is_answered_and_the_connection_stays(host):
    conn, writer = await open_connection(host)
    writer.take()
    conn.receive(frame("SEND", {"sessionId": "nope"}, destination=dest.APP_HEARTBEAT, receipt="r"))
    error, receipt = writer.take()
    payload = orjson.loads(error.body)
    assert error.headers["subscription"] == "e" and payload["code"] == "UNKNOWN_SESSION"
    assert payload["message"] == "no session 'nope' on this connection" and payload["ref"] == "r"
    assert receipt.headers["receipt-id"] == "r" and writer.closed is None
    assert host.metrics.errors.labels(code="UNKNOWN_SESSION")._value.get() == 1


async def test_hello_refused_for_a_monitor(host):
    conn, writer = await open_connection(host, "mon", "spidi:monitor")
    writer.take()
    conn.receive(frame("SEND", {"roomCode": "!"}, destination=dest.APP_HELLO, receipt="h"))
    assert await wait_for(lambda: len(writer.frames) == 2)
    error, receipt = writer.take()
    assert orjson.loads(error.body)["code"] == "FORBIDDEN" and receipt.headers["receipt-id"] == "h"


async def test_a_refused_subscribe_is_forgotten_by_the_protocol(host):
    conn, writer = await open_connection(host)  # a user may not observe rooms
    writer.take()
    conn.receive(frame("SUBSCRIBE", id="r", destination=dest.room_roster("lobby"), receipt="sub"))
    assert await wait_for(lambda: conn.backlog is None and len(writer.frames) == 2)
    error, receipt = writer.take()
    assert orjson.loads(error.body)["code"] == "FORBIDDEN" and "r" not in conn.stomp.subscriptions


async def test_leave_unsubscribe_and_disconnect(host):
    conn, writer = await open_connection(host)
    conn.receive(frame("SEND", HELLO, destination=dest.APP_HELLO))
    assert await wait_for(lambda: conn.backlog is None and conn.sessions)
    (sid,) = [s.session_id for s in conn.sessions]
    conn.receive(frame("SEND", {"sessionId": sid}, destination=dest.APP_LEAVE, receipt="l"))
    assert sid not in host.presence.sessions and not conn.sessions
    conn.receive(frame("UNSUBSCRIBE", id="s", receipt="u") + frame("DISCONNECT", receipt="bye"))
    receipts = [f.headers["receipt-id"] for f in writer.take("RECEIPT")]
    assert receipts == ["l", "u", "bye"] and conn.clean and writer.closed == (1000, "bye", False)
    conn.closed()
    assert host.metrics.frame_counts[2] == 1 and host.metrics.frame_counts[4] == 1


async def test_abrupt_close_keeps_the_session_for_the_grace_period(host):
    conn, _ = await open_connection(host)
    conn.receive(frame("SEND", HELLO, destination=dest.APP_HELLO))
    assert await wait_for(lambda: conn.backlog is None and conn.sessions)
    (session,) = conn.sessions
    conn.closed()
    assert host.presence.sessions[session.session_id].client is None


async def test_a_protocol_error_closes_with_its_code(host):
    conn, writer = await open_connection(host)
    writer.take()
    conn.receive(frame("BOGUS"))
    (error,) = writer.take()
    assert error.command == "ERROR" and writer.closed == (1002, "unknown command 'BOGUS'", False)
    assert host.metrics.errors.labels(code="PROTOCOL")._value.get() == 1


async def test_a_client_that_does_not_read_is_cut(host):
    conn, writer = await open_connection(host)
    writer.backlog = host.settings.max_send_buffer + 1
    conn.receive(frame("SEND", {"sessionId": "x"}, destination=dest.APP_HEARTBEAT))  # an error to send
    assert writer.closed == (1008, "slow consumer", True)
    assert host.metrics.refusals.labels(reason="slow_consumer")._value.get() == 1


# -- the heartbeat lane ------------------------------------------------------------------------


def beat_frame(sid: str, latency, receipt: str | None = "b") -> bytes:
    headers = {"destination": dest.APP_HEARTBEAT}
    if receipt is not None:
        headers["receipt"] = receipt
    return frame("SEND", {"sessionId": sid, "latencyMs": latency}, **headers)


async def joined(host, **hello) -> tuple[ClientConnection, Writer, str]:
    conn, writer = await open_connection(host)
    conn.receive(frame("SEND", {**HELLO, **hello}, destination=dest.APP_HELLO))
    assert await wait_for(lambda: conn.backlog is None and conn.sessions)
    (session,) = conn.sessions
    writer.take()
    return conn, writer, session.session_id


async def test_the_lane_answers_exactly_while_the_connection_is_ready(host):
    lane = host.presence.lane
    conn, writer, sid = await joined(host)
    # Ready: answered in the lane with the full path's RECEIPT, byte for byte.
    assert lane.offer(conn.lane_key, beat_frame(sid, 5)) == serialize_frame("RECEIPT", {"receipt-id": "b"})
    # A HELLO waiting for Redis: what follows it must wait in order, so the lane stands aside.
    conn.receive(frame("SEND", {**HELLO, "roomCode": "other"}, destination=dest.APP_HELLO))
    assert conn.backlog is not None and lane.offer(conn.lane_key, beat_frame(sid, 5)) is None
    assert await wait_for(lambda: conn.backlog is None)
    assert lane.offer(conn.lane_key, beat_frame(sid, 5)) is not None
    # Half a frame in the parser: the next message continues it, the lane cannot read it alone.
    conn.receive(b"SEND\ndestination:/app/heart")
    assert lane.offer(conn.lane_key, beat_frame(sid, 5)) is None
    conn.receive(b"beat\n\n" + orjson.dumps({"sessionId": sid, "latencyMs": 5}) + b"\0")
    assert lane.offer(conn.lane_key, beat_frame(sid, 5)) is not None
    conn.closed()
    assert lane.offer(conn.lane_key, beat_frame(sid, 5)) is None


async def test_a_closing_connection_is_not_answered_by_the_lane(host):
    conn, writer, sid = await joined(host)
    conn.close(1002, "STOMP heart-beat timeout: nothing received", "heart-beat timeout")
    assert writer.closed == (1002, "heart-beat timeout", False)
    assert host.presence.lane.offer(conn.lane_key, beat_frame(sid, 5)) is None


async def test_figures_add_up_whichever_path_the_heartbeats_took(host):
    lane = host.presence.lane
    conn, writer, sid = await joined(host)
    conn.receive(beat_frame(sid, 40.0))  # the full path
    assert lane.offer(conn.lane_key, beat_frame(sid, 2, receipt=None)) == b""  # the lane, no receipt
    conn.receive(beat_frame(sid, 9.5))
    session = host.presence.sessions[sid]
    assert (session.heartbeats, session.latency_ms, session.latency_min, session.latency_max) == (
        3,
        9.5,
        2,
        40.0,
    )
    assert session.latency_sum == 51.5 and [f.command for f in writer.take()] == ["RECEIPT", "RECEIPT"]
    hot = host.metrics.hot
    assert hot.heartbeats == 3 and hot.latency_sum == 51.5 and sum(hot.latency_hist) == 3
    # CONNECT is counted apart; HELLO and the three heartbeat SENDs, the lane's included.
    assert host.metrics.frame_counts[0] == 4
    host.presence.sample_rooms()
    sample = host.presence.rooms[session.room.room_id].sample
    assert (sample.latency_count, sample.latency_sum) == (3, 51.5)
    # The newest beat is what reaches Redis, whichever path brought it.
    assert lane.offer(conn.lane_key, beat_frame(sid, 77)) is not None
    assert await host.presence.store.flush()
    assert lane.pending() == 0 and session.latency_ms == 77


@pytest.fixture
async def limited_host(settings, redis_url):
    import dataclasses

    store = HotStore(connect(redis_url), node_id="conn-node")
    await store.start()
    # 8 frames at once, refilled at one frame every 1,000 s: what a test spends is gone.
    yield Host(dataclasses.replace(settings, max_message_rate=0.001, max_message_burst=8), store)
    await store.close()


async def test_the_rate_limit_is_one_bucket_for_the_lane_and_the_full_path(limited_host):
    host = limited_host
    lane = host.presence.lane
    conn, writer, sid = await joined(host)  # CONNECT, two SUBSCRIBEs and HELLO: 4 of 8 tokens
    answered = [lane.offer(conn.lane_key, beat_frame(sid, 1)) for _ in range(5)]
    assert [a is not None for a in answered] == [True, True, True, True, False]
    # The lane spent the bucket: the full path has nothing left either.
    conn.receive(beat_frame(sid, 1))
    (error,) = writer.take()
    assert error.command == "ERROR" and "message rate limit exceeded" in error.headers["message"]
    assert error.headers["code"] == "RATE_LIMITED"
    assert writer.closed[0] == 1008
    assert host.metrics.refusals.labels(reason="message_rate")._value.get() == 1
