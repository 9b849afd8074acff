"""Who may do what (ADR-0001), table-driven: every role on every REST route and every STOMP
destination, under the default settings and with each grant setting on; and who sees IP addresses.

Real node (Redis, PostgreSQL), real HTTP and real WebSocket clients. The expectations are written
out here, not derived from ``roles.py``: a route added to ``spidi_server.api.ROUTES`` without a row
fails ``test_every_rest_route_has_a_row``.
"""

from __future__ import annotations

import json
import time
import uuid

import aiohttp
import jwt
import pytest

from spidi_server.api import ROUTES
from spidi_server.rooms import room_id_for

from .api.conftest import ApiClient
from .conftest import TEST_SECRET, token_for
from .stomp_client import Client, connected

pytestmark = pytest.mark.timeout(120)

ADMIN, MONITOR, USER, OTHER, NONE = "admin", "monitor", "user", "other", "none"
EVERYONE = (ADMIN, MONITOR, USER, OTHER, NONE)
VARIANTS = {
    "default": {},
    "monitors_may_acknowledge": {"monitors_may_acknowledge": True},
    "monitors_see_ip": {"monitors_see_ip": True},
}
CLIENT_IP = "127.0.0.1"

# -- the table ------------------------------------------------------------------------------------

PUBLIC, READ, WRITE, ACK, SESSIONS = "public", "read", "write", "acknowledge", "session history"


def who_may(kind: str, variant: str) -> set[str]:
    """The roles that may perform an operation of ``kind`` under the settings ``variant``."""
    return {
        PUBLIC: set(EVERYONE),
        READ: {ADMIN, MONITOR},
        WRITE: {ADMIN},
        ACK: {ADMIN, MONITOR} if variant == "monitors_may_acknowledge" else {ADMIN},
        SESSIONS: {ADMIN},
    }[kind]


REST: dict[tuple[str, str], str] = {
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/api/v1/room-types"): READ,
    ("POST", "/api/v1/room-types"): WRITE,
    ("GET", "/api/v1/room-types/{id}"): READ,
    ("PUT", "/api/v1/room-types/{id}"): WRITE,
    ("PATCH", "/api/v1/room-types/{id}"): WRITE,
    ("DELETE", "/api/v1/room-types/{id}"): WRITE,
    ("GET", "/api/v1/rooms"): READ,
    ("POST", "/api/v1/rooms"): WRITE,
    ("GET", "/api/v1/rooms/{id}"): READ,
    ("PUT", "/api/v1/rooms/{id}"): WRITE,
    ("PATCH", "/api/v1/rooms/{id}"): WRITE,
    ("DELETE", "/api/v1/rooms/{id}"): WRITE,
    ("GET", "/api/v1/rooms/{id}/sessions"): READ,
    ("GET", "/api/v1/rooms/{id}/stats"): READ,
    ("GET", "/api/v1/rooms/{id}/reconcile"): WRITE,
    ("GET", "/api/v1/rooms/{id}/anomalies"): READ,
    ("GET", "/api/v1/rooms/{id}/roster"): READ,
    ("GET", "/api/v1/rooms/{id}/timeline"): READ,
    ("GET", "/api/v1/sessions"): SESSIONS,
    ("GET", "/api/v1/users/{userId}/sessions"): SESSIONS,
    ("GET", "/api/v1/rooms/{id}/attendance"): SESSIONS,  # and the IP-address role (admins)
    ("GET", "/api/v1/exports/public-key"): PUBLIC,
    ("GET", "/api/v1/alert-rules"): READ,
    ("POST", "/api/v1/alert-rules"): WRITE,
    ("GET", "/api/v1/alert-rules/{id}"): READ,
    ("PATCH", "/api/v1/alert-rules/{id}"): WRITE,
    ("DELETE", "/api/v1/alert-rules/{id}"): WRITE,
    ("GET", "/api/v1/alerts"): READ,
    ("GET", "/api/v1/alerts/active"): READ,
    ("GET", "/api/v1/alerts/{id}"): READ,
    ("POST", "/api/v1/alerts/{id}/acknowledge"): ACK,
    ("GET", "/api/v1/slos"): READ,
    ("POST", "/api/v1/slos"): WRITE,
    ("GET", "/api/v1/slos/{id}"): READ,
    ("PATCH", "/api/v1/slos/{id}"): WRITE,
    ("DELETE", "/api/v1/slos/{id}"): WRITE,
    ("GET", "/api/v1/slos/{id}/status"): READ,
}

# STOMP: SUBSCRIBE destinations and SEND destinations -> kind.
ROOM = "lobby"
JOIN = "join"
STOMP_SUBSCRIBE: dict[str, str] = {
    "/topic/rooms": READ,
    f"/topic/rooms/{ROOM}/metrics": READ,
    f"/topic/rooms/{ROOM}/roster": READ,
    "/topic/alerts": READ,
    "/user/queue/session": PUBLIC,
    "/user/queue/errors": PUBLIC,
}
STOMP_SEND = ("/app/hello", "/app/heartbeat", "/app/leave")


def stomp_may(kind: str) -> set[str]:
    """STOMP does not depend on the grant settings: subscriptions are reads, SENDs are joins."""
    return {READ: {ADMIN, MONITOR}, PUBLIC: {ADMIN, MONITOR, USER}, JOIN: {ADMIN, USER}}[kind]


def test_every_rest_route_has_a_row():
    assert {(r.method, r.path) for r in ROUTES} == set(REST)


# -- helpers --------------------------------------------------------------------------------------


def _token(node, role: str, sub: str | None = None) -> str | None:
    if role == NONE:
        return None
    if role == OTHER:  # a valid signature, but no Spidi role at all
        claims = {"sub": sub or "olga", "roles": ["acme:viewer"], "exp": int(time.time()) + 600}
        return jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    return token_for(node.settings, sub or f"{role}-1", f"spidi:{role}")


async def _call(http: aiohttp.ClientSession, node, role: str, method: str, path: str) -> tuple[int, str]:
    url = node.ops.url + path.replace("{id}", str(uuid.uuid4())).replace("{userId}", "alice")
    headers = {"Content-Type": "application/json"}
    token = _token(node, role)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    # Writes send an empty object: an allowed caller gets 400 (validation comes after the role
    # check) and nothing changes; a refused one gets 401/403.
    data = b"{}" if method in ("POST", "PUT", "PATCH") else None
    async with http.request(method, url, data=data, headers=headers) as resp:
        return resp.status, await resp.text()


def _errors(client: Client) -> list[dict]:
    """The application errors the client received so far (passed over while waiting for receipts)."""
    out = []
    for command, headers, body in client.skipped:
        if command == "MESSAGE" and headers.get("destination") == "/user/queue/errors":
            out.append(json.loads(body))
    return out


def _messages(client: Client, destination: str) -> list[dict]:
    return [
        json.loads(body)
        for command, headers, body in client.skipped
        if command == "MESSAGE" and headers.get("destination") == destination
    ]


async def _send(client: Client, destination: str, payload: dict) -> None:
    """SEND with a receipt, and wait for it: what the server answered before is then in ``skipped``."""
    rid = f"r-{uuid.uuid4().hex[:8]}"
    await client.app(destination, payload, receipt=rid)
    while True:
        frame = await client.next(command="RECEIPT")
        if frame[1].get("receipt-id") == rid:
            return


# -- REST -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.hardening(
    "security",
    "Each role (admin, monitor, user, a token with no Spidi role, no token) calls every REST route, "
    "under the default settings and with monitors_may_acknowledge or monitors_see_ip on",
    "Only the roles ADR-0001 names get past authentication: reads monitor and admin, writes and "
    "session history admin, acknowledging admin (and monitor with monitors_may_acknowledge); others "
    "401/403; the OpenAPI document names the same roles",
)
async def test_rest_roles(node_factory, pg_dsn, variant):
    node = await node_factory(postgres_dsn=pg_dsn, writer="external", **VARIANTS[variant])
    wrong: list = []
    async with aiohttp.ClientSession() as http:
        for (method, path), kind in REST.items():
            allowed = who_may(kind, variant)
            for role in EVERYONE:
                status, body = await _call(http, node, role, method, path)
                if role in allowed:
                    ok = status not in (401, 403) and status < 500
                elif role in (NONE, OTHER):
                    ok = status == 401
                else:
                    ok = status == 403 and "this needs role" in body
                if not ok:
                    wrong.append((method, path, role, status, body[:120]))
        # The OpenAPI document says the same, under these settings.
        async with http.get(node.ops.url + "/api/openapi.json") as resp:
            doc = await resp.json()
    assert not wrong, wrong
    for (method, path), kind in REST.items():
        if kind == PUBLIC:
            continue
        described = doc["paths"][path][method.lower()]["description"].rsplit("Roles: ", 1)[1]
        named = {r for r in (ADMIN, MONITOR, USER) if f"spidi:{r}" in described.split(".")[0]}
        assert named == who_may(kind, variant), (method, path, described)


# -- STOMP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.hardening(
    "security",
    "Each role (admin, monitor, user, a token with no Spidi role) SUBSCRIBEs to /topic/rooms, a room's "
    "metrics and roster, /topic/alerts, /user/queue/session and /errors, and SENDs /app/hello, "
    "/app/heartbeat, /app/leave; under the default settings and with each grant setting on",
    "Topics: monitor and admin; the user queues: anyone connected; HELLO: user and admin (monitor "
    "FORBIDDEN); a monitor cannot heartbeat or end another's session; no Spidi role: refused at CONNECT",
)
async def test_stomp_roles(node_factory, variant):
    node = await node_factory(**VARIANTS[variant])
    # A user's session in the room, for the topics to have something and for the others to poke at.
    owner = await connected(node.ws_url, _token(node, USER, "owner"))
    owned = (await owner.hello(ROOM, client_id="own"))["sessionId"]
    wrong: list = []
    try:
        # No Spidi role: CONNECT itself is refused, so no destination is reachable.
        stranger = await Client.open(node.ws_url)
        frame = await stranger.connect(_token(node, OTHER))
        assert frame[0] == "ERROR", frame
        await stranger.close()

        for role in (ADMIN, MONITOR, USER):
            client = await connected(node.ws_url, _token(node, role))
            try:
                for destination, kind in STOMP_SUBSCRIBE.items():
                    before = len(_errors(client))
                    # The subscription's errors and snapshot come before its receipt.
                    await client.subscribe(destination, sub_id=f"s-{destination}")
                    errors = _errors(client)[before:]
                    allowed = role in stomp_may(kind)
                    if allowed and errors or not allowed and [e["code"] for e in errors] != ["FORBIDDEN"]:
                        wrong.append(("SUBSCRIBE", destination, role, errors))
                    if allowed and destination.startswith("/topic/") and not _messages(client, destination):
                        # The snapshot comes with the subscription.
                        await client.json(destination)
                    if destination.startswith("/user/"):  # the second one: errors would come twice
                        await client.send("UNSUBSCRIBE", {"id": f"s-{destination}"})

                before = len(_errors(client))
                await _send(
                    client, "/app/hello", {"roomCode": ROOM, "clientId": f"c-{role}", "appVersion": "1"}
                )
                welcomes = [m for m in _messages(client, "/user/queue/session") if m["type"] == "WELCOME"]
                errors = _errors(client)[before:]
                may_join = role in stomp_may(JOIN)
                if may_join != bool(welcomes) or (
                    not may_join and [e["code"] for e in errors] != ["FORBIDDEN"]
                ):
                    wrong.append(("SEND", "/app/hello", role, errors))
                # Heartbeat and leave: one's own session (if one may join), never another's.
                for destination in ("/app/heartbeat", "/app/leave"):
                    payload = {"sessionId": owned, "latencyMs": 5}
                    before = len(_errors(client))
                    await _send(client, destination, payload)
                    if [e["code"] for e in _errors(client)[before:]] != ["UNKNOWN_SESSION"]:
                        wrong.append(("SEND", destination, role, "another's session"))
                    if may_join:
                        before = len(_errors(client))
                        await _send(
                            client, destination, {"sessionId": welcomes[-1]["sessionId"], "latencyMs": 5}
                        )
                        if _errors(client)[before:]:
                            wrong.append(("SEND", destination, role, _errors(client)[before:]))
            finally:
                await client.close()
        # The owner's session survived all of it.
        assert any(s.session_id == owned for s in node.presence.sessions.values())
    finally:
        await owner.close()
    assert not wrong, wrong


# -- IP addresses ---------------------------------------------------------------------------------


def _sees_ip(role: str, variant: str) -> bool:
    return role == ADMIN or (role == MONITOR and variant == "monitors_see_ip")


def _check_entries(entries: list[dict], sees: bool, where: str) -> None:
    assert entries, where
    for entry in entries:
        if sees:
            assert entry["ip"] == CLIENT_IP, (where, entry)
        else:
            assert "ip" not in entry, (where, entry)


@pytest.mark.parametrize("variant", ["default", "monitors_see_ip"])
@pytest.mark.hardening(
    "security",
    "A monitor and an admin watch a room's roster over STOMP (snapshot, a join, a heartbeat) and read "
    "the live roster and a user's sessions over REST; default settings and monitors_see_ip on",
    "Admins see the clients' IP addresses; a monitor sees roster entries without an ip key (and no "
    "address anywhere in what it receives) unless monitors_see_ip is on",
)
async def test_ip_addresses_by_role(node_factory, pg_dsn, variant):
    node = await node_factory(postgres_dsn=pg_dsn, writer="external", **VARIANTS[variant])
    topic = f"/topic/rooms/{ROOM}/roster"
    first = await connected(node.ws_url, _token(node, USER, "alice"))
    await first.hello(ROOM, client_id="first")
    watchers = {}
    for role in (ADMIN, MONITOR):
        watcher = await connected(node.ws_url, _token(node, role))
        await watcher.subscribe(topic)
        snapshot = await watcher.json(topic, type_="ROOM_ROSTER")
        assert snapshot["full"]
        _check_entries(snapshot["users"], _sees_ip(role, variant), f"{role} snapshot")
        watchers[role] = watcher
    # A join and a heartbeat after they subscribed: deltas.
    second = await connected(node.ws_url, _token(node, USER, "bob"))
    sid = (await second.hello(ROOM, client_id="second"))["sessionId"]
    for role, watcher in watchers.items():
        while True:
            delta = await watcher.json(topic, type_="ROOM_ROSTER")
            if delta["joined"]:
                break
        _check_entries(delta["joined"], _sees_ip(role, variant), f"{role} joined")
    await second.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 7})
    for role, watcher in watchers.items():
        while True:
            delta = await watcher.json(topic, type_="ROOM_ROSTER")
            if delta["updated"]:
                break
        _check_entries(delta["updated"], _sees_ip(role, variant), f"{role} updated")

    # REST: the live roster for both; a user's sessions (admins only) for the admin.
    async with aiohttp.ClientSession() as http:
        api = ApiClient(http, node)
        room_id = room_id_for("default", ROOM)
        for role in (ADMIN, MONITOR):
            live = await api.get(f"/api/v1/rooms/{room_id}/sessions", role=role)
            assert live.status == 200, live.body
            _check_entries(live.body["items"], _sees_ip(role, variant), f"{role} REST roster")
        mine = await api.get("/api/v1/users/alice/sessions", role=ADMIN)
        _check_entries(mine.body["items"], True, "admin REST user sessions")
        # Nothing a monitor may read over REST carries an address, unless granted.
        if not _sees_ip(MONITOR, variant):
            for path in (
                "/api/v1/rooms",
                f"/api/v1/rooms/{room_id}",
                f"/api/v1/rooms/{room_id}/sessions",
            ):
                reply = await api.get(path, role=MONITOR)
                assert CLIENT_IP not in json.dumps(reply.body), (path, reply.body)

    # Nothing else a monitor receives over STOMP (metrics, the room list, alerts, any later roster
    # delta) carries an address, unless granted.
    monitor = watchers[MONITOR]
    await monitor.subscribe(f"/topic/rooms/{ROOM}/metrics")
    await monitor.subscribe("/topic/rooms")
    await monitor.subscribe("/topic/alerts")
    received = " ".join(body.decode() for command, _, body in monitor.skipped if command == "MESSAGE")
    if not _sees_ip(MONITOR, variant):
        assert CLIENT_IP not in received, received
    for client in (first, second, *watchers.values()):
        await client.close()


def test_allows_is_any_allowed_role_held_for_sets_and_lists():
    from itertools import combinations

    from spidi_server import roles as roles_module

    everyone = (*roles_module.ALL, "other:role")
    for policy in (roles_module.DEFAULT, roles_module.policy(_Permissive())):
        for action, allowed in policy.permissions.items():
            for n in range(len(everyone) + 1):
                for held in combinations(everyone, n):
                    expected = any(role in held for role in allowed)
                    for form in (frozenset(held), set(held), list(held), held):
                        assert policy.allows(form, action) is expected, (action, form)


class _Permissive:
    monitors_may_acknowledge = True
    monitors_see_ip = True
