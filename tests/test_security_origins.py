"""Browser origins: ``allowed_origins`` on the WebSocket handshake (403 for others) and as CORS on
the ops port (preflight answered, Access-Control-Allow-Origin only for allowed origins)."""

from __future__ import annotations

import aiohttp
import pytest
import websockets

from .conftest import TRANSPORTS, token_for
from .stomp_client import Client

APP = "https://app.example"
EVIL = "https://evil.example"


@pytest.fixture(params=TRANSPORTS)
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


@pytest.mark.hardening(
    "security", "CORS while allowed_origins is empty in development mode (--dev)", "Any origin allowed"
)
async def test_cors_with_an_empty_list_allows_any_origin_in_dev(node):
    assert node.settings.dev
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.ops.url}/metrics", headers={"Origin": EVIL}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == EVIL
        preflight = {"Origin": EVIL, "Access-Control-Request-Method": "DELETE"}
        async with http.options(f"{node.ops.url}/api/v1/rooms/x", headers=preflight) as resp:
            assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == EVIL


@pytest.mark.hardening(
    "security",
    "CORS while allowed_origins is empty outside development mode",
    "Same origin only: no Allow-Origin for a foreign origin, its preflight 403",
)
async def test_cors_with_an_empty_list_is_same_origin_only_outside_dev(node_factory):
    node = await node_factory(dev=False)
    own = node.ops.url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{own}/health", headers={"Origin": EVIL}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.get(f"{own}/api/v1/rooms", headers={"Origin": EVIL}) as resp:
            assert resp.status == 401 and "Access-Control-Allow-Origin" not in resp.headers
        preflight = {"Origin": EVIL, "Access-Control-Request-Method": "DELETE"}
        async with http.options(f"{own}/api/v1/rooms/x", headers=preflight) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        # The dashboard's own origin (it needs no CORS, but is not refused either).
        async with http.options(f"{own}/api/v1/rooms/x", headers={**preflight, "Origin": own}) as resp:
            assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == own


async def _config(node, headers: dict | None = None) -> dict:
    url = f"{node.ops.url}/dashboard/config"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        return await resp.json()


@pytest.mark.hardening(
    "security",
    "/dashboard/config asked by a foreign page (cross-site, same-site, foreign Origin, rebound DNS name)",
    "The config without the development admin token; the dashboard's own page still gets it",
)
async def test_dev_token_is_served_same_origin_only(node):
    own = node.ops.url
    port = node.ops.port
    # The dashboard's own page: fetch() from its origin, a typed URL, curl on the machine.
    assert "devToken" in await _config(node, {"Sec-Fetch-Site": "same-origin"})
    assert "devToken" in await _config(node, {"Sec-Fetch-Site": "same-origin", "Origin": own})
    assert "devToken" in await _config(node, {"Sec-Fetch-Site": "none"})
    assert "devToken" in await _config(node)
    assert "devToken" in await _config(
        node, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    )
    foreign = [
        {"Sec-Fetch-Site": "cross-site", "Origin": EVIL},
        {"Sec-Fetch-Site": "cross-site"},  # a no-cors request sends no Origin
        {"Sec-Fetch-Site": "same-site", "Origin": f"http://127.0.0.1:{port + 1}"},
        {"Origin": EVIL},  # a browser without Fetch Metadata
        {"Origin": "null"},  # a sandboxed frame
        # DNS rebinding: evil.example resolved to 127.0.0.1, so Origin and Host agree.
        {
            "Sec-Fetch-Site": "same-origin",
            "Host": f"evil.example:{port}",
            "Origin": f"http://evil.example:{port}",
        },
        {"Host": f"evil.example:{port}"},
    ]
    for headers in foreign:
        body = await _config(node, headers)
        assert "devToken" not in body, headers
        assert body["dev"] is True and body["wsUrl"].startswith("ws://")


@pytest.mark.hardening(
    "security",
    "Development mode on a non-loopback WebSocket or ops address",
    "Start refused: ConfigError naming host/ops_host, exit 2",
)
def test_dev_mode_refuses_non_loopback_binds(tmp_path):
    import os
    import subprocess
    import sys

    from spidi_server.errors import ConfigError
    from spidi_server.settings import Settings

    for name, value in (("host", "0.0.0.0"), ("ops_host", "::"), ("host", "192.0.2.7"), ("ops_host", "")):
        with pytest.raises(ConfigError, match=f"^{name}: development mode"):
            Settings(dev=True, **{name: value}).validate()
        Settings(dev=False, **{name: value}).validate()  # production may bind anything
    for value in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        Settings(dev=True, host=value, ops_host=value).validate()
    result = subprocess.run(
        [sys.executable, "-m", "spidi_server.cli", "serve", "--dev", "--data-dir", str(tmp_path)]
        + ["--ops-host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "ops_host: development mode" in result.stderr


@pytest.mark.hardening(
    "security",
    "A WebSocket handshake with two Origin headers, the first allowed",
    "Refused on both transports (websockets: 400 from the library; picows read only the first, now 403)",
)
async def test_repeated_origin_header_is_refused(node_factory):
    node = await node_factory(allowed_origins=[APP])
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.open(node.ws_url, additional_headers=[("Origin", APP), ("Origin", EVIL)])
    assert refused.value.response.status_code in (400, 403)
