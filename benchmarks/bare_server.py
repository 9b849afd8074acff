"""Bare frame-counting WebSocket servers: the floor of what Python does for the same traffic.

They accept the load generator's WebSocket handshake (subprotocol ``v12.stomp``), unmask and
count frames, and answer just enough for ``loadgen.py`` to run: CONNECTED to CONNECT, a WELCOME
MESSAGE to HELLO, a RECEIPT to a heartbeat that asks for one. No STOMP parsing, no JSON, no
presence, no Redis: a heartbeat is recognised by its prefix ``SEND\\ndestination:/app/heartbeat``
and its receipt by a substring search.

Two transports:

- ``uvloop`` (default): a raw ``asyncio.Protocol`` on uvloop doing the RFC 6455 framing itself.
- ``websockets``: the websockets library's asyncio server (as Spidi's transport uses it, with the
  same options) and a handler that only counts messages, so "Spidi vs a bare websockets server"
  compares like with like.

Each serves ``spidi_heartbeats_total`` (and ``bare_frames_total``, ``bare_connections``) in
Prometheus text format at ``http://HOST:OPS_PORT/metrics``, so the benchmark reads it the same way
it reads Spidi's.

Run: ``python -m benchmarks.bare_server [--transport uvloop|websockets] [--port 0] [--ops-port 0]``;
it prints ``WebSocket: ws://HOST:PORT/ws`` and ``Ops: http://HOST:PORT/metrics`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys

from benchmarks.loadgen import (
    HEARTBEAT_PREFIX,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SUBPROTOCOL,
    apply_mask,
    raise_nofile_limit,
    ws_accept,
    ws_frame,
)

# The listen backlog of every bare server: Spidi's default (the kernel's somaxconn caps it), so a
# connect storm compares servers, not accept queues.
BACKLOG = 4096
CONNECTED = b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00"
_session_ids = itertools.count(1)


class Stats:
    """What the bare servers count."""

    frames = 0
    heartbeats = 0
    connections = 0

    @classmethod
    def prometheus(cls) -> bytes:
        """The counters in Prometheus text format."""
        return (
            "# TYPE spidi_heartbeats_total counter\n"
            f"spidi_heartbeats_total {float(cls.heartbeats)}\n"
            "# TYPE bare_frames_total counter\n"
            f"bare_frames_total {float(cls.frames)}\n"
            "# TYPE bare_connections gauge\n"
            f"bare_connections {float(cls.connections)}\n"
        ).encode()


def _receipt_id(payload: bytes) -> bytes | None:
    at = payload.find(b"\nreceipt:")
    if at < 0:
        return None
    end = payload.find(b"\n", at + 9)
    return payload[at + 9 : end]


def reply_for(payload: bytes) -> bytes | None:
    """The one STOMP frame (if any) a bare server answers to a client frame; counts heartbeats."""
    if payload.startswith(HEARTBEAT_PREFIX):
        Stats.heartbeats += 1
        receipt = _receipt_id(payload)
        return None if receipt is None else b"RECEIPT\nreceipt-id:" + receipt + b"\n\n\x00"
    if payload.startswith((b"CONNECT\n", b"STOMP\n")):
        return CONNECTED
    if payload.startswith(b"SEND\ndestination:/app/hello"):
        sid = f"bare-{next(_session_ids)}".encode()
        body = b'{"type":"WELCOME","sessionId":"' + sid + b'","resumed":false}'
        return (
            b"MESSAGE\ndestination:/user/queue/session\nsubscription:s\nmessage-id:"
            + sid
            + b"\ncontent-type:application/json\n\n"
            + body
            + b"\x00"
        )
    receipt = _receipt_id(payload)
    return None if receipt is None else b"RECEIPT\nreceipt-id:" + receipt + b"\n\n\x00"


# -- raw uvloop ----------------------------------------------------------------------------------


class BareProtocol(asyncio.Protocol):
    """RFC 6455 by hand: handshake, unmask, count, reply."""

    __slots__ = ("transport", "buf", "open", "fragments")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.fragments: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        Stats.connections -= 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open and not self._handshake():
            return
        pos = 0
        end = len(buf)
        out = []
        while end - pos >= 6:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if end - pos < head + 4 + length:
                break
            key = bytes(buf[pos + head : pos + head + 4])
            payload = apply_mask(bytes(buf[pos + head + 4 : pos + head + 4 + length]), key)
            pos += head + 4 + length
            Stats.frames += 1
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (OP_TEXT, OP_BINARY) and fin:
                reply = reply_for(payload)
            elif opcode in (OP_TEXT, OP_BINARY):
                self.fragments = [payload]
                continue
            elif opcode == OP_CONT and self.fragments is not None:
                self.fragments.append(payload)
                if not fin:
                    continue
                payload = b"".join(self.fragments)
                self.fragments = None
                reply = reply_for(payload)
            elif opcode == OP_PING:
                out.append(ws_frame(payload, OP_PONG))
                continue
            elif opcode == OP_CLOSE:
                out.append(ws_frame(payload[:2], OP_CLOSE))
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                continue
            if reply is not None:
                out.append(ws_frame(reply))
        if pos:
            del buf[:pos]
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _handshake(self) -> bool:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 65536:
                self.transport.close()
            return False
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        key = None
        protocols: list[str] = []
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "sec-websocket-key":
                key = value.strip()
            elif name == "sec-websocket-protocol":
                protocols += [p.strip() for p in value.split(",")]
        if key is None:
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self.transport.close()
            return False
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {ws_accept(key)}\r\n"
        )
        if SUBPROTOCOL in protocols:
            response += f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        self.transport.write((response + "\r\n").encode())
        self.open = True
        return True


async def start_uvloop_server(host: str, port: int) -> asyncio.AbstractServer:
    """The raw protocol server."""
    return await asyncio.get_running_loop().create_server(BareProtocol, host, port, backlog=BACKLOG)


# -- websockets library ----------------------------------------------------------------------------


async def start_websockets_server(host: str, port: int):
    """The websockets library server with Spidi's transport options and a counting handler."""
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def handler(ws) -> None:
        Stats.connections += 1
        try:
            while True:
                try:
                    data = await ws.recv(decode=False)
                except ConnectionClosed:
                    break
                Stats.frames += 1
                reply = reply_for(data)
                if reply is not None:
                    try:
                        await ws.send(reply, text=True)
                    except ConnectionClosed:
                        break
        finally:
            Stats.connections -= 1

    return await serve(
        handler,
        host,
        port,
        subprotocols=[SUBPROTOCOL],
        compression=None,
        ping_interval=None,
        ping_timeout=None,
        max_size=65536 * 4,
        max_queue=8,
        write_limit=16384,
        open_timeout=10,
        close_timeout=2,
        server_header=None,
        backlog=BACKLOG,
    )


# -- picows ----------------------------------------------------------------------------------------


async def start_picows_server(host: str, port: int):
    """A picows server with Spidi's picows options and a counting listener."""
    from picows import (
        WSListener,
        WSMsgType,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_create_server,
    )

    class Counter(WSListener):
        def on_ws_connected(self, transport) -> None:
            Stats.connections += 1

        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
                return
            Stats.frames += 1
            reply = reply_for(frame.get_payload_as_bytes())
            if reply is not None:
                transport.send(WSMsgType.TEXT, reply)

        def on_ws_disconnected(self, transport) -> None:
            Stats.connections -= 1

    def factory(request):
        offered = request.headers.get("Sec-WebSocket-Protocol") or ""
        extra = {"Sec-WebSocket-Protocol": SUBPROTOCOL} if SUBPROTOCOL in offered else None
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra), Counter())

    return await ws_create_server(
        factory,
        host,
        port,
        enable_auto_ping=False,
        max_frame_size=65536 * 4,
        read_buffer_init_size=1024,
        use_aiofastnet=False,
        backlog=BACKLOG,
    )  # as Spidi runs it


# -- ops endpoint ----------------------------------------------------------------------------------


async def _ops(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = await reader.readuntil(b"\r\n\r\n")
        if request.startswith(b"GET /metrics"):
            body = Stats.prometheus()
            status = b"200 OK"
        else:
            body, status = b"not found\n", b"404 Not Found"
        writer.write(
            b"HTTP/1.0 "
            + status
            + b"\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(transport: str, host: str, port: int, ops_port: int) -> None:
    """Run one bare server until SIGINT/SIGTERM."""
    if transport == "websockets":
        server = await start_websockets_server(host, port)
    elif transport == "picows":
        server = await start_picows_server(host, port)
    else:
        server = await start_uvloop_server(host, port)
    ops = await asyncio.start_server(_ops, host, ops_port)
    ws_port = server.sockets[0].getsockname()[1]
    print(f"Bare {transport} server", flush=True)
    print(f"  WebSocket: ws://{host}:{ws_port}/ws", flush=True)
    print(f"  Ops: http://{host}:{ops.sockets[0].getsockname()[1]}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ops.close()
    server.close()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bare_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--transport", choices=("uvloop", "websockets", "picows"), default="uvloop")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ops-port", type=int, default=0)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    import uvloop

    uvloop.run(serve(args.transport, args.host, args.port, args.ops_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
