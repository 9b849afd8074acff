"""TLS: ``tls_cert_file``/``tls_key_file`` serve wss:// and https:// (WebSocket and ops ports), with a
self-signed certificate made here and clients that trust it (and clients that do not)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import aiohttp
import pytest
import websockets

from spidi_server.errors import ConfigError
from spidi_server.settings import Settings

from .certs import write_self_signed
from .conftest import TRANSPORTS, token_for
from .stomp_client import Client


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(cert file, key file) of a self-signed certificate for 127.0.0.1 and localhost."""
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_node(node_factory, certificate):
    return await node_factory(
        tls_cert_file=certificate[0], tls_key_file=certificate[1], handshake_timeout_s=1.0
    )


def trusting(certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificate[0])


@pytest.mark.hardening(
    "security",
    "wss:// and https:// with a certificate the client trusts",
    "STOMP session, /health and /metrics work over TLS",
)
async def test_wss_and_https_with_a_trusted_certificate(tls_node, certificate):
    node = tls_node
    assert node.ws_url.startswith("wss://") and node.ops.url.startswith("https://")
    client = await Client.open(node.ws_url, ssl=trusting(certificate))
    frame = await client.connect(token_for(node.settings, "secure", "spidi:user"))
    assert frame[0] == "CONNECTED"
    await client.subscribe("/user/queue/session")
    sid = (await client.hello("lobby"))["sessionId"]
    await client.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 4}, receipt="tls")
    assert (await client.next(command="RECEIPT"))[1]["receipt-id"] == "tls"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.ops.url}/health", ssl=trusting(certificate)) as resp:
            assert resp.status == 200 and (await resp.json())["components"]["redis"]["status"] == "ok"
        async with http.get(f"{node.ops.url}/metrics", ssl=trusting(certificate)) as resp:
            assert "spidi_websocket_connections 1.0" in await resp.text()
    await client.close()


@pytest.mark.hardening(
    "security",
    "A client that does not trust the certificate; plain ws:// and http:// to the TLS ports",
    "Refused (certificate or handshake error); trusting clients still served",
)
async def test_untrusted_and_plaintext_clients_are_refused(tls_node, certificate):
    node = tls_node
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(node.ws_url, ssl=ssl.create_default_context())
    with pytest.raises((websockets.InvalidMessage, websockets.InvalidHandshake, ConnectionError, EOFError)):
        await websockets.connect(node.ws_url.replace("wss://", "ws://"), open_timeout=3)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"{node.ops.url}/health")
        with pytest.raises(aiohttp.ClientError):
            await http.get(node.ops.url.replace("https://", "http://") + "/health")
    # Still serving the good ones.
    client = await Client.open(node.ws_url, ssl=trusting(certificate))
    assert (await client.connect(token_for(node.settings, "ok", "spidi:user")))[0] == "CONNECTED"
    await client.close()


@pytest.mark.hardening(
    "security",
    "A TCP connection to the TLS port that never starts the TLS handshake",
    "Cut within handshake_timeout_s",
)
async def test_silent_client_is_cut_during_the_tls_handshake(tls_node):
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_node.transport.port)
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert time.monotonic() - started < 4


@pytest.mark.hardening(
    "security", "A certificate without its key, or a missing certificate file", "Start refused (ConfigError)"
)
def test_certificate_and_key_go_together(certificate, tmp_path):
    with pytest.raises(ConfigError, match="go together"):
        Settings(tls_cert_file=certificate[0]).validate()
    with pytest.raises(ConfigError, match="no such file"):
        Settings(tls_cert_file=str(tmp_path / "nope.pem"), tls_key_file=certificate[1]).validate()
