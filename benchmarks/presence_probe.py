"""How fast a presence change reaches a dashboard subscriber while the node is under load.

A monitor subscribes to one room's roster; a prober joins (HELLO) and leaves (LEAVE) that room
over and over. The delay of each change is the time from sending the HELLO or LEAVE to receiving
the roster delta that carries it. The server sends a room's first change at once and coalesces
what follows within ``metrics_interval_ms`` (250 ms); the probe spaces its changes 300 ms apart,
so it measures a quiet room on a busy node. In a room that changes all the time (every heartbeat
updates a latency), a change waits for the room's next window: up to 250 ms by design.

The benchmark runs the probe in a process of its own (``probe_process``), as a real dashboard is
a client of its own: inside the load generator's process, every receive would wait for the
generator's sending bursts, and the figure would be the generator's loop, not the server.

With ``SPIDI_PROBE_TRACE=1`` in its environment it prints each HELLO's round trip (with the wall
clock, to match the server's log) and each delay on stderr as it goes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import websockets

ROOM = "presence-probe"
TRACE = bool(os.environ.get("SPIDI_PROBE_TRACE"))


def _frame(command: str, headers: dict, body: str = "") -> str:
    lines = [command, *(f"{k}:{v}" for k, v in headers.items())]
    return "\n".join(lines) + "\n\n" + body + "\x00"


def _parse(message) -> tuple[str, dict, str] | None:
    text = message.decode() if isinstance(message, bytes) else message
    text = text.lstrip("\r\n")
    if not text:
        return None
    head, _, rest = text.partition("\n\n")
    lines = head.split("\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k, v)
    return lines[0], headers, rest.rstrip("\x00")


async def _connect(url: str, token: str):
    ws = await websockets.connect(url, subprotocols=["v12.stomp"], ping_interval=None, compression=None)
    await ws.send(
        _frame(
            "CONNECT",
            {
                "accept-version": "1.2",
                "host": "spidi",
                "heart-beat": "0,0",
                "Authorization": f"Bearer {token}",
            },
        )
    )
    frame = _parse(await ws.recv())
    if frame is None or frame[0] != "CONNECTED":
        raise RuntimeError(f"probe CONNECT failed: {frame}")
    return ws


async def probe(
    url: str, user_token: str, monitor_token: str, duration: float, gap: float = 0.3
) -> list[float]:
    """Delays (ms) of join and leave events seen by a roster subscriber, for ``duration`` seconds."""
    monitor = await _connect(url, monitor_token)
    prober = await _connect(url, user_token)
    delays: list[float] = []
    sent_at: dict[tuple[str, str], float] = {}
    early: dict[str, float] = {}  # session id -> when its join delta came, before its WELCOME was read
    try:
        await monitor.send(_frame("SUBSCRIBE", {"id": "r", "destination": f"/topic/rooms/{ROOM}/roster"}))
        await prober.send(_frame("SUBSCRIBE", {"id": "s", "destination": "/user/queue/session"}))

        async def watch() -> None:
            async for message in monitor:
                frame = _parse(message)
                if frame is None or frame[0] != "MESSAGE":
                    continue
                payload = json.loads(frame[2])
                now = time.perf_counter()
                for entry in payload.get("joined", ()):
                    t = sent_at.pop(("join", entry["sessionId"]), None)
                    if t is not None:
                        delays.append((now - t) * 1000)
                        if TRACE:
                            print(f"join {entry['sessionId']} {delays[-1]:.1f} ms", file=sys.stderr)
                    else:  # the delta came before the prober read its WELCOME (which names the id)
                        early[entry["sessionId"]] = now
                for entry in payload.get("left", ()):
                    t = sent_at.pop(("leave", entry["sessionId"]), None)
                    if t is not None:
                        delays.append((now - t) * 1000)
                        if TRACE:
                            print(f"leave {entry['sessionId']} {delays[-1]:.1f} ms", file=sys.stderr)

        watcher = asyncio.get_running_loop().create_task(watch())
        deadline = time.monotonic() + duration
        hello = json.dumps({"roomCode": ROOM, "clientId": "probe", "appVersion": "1"})
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await prober.send(
                _frame("SEND", {"destination": "/app/hello", "content-type": "application/json"}, hello)
            )
            frame = _parse(await prober.recv())
            sid = json.loads(frame[2])["sessionId"]
            if TRACE:
                print(
                    f"hello {time.time():.3f} {sid} {(time.perf_counter() - t0) * 1000:.1f} ms",
                    file=sys.stderr,
                )
            if sid in early:
                delays.append((early.pop(sid) - t0) * 1000)
            else:
                sent_at[("join", sid)] = t0
            await asyncio.sleep(gap)
            sent_at[("leave", sid)] = time.perf_counter()
            await prober.send(
                _frame(
                    "SEND",
                    {"destination": "/app/leave", "content-type": "application/json"},
                    json.dumps({"sessionId": sid}),
                )
            )
            await asyncio.sleep(gap)
        await asyncio.sleep(1.0)  # the last deltas
        watcher.cancel()
    finally:
        await prober.close()
        await monitor.close()
    return sorted(delays)


async def probe_process(url: str, user_token: str, monitor_token: str, duration: float) -> list[float]:
    """``probe`` in a child process (it inherits this one's CPU affinity); its delays (ms).

    The tokens go through stdin, not the command line."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.presence_probe",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    job = {"url": url, "user_token": user_token, "monitor_token": monitor_token, "duration": duration}
    out, _ = await child.communicate(json.dumps(job).encode())
    if child.returncode != 0:
        raise RuntimeError(f"presence probe exited {child.returncode}")
    return json.loads(out)


def main() -> None:
    """Run one probe from the job on stdin (``probe_process``'s); print its delays as JSON."""
    job = json.load(sys.stdin)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # the probe's own loop only decides how quickly it reads
        runner = asyncio.run
    delays = runner(probe(job["url"], job["user_token"], job["monitor_token"], job["duration"]))
    print(json.dumps(delays))


if __name__ == "__main__":
    main()
