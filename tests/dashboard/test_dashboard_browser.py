"""The operators' dashboard: served files, and a real Chromium watching real clients come and go."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time

import aiohttp

from spidi_server.dashboard import STATIC_DIR

from ..conftest import token_for
from ..stomp_client import connected
from .conftest import ARTIFACTS, RECORD_CONN_STATES

# -- served files (no browser) -----------------------------------------------------------------------


async def _get(url: str, headers: dict | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_files_and_config_are_served(node_factory):
    node = await node_factory()
    base = node.ops.url

    async with aiohttp.ClientSession() as http, http.get(base + "/") as resp:
        status, ctype, body = resp.status, resp.headers.get("Content-Type", ""), await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert status == 200 and ctype.startswith("text/html"), (status, ctype)
    assert '<script type="module" src="/static/main.js">' in body  # it imports the others

    # The import map names the vendored SDK and stompjs, before any module script; the CSP
    # allows that inline script by its hash, and no other inline script.
    (import_map,) = re.findall(r'<script type="importmap">(.*?)</script>', body, re.DOTALL)
    assert body.index('type="importmap"') < body.index('type="module"') < body.index("modulepreload")
    imports = json.loads(import_map)["imports"]
    assert imports == {
        "spidi-client": "/static/vendor/spidi-client/index.js",
        "@stomp/stompjs": "/static/vendor/stompjs/index.js",
    }
    digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in csp, csp
    assert "unsafe-inline" not in csp and csp.count("'sha256-") == 1

    # Every script, in static/ and its folders (views/, vendor/), as text/javascript: modules
    # require it. Each is imported by the page (the vendored packages' index.js import all their
    # files), so each is preloaded: no round trip per import level.
    scripts = sorted(path.relative_to(STATIC_DIR).as_posix() for path in STATIC_DIR.rglob("*.js"))
    assert {"main.js", "views/room.js", "views/rooms.js"} <= set(scripts), scripts
    assert {"vendor/spidi-client/index.js", "vendor/stompjs/index.js"} <= set(scripts), scripts
    assert "stomp.js" not in scripts  # the dashboard's own STOMP client is gone: the SDK's is used
    for script in set(scripts) - {"main.js"}:
        assert f'<link rel="modulepreload" href="/static/{script}">' in body, script
    for name, expected in [
        *((script, "text/javascript") for script in scripts),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
        ("vendor/stompjs/package.json", "application/json"),
    ]:
        status, ctype, body = await _get(f"{base}/static/{name}")
        assert status == 200 and ctype.startswith(expected), (name, status, ctype)
        assert body

    for bad in (
        "/static/nope.js",
        "/static/..%2f__init__.py",
        "/static/.hidden.js",
        "/static/__init__.py",
        "/static/views/nope.js",
        "/static/nope/..%2f..%2f__init__.py",
        "/static/views%2f..%2f..%2f__init__.py",
        "/static/.git/config.js",
        "/static/views//nope.js",
        "/static/vendor/stompjs/LICENSE",  # in the tree, not served (no type of ours)
        "/static/vendor/stompjs/index.js.map",
    ):
        status, _, _ = await _get(base + bad)
        assert status == 404, bad

    # Dev mode: the WebSocket URL on the host the browser used, and an admin token that verifies.
    status, ctype, body = await _get(base + "/dashboard/config")
    assert status == 200 and ctype.startswith("application/json"), (status, ctype)
    config = json.loads(body)
    assert config["wsUrl"] == f"ws://127.0.0.1:{node.transport.port}/ws"
    claims = node.verifier.verify(config["devToken"])
    assert claims.roles == {"spidi:admin"} and claims.tenant == "default" and claims.user_id == "dev-admin"
    assert config["watchRoles"] == [
        "spidi:monitor",
        "spidi:admin",
    ]  # roles.py's OBSERVE, for the sign-in check

    _, _, body = await _get(base + "/dashboard/config", {"Host": f"ops.example.test:{node.ops.port}"})
    assert json.loads(body)["wsUrl"] == f"ws://ops.example.test:{node.transport.port}/ws"
    _, _, body = await _get(base + "/dashboard/config", {"Host": "[::1]:9100"})
    assert json.loads(body)["wsUrl"] == f"ws://[::1]:{node.transport.port}/ws"


async def test_config_has_no_token_outside_dev_mode(node_factory):
    node = await node_factory(dev=False, auto_create_rooms=True)
    status, _, body = await _get(node.ops.url + "/dashboard/config")
    config = json.loads(body)
    assert status == 200 and "devToken" not in config
    assert config["wsUrl"] == f"ws://127.0.0.1:{node.transport.port}/ws"


async def test_config_says_who_may_acknowledge(node_factory):
    """The page offers Acknowledge only to the roles the node's policy allows (roles.py)."""
    for grant, expected in ((False, ["spidi:admin"]), (True, ["spidi:monitor", "spidi:admin"])):
        node = await node_factory(monitors_may_acknowledge=grant)
        _, _, body = await _get(node.ops.url + "/dashboard/config")
        assert json.loads(body)["acknowledgeRoles"] == expected, grant


# -- in the browser ---------------------------------------------------------------------------------


async def test_dashboard_live_in_chromium(node_factory, page):
    from playwright.async_api import expect

    t_start = time.monotonic()
    node = await node_factory()
    await page.goto(node.ops.url + "/")

    # Sign in: development mode filled in an admin token.
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#token")).to_have_value(re.compile(r"^ey\S+\.\S+\.\S+$"))
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-signin.png"))
    await page.click("#signin-button")
    await expect(page.locator("#global")).to_be_visible()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=3000)
    await expect(page.locator("#rooms-loading")).to_be_hidden(timeout=3000)

    # A real client joins: the room shows up with online 1 within 2 s.
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    welcome = await alice.hello("lobby", client_id="phone-7f3a", device="Pixel 8", os="Android 15")
    sid = welcome["sessionId"]
    await alice.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 42})
    joined_at = time.monotonic()
    row = page.locator('#rooms-table tr[data-room="lobby"]')
    await expect(row.locator(".online")).to_have_text("1", timeout=2000)
    room_seen_s = time.monotonic() - joined_at
    await expect(page.locator("#total-online")).to_have_text("1")
    await expect(page.locator("#total-rooms")).to_have_text("1")
    await expect(row.locator(".c-alert")).to_have_text("—")

    # A second room: filtering by code and sorting by column.
    bob = await connected(node.ws_url, token_for(node.settings, "bob", "spidi:user"))
    await bob.hello("checkout", client_id="web-1", device="MacBook Air", os="macOS 15")
    await bob.hello("checkout", client_id="web-2", device="iPhone 16", os="iOS 18")
    checkout = page.locator('#rooms-table tr[data-room="checkout"]')
    await expect(checkout.locator(".online")).to_have_text("2", timeout=2000)
    codes = page.locator("#rooms-table tbody tr .c-code")
    await expect(codes).to_have_text(["checkout", "lobby"])  # default: most online first
    await page.click('#rooms-table th[data-key="roomCode"]')
    await expect(codes).to_have_text(["checkout", "lobby"])  # A→Z
    await page.click('#rooms-table th[data-key="roomCode"]')
    await expect(codes).to_have_text(["lobby", "checkout"])  # Z→A
    await page.fill("#filter", "lob")
    await expect(codes).to_have_text(["lobby"])
    await expect(page.locator("#rooms-count")).to_have_text("1 of 2")
    await page.fill("#filter", "")
    await expect(codes).to_have_count(2)
    await page.click('#rooms-table th[data-key="online"]')
    await expect(codes).to_have_text(["checkout", "lobby"])  # most online first
    await page.screenshot(path=str(ARTIFACTS / "dashboard-global.png"))

    # Room view: the client is in the roster with its device and OS within 2 s.
    opened_at = time.monotonic()
    await row.locator(".c-code a").click()
    await expect(page.locator("#room")).to_be_visible()
    await expect(page.locator("#room-title")).to_have_text("lobby")
    entry = page.locator(f'#roster-table tr[data-session="{sid}"]')
    await expect(entry.locator(".c-device")).to_have_text("Pixel 8", timeout=2000)
    await expect(entry.locator(".c-os")).to_have_text("Android 15")
    roster_seen_s = time.monotonic() - opened_at
    await expect(entry.locator(".c-app")).to_have_text("1.0.0")
    await expect(entry.locator(".c-latency")).to_have_text("42 ms", timeout=2000)
    await expect(entry.locator(".c-ip")).to_have_text("127.0.0.1")
    await expect(page.locator("#room-online")).to_have_text("1", timeout=2000)
    await expect(page.locator("#lat-p50")).to_have_text("42 ms")
    # The stats API answers (points or not) or fails: either way the page says something sensible.
    await expect(page.locator("#history-status, #history-charts").first).to_be_visible()
    await expect(page.locator("#history-status")).not_to_have_text("Loading history…", timeout=3000)
    await page.wait_for_timeout(300)  # let the bar transitions settle for the picture
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # The client leaves: gone from the roster within 2 s, and the count drops.
    left_at = time.monotonic()
    await alice.app("/app/leave", {"sessionId": sid})
    await expect(entry).to_have_count(0, timeout=2000)
    await expect(page.locator("#room-online")).to_have_text("0", timeout=2000)
    leave_seen_s = time.monotonic() - left_at
    await expect(page.locator("#roster-empty")).to_be_visible()

    # The WebSocket drops: the page says so, reconnects by itself and subscribes again.
    dashboard_conns = [c for c in node.clients if c.stomp.claims and c.stomp.claims.user_id == "dev-admin"]
    assert len(dashboard_conns) == 1
    await page.evaluate(RECORD_CONN_STATES)
    dashboard_conns[0].writer.close(1011, "test: dropped")
    await page.wait_for_function("() => window.__connStates.includes('reconnecting')", timeout=2000)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=5000)
    again = await alice.hello("lobby", client_id="phone-7f3a", device="Pixel 8", os="Android 15")
    await expect(page.locator(f'#roster-table tr[data-session="{again["sessionId"]}"]')).to_have_count(
        1, timeout=2000
    )

    # A gap in the roster's seq (one delta lost): the page subscribes again and gets a fresh snapshot.
    (lobby,) = [r for r in node.presence.rooms.values() if r.code == "lobby"]
    (roster_sub,) = lobby.roster_subs
    roster_sub.seq += 3
    carol = await bob.hello("lobby", client_id="web-3", device="ThinkPad X1", os="Windows 11")
    await expect(page.locator(f'#roster-table tr[data-session="{carol["sessionId"]}"]')).to_have_count(
        1, timeout=2000
    )
    assert [s.sub_id for s in lobby.roster_subs] not in ([], [roster_sub.sub_id])
    await expect(page.locator("#roster-table tbody tr")).to_have_count(2)
    await bob.app("/app/leave", {"sessionId": carol["sessionId"]})
    await expect(page.locator("#roster-table tbody tr")).to_have_count(1, timeout=2000)

    # Back to all rooms: the global view is live too.
    await page.click("#crumbs a")
    await expect(page.locator("#global")).to_be_visible()
    await expect(page.locator('#rooms-table tr[data-room="lobby"] .online')).to_have_text("1", timeout=2000)
    await alice.app("/app/leave", {"sessionId": again["sessionId"]})
    await expect(page.locator('#rooms-table tr[data-room="lobby"] .online')).to_have_text("0", timeout=2000)
    await expect(page.locator("#total-online")).to_have_text("2")

    await alice.close()
    await bob.close()
    print(
        f"\nroom seen {room_seen_s:.2f}s, roster seen {roster_seen_s:.2f}s, leave seen {leave_seen_s:.2f}s, "
        f"total {time.monotonic() - t_start:.1f}s"
    )


async def test_roster_without_ip_addresses_for_a_monitor(node_factory, page):
    """A monitor's roster carries no IP addresses (ADR-0001): the page shows "—", snapshot and deltas."""
    from playwright.async_api import expect

    node = await node_factory()
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    first = await alice.hello("lobby", client_id="phone-1", device="Pixel 8", os="Android 15")
    await page.goto(node.ops.url + "/#/rooms/lobby")
    await page.fill("#token", token_for(node.settings, "mo", "spidi:monitor"))
    await page.click("#signin-button")
    await expect(page.locator("#room")).to_be_visible()
    entry = page.locator(f'#roster-table tr[data-session="{first["sessionId"]}"]')
    await expect(entry.locator(".c-device")).to_have_text("Pixel 8", timeout=2000)
    await expect(entry.locator(".c-ip")).to_have_text("—")
    await expect(entry.locator(".c-ip")).to_have_attribute("title", re.compile("not shown"))
    # A join and a heartbeat after the snapshot (deltas), then sorting and filtering with no ip.
    second = await alice.hello("lobby", client_id="web-1", device="MacBook Air", os="macOS 15")
    await alice.app("/app/heartbeat", {"sessionId": second["sessionId"], "latencyMs": 12})
    joined = page.locator(f'#roster-table tr[data-session="{second["sessionId"]}"]')
    await expect(joined.locator(".c-latency")).to_have_text("12 ms", timeout=2000)
    await expect(joined.locator(".c-ip")).to_have_text("—")
    await page.click('#roster-table th[data-key="ip"]')
    await page.click('#roster-table th[data-key="ip"]')
    await expect(page.locator("#roster-table tbody tr")).to_have_count(2)
    assert "127.0.0.1" not in await page.locator("#room").inner_text()
    await alice.close()


async def test_roster_shows_liveness_grades(node_factory, page):
    """A silent session turns late then at risk in the roster and the room's KPI (the server's
    grades, docs/protocol.md); a heartbeat makes it live again. Interval 2 s: late after 3 s."""
    from playwright.async_api import expect

    node = await node_factory(heartbeat_interval_ms=2000, heartbeat_timeout_ms=60_000)
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    sid = (await alice.hello("lobby", client_id="phone-1"))["sessionId"]
    await page.goto(node.ops.url + "/#/rooms/lobby")
    await page.fill("#token", token_for(node.settings, "mo", "spidi:monitor"))
    await page.click("#signin-button")
    last = page.locator(f'#roster-table tr[data-session="{sid}"] .c-last')
    await expect(last).not_to_have_text(re.compile("late|at risk"), timeout=2000)
    await expect(last).to_have_text(re.compile("· late$"), timeout=8000)
    await expect(last).to_have_class(re.compile("warn"))
    await expect(last).to_have_text(re.compile("· at risk$"), timeout=8000)
    await expect(last).to_have_class(re.compile("crit"))
    await expect(page.locator("#room-capacity")).to_have_text(re.compile("1 at risk"), timeout=4000)
    await alice.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 8})
    await expect(last).not_to_have_text(re.compile("late|at risk"), timeout=4000)
    await expect(page.locator("#room-capacity")).not_to_have_text(re.compile("at risk"), timeout=4000)
    await alice.close()


async def test_history_charts_and_errors(node_factory, page):
    """The stats API stubbed in the browser: points become charts; 404/503/no network say "No history"."""
    from playwright.async_api import expect

    node = await node_factory()
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    await alice.hello("lobby", device="Pixel 8", os="Android 15")

    answers = {"mode": 200}
    seen = []

    async def stats(route):
        request = route.request
        seen.append((request.url, request.headers.get("authorization", "")))
        if answers["mode"] == "abort":
            await route.abort()
        elif answers["mode"] != 200:
            await route.fulfill(status=answers["mode"], body="{}", content_type="application/json")
        else:
            now = int(time.time() // 60 * 60)
            points = [
                {
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60 * (59 - i))),
                    "onlineAvg": 20 + (i % 17),
                    "onlineMax": 24 + (i % 17),
                    "joins": 3,
                    "leaves": 2,
                    "timeouts": 0,
                    "disconnects": 0,
                    "latencyAvgMs": 40 + (i % 9) * 3,
                    "latencyP95Ms": 90 + (i % 7) * 10,
                }
                for i in range(60)
            ]
            await route.fulfill(
                status=200,
                content_type="application/json",
                body=json.dumps({"roomId": "r", "bucket": "1m", "from": "", "to": "", "points": points}),
            )

    await page.route("**/api/v1/rooms/*/stats*", stats)
    token = token_for(node.settings, "mo", "spidi:monitor")
    await page.goto(node.ops.url + "/#/rooms/lobby")
    await page.fill("#token", token)
    await page.click("#signin-button")
    await expect(page.locator("#room")).to_be_visible()
    await expect(page.locator("#who-name")).to_have_text("mo")
    await expect(page.locator("#history-charts")).to_be_visible(timeout=3000)
    await expect(page.locator("#chart-online path.line")).to_have_count(2)
    await expect(page.locator("#chart-latency path.line")).to_have_count(2)
    url, auth = seen[-1]
    assert auth == f"Bearer {token}"
    assert "bucket=1m" in url and "from=" in url and "to=" in url
    await page.hover("#chart-online svg .overlay")
    await expect(page.locator("#chart-online .tip")).to_be_visible()
    await page.screenshot(path=str(ARTIFACTS / "dashboard-history-stub.png"), full_page=True)

    for mode, text in [(404, "HTTP 404"), (503, "HTTP 503"), ("abort", "could not be reached")]:
        answers["mode"] = mode
        await page.click(
            '#range button[data-range="24h"]' if mode != 503 else '#range button[data-range="7d"]'
        )
        await expect(page.locator("#history-status")).to_contain_text("No history", timeout=2000)
        await expect(page.locator("#history-status")).to_contain_text(text)
    assert "bucket=1h" in seen[-1][0]

    # The token survives a reload in this tab (sessionStorage): no second sign-in.
    await page.reload()
    await expect(page.locator("#room")).to_be_visible()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=3000)
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('spidi.dashboard.token')") is None
    await alice.close()


async def test_sign_in_refusals(node_factory, page):
    """Tokens the page can judge are refused before connecting; the server's refusal is shown too."""
    import jwt
    from playwright.async_api import expect

    node = await node_factory()
    await page.goto(node.ops.url + "/")
    error = page.locator("#signin-error")

    await page.fill("#token", "not a token")
    await page.click("#signin-button")
    await expect(error).to_contain_text("does not look like a JWT")

    await page.fill("#token", token_for(node.settings, "alice", "spidi:user"))
    await page.click("#signin-button")
    await expect(error).to_contain_text("spidi:monitor or spidi:admin")

    now = int(time.time())
    forged = jwt.encode({"sub": "eve", "roles": ["spidi:admin"], "iat": now, "exp": now + 600}, "x" * 48)
    await page.fill("#token", forged)
    await page.click("#signin-button")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(error).to_contain_text("The server refused the token: invalid token", timeout=3000)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "idle")
    await expect(page.locator("#token")).to_have_value(forged)
    assert await page.evaluate("sessionStorage.getItem('spidi.dashboard.token')") is None


async def test_retry_now_skips_the_back_off(node_factory, browser):
    """With the node unreachable the page backs off (its countdown grows, the offline banner
    shows); "Retry now" connects at once instead of sitting out the wait."""
    from playwright.async_api import expect

    from ..clients.conftest import Relay

    node = await node_factory()
    relay = await Relay(node.transport.port).start()
    relay.down = True  # accepts and drops every connection: the handshake fails
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(msg) -> None:
        # The browser reports each failed WebSocket handshake: expected here, not a page bug.
        if msg.type == "error" and not re.search("WebSocket connection to|Failed to load resource", msg.text):
            errors.append(msg.text)

    page.on("console", console)
    try:
        await page.goto(node.ops.url + "/")
        await page.click("#signin .advanced summary")
        await page.fill("#ws-url", relay.ws_url)
        await page.click("#signin-button")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=3000)
        await expect(page.locator("#offline")).to_be_visible()
        await expect(page.locator("#conn")).to_have_attribute(
            "title", re.compile(r"Connection lost: closed \(1006\)")
        )
        # Attempt after attempt the window doubles (0.5 s, 1 s, 2 s ... up to 15 s): wait for a
        # wait of 5 s or more, so that connecting within 2 s can only be the button's doing.
        await expect(page.locator("#conn-text")).to_have_text(
            re.compile(r"Reconnecting in ([5-9]|1[0-5]) s"), timeout=60_000
        )
        relay.down = False
        await page.click("#retry")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=2000)
        await expect(page.locator("#offline")).to_be_hidden()
        await expect(page.locator("#rooms-loading")).to_be_hidden(timeout=2000)
    finally:
        await context.close()
        await relay.close()
    assert not errors, errors


async def test_sdk_modules_in_browser(node_factory, page):
    """What the dashboard relies on, loaded as the page loads it (the import map): stompjs's frame
    parser (split frames, several per message, content-length bodies with NUL, EOL heart-beats)
    and the SDK's roster state (snapshot, idempotent deltas, a seq gap asking for a new snapshot)."""
    node = await node_factory()
    await page.goto(node.ops.url + "/")
    result = await page.evaluate(
        r"""async () => {
        const { Parser, FrameImpl } = await import("@stomp/stompjs");
        const { RosterState, SpidiClient } = await import("spidi-client");
        const frames = [];
        let pings = 0;
        const p = new Parser((raw) => frames.push(FrameImpl.fromRawFrame(raw, true)), () => pings++);
        const out = [];
        const msg = 'MESSAGE\nsubscription:s1\ncontent-length:5\ndestination:/a\\cb\n\nab\u0000cd\u0000';
        p.parseChunk('\n');
        out.push(frames.length, pings);
        p.parseChunk(msg.slice(0, 20));
        out.push(frames.length);
        p.parseChunk(msg.slice(20) + '\r\n\nRECEIPT\r\nreceipt-id:7\r\n\r\n\u0000');
        out.push(frames.length, frames[0].body, frames[0].headers.destination, frames[1].headers['receipt-id']);
        out.push(pings);
        const utf = new TextEncoder().encode('MESSAGE\ncontent-length:2\n\n\u00e9\u0000');
        p.parseChunk(utf.buffer.slice(0, 15));
        p.parseChunk(utf.buffer.slice(15));
        out.push(frames[2].body);

        const r = new RosterState();
        const a = { sessionId: 'a', latencyMs: null }, b = { sessionId: 'b', latencyMs: 5 };
        out.push(r.apply({ full: false, seq: 4, joined: [b] }));  // a delta before the snapshot
        out.push(r.apply({ full: true, seq: 4, users: [a] }));
        out.push(r.apply({ full: false, seq: 5, joined: [b], updated: [{ sessionId: 'a', latencyMs: 9 }] }));
        out.push([...r.users.keys()].join(','), r.users.get('a').latencyMs);
        out.push(r.apply({ full: false, seq: 6, left: [{ sessionId: 'zz' }, { sessionId: 'b' }] }));
        out.push([...r.users.keys()].join(','));
        out.push(r.apply({ full: false, seq: 8, joined: [b] }));  // seq 7 was lost
        out.push(r.apply({ full: false, seq: 9, joined: [b] }));  // nothing until the new snapshot
        out.push(typeof SpidiClient.prototype.watchRoom, typeof SpidiClient.prototype.watchAlerts);
        return out;
    }"""
    )
    assert result == [
        0,
        1,  # a bare EOL is a heart-beat
        0,  # half a frame: nothing yet
        2,
        "ab\x00cd",
        "/a:b",
        "7",
        3,  # CR LF, then LF, between the frames: two more
        "é",  # content-length counts bytes, not characters
        "ignored",
        "applied",
        "applied",
        "a,b",
        9,
        "applied",  # leaving an unknown session is no error
        "a",
        "resync",
        "ignored",
        "function",
        "function",
    ]
