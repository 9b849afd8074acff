"""A standard STOMP client (stomp.py's WebSocket transport) against a real node."""

from __future__ import annotations

import asyncio
import json
import queue

import stomp

from .conftest import token_for


class Collector(stomp.ConnectionListener):
    """Collects every frame stomp.py hands its listener."""

    def __init__(self):
        self.messages: queue.Queue = queue.Queue()
        self.receipts: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()

    def on_message(self, frame):
        self.messages.put((frame.headers.get("destination"), json.loads(frame.body)))

    def on_receipt(self, frame):
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame):
        self.errors.put(frame)

    def next_message(self, destination: str, timeout: float = 5.0) -> dict:
        while True:
            dest, payload = self.messages.get(timeout=timeout)
            if dest == destination:
                return payload


def _connect(port: int, token: str, **kwargs) -> tuple[stomp.WSStompConnection, Collector]:
    conn = stomp.WSStompConnection([("127.0.0.1", port)], ws_path="/ws", timeout=5, **kwargs)
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(passcode=token, wait=True, headers={"host": "spidi"})
    return conn, listener


def _scenario(port: int, user_token: str, monitor_token: str) -> dict:
    mon, mon_events = _connect(port, monitor_token)
    mon.subscribe("/topic/rooms/stomppy/roster", id="roster")
    mon.subscribe("/topic/rooms/stomppy/metrics", id="metrics")
    snapshot = mon_events.next_message("/topic/rooms/stomppy/roster")
    assert snapshot["full"] is True and snapshot["users"] == []

    conn, events = _connect(port, user_token, heartbeats=(1000, 1000))
    conn.subscribe("/user/queue/session", id="session")
    conn.subscribe("/user/queue/errors", id="errors")
    hello = {
        "roomCode": "stomppy",
        "clientId": "py-1",
        "appVersion": "9.0",
        "device": "server",
        "os": "Linux",
    }
    conn.send(
        "/app/hello", json.dumps(hello), content_type="application/json", headers={"receipt": "hello-1"}
    )
    welcome = events.next_message("/user/queue/session")
    assert events.receipts.get(timeout=5) == "hello-1"
    sid = welcome["sessionId"]
    conn.send(
        "/app/heartbeat",
        json.dumps({"sessionId": sid, "latencyMs": 33}),
        content_type="application/json",
        headers={"receipt": "hb-1"},
    )
    assert events.receipts.get(timeout=5) == "hb-1"
    joined = mon_events.next_message("/topic/rooms/stomppy/roster")
    while True:
        metrics = mon_events.next_message("/topic/rooms/stomppy/metrics")
        if metrics["online"] == 1 and metrics["avgLatencyMs"] == 33:
            break
    conn.send("/app/hello", "{oops", content_type="application/json")
    error = events.next_message("/user/queue/errors")
    conn.send("/app/leave", json.dumps({"sessionId": sid}), content_type="application/json")
    left = None
    while not left:
        left = mon_events.next_message("/topic/rooms/stomppy/roster")["left"]
    conn.disconnect()
    mon.disconnect()
    return {"welcome": welcome, "joined": joined, "metrics": metrics, "error": error, "left": left}


async def test_stomp_py_websocket_client(node):
    user = token_for(node.settings, "py-user", "spidi:user")
    mon = token_for(node.settings, "py-mon", "spidi:monitor")
    port = node.transport.port
    result = await asyncio.to_thread(_scenario, port, user, mon)
    sid = result["welcome"]["sessionId"]
    assert result["welcome"]["type"] == "WELCOME"
    assert [e["sessionId"] for e in result["joined"]["joined"]] == [sid]
    assert result["joined"]["joined"][0]["device"] == "server"
    assert result["metrics"]["users"] == 1
    assert result["error"]["code"] == "BAD_JSON"
    assert result["left"] == [{"sessionId": sid, "reason": "leave"}]
    assert not node.presence.sessions
