"""A small STOMP-over-WebSocket test client, independent of spidi_core's codec on purpose."""

from __future__ import annotations

import asyncio
import json

import websockets


def encode(command: str, headers: dict | None = None, body: bytes | str = b"") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    lines = [command]
    for k, v in (headers or {}).items():
        lines.append(f"{k}:{v}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


def decode(message: bytes | str) -> list[tuple[str, dict, bytes]]:
    """Frames in one WebSocket message ([] for a heart-beat EOL)."""
    if isinstance(message, str):
        message = message.encode()
    frames = []
    while message:
        message = message.lstrip(b"\r\n")
        if not message:
            break
        head, _, rest = message.partition(b"\n\n")
        lines = head.decode().split("\n")
        headers: dict = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k, v)
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, message = rest[:n], rest[n + 1 :]
        else:
            body, _, message = rest.partition(b"\x00")
        frames.append((lines[0], headers, body))
    return frames


class Client:
    """Connects, sends frames, and sorts what arrives by destination."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: asyncio.Queue = asyncio.Queue()
        self.heartbeats = 0
        self.skipped: list = []
        self.closed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._receipt = 0

    @classmethod
    async def open(cls, url: str, subprotocols=("v12.stomp",), **kwargs) -> Client:
        ws = await websockets.connect(url, subprotocols=list(subprotocols), ping_interval=None, **kwargs)
        return cls(ws)

    async def _read(self):
        try:
            async for message in self.ws:
                frames = decode(message)
                if not frames:
                    self.heartbeats += 1
                for frame in frames:
                    await self.frames.put(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send(self, command: str, headers: dict | None = None, body: bytes | str = b"") -> None:
        await self.ws.send(encode(command, headers, body).decode())

    async def next(self, timeout: float = 3.0, command: str | None = None, destination: str | None = None):
        """The next frame, or the next matching one; frames passed over stay for later calls."""

        def matches(frame) -> bool:
            return (not command or frame[0] == command) and (
                not destination or frame[1].get("destination") == destination
            )

        for i, frame in enumerate(self.skipped):
            if matches(frame):
                return self.skipped.pop(i)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            frame = await asyncio.wait_for(self.frames.get(), max(left, 0.001))
            if matches(frame):
                return frame
            self.skipped.append(frame)

    async def json(self, destination: str, timeout: float = 3.0, type_: str | None = None) -> dict:
        while True:
            frame = await self.next(timeout, "MESSAGE", destination)
            payload = json.loads(frame[2])
            if type_ is None or payload.get("type") == type_:
                return payload

    async def connect(self, token: str | None = None, **headers) -> tuple:
        h = {"accept-version": "1.2", "host": "spidi", "heart-beat": "0,0"}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers)
        await self.send("CONNECT", h)
        return await self.next()

    async def subscribe(self, destination: str, sub_id: str | None = None, receipt: bool = True) -> None:
        self._receipt += 1
        rid = f"sub-{self._receipt}"
        headers = {"id": sub_id or destination, "destination": destination}
        if receipt:
            headers["receipt"] = rid
        await self.send("SUBSCRIBE", headers)
        if receipt:
            await self.next(command="RECEIPT")

    async def app(self, destination: str, payload: dict, receipt: str | None = None) -> None:
        headers = {"destination": destination, "content-type": "application/json"}
        if receipt:
            headers["receipt"] = receipt
        await self.send("SEND", headers, json.dumps(payload))

    async def hello(self, room: str, client_id: str = "c1", **extra) -> dict:
        await self.app(
            "/app/hello", {"roomCode": room, "clientId": client_id, "appVersion": "1.0.0", **extra}
        )
        return await self.json("/user/queue/session", type_="WELCOME")

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def connected(url: str, token: str, subscribe_user: bool = True) -> Client:
    """A client past CONNECT, subscribed to its session and error queues."""
    client = await Client.open(url)
    frame = await client.connect(token)
    assert frame[0] == "CONNECTED", frame
    if subscribe_user:
        await client.subscribe("/user/queue/session")
        await client.subscribe("/user/queue/errors")
    return client
