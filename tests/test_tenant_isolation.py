"""Tenant isolation end to end: two tenants on one real node (Redis, PostgreSQL, the history writer,
the alert evaluator), each with rooms, sessions and a firing alert, and each tenant's monitor and
admin trying every way in to the other's: STOMP topics, /topic/alerts, the REST API (lists,
filters, ids, writes) and the dashboard in Chromium.

The world is built once for the module (a node with a writer child costs seconds) and never changed
by the checks, except for one session the STOMP test opens and ends. Tenant B ("bravo") owns the
room ``b-secret``, which A ("alpha") must never learn of; both own a room ``shared`` (same code,
different rooms) and a user ``dave``. Every check has its positive control: the owner sees what the
other tenant must not, so a check cannot pass because nothing was there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import psycopg
import pytest
import redis

from spidi_server.node import Node
from spidi_server.settings import Settings

from .api.conftest import ApiClient
from .conftest import TEST_SECRET, token_for
from .pg_fixtures import TEMPLATE_DB, _create_db, _drop_db
from .stomp_client import Client, connected

A, B = "alpha", "bravo"
ALERTS = "/topic/alerts"
SESSION_Q = "/user/queue/session"

pytestmark = pytest.mark.timeout(90)


@dataclass
class Tenant:
    """What one tenant owns in the world, and its monitor's STOMP connection."""

    name: str
    rooms: dict[str, str] = field(default_factory=dict)  # code -> room id
    sessions: dict[str, str] = field(default_factory=dict)  # "user@room" -> session id
    rule_id: str = ""
    rule_name: str = ""
    alert_id: str = ""  # the firing event's id (= its episode id)
    alerts_seen: list[dict] = field(default_factory=list)  # every /topic/alerts message of its monitor
    monitor: Client | None = None


@dataclass
class World:
    node: Node
    dsn: str
    api: ApiClient
    tenants: dict[str, Tenant]
    users: list[Client]

    def other(self, name: str) -> Tenant:
        return self.tenants[B if name == A else A]


async def _collect_alerts(tenant: Tenant) -> None:
    """Keep every /topic/alerts message its monitor receives, for the whole module."""
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            with contextlib.suppress(TimeoutError):
                tenant.alerts_seen.append(await tenant.monitor.json(ALERTS, timeout=3600))


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _pg_rows(dsn: str, sql: str, args=()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
async def world(pg_server, redis_url, tmp_path_factory):
    """Two tenants, each with two rooms, sessions, an alert rule and its firing alert."""
    redis.Redis.from_url(redis_url).flushall()  # no lease, stream or rooms of earlier tests
    db = _create_db(pg_server, TEMPLATE_DB)
    dsn = pg_server.database_dsn(db)
    settings = Settings(
        host="127.0.0.1",
        port=0,
        ops_host="127.0.0.1",
        ops_port=0,
        data_dir=str(tmp_path_factory.mktemp("isolation") / "data"),
        dev=False,
        auto_create_rooms=False,
        redis_url=redis_url,
        jwt_secret=TEST_SECRET,
        metrics_interval_ms=50,
        rooms_topic_interval_ms=200,
        postgres_dsn=dsn,
        writer="child",
        writer_flush_interval_s=0.2,
        alert_interval_s=0.2,
        alert_lease_s=1.0,
        alert_rules_refresh_s=0.2,
        grace_period_ms=0,
        # Each tenant holds exactly what the test gave it (the defaults: tests/api/test_tenant_defaults.py).
        tenant_defaults=False,
    ).validate()
    node = Node(settings)
    users: list[Client] = []
    tasks: list[asyncio.Task] = []
    tenants = {name: Tenant(name) for name in (A, B)}
    http = aiohttp.ClientSession()
    try:
        await node.start()
        api = ApiClient(http, node)
        own_room = {A: "a-only", B: "b-secret"}
        for name, tenant in tenants.items():
            for code in ("shared", own_room[name]):
                reply = await api.post("/api/v1/rooms", {"code": code, "capacity": 10}, tenant=name)
                assert reply.status == 201, reply.body
                tenant.rooms[code] = reply.body["id"]
            # Fires as soon as one session is in the tenant's own room (1/10 > 0.05).
            tenant.rule_name = f"{name} {own_room[name]} occupied"
            reply = await api.post(
                "/api/v1/alert-rules",
                {
                    "name": tenant.rule_name,
                    "scope": "room",
                    "roomId": tenant.rooms[own_room[name]],
                    "kind": "capacity",
                    "threshold": 0.05,
                },
                tenant=name,
            )
            assert reply.status == 201, reply.body
            tenant.rule_id = reply.body["id"]
            tenant.monitor = await connected(
                node.ws_url, token_for(settings, f"mon-{name}", "spidi:monitor", name)
            )
            await tenant.monitor.subscribe(ALERTS)
            tasks.append(asyncio.get_running_loop().create_task(_collect_alerts(tenant)))

        async def join(tenant: str, user: str, *codes: str) -> None:
            client = await connected(node.ws_url, token_for(settings, user, "spidi:user", tenant))
            users.append(client)
            for code in codes:
                welcome = await client.hello(code, f"{user}-device")
                tenants[tenant].sessions[f"{user}@{code}"] = welcome["sessionId"]

        await join(A, "alice", "shared")
        await join(A, "dave", "shared", "a-only")
        await join(B, "bravo-bob", "shared")
        await join(B, "bravo-carol", "b-secret")
        await join(B, "dave", "b-secret")  # the same user id as A's dave: another tenant's user

        for tenant in tenants.values():
            await _wait(
                lambda t=tenant: any(
                    m.get("type") == "ALERT" and m["state"] == "firing" for m in t.alerts_seen
                ),
                10,
                f"{tenant.name}'s alert",
            )
            tenant.alert_id = next(m["alertId"] for m in tenant.alerts_seen if m.get("type") == "ALERT")
        # The writer has stored both alerts and every session: the REST checks read PostgreSQL.
        every_session = {s for t in tenants.values() for s in t.sessions.values()}

        def stored() -> bool:
            events = _pg_rows(dsn, "SELECT id::text FROM dat_spd_alert_event")
            sessions = _pg_rows(dsn, "SELECT session_id::text FROM dat_spd_session")
            return {tenants[A].alert_id, tenants[B].alert_id} <= {r[0] for r in events} and every_session <= {
                r[0] for r in sessions
            }

        await _wait(stored, 15, "the writer to store alerts and sessions")
        yield World(node, dsn, api, tenants, users)
    finally:
        for task in tasks:
            task.cancel()
        for client in users + [t.monitor for t in tenants.values() if t.monitor]:
            with contextlib.suppress(Exception):
                await client.close()
        await http.close()
        await node.stop()
        _drop_db(pg_server, db)


async def _monitor(world: World, tenant: str) -> Client:
    return await connected(
        world.node.ws_url, token_for(world.node.settings, f"spy-{tenant}", "spidi:monitor", tenant)
    )


# -- STOMP ------------------------------------------------------------------------------------------


@pytest.mark.hardening(
    "security",
    "Tenant A's monitor subscribes to tenant B's room topics (/topic/rooms/{code}/metrics and /roster of a "
    "room only B has; a room code both have) and to /topic/rooms; each direction",
    "ROOM_NOT_FOUND for the other tenant's room; the shared code shows only its own tenant's sessions and "
    "count, live deltas included; /topic/rooms lists only its own rooms",
)
async def test_stomp_room_topics_are_tenant_scoped(world):
    for name, own in ((A, "a-only"), (B, "b-secret")):
        me, them = world.tenants[name], world.other(name)
        their_own = next(code for code in them.rooms if code != "shared")
        spy = await _monitor(world, name)
        try:
            for leaf in ("metrics", "roster"):
                await spy.send(
                    "SUBSCRIBE", {"id": f"x-{leaf}", "destination": f"/topic/rooms/{their_own}/{leaf}"}
                )
                error = await spy.json("/user/queue/errors")
                assert error["code"] == "ROOM_NOT_FOUND", error
            # Control: its own room of the same kind subscribes fine.
            await spy.subscribe(f"/topic/rooms/{own}/roster")
            assert (await spy.json(f"/topic/rooms/{own}/roster"))["roomId"] == me.rooms[own]

            await spy.subscribe("/topic/rooms/shared/roster")
            roster = await spy.json("/topic/rooms/shared/roster")
            mine = {s for k, s in me.sessions.items() if k.endswith("@shared")}
            assert roster["roomId"] == me.rooms["shared"] and roster["roomId"] != them.rooms["shared"]
            assert {u["sessionId"] for u in roster["users"]} == mine
            await spy.subscribe("/topic/rooms/shared/metrics")
            metrics = await spy.json("/topic/rooms/shared/metrics")
            assert metrics["roomId"] == me.rooms["shared"] and metrics["online"] == len(mine), metrics

            await spy.subscribe("/topic/rooms")
            rooms = (await spy.json("/topic/rooms"))["rooms"]
            assert {r["roomCode"] for r in rooms} <= set(me.rooms) and their_own not in str(rooms)
            assert {r["roomId"] for r in rooms} <= set(me.rooms.values())
            assert {r["roomCode"]: r["online"] for r in rooms}["shared"] == len(mine)
        finally:
            await spy.close()

    # Live: someone joins B's "shared"; B's watcher sees the delta, A's watcher of its "shared" does not.
    watchers = {}
    for name in (A, B):
        watchers[name] = await _monitor(world, name)
        await watchers[name].subscribe("/topic/rooms/shared/roster")
        await watchers[name].json("/topic/rooms/shared/roster")
    newcomer = await connected(
        world.node.ws_url, token_for(world.node.settings, "bravo-erin", "spidi:user", B)
    )
    try:
        sid = (await newcomer.hello("shared", "erin-device"))["sessionId"]
        delta = await watchers[B].json("/topic/rooms/shared/roster", timeout=3)
        assert [u["sessionId"] for u in delta.get("joined", [])] == [sid], delta
        await newcomer.app("/app/leave", {"sessionId": sid})
        delta = await watchers[B].json("/topic/rooms/shared/roster", timeout=3)
        assert [u["sessionId"] for u in delta.get("left", [])] == [sid], delta
        # Both changes published to B's watcher; A's, on its own "shared", heard neither.
        with pytest.raises(TimeoutError):
            await watchers[A].json("/topic/rooms/shared/roster", timeout=0.5)
    finally:
        await newcomer.close()
        for watcher in watchers.values():
            await watcher.close()


@pytest.mark.hardening(
    "security",
    "A rule fires in each tenant; each tenant's monitor follows /topic/alerts (live and a fresh snapshot) and "
    "asks GET /api/v1/alerts/active",
    "Each sees its own alert and never the other tenant's",
)
async def test_alerts_reach_only_their_tenant(world):
    for name in (A, B):
        me, them = world.tenants[name], world.other(name)
        seen = [m for m in me.alerts_seen if m.get("type") == "ALERT"]
        assert seen and {m["ruleId"] for m in seen} == {me.rule_id}  # its own alert reached it
        assert {m["tenant"] for m in seen} == {name}
        assert them.rule_id not in str(me.alerts_seen) and them.alert_id not in str(me.alerts_seen)

        spy = await _monitor(world, name)
        try:
            await spy.subscribe(ALERTS)
            snapshot = await spy.json(ALERTS, type_="ALERTS")
            assert [a["ruleId"] for a in snapshot["alerts"]] == [me.rule_id], snapshot
        finally:
            await spy.close()
        active = await world.api.get("/api/v1/alerts/active", role="monitor", tenant=name)
        assert active.status == 200 and [a["ruleId"] for a in active.body["items"]] == [me.rule_id]


# -- REST ---------------------------------------------------------------------------------------------


def _same_404(reply, ident: str, control: tuple) -> None:
    """A 404 that reads exactly like the one for an id that exists nowhere: existence does not leak.

    ``control`` is (reply, id) of the same request with a random id.
    """
    unknown, unknown_id = control
    assert reply.status == 404, (reply.status, reply.body)
    assert unknown.status == 404, (unknown.status, unknown.body)
    for key in ("type", "title", "status"):
        assert reply.body[key] == unknown.body[key]
    assert reply.body["detail"].replace(ident, "ID") == unknown.body["detail"].replace(unknown_id, "ID")


@pytest.mark.hardening(
    "security",
    "Tenant A's admin and monitor ask the REST API for tenant B's rooms, live and stored sessions, stats, "
    "alert rules and alert events (lists, filters, by id) and try to change or acknowledge them; each direction",
    "Lists and filters hold only the caller's tenant; every id of the other tenant is a 404 exactly like an "
    "unknown id's (no 403); writes change nothing",
)
async def test_rest_api_is_tenant_scoped(world):
    for name in (A, B):
        await _rest_checks(world, name)

    # Nothing of either tenant changed: rooms, rules and events stored exactly as set up.
    rows = _pg_rows(world.dsn, "SELECT count(*) FROM dat_spd_room WHERE deleted_at IS NULL AND capacity = 10")
    assert rows == [(4,)]
    rows = _pg_rows(world.dsn, "SELECT count(*) FROM dat_spd_alert_rule WHERE deleted_at IS NULL AND enabled")
    assert rows == [(2,)]
    assert _pg_rows(
        world.dsn, "SELECT count(*) FROM dat_spd_alert_event WHERE acknowledged_by IS NOT NULL"
    ) == [(0,)]


async def _rest_checks(world: World, name: str) -> None:
    """Tenant ``name`` asks for everything of the other tenant, by every route that reads or writes it."""
    api = world.api
    me, them = world.tenants[name], world.other(name)

    async def get(path, **kw):
        # Session history and a user's sessions are admins' (tests/test_roles.py); the rest a monitor's.
        role = "admin" if "sessions" in path and "/rooms/" not in path else "monitor"
        return await api.get(path, role=role, tenant=name, **kw)

    async def control(path_template: str, method: str = "GET", body=None) -> tuple:
        """The same request about an id nobody has: what a 404 must look like."""
        ident = str(uuid.uuid4())
        return await api.call(method, path_template.format(ident), tenant=name, json=body), ident

    # Rooms: the list, then each of the other tenant's rooms by id, read and write.
    listed = await get("/api/v1/rooms")
    assert listed.status == 200 and {r["id"] for r in listed.body["items"]} == set(me.rooms.values())
    for code, room_id in them.rooms.items():
        for sub in ("", "/sessions", "/stats"):
            _same_404(
                await get(f"/api/v1/rooms/{room_id}{sub}"),
                room_id,
                await control("/api/v1/rooms/{}" + sub),
            )
        for method, body in (("PATCH", {"capacity": 1}), ("PUT", {"code": code}), ("DELETE", None)):
            reply = await api.call(method, f"/api/v1/rooms/{room_id}", tenant=name, json=body)
            _same_404(reply, room_id, await control("/api/v1/rooms/{}", method, body))
    # Control: the owner reads its room's live roster by id.
    roster = await api.get(f"/api/v1/rooms/{me.rooms['shared']}/sessions", role="monitor", tenant=name)
    mine = {s for k, s in me.sessions.items() if k.endswith("@shared")}
    assert {e["sessionId"] for e in roster.body["items"]} == mine

    # Stored sessions: the tenant's own, whatever the filter names.
    history = await get("/api/v1/sessions", params={"limit": "1000"})
    assert {s["sessionId"] for s in history.body["items"]} >= set(me.sessions.values())
    assert not {s["sessionId"] for s in history.body["items"]} & set(them.sessions.values())
    for params in ({"roomId": r} for r in them.rooms.values()):
        assert (await get("/api/v1/sessions", params=params)).body["items"] == []
    their_user = "bravo-carol" if name == A else "alice"
    assert (await get("/api/v1/sessions", params={"userId": their_user})).body["items"] == []

    # Live sessions by user: the other tenant's user is nobody here; a shared user id is two people.
    assert (await get(f"/api/v1/users/{their_user}/sessions")).body["items"] == []
    dave = (await get("/api/v1/users/dave/sessions")).body["items"]
    assert {e["sessionId"] for e in dave} == {s for k, s in me.sessions.items() if k.startswith("dave@")}
    assert {e["roomId"] for e in dave} <= set(me.rooms.values())

    # Alert rules: list, filters, by id, writes.
    rules = await get("/api/v1/alert-rules")
    assert [r["id"] for r in rules.body["items"]] == [me.rule_id]
    for room_id in them.rooms.values():
        assert (await get("/api/v1/alert-rules", params={"roomId": room_id})).body["items"] == []
    _same_404(
        await get(f"/api/v1/alert-rules/{them.rule_id}"),
        them.rule_id,
        await control("/api/v1/alert-rules/{}"),
    )
    for method, body in (("PATCH", {"enabled": False}), ("DELETE", None)):
        reply = await api.call(method, f"/api/v1/alert-rules/{them.rule_id}", tenant=name, json=body)
        _same_404(reply, them.rule_id, await control("/api/v1/alert-rules/{}", method, body))
    # A rule of one's own cannot target the other tenant's room: refused like an unknown room.
    body, nobody = {"name": "x", "scope": "room", "kind": "capacity"}, str(uuid.uuid4())
    theirs = await api.post("/api/v1/alert-rules", {**body, "roomId": them.rooms["shared"]}, tenant=name)
    unknown = await api.post("/api/v1/alert-rules", {**body, "roomId": nobody}, tenant=name)
    assert theirs.status == unknown.status == 400
    (theirs_error,), (unknown_error,) = theirs.body["errors"], unknown.body["errors"]
    assert theirs_error["message"].replace(them.rooms["shared"], "ID") == unknown_error["message"].replace(
        nobody, "ID"
    )

    # Alert events: list, filters, by id, acknowledge.
    events = await get("/api/v1/alerts")
    assert {e["ruleId"] for e in events.body["items"]} == {me.rule_id}
    assert me.alert_id in {e["id"] for e in events.body["items"]}
    for params in ({"ruleId": them.rule_id}, {"roomId": them.rooms["shared"]}):
        assert (await get("/api/v1/alerts", params=params)).body["items"] == []
    _same_404(await get(f"/api/v1/alerts/{them.alert_id}"), them.alert_id, await control("/api/v1/alerts/{}"))
    ack = await api.post(f"/api/v1/alerts/{them.alert_id}/acknowledge", role="admin", tenant=name)
    _same_404(ack, them.alert_id, await control("/api/v1/alerts/{}/acknowledge", "POST"))


# -- the dashboard ------------------------------------------------------------------------------------


@pytest.mark.hardening(
    "security",
    "Tenant A's monitor signs in to the dashboard (Chromium) while B's rooms are busy and B's alert fires; "
    "opens A's room that has the same code as one of B's",
    "The page shows A's rooms, sessions and alert only: B's room code, users, sessions, ids and rule never "
    "appear in it",
)
async def test_dashboard_shows_only_the_tenant(world):
    from playwright.async_api import async_playwright, expect

    from .dashboard.conftest import CHROMIUM_ARGS, chromium_path

    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    me, them = world.tenants[A], world.tenants[B]
    forbidden = [
        "b-secret",
        "bravo",
        them.rule_id,
        them.rule_name,
        them.alert_id,
        *them.rooms.values(),
        *them.sessions.values(),
    ]
    token = token_for(world.node.settings, "mon-alpha", "spidi:monitor", A)
    pw = await async_playwright().start()
    try:
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        page = await (await browser.new_context(viewport={"width": 1360, "height": 920})).new_page()
        await page.goto(world.node.ops.url + "/")
        await page.fill("#token", token)
        await page.click("#signin-button")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=5000)
        shared = page.locator('#rooms-table tr[data-room="shared"]')
        await expect(shared.locator(".online")).to_have_text("2", timeout=3000)  # A's two, not B's
        await expect(page.locator('#rooms-table tr[data-room="a-only"] .online')).to_have_text("1")
        await expect(page.locator("#rooms-table tbody tr")).to_have_count(2)
        alerts = page.locator("#alerts-table tbody tr")
        await expect(alerts).to_have_count(1, timeout=3000)  # A's alert, and only A's
        await expect(alerts.first).to_have_attribute("data-alert", f"{me.rule_id}/{me.rooms['a-only']}")
        await page.wait_for_timeout(1200)  # a few more /topic/rooms and /topic/alerts rounds
        await _assert_absent(page, forbidden)

        await shared.locator(".c-code a").click()
        await expect(page.locator("#room-title")).to_have_text("shared")
        rows = page.locator("#roster-table tbody tr")
        await expect(rows).to_have_count(2, timeout=3000)
        shown = {await rows.nth(i).get_attribute("data-session") for i in range(2)}
        assert shown == {s for k, s in me.sessions.items() if k.endswith("@shared")}
        await expect(page.locator("#history-status")).not_to_have_text("Loading history…", timeout=3000)
        await _assert_absent(page, forbidden)
        await browser.close()
    finally:
        await pw.stop()


async def _assert_absent(page, forbidden: list[str]) -> None:
    """None of ``forbidden`` in the page's markup (attributes included) or its visible text."""
    html = await page.content()
    text = await page.inner_text("body")
    for value in forbidden:
        assert value not in html and value not in text, f"{value!r} is in tenant A's dashboard"


# -- room types ------------------------------------------------------------------------------------
# Runs last: it adds room types and rooms to the world (and takes them away again at the end).


async def _hello(client: Client, room: str) -> dict:
    """HELLO, and the WELCOME or the error, whichever comes."""
    await client.app("/app/hello", {"roomCode": room, "clientId": "c1", "appVersion": "1.0.0"})
    frame = await client.next(timeout=5, command="MESSAGE")
    assert frame[1]["destination"] in (SESSION_Q, "/user/queue/errors"), frame
    return json.loads(frame[2])


@pytest.mark.hardening(
    "security",
    "Tenant B's admin lists, reads, replaces, changes and deletes tenant A's room type by id, and attaches it "
    "(by its code) to a new and to an existing room of B; A's admin then changes the default capacity of its "
    "type while B has a type of the same code",
    "B never sees A's type (every id a 404 exactly like an unknown id's, writes change nothing, A's code is an "
    "unknown type to B); A's change moves A's room capacity only: B's room keeps its capacity in the REST API "
    "and admits as many HELLOs as before on the node",
)
async def test_room_types_are_tenant_scoped(world):
    api = world.api
    clients: list[Client] = []
    created_rooms: list[tuple[str, str]] = []  # (tenant, room id)
    created_types: list[tuple[str, str]] = []  # (tenant, type id)

    async def control(method: str, body=None) -> tuple:
        ident = str(uuid.uuid4())
        return await api.call(method, f"/api/v1/room-types/{ident}", tenant=B, json=body), ident

    async def new_type(tenant: str, capacity: int) -> str:
        body = {"code": "suite", "name": f"{tenant} suite", "defaultCapacity": capacity}
        reply = await api.post("/api/v1/room-types", body, tenant=tenant)
        assert reply.status == 201, reply.body  # the same code in each tenant: two types
        created_types.append((tenant, reply.body["id"]))
        return reply.body["id"]

    async def new_room(tenant: str, code: str) -> str:
        reply = await api.post("/api/v1/rooms", {"code": code, "type": "suite"}, tenant=tenant)
        assert reply.status == 201, reply.body
        created_rooms.append((tenant, reply.body["id"]))
        return reply.body["id"]

    async def capacity(tenant: str, room_id: str) -> int:
        return (await api.get(f"/api/v1/rooms/{room_id}", role="monitor", tenant=tenant)).body["capacity"]

    async def admitted(tenant: str, code: str, n: int) -> list[str]:
        """n users of ``tenant`` say HELLO in room ``code``: the outcome of each (session or error code)."""
        outcomes = []
        for i in range(n):
            user = f"{tenant}-guest-{code}-{i}"
            client = await connected(
                world.node.ws_url, token_for(world.node.settings, user, "spidi:user", tenant)
            )
            clients.append(client)
            reply = await _hello(client, code)
            outcomes.append("WELCOME" if reply.get("type") == "WELCOME" else reply.get("code"))
        return outcomes

    try:
        a_type = await new_type(A, 2)
        a_room = await new_room(A, "a-suite")

        # B cannot see A's type: not listed, every id route a 404 like an unknown id's.
        listed = await api.get("/api/v1/room-types", role="monitor", tenant=B)
        assert listed.status == 200 and listed.body["items"] == [], listed.body
        assert [t["id"] for t in (await api.get("/api/v1/room-types", tenant=A)).body["items"]] == [a_type]
        for method, body in (
            ("GET", None),
            ("PATCH", {"defaultCapacity": 50}),
            ("PUT", {"code": "suite", "name": "taken", "defaultCapacity": 50}),
            ("DELETE", None),
        ):
            reply = await api.call(method, f"/api/v1/room-types/{a_type}", tenant=B, json=body)
            _same_404(reply, a_type, await control(method, body))
        # B cannot attach A's type: its code is an unknown type to B, on a new room and on one of its own.
        for method, path, body in (
            ("POST", "/api/v1/rooms", {"code": "b-stolen", "type": "suite"}),
            ("PATCH", f"/api/v1/rooms/{world.tenants[B].rooms['b-secret']}", {"type": "suite"}),
        ):
            reply = await api.call(method, path, tenant=B, json=body)
            assert reply.status == 400, reply.body
            assert reply.body["errors"] == [
                {"in": "body", "field": "type", "message": "unknown room type 'suite'"}
            ]
        stored = _pg_rows(
            world.dsn,
            "SELECT default_capacity, name, deleted_at IS NULL, created_at = updated_at FROM tba_spd_room_type"
            " WHERE id = %s",
            [a_type],
        )
        assert stored == [(2, f"{A} suite", True, True)], stored  # never changed, never deleted
        assert await capacity(A, a_room) == 2

        # B has its own type of the same code; A changes its own: B's room keeps its capacity.
        await new_type(B, 2)
        b_room = await new_room(B, "b-suite")
        assert await capacity(B, b_room) == 2
        changed = await api.patch(f"/api/v1/room-types/{a_type}", {"defaultCapacity": 1}, tenant=A)
        assert changed.status == 200 and changed.body["defaultCapacity"] == 1, changed.body
        assert (await capacity(A, a_room), await capacity(B, b_room)) == (1, 2)
        # The node admits by the same capacities: A's room is full at one, B's still takes two.
        assert await admitted(A, "a-suite", 2) == ["WELCOME", "ROOM_FULL"]
        assert await admitted(B, "b-suite", 2) == ["WELCOME", "WELCOME"]
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        for tenant, room_id in created_rooms:
            await api.call("DELETE", f"/api/v1/rooms/{room_id}", tenant=tenant)
        for tenant, type_id in created_types:
            await api.call("DELETE", f"/api/v1/room-types/{type_id}", tenant=tenant)
