"""The native transport's opening handshake: ``transport/handshake.py`` alone (bytes in, status
out), then the same requests through a real node on the native transport."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from spidi_server.transport import handshake
from spidi_server.transport.handshake import Refusal, accept_key, check_upgrade, head_end, parse_request

from .conftest import token_for
from .stomp_client import encode
from .test_hostile_handshake import raw_exchange, status_of, upgrade
from .test_ws_conformance import TEXT, frame


def refusal(request: bytes) -> Refusal:
    """The refusal of a complete request head (fails the test if it is accepted)."""
    with pytest.raises(Refusal) as info:
        check_upgrade(parse_request(request[: head_end(request)]))
    return info.value


def test_accept_key_of_rfc_6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_upgrade_is_accepted_and_headers_are_read_case_insensitively():
    request = upgrade("/ws?access_token=abc", Sec_WebSocket_Protocol="v10.stomp, v12.stomp")
    request = request.replace(b"Upgrade: websocket", b"UPGRADE: WebSocket")
    parsed = parse_request(request[: head_end(request)])
    assert check_upgrade(parsed) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert parsed.target == "/ws?access_token=abc"
    assert handshake.offered_subprotocols(parsed) == ["v10.stomp", "v12.stomp"]


def test_connection_header_may_list_several_tokens_and_values_are_trimmed():
    request = upgrade(Connection="keep-alive, Upgrade", Upgrade="websocket \t")
    parsed = parse_request(request[: head_end(request)])
    assert check_upgrade(parsed) and parsed.headers["upgrade"] == ["websocket"]


@pytest.mark.parametrize(
    "request_bytes, status, header",
    [
        (b"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n", 405, ("Allow", "GET")),
        (b"GET /ws HTTP/1.0\r\nHost: x\r\n\r\n", 505, None),
        (b"GET /ws HTTP/2.0\r\nHost: x\r\n\r\n", 505, None),
        (b"GET /ws\r\nHost: x\r\n\r\n", 400, None),
        (b"GET  /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
        (upgrade(Host=None), 400, None),
        (upgrade(Connection="keep-alive"), 426, ("Upgrade", "websocket")),
        (upgrade(Upgrade="websocket, h2c"), 426, ("Upgrade", "websocket")),
        (upgrade(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 400, None),  # 21 bytes
        (upgrade(Sec_WebSocket_Version="8"), 426, ("Sec-WebSocket-Version", "13")),
        (upgrade(Sec_WebSocket_Version=None), 400, None),
        (upgrade()[:-2] + b"Origin: https://a\r\nOrigin: https://b\r\n\r\n", 400, None),
        (upgrade()[:-2] + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400, None),
        (upgrade()[:-2] + b" folded\r\n\r\n", 400, None),
        (upgrade()[:-2] + b"No colon\r\n\r\n", 400, None),
        (upgrade()[:-2] + b"X-A: a\nX-B: b\r\n\r\n", 400, None),
        (upgrade()[:-2] + b"X-A: a\x00b\r\n\r\n", 400, None),
        (upgrade()[:-2] + b"Content-Length: 3\r\n\r\n", 400, None),
        (upgrade()[:-2] + b"Transfer-Encoding: chunked\r\n\r\n", 400, None),
        (upgrade(**{f"X-H{i}": "v" for i in range(200)}), 431, None),
    ],
    ids=[
        "post",
        "http10",
        "http2",
        "no-version",
        "two-spaces",
        "no-host",
        "no-upgrade-token",
        "two-upgrades",
        "long-key",
        "version-8",
        "version-missing",
        "two-origins",
        "two-keys",
        "obs-fold",
        "no-colon",
        "bare-lf",
        "nul",
        "body",
        "chunked",
        "many-headers",
    ],
)
def test_invalid_requests_are_refused_with_their_status(request_bytes, status, header):
    refused = refusal(request_bytes)
    assert refused.status == status, refused.text
    assert refused.text.endswith("\n")
    if header is not None:
        assert refused.headers[header[0]] == header[1]


def test_head_end_refuses_early_what_cannot_be_http_and_caps_the_size():
    assert head_end(b"GET /ws HTT") == -1
    with pytest.raises(Refusal) as info:
        head_end(b"\x16\x03\x01\x02\x00")  # a TLS ClientHello: no need to wait for a blank line
    assert info.value.status == 400
    with pytest.raises(Refusal) as info:
        head_end(b"GET /ws HTTP/1.1\r\nX: " + b"a" * handshake.MAX_HEAD)
    assert info.value.status == 431


def _head_variants(rng) -> list[bytes]:
    """Request heads near the usual upgrade: valid ones in many spellings, and damaged ones."""
    base = upgrade("/ws?access_token=abc", Sec_WebSocket_Protocol="v12.stomp")
    base = base[: head_end(base)]
    heads = [
        base,
        upgrade("/ws")[: head_end(upgrade("/ws"))],
        base.replace(b"Upgrade: websocket", b"UPGRADE:\t WebSocket \t"),
        base.replace(b"Host:", b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For:  10.0.0.2 \r\nHost:"),
        base.replace(b"Host:", b"Content-Length: 0\r\nHost:"),
        base.replace(b"Host:", b"Content-Length: 5\r\nHost:"),
        base.replace(b"Host:", b"Transfer-Encoding: chunked\r\nHost:"),
        base.replace(b"Host:", b"X-" + b"n" * 70 + b": long name\r\nHost:"),
        base.replace(b"Host:", b"X-Empty:\r\nX-Blank:   \r\nHost:"),
        base.replace(b"Host:", b"X-Latin: caf\xe9 \xff\r\nHost:"),
        base.replace(b"Host:", b"".join(b"X-%d: v\r\n" % i for i in range(handshake.MAX_HEADERS)) + b"Host:"),
        base.replace(b"GET", b"POST"),
        base.replace(b"HTTP/1.1", b"HTTP/1.0"),
        base.replace(b"/ws?", b"/w s?"),
        base.replace(b"Host:", b" folded\r\nHost:"),
        base.replace(b"Host:", b": nameless\r\nHost:"),
        base.replace(b"Host:", b"X-Bad: a\x00b\r\nHost:"),
        base.replace(b"Host:", b"X-Bad: a\rb\r\nHost:"),
        base.replace(b"Host:", b"X-Bad: a\nb\r\nHost:"),
        base.replace(b"Host:", b"X(Bad): a\r\nHost:"),
        b"GET /ws HTTP/1.1\r\n\r\n",
        b"GET  /ws HTTP/1.1\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\nX: b\r\n\r\n",
    ]
    alphabet = b" \t\r\n:\x00Aa-/?\xe9"
    for _ in range(3000):  # random damage: a byte replaced, inserted or removed
        head = bytearray(rng.choice(heads[:5]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(head))
            action = rng.randrange(3)
            if action == 0:
                head[at] = rng.choice(alphabet)
            elif action == 1:
                head.insert(at, rng.choice(alphabet))
            else:
                del head[at]
        heads.append(bytes(head))
    return heads


@pytest.mark.skipif(handshake.parse_upgrade_head is None, reason="needs the Cython extensions")
def test_the_fast_head_parser_reads_what_it_takes_as_the_reference_does():
    """The Cython fast path either leaves a head to the reference (None) or reads it exactly as
    the reference does; and it takes the usual upgrade (so the node really uses it)."""
    import random

    heads = _head_variants(random.Random(15))
    taken = 0
    for head in heads:
        fast = handshake.parse_upgrade_head(head, handshake.MAX_HEADERS)
        if fast is None:
            continue
        taken += 1
        assert handshake.Request(*fast) == handshake.read_request(head), head
    assert handshake.parse_upgrade_head(heads[0], handshake.MAX_HEADERS) is not None
    assert taken > 100


def test_error_response_is_plain_text_with_its_length():
    response = handshake.error_response(429, "slow down\n", {"Retry-After": "5"})
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"Content-Length: 10" in head and b"Retry-After: 5" in head and b"Connection: close" in head
    assert body == b"slow down\n"


# -- through a node on the native transport ------------------------------------------------------


async def test_a_default_node_serves_the_native_transport_and_health_says_so(node):
    async with aiohttp.ClientSession() as http, http.get(f"{node.ops.url}/health") as resp:
        assert (await resp.json())["components"]["websocket"]["transport"] == "native"
    assert type(node.transport).__name__ == "NativeTransport"


async def test_subprotocol_is_the_highest_offered_stomp_version(node):
    port = node.transport.port
    response = await raw_exchange(port, upgrade(Sec_WebSocket_Protocol="v10.stomp, v12.stomp"))
    assert status_of(response) == 101 and b"Sec-WebSocket-Protocol: v12.stomp\r\n" in response
    response = await raw_exchange(port, upgrade(Sec_WebSocket_Protocol="mqtt"))
    assert status_of(response) == 101 and b"Sec-WebSocket-Protocol" not in response
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response


async def test_a_request_trickled_in_pieces_and_a_frame_sent_right_behind_it(node):
    """The head may arrive in pieces; bytes after it are already the WebSocket's."""
    token = token_for(node.settings, "pipelined", "spidi:user")
    headers = {"accept-version": "1.2", "host": "x", "Authorization": f"Bearer {token}"}
    connect = frame(TEXT, encode("CONNECT", headers))
    reader, writer = await asyncio.open_connection("127.0.0.1", node.transport.port)
    request = upgrade()
    try:
        writer.write(request[:10])
        await writer.drain()
        writer.write(request[10:] + connect)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        first = await asyncio.wait_for(reader.readexactly(2), 5)
        body = await asyncio.wait_for(reader.readexactly(first[1] & 0x7F), 5)
        assert first[0] == 0x81 and body.startswith(b"CONNECTED"), body[:100]
    finally:
        writer.close()


async def test_refused_upgrade_answers_then_ends_the_connection(node_factory):
    node = await node_factory(allowed_origins=["https://good.example"])
    response = await raw_exchange(node.transport.port, upgrade(Origin="https://evil.example"))
    assert status_of(response) == 403 and response.endswith(b"\n")
    assert node.metrics.refusals.labels(reason="origin")._value.get() == 1
    assert node.transport.admission.open == 0


@pytest.mark.skipif(os.environ.get("SPIDI_TEST_UVLOOP") != "1", reason="only under SPIDI_TEST_UVLOOP=1")
async def test_uvloop_mode_runs_the_tests_on_uvloop():
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
