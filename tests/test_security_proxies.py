"""The client address behind proxies: X-Forwarded-For believed only from ``trusted_proxies``, every
hop checked to be an IP address, on both transports, as the roster (REST and ROOM_ROSTER) shows it."""

from __future__ import annotations

import aiohttp
import pytest

from spidi_server.rooms import room_id_for
from spidi_server.transport.admission import TrustedProxies

from .conftest import TRANSPORTS, token_for
from .stomp_client import Client


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


async def roster_ip(node, forwarded: list[str], room: str) -> str:
    """Open a session sending these X-Forwarded-For header lines; the IP the roster shows for it."""
    headers = [("X-Forwarded-For", value) for value in forwarded]
    client = await Client.open(node.ws_url, additional_headers=headers)
    try:
        assert (await client.connect(token_for(node.settings, "u", "spidi:user")))[0] == "CONNECTED"
        await client.subscribe("/user/queue/session")
        session = (await client.hello(room))["sessionId"]
        # An admin watches: monitors see no IP addresses (roles.VIEW_IP).
        monitor = token_for(node.settings, "mo", "spidi:admin")
        url = f"{node.ops.url}/api/v1/rooms/{room_id_for('default', room)}/sessions"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"Authorization": f"Bearer {monitor}"}) as resp,
        ):
            assert resp.status == 200, await resp.text()
            (entry,) = [e for e in (await resp.json())["items"] if e["sessionId"] == session]
        # The live topic a dashboard watches says the same.
        mon = await Client.open(node.ws_url)
        await mon.connect(monitor)
        await mon.subscribe(f"/topic/rooms/{room}/roster")
        (live,) = [
            e for e in (await mon.json(f"/topic/rooms/{room}/roster"))["users"] if e["sessionId"] == session
        ]
        await mon.close()
        assert live["ip"] == entry["ip"]
        return entry["ip"]
    finally:
        await client.close()


@pytest.mark.hardening(
    "security",
    "X-Forwarded-For through a trusted proxy, from an untrusted peer, with spoofed hops and garbage",
    "Client address = nearest untrusted valid hop; header ignored from untrusted peers; a non-IP hop ends the walk",
)
async def test_client_address_behind_proxies(node_factory):
    # The loopback peer (the test client) is our proxy; 10.0.0.0/8 is our own proxy tier.
    node = await node_factory(trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    assert await roster_ip(node, ["203.0.113.7"], "r1") == "203.0.113.7"
    # The client sent the leftmost hops itself: only the hop our proxy appended is believed.
    assert await roster_ip(node, ["198.51.100.1, 203.0.113.7"], "r2") == "203.0.113.7"
    assert await roster_ip(node, ["198.51.100.1, 203.0.113.7, 10.1.2.3"], "r3") == "203.0.113.7"
    # A second header line (a proxy that adds its own instead of appending) counts as later hops.
    assert await roster_ip(node, ["198.51.100.1", "203.0.113.8"], "r4") == "203.0.113.8"
    # Garbage: a hop that is not an IP address ends the walk at the last address we trust.
    assert await roster_ip(node, ["not-an-ip"], "r5") == "127.0.0.1"
    assert await roster_ip(node, ["203.0.113.7, evil<script>"], "r6") == "127.0.0.1"
    assert await roster_ip(node, ["evil, 10.9.9.9"], "r7") == "10.9.9.9"
    assert await roster_ip(node, ["198.51.100.1, unknown, 203.0.113.9"], "r8") == "203.0.113.9"
    assert await roster_ip(node, ["2001:DB8::0001"], "r9") == "2001:db8::1"  # normalised


async def test_forwarded_for_ignored_from_an_untrusted_peer(node_factory):
    node = await node_factory(trusted_proxies=["10.0.0.0/8"])
    assert await roster_ip(node, ["203.0.113.7"], "r1") == "127.0.0.1"
    assert await roster_ip(node, ["garbage"], "r2") == "127.0.0.1"
    node2 = await node_factory()  # trusted_proxies empty: trust none
    assert await roster_ip(node2, ["203.0.113.7"], "r3") == "127.0.0.1"


def test_trusted_proxies_rule():
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.client_ip("127.0.0.1", "1.2.3.4, 10.0.0.1") == "1.2.3.4"
    assert proxies.client_ip("127.0.0.1", "10.0.0.2, 10.0.0.1") == "10.0.0.2"  # all trusted: leftmost
    assert proxies.client_ip("127.0.0.1", " , ,") == "127.0.0.1"
    assert proxies.client_ip("127.0.0.1", "1.2.3.4:5678") == "127.0.0.1"  # a port: not an address
    assert proxies.client_ip("127.0.0.1", "x" * 10_000) == "127.0.0.1"
    assert proxies.client_ip("192.0.2.1", "1.2.3.4") == "192.0.2.1"
