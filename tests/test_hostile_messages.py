"""Hostile traffic after the upgrade: oversized, malformed, invalid UTF-8, JSON bombs, floods.

Each abuse gets a clear answer (an application error that keeps the connection, or an ERROR
frame and a close code), and a well-behaved client on the same node is served throughout.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from .conftest import TRANSPORTS, token_for
from .stomp_client import connected, encode


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


async def user(node, who: str = "u", subscribe_user: bool = True):
    return await connected(node.ws_url, token_for(node.settings, who, "spidi:user"), subscribe_user)


async def good_client_works(node, who: str = "good") -> None:
    client = await user(node, who)
    sid = (await client.hello("lobby", who))["sessionId"]
    await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 1}, receipt="ok")
    assert (await client.next(command="RECEIPT"))[1]["receipt-id"] == "ok"
    await client.close()


async def closed_with(client, code: int, timeout: float = 3.0) -> None:
    await asyncio.wait_for(client.closed.wait(), timeout)
    assert client.ws.close_code == code, (client.ws.close_code, client.ws.close_reason)


def refusals(node, reason: str) -> float:
    return node.metrics.refusals.labels(reason=reason)._value.get()


# -- size -----------------------------------------------------------------------------------------


@pytest.mark.hardening(
    "hostile", "A WebSocket message larger than 4 x max_frame_size", "Closed 1009; other clients unaffected"
)
async def test_oversized_websocket_message_is_closed_1009(node_factory):
    node = await node_factory(max_frame_size=4096)  # WebSocket messages up to 4 x that
    watcher = await user(node, "watcher")
    big = await user(node, "big")
    await big.ws.send("x" * 20000)
    await closed_with(big, 1009)
    assert not watcher.closed.is_set()
    await good_client_works(node)
    await watcher.close()


@pytest.mark.hardening("hostile", "An over-size message sent in six fragments", "Closed 1009")
async def test_oversized_fragmented_message_is_closed_1009(node_factory):
    node = await node_factory(max_frame_size=4096)
    big = await user(node, "big")
    await big.ws.send(iter(["y" * 4000] * 6))  # six fragments of one 24,000-byte message
    await closed_with(big, 1009)
    await good_client_works(node)


@pytest.mark.hardening(
    "hostile", "A STOMP frame with 100 headers (max_headers 64)", "ERROR too-many-headers, close 1002"
)
async def test_too_many_stomp_headers(node):
    bad = await user(node, "bad")
    headers = {f"x-{i}": "v" for i in range(100)}
    await bad.send("SEND", {"destination": "/app/hello", **headers}, "{}")
    frame = await bad.next(command="ERROR")
    assert "too-many-headers" in frame[1]["message"]
    await closed_with(bad, 1002)
    await good_client_works(node)


@pytest.mark.hardening(
    "hostile",
    "A STOMP header line of 9,000 bytes (max_header_line 8192)",
    "ERROR header-line-too-long, close 1002",
)
async def test_header_line_too_long(node):
    bad = await user(node, "bad")
    await bad.send("SEND", {"destination": "/app/hello", "x": "v" * 9000}, "{}")
    frame = await bad.next(command="ERROR")
    assert "header-line-too-long" in frame[1]["message"]
    await closed_with(bad, 1002)
    await good_client_works(node)


# -- invalid UTF-8 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.hardening(
    "hostile",
    "Text and binary messages with invalid UTF-8",
    "ERROR not valid UTF-8, close 1007, counted (native: a text frame is closed 1007 by the framing, no ERROR)",
)
async def test_invalid_utf8_message_is_closed_1007(node, transport, binary):
    bad = await user(node, "bad")
    payload = encode("SEND", {"destination": "/app/hello", "x": "caf\xe9"}).replace(
        b"caf\xc3\xa9", b"caf\xe9"
    )
    async with bad.ws.send_context():
        (bad.ws.protocol.send_binary if binary else bad.ws.protocol.send_text)(payload)
    if binary or transport != "native":
        # The STOMP codec finds it: websockets and picows do not check the UTF-8 of text frames.
        frame = await bad.next(command="ERROR")
        assert "not valid UTF-8" in frame[1]["message"]
    # The native transport fails an invalid text frame itself, as RFC 6455 8.1 asks: a close
    # 1007 and nothing before it.
    await closed_with(bad, 1007)
    assert refusals(node, "invalid_utf8") == 1
    await good_client_works(node)


@pytest.mark.hardening(
    "hostile", "Non-ASCII (valid UTF-8) user, client id and device (control case)", "Accepted: WELCOME"
)
async def test_valid_utf8_passes(node):
    client = await user(node, "ünïcode")
    welcome = await client.hello("lobby", "téléphone", device="Pixel ☃")
    assert welcome["type"] == "WELCOME"
    await client.close()


# -- JSON bombs -----------------------------------------------------------------------------------

HELLO = {"roomCode": "lobby", "clientId": "c", "appVersion": "1"}


@pytest.mark.parametrize(
    "destination, body, codes",
    [
        ("/app/hello", '{"a":' * 5000 + "1" + "}" * 5000, {"BAD_JSON"}),  # past orjson's depth limit
        (
            "/app/hello",
            '{"roomCode":"lobby","clientId":"c","appVersion":"1","x":' + "[" * 20 + "]" * 20 + "}",
            {"BAD_JSON"},
        ),  # deeper than 16
        (
            "/app/heartbeat",
            '{"sessionId":"s","latencyMs":1,"x":' + "[" * 3000 + "]" * 3000 + "}",
            {"BAD_JSON"},
        ),
        ("/app/heartbeat", '{"sessionId":"s","latencyMs":' + "9" * 4000 + "}", {"BAD_JSON"}),
        ("/app/heartbeat", '{"sessionId":"s","latencyMs":1e999999}', {"BAD_JSON"}),
        (
            "/app/heartbeat",
            '{"sessionId":"s","latencyMs":123456789012345678901234567890}',
            {"BAD_JSON", "BAD_REQUEST"},
        ),
        ("/app/hello", json.dumps({**HELLO, "clientId": "c" * 60000}), {"BAD_REQUEST"}),
        ("/app/hello", json.dumps({**HELLO, "device": ["d"] * 10000}), {"BAD_REQUEST"}),
        ("/app/leave", '{"sessionId":"' + "s" * 60000 + '"}', {"UNKNOWN_SESSION"}),
    ],
    ids=[
        "depth-5000",
        "depth-20",
        "heartbeat-depth-3000",
        "long-number",
        "infinite-number",
        "big-int",
        "huge-string",
        "wide-array",
        "huge-session-id",
    ],
)
@pytest.mark.hardening(
    "hostile",
    "JSON bombs in SEND bodies: nesting 20 to 5,000 deep, 4,000-digit and infinite numbers, 60 KB strings, 10,000-item arrays",
    "An application error (BAD_JSON, BAD_REQUEST, UNKNOWN_SESSION) within 1 s; the connection stays usable",
)
async def test_json_bombs_get_an_error_and_the_connection_stays(node, destination, body, codes):
    bomber = await user(node, "bomber")
    started = time.monotonic()
    await bomber.send("SEND", {"destination": destination, "receipt": "b"}, body)
    error = await bomber.json("/user/queue/errors")
    assert error["code"] in codes, error
    assert (await bomber.next(command="RECEIPT"))[1]["receipt-id"] == "b"
    assert time.monotonic() - started < 1.0
    assert (await bomber.hello("lobby"))["type"] == "WELCOME"  # still connected and served
    await good_client_works(node)
    await bomber.close()


# -- destinations and subscriptions ---------------------------------------------------------------


@pytest.mark.hardening(
    "hostile",
    "SEND and SUBSCRIBE to unknown or malformed destinations",
    "UNKNOWN_DESTINATION (or FORBIDDEN) error; the connection stays",
)
async def test_unknown_destinations_keep_the_connection(node):
    client = await user(node)
    for i, destination in enumerate(["/app/nowhere", "/app/hello/../leave", "/queue/x", "", "/app/HELLO"]):
        await client.send("SEND", {"destination": destination, "receipt": f"s{i}"}, "{}")
        assert (await client.json("/user/queue/errors"))["code"] == "UNKNOWN_DESTINATION"
    for i, destination in enumerate(
        ["/topic/nope", "/topic/rooms/a/b/c", "/user/queue/other", "/topic/rooms/x/"]
    ):
        await client.send("SUBSCRIBE", {"id": f"bad{i}", "destination": destination})
        assert (await client.json("/user/queue/errors"))["code"] in ("UNKNOWN_DESTINATION", "FORBIDDEN")
    assert (await client.hello("lobby"))["type"] == "WELCOME"
    await client.close()


@pytest.mark.hardening(
    "hostile",
    "30 SUBSCRIBEs on one connection (max_subscriptions 10)",
    "TOO_MANY_SUBSCRIPTIONS for each one beyond 10; the connection stays",
)
async def test_subscription_flood_is_capped_per_connection(node_factory):
    node = await node_factory(max_subscriptions=10)
    flooder = await user(node, "flooder", subscribe_user=False)
    await flooder.subscribe("/user/queue/errors", "errors")
    frames = b"".join(
        encode("SUBSCRIBE", {"id": f"s{i}", "destination": "/user/queue/session", "receipt": f"r{i}"})
        for i in range(30)
    )
    await flooder.ws.send(frames.decode())
    errors = [await flooder.json("/user/queue/errors") for _ in range(21)]
    assert {e["code"] for e in errors} == {"TOO_MANY_SUBSCRIPTIONS"}
    (conn,) = [c for c in node.clients if c.stomp.claims.user_id == "flooder"]
    assert len(conn.stomp.subscriptions) == 10
    assert not flooder.closed.is_set()
    await good_client_works(node)
    await flooder.close()


# -- floods ---------------------------------------------------------------------------------------


@pytest.mark.hardening(
    "hostile",
    "300 heartbeats as fast as possible (limit 50/s, burst 100)",
    "ERROR message rate limit exceeded, close 1008, counted; a bystander keeps its service",
)
async def test_message_flood_gets_error_then_close(node_factory):
    node = await node_factory(max_message_rate=50, max_message_burst=100)
    bystander = await user(node, "bystander")
    sid = (await bystander.hello("lobby", "b"))["sessionId"]
    flooder = await user(node, "flooder")
    fsid = (await flooder.hello("lobby", "f"))["sessionId"]
    beat = encode("SEND", {"destination": "/app/heartbeat"}, json.dumps({"sessionId": fsid, "latencyMs": 1}))
    for _ in range(300):
        try:
            await flooder.ws.send(beat.decode())
        except Exception:  # the server closed it under our feet
            break
    frame = await flooder.next(command="ERROR")
    assert "message rate limit exceeded" in frame[1]["message"] and "50 frames/s" in frame[1]["message"]
    await closed_with(flooder, 1008)
    assert refusals(node, "message_rate") == 1
    await bystander.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 2}, receipt="still")
    assert (await bystander.next(command="RECEIPT"))[1]["receipt-id"] == "still"
    await good_client_works(node)
    await bystander.close()


@pytest.mark.hardening(
    "hostile",
    "40 STOMP frames packed into one WebSocket message (limit 10/s, burst 20)",
    "Counted frame by frame: ERROR, close 1008",
)
async def test_frames_packed_in_one_message_count_one_by_one(node_factory):
    node = await node_factory(max_message_rate=10, max_message_burst=20)
    packer = await user(node, "packer", subscribe_user=False)
    await packer.ws.send((encode("SEND", {"destination": "/app/nowhere"}, "{}") * 40).decode())
    frame = await packer.next(command="ERROR")
    assert "message rate limit exceeded" in frame[1]["message"]
    await closed_with(packer, 1008)
    await good_client_works(node)


@pytest.mark.hardening(
    "hostile", "A client at half the message rate limit for 1.5 s (control case)", "Never refused"
)
async def test_steady_client_under_the_rate_is_never_refused(node_factory):
    node = await node_factory(max_message_rate=20, max_message_burst=5)
    client = await user(node, "steady")
    sid = (await client.hello("lobby"))["sessionId"]
    for i in range(15):  # 10 frames/s for 1.5 s: half the allowed rate
        await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 1}, receipt=f"r{i}")
        assert (await client.next(command="RECEIPT"))[1]["receipt-id"] == f"r{i}"
        await asyncio.sleep(0.1)
    assert not client.closed.is_set() and refusals(node, "message_rate") == 0
    await client.close()


@pytest.mark.hardening(
    "hostile", "40 bare EOL heart-beats (limit 10/s)", "Counted like frames: ERROR, close 1008"
)
async def test_eol_flood_counts_too(node_factory):
    node = await node_factory(max_message_rate=10, max_message_burst=10)
    client = await user(node, "eols", subscribe_user=False)
    for _ in range(40):
        try:
            await client.ws.send("\n")
        except Exception:
            break
    await client.next(command="ERROR")
    await closed_with(client, 1008)
    await good_client_works(node)
