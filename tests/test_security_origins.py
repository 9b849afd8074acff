"""Browser origins: ``allowed_origins`` on the WebSocket handshake (403 for others) and as CORS on
the ops port (preflight answered, Access-Control-Allow-Origin only for allowed origins)."""

from __future__ import annotations

import aiohttp
import pytest
import websockets

from .conftest import token_for
from .stomp_client import Client

APP = "https://app.example"
EVIL = "https://evil.example"


@pytest.fixture(params=["websockets", "picows"])
def transport(request) -> str:
    return request.param


async def connects(node, origin: str | None) -> bool:
    """Whether a browser-like client from ``origin`` gets through the handshake and CONNECT."""
    try:
        client = await Client.open(node.ws_url, origin=origin)
    except websockets.InvalidStatus as exc:
        assert exc.response.status_code == 403 and b"is not allowed" in exc.response.body
        return False
    frame = await client.connect(token_for(node.settings, "o", "spidi:user"))
    assert frame[0] == "CONNECTED"
    await client.close()
    return True


@pytest.mark.hardening(
    "security",
    "WebSocket handshakes from allowed, foreign, look-alike and null origins",
    "Foreign ones 403 and counted; allowed origins and clients without Origin connect",
)
async def test_websocket_origin_checked_against_the_list(node_factory):
    node = await node_factory(allowed_origins=[APP, "http://localhost:3000"])
    assert await connects(node, APP)
    assert await connects(node, "http://localhost:3000")
    assert not await connects(node, EVIL)
    assert not await connects(node, "https://app.example.evil.example")
    assert not await connects(node, "null")
    assert await connects(node, None)  # not a browser: no Origin header, nothing to check
    assert node.metrics.refusals.labels(reason="origin")._value.get() == 3


@pytest.mark.hardening(
    "security", "Any origin while allowed_origins is empty (the development default)", "Accepted"
)
async def test_empty_list_allows_every_origin(node):
    assert node.settings.allowed_origins == []
    assert await connects(node, EVIL)
    assert await connects(node, APP)


@pytest.mark.hardening(
    "security",
    "allowed_origins entries that are not origins (no scheme, a path, ftp)",
    "Start refused (ConfigError)",
)
def test_origins_must_be_origins():
    from spidi_server.errors import ConfigError
    from spidi_server.settings import Settings

    for bad in ("app.example", "https://app.example/path", "ftp://x"):
        with pytest.raises(ConfigError, match="allowed_origins"):
            Settings(allowed_origins=[bad]).validate()


@pytest.mark.hardening(
    "security",
    "CORS requests and preflights on the ops port from allowed and foreign origins",
    "Allow-Origin only for allowed origins, errors included; a foreign preflight gets 403; never credentials",
)
async def test_cors_on_the_ops_port(node_factory):
    node = await node_factory(allowed_origins=[APP])
    base = node.ops.url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health", headers={"Origin": APP}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert "Origin" in resp.headers.getall("Vary")
        async with http.get(f"{base}/health", headers={"Origin": EVIL}) as resp:
            assert resp.status == 200  # the browser, not the server, withholds it from the page
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.get(f"{base}/health") as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        # Errors of the REST API carry it too, so a page can read why it failed.
        async with http.get(f"{base}/api/v1/rooms", headers={"Origin": APP}) as resp:
            assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == APP
        preflight = {
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        async with http.options(f"{base}/api/v1/rooms", headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
            assert int(resp.headers["Access-Control-Max-Age"]) > 0
            assert "Access-Control-Allow-Credentials" not in resp.headers
        async with http.options(f"{base}/api/v1/rooms", headers={**preflight, "Origin": EVIL}) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.hardening("security", "CORS while allowed_origins is empty", "Any origin allowed")
async def test_cors_with_an_empty_list_allows_any_origin(node):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.ops.url}/metrics", headers={"Origin": EVIL}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == EVIL
        preflight = {"Origin": EVIL, "Access-Control-Request-Method": "DELETE"}
        async with http.options(f"{node.ops.url}/api/v1/rooms/x", headers=preflight) as resp:
            assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == EVIL
