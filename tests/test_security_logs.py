"""Tokens never reach the logs: a real `spidi serve` at debug level, tokens in every place a
client can put them (query string, Authorization, passcode), good and bad, and its JSON logs
searched for any piece of them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time

import jwt
import pytest
import websockets

from .conftest import TRANSPORTS
from .stomp_client import Client
from .test_cli import SPIDI, free_port

SECRET = "log-test-secret-" + "s" * 40


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


def token(sub: str, secret: str = SECRET, **extra) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "roles": ["spidi:user"], "exp": now + 600, **extra}, secret, "HS256")


@pytest.mark.hardening(
    "security",
    "Good and bad tokens in the query string, Authorization and passcode against a node logging at debug",
    "No token, payload or signature text in any log line",
)
async def test_tokens_never_appear_in_logs(tmp_path, redis_url, redis_sync, transport):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_JWT_SECRET=SECRET,
        SPIDI_LOG_LEVEL="debug",
        SPIDI_WRITER="external",
        SPIDI_TRANSPORT=transport,
        SPIDI_DATA_DIR=str(tmp_path / "data"),
        SPIDI_PORT=str(free_port()),
        SPIDI_OPS_PORT=str(free_port()),
        SPIDI_AUTO_CREATE_ROOMS="1",
        SPIDI_ALERTING="0",
    )
    stderr = open(tmp_path / "stderr.log", "w+")  # noqa: SIM115  (closed below, read after exit)
    proc = subprocess.Popen([*SPIDI, "serve"], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    tokens: list[str] = []
    try:
        ws_url = None
        deadline = time.monotonic() + 30
        while ws_url is None and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            if match := re.search(r"WebSocket \(STOMP\): (\S+)", line):
                ws_url = match.group(1)
        assert ws_url, (tmp_path / "stderr.log").read_text()[-2000:]

        good_query, good_header, good_passcode = token("q-user"), token("h-user"), token("p-user")
        bad_signature = token("mallory", secret="wrong-" + "w" * 40)
        expired = token("late", exp=int(time.time()) - 3600)
        no_role = jwt.encode({"sub": "x", "roles": ["admin"], "exp": int(time.time()) + 60}, SECRET, "HS256")
        tokens = [good_query, good_header, good_passcode, bad_signature, expired, no_role]

        # Good tokens: query string, Authorization header, passcode; each joins a room and leaves.
        for where, value in (("query", good_query), ("header", good_header), ("passcode", good_passcode)):
            client = await Client.open(f"{ws_url}?access_token={value}" if where == "query" else ws_url)
            headers = {"passcode": value} if where == "passcode" else {}
            frame = await client.connect(value if where == "header" else None, **headers)
            assert frame[0] == "CONNECTED", frame
            await client.subscribe("/user/queue/session")
            sid = (await client.hello("lobby", where))["sessionId"]
            await client.app("/app/leave", {"sessionId": sid}, receipt="l")
            await client.next(command="RECEIPT")
            await client.close()
        # Bad tokens, in the query string and in the header; a broken Authorization scheme too.
        for value in (bad_signature, expired, no_role):
            for in_query in (True, False):
                client = await Client.open(f"{ws_url}?access_token={value}" if in_query else ws_url)
                frame = await client.connect(None if in_query else value)
                assert frame[0] == "ERROR"
                await asyncio.wait_for(client.closed.wait(), 3)
        client = await Client.open(ws_url)
        assert (await client.connect(None, Authorization=f"Token {good_header}"))[0] == "ERROR"
        # A handshake refused on a wrong path, token in the query.
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(ws_url.replace("/ws", f"/nope?access_token={good_query}"))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        stderr.close()

    logs = (tmp_path / "stderr.log").read_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    events = {line.get("event") for line in lines}
    # The run was logged at debug level, errors included: there was something to leak into.
    assert {"node_started", "session_started", "connection_error", "node_stopped"} <= events, events
    assert any(line.get("level") == "DEBUG" for line in lines)
    for value in tokens:
        header, payload, signature = value.split(".")
        for piece in (value, payload, signature):
            assert piece not in logs, f"token text in the logs: {piece[:12]}..."
