"""A subscriber that stops reading cannot grow the server's memory: it is cut as a slow consumer.

A raw-socket monitor (small receive buffer) subscribes to a busy room's roster several times,
then stops reading while users keep heartbeating. The bytes queued for it stay under
``max_send_buffer`` plus one publication, it is closed with 1008 "slow consumer", and a monitor
that reads keeps receiving every update.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time

import pytest

from .conftest import TRANSPORTS, token_for
from .stomp_client import connected, encode

CAP = 64 * 1024


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (FIN set)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked server frames in ``data``; an incomplete tail is left out."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            if i + 2 > len(data):
                break
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            if i + 8 > len(data):
                break
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        if i + n > len(data):
            break
        out.append((opcode, data[i : i + n]))
        i += n
    return out


class RawMonitor:
    """A WebSocket client on a bare socket, with a tiny receive buffer, that can stop reading."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.received = b""

    @classmethod
    async def open(cls, port: int) -> RawMonitor:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        self = cls(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        await self.send_raw(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: v12.stomp\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self.received:
            await self.read_some()
        head, _, self.received = self.received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return self

    async def send_raw(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def send(self, command: str, headers: dict, body: str = "") -> None:
        await self.send_raw(ws_frame(encode(command, headers, body)))

    async def read_some(self, timeout: float = 3.0) -> bytes:
        chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), timeout)
        self.received += chunk
        return chunk

    async def wait_for(self, needle: bytes) -> None:
        while needle not in self.received:
            await self.read_some()

    async def read_to_end(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not await self.read_some(deadline - time.monotonic()):
                    return
            except (ConnectionResetError, TimeoutError):
                return


@pytest.mark.hardening(
    "hostile",
    "A monitor with 16 roster subscriptions of a busy room stops reading",
    "Its queued bytes stay under max_send_buffer plus one publication; closed 1008 slow consumer; a reading monitor keeps every update",
)
async def test_slow_consumer_is_cut_and_others_keep_receiving(node_factory):
    node = await node_factory(max_send_buffer=CAP, max_message_rate=0)
    users = []
    sids = []
    for i in range(12):
        client = await connected(node.ws_url, token_for(node.settings, f"u{i}", "spidi:user"))
        welcome = await client.hello("busy", f"client-{i:02d}-" + "c" * 100, device="d" * 120, os="o" * 120)
        users.append(client)
        sids.append(welcome["sessionId"])

    good = await connected(node.ws_url, token_for(node.settings, "good-mon", "spidi:monitor"))
    await good.subscribe("/topic/rooms/busy/roster")
    assert (await good.json("/topic/rooms/busy/roster"))["full"] is True

    slow = await RawMonitor.open(node.transport.port)
    token = token_for(node.settings, "slow-mon", "spidi:monitor")
    await slow.send(
        "CONNECT",
        {"accept-version": "1.2", "host": "x", "heart-beat": "0,0", "Authorization": f"Bearer {token}"},
    )
    await slow.wait_for(b"CONNECTED")
    for i in range(16):
        await slow.send(
            "SUBSCRIBE", {"id": f"r{i}", "destination": "/topic/rooms/busy/roster", "receipt": f"s{i}"}
        )
    await slow.wait_for(b"receipt-id:s15")
    (slow_conn,) = [c for c in node.clients if c.stomp.claims and c.stomp.claims.user_id == "slow-mon"]
    # From here the slow monitor reads nothing; the room keeps changing.

    async def heartbeats():
        n = 0
        while True:
            for client, sid in zip(users, sids, strict=True):
                n += 1
                await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": n % 500})
            await asyncio.sleep(0.02)

    beating = asyncio.get_running_loop().create_task(heartbeats())
    refusals = node.metrics.refusals.labels(reason="slow_consumer")
    largest = 0
    deltas = 0
    deadline = time.monotonic() + 15
    try:
        while refusals._value.get() == 0 and time.monotonic() < deadline:
            largest = max(largest, slow_conn.writer.buffered())
            try:
                await good.json("/topic/rooms/busy/roster", timeout=0.05)
                deltas += 1
            except TimeoutError:
                pass
        assert refusals._value.get() == 1, "the slow consumer was never cut"
        # Bounded: never much more than the cap (one roster publication to 16 subscriptions on top).
        assert largest < CAP + 128 * 1024, largest
        # The reading monitor was served all along, and still is.
        before = deltas
        for _ in range(3):
            await good.json("/topic/rooms/busy/roster", timeout=2)
            deltas += 1
        assert deltas > before and not good.closed.is_set()
    finally:
        beating.cancel()

    # The slow monitor, reading again, finds its messages then a close frame: 1008 "slow consumer".
    await slow.read_to_end()
    frames = server_frames(slow.received)
    closes = [payload for opcode, payload in frames if opcode == 8]
    assert closes, "no close frame"
    code = struct.unpack("!H", closes[0][:2])[0]
    assert code == 1008 and closes[0][2:] == b"slow consumer"
    slow.sock.close()
    # The node let go of it.
    deadline = time.monotonic() + 3
    while slow_conn in node.clients and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert slow_conn not in node.clients
    for client in (*users, good):
        await client.close()


@pytest.mark.hardening(
    "hostile",
    "A monitor that never reads again, not even the close frame",
    "Aborted after the close grace period; the node lets go of it",
)
async def test_client_that_never_reads_is_dropped_even_if_it_never_resumes(node_factory):
    """Nobody reads the close frame: the connection is aborted after the grace period anyway."""
    node = await node_factory(max_send_buffer=16 * 1024, max_message_rate=0)
    users = [await connected(node.ws_url, token_for(node.settings, f"v{i}", "spidi:user")) for i in range(6)]
    sids = [(await u.hello("room2", "x" * 100, device="d" * 120))["sessionId"] for u in users]
    slow = await RawMonitor.open(node.transport.port)
    token = token_for(node.settings, "deaf", "spidi:monitor")
    await slow.send("CONNECT", {"accept-version": "1.2", "host": "x", "Authorization": f"Bearer {token}"})
    await slow.wait_for(b"CONNECTED")
    for i in range(32):
        await slow.send("SUBSCRIBE", {"id": f"r{i}", "destination": "/topic/rooms/room2/roster"})
    await asyncio.sleep(0.2)
    (deaf,) = [c for c in node.clients if c.stomp.claims and c.stomp.claims.user_id == "deaf"]
    deadline = time.monotonic() + 15
    n = 0
    while deaf in node.clients and time.monotonic() < deadline:
        for client, sid in zip(users, sids, strict=True):
            n += 1
            await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": n % 300})
        await asyncio.sleep(0.02)
    assert deaf not in node.clients, "a client that never reads was kept"
    assert node.metrics.refusals.labels(reason="slow_consumer")._value.get() == 1
    slow.sock.close()
    for client in users:
        await client.close()
