"""The dashboard in a real Firefox (Debian's firefox-esr, driven over WebDriver BiDi: ``bidi.py``).

What the Chromium test checks, in the other engine: the page loads without a JS error, the
development token signs in, a real client joining and leaving a room shows in the rooms table and
in the room's roster within 2 s, sorting and filtering, reconnecting after a dropped WebSocket,
and the history charts.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from ..conftest import token_for
from ..stomp_client import connected
from .conftest import ARTIFACTS, RECORD_CONN_STATES

# Predicates polled in the page (Tab.wait_for): all take a CSS selector first.
VISIBLE = "(sel) => { const el = document.querySelector(sel); return !!el && el.checkVisibility(); }"
TEXT = "(sel, text) => { const el = document.querySelector(sel); return !!el && el.textContent.trim() === text; }"
ATTR = "(sel, name, value) => document.querySelector(sel)?.getAttribute(name) === value"
GONE = "(sel) => document.querySelector(sel) === null"
TEXTS = "(sel) => [...document.querySelectorAll(sel)].map((el) => el.textContent.trim())"
BACKSPACE = "\ue003"


@pytest.fixture
async def tab(firefox):
    """The browser's tab at 1360×920; fails the test on any error the page logs or throws."""
    errors: list[dict] = []
    firefox.on(
        "log.entryAdded", lambda entry: errors.append(entry) if entry.get("level") == "error" else None
    )
    await firefox.subscribe("log.entryAdded")
    tab = await firefox.top_level_tab()
    await tab.set_viewport(1360, 920)

    # The collector works: an uncaught error in the page is seen.
    await tab.evaluate("setTimeout(() => { throw new Error('bidi-probe'); }, 0); true")
    await _until(lambda: any("bidi-probe" in e.get("text", "") for e in errors), "the probe error is logged")
    errors.clear()

    user_agent = await tab.evaluate("navigator.userAgent")
    assert re.search(r"\bFirefox/\d+", user_agent) and "Chrome" not in user_agent, user_agent
    yield tab
    assert not errors, [(e.get("type"), e.get("text")) for e in errors]


async def _until(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def _sign_in(tab, url: str) -> None:
    """Load the page; development mode filled in an admin token: sign in with it."""
    await tab.navigate(url)
    await tab.wait_for(VISIBLE, "#signin", what="the sign-in form")
    token = await tab.evaluate("document.querySelector('#token').value")
    assert re.fullmatch(r"ey\S+\.\S+\.\S+", token), token
    await tab.click("#signin-button")
    await tab.wait_for(ATTR, "#conn", "data-state", "connected", timeout=3, what="connected")


async def test_dashboard_live_in_firefox(node_factory, firefox, tab):
    t_start = time.monotonic()
    node = await node_factory()
    await _sign_in(tab, node.ops.url + "/")
    await tab.wait_for(VISIBLE, "#global", what="the rooms view")
    await tab.wait_for(
        "() => document.querySelector('#rooms-loading').hidden", timeout=3, what="rooms loaded"
    )

    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    bob = await connected(node.ws_url, token_for(node.settings, "bob", "spidi:user"))
    try:
        # A real client joins: the room shows up with online 1 within 2 s.
        welcome = await alice.hello("lobby", client_id="phone-7f3a", device="Pixel 8", os="Android 15")
        sid = welcome["sessionId"]
        await alice.app("/app/heartbeat", {"sessionId": sid, "latencyMs": 42})
        joined_at = time.monotonic()
        lobby = '#rooms-table tr[data-room="lobby"]'
        await tab.wait_for(TEXT, f"{lobby} .online", "1", timeout=2, what="lobby online 1")
        room_seen_s = time.monotonic() - joined_at
        await tab.wait_for(TEXT, "#total-online", "1", timeout=2, what="total online 1")
        assert await tab.call(TEXT, "#total-rooms", "1")
        assert await tab.call(TEXT, f"{lobby} .c-alert", "—")

        # A second room: sorting by column and filtering by code, with the mouse and the keyboard.
        await bob.hello("checkout", client_id="web-1", device="MacBook Air", os="macOS 15")
        await bob.hello("checkout", client_id="web-2", device="iPhone 16", os="iOS 18")
        await tab.wait_for(
            TEXT, '#rooms-table tr[data-room="checkout"] .online', "2", timeout=2, what="checkout 2"
        )
        codes = "#rooms-table tbody tr .c-code"
        assert await tab.call(TEXTS, codes) == ["checkout", "lobby"]  # default: most online first
        await tab.click('#rooms-table th[data-key="roomCode"]')
        assert await tab.call(TEXTS, codes) == ["checkout", "lobby"]  # A→Z
        await tab.click('#rooms-table th[data-key="roomCode"]')
        assert await tab.call(TEXTS, codes) == ["lobby", "checkout"]  # Z→A
        await tab.type("#filter", "lob")
        await tab.wait_for(TEXT, "#rooms-count", "1 of 2", timeout=2, what="filtered to lobby")
        assert await tab.call(TEXTS, codes) == ["lobby"]
        await tab.type("#filter", BACKSPACE * 3)
        await tab.wait_for(f"() => ({TEXTS})({codes!r}).length === 2", timeout=2, what="filter cleared")
        await tab.click('#rooms-table th[data-key="online"]')
        assert await tab.call(TEXTS, codes) == ["checkout", "lobby"]  # most online first

        # Room view: the client is in the roster, with the count, within 2 s.
        opened_at = time.monotonic()
        await tab.click(f"{lobby} .c-code a")
        await tab.wait_for(VISIBLE, "#room", what="the room view")
        assert await tab.call(TEXT, "#room-title", "lobby")
        entry = f'#roster-table tr[data-session="{sid}"]'
        await tab.wait_for(TEXT, f"{entry} .c-device", "Pixel 8", timeout=2, what="alice in the roster")
        await tab.wait_for(TEXT, "#room-online", "1", timeout=2, what="room online 1")
        roster_seen_s = time.monotonic() - opened_at
        assert await tab.call(TEXT, f"{entry} .c-os", "Android 15")
        assert await tab.call(TEXT, f"{entry} .c-app", "1.0.0")
        assert await tab.call(TEXT, f"{entry} .c-ip", "127.0.0.1")
        await tab.wait_for(TEXT, f"{entry} .c-latency", "42 ms", timeout=2, what="alice's latency")
        assert await tab.call(TEXT, "#roster-count", "1 session")
        await tab.wait_for(TEXT, "#lat-p50", "42 ms", timeout=2, what="latency p50")
        # No history store in this test: the page must say so, not spin.
        await tab.wait_for(TEXT, "#history-status strong", "No history", timeout=3, what="history answered")
        await tab.evaluate("new Promise((ok) => setTimeout(ok, 300))")  # let the bar transitions settle
        ARTIFACTS.mkdir(exist_ok=True)
        await tab.screenshot(ARTIFACTS / "dashboard-firefox.png", full_page=True)

        # The client leaves: gone from the roster within 2 s, and the count drops.
        left_at = time.monotonic()
        await alice.app("/app/leave", {"sessionId": sid})
        await tab.wait_for(GONE, entry, timeout=2, what="alice gone from the roster")
        await tab.wait_for(TEXT, "#room-online", "0", timeout=2, what="room online 0")
        leave_seen_s = time.monotonic() - left_at
        await tab.wait_for(VISIBLE, "#roster-empty", what="the empty roster note")

        # The WebSocket drops: the page says so, reconnects by itself and subscribes again.
        await tab.evaluate(RECORD_CONN_STATES)  # (the state can be gone before a poll sees it)
        (conn,) = [c for c in node.clients if c.stomp.claims and c.stomp.claims.user_id == "dev-admin"]
        conn.writer.close(1011, "test: dropped")
        await tab.wait_for(
            "() => window.__connStates.includes('reconnecting')", timeout=2, what="reconnecting"
        )
        await tab.wait_for(ATTR, "#conn", "data-state", "connected", timeout=5, what="connected again")
        again = await alice.hello("lobby", client_id="phone-7f3a", device="Pixel 8", os="Android 15")
        await tab.wait_for(
            VISIBLE,
            f'#roster-table tr[data-session="{again["sessionId"]}"]',
            timeout=2,
            what="alice back in the roster",
        )

        # Back to all rooms: the global view is live too.
        await tab.click("#crumbs a")
        await tab.wait_for(VISIBLE, "#global", what="the rooms view again")
        await alice.app("/app/leave", {"sessionId": again["sessionId"]})
        await tab.wait_for(TEXT, f"{lobby} .online", "0", timeout=2, what="lobby online 0")
        await tab.wait_for(TEXT, "#total-online", "2", timeout=2, what="total online 2")
    finally:
        await alice.close()
        await bob.close()

    print(
        f"\n{firefox.capabilities.get('browserName')} {firefox.capabilities.get('browserVersion')}: "
        f"room seen {room_seen_s:.2f}s, roster seen {roster_seen_s:.2f}s, leave seen {leave_seen_s:.2f}s, "
        f"total {time.monotonic() - t_start:.1f}s"
    )


# The stats API's answer, served by the page's own fetch (stubbed in the page: the node of this
# test has no history store): an hour of 1-minute buckets.
STUB_STATS = """() => {
  const now = Math.floor(Date.now() / 60000) * 60000;
  const points = [];
  for (let i = 0; i < 60; i++) {
    points.push({ts: new Date(now - 60000 * (59 - i)).toISOString().replace(/\\.\\d{3}Z$/, "Z"),
                 onlineAvg: 20 + (i % 17), onlineMax: 24 + (i % 17), joins: 3, leaves: 2, timeouts: 0,
                 disconnects: 0, latencyAvgMs: 40 + (i % 9) * 3, latencyP95Ms: 90 + (i % 7) * 10});
  }
  window.__statsCalls = [];
  window.fetch = async (url, init) => {
    window.__statsCalls.push([String(url), init.headers.Authorization]);
    return new Response(JSON.stringify({roomId: "r", bucket: "1m", points}),
                        {status: 200, headers: {"Content-Type": "application/json"}});
  };
  return true;
}"""


async def test_history_charts_in_firefox(node_factory, tab):
    node = await node_factory()
    alice = await connected(node.ws_url, token_for(node.settings, "alice", "spidi:user"))
    try:
        await alice.hello("lobby", device="Pixel 8", os="Android 15")
        await _sign_in(tab, node.ops.url + "/")
        await tab.wait_for(TEXT, '#rooms-table tr[data-room="lobby"] .online', "1", timeout=2, what="lobby")
        await tab.call(STUB_STATS)
        await tab.click('#rooms-table tr[data-room="lobby"] .c-code a')
        await tab.wait_for(VISIBLE, "#history-charts", timeout=3, what="the history charts")
        count = "(sel) => document.querySelectorAll(sel).length"
        assert await tab.call(count, "#chart-online path.line") == 2
        assert await tab.call(count, "#chart-latency path.line") == 2
        # The room view also asks for its SLOs (views/slos.js) and its anomaly flags: the stats
        # calls are the history's.
        calls = await tab.evaluate("window.__statsCalls")
        url, auth = [c for c in calls if "/stats?" in c[0]][-1]
        assert url.startswith("/api/v1/rooms/") and "bucket=1m" in url, url
        assert auth.startswith("Bearer ey"), auth

        # Hovering a chart shows the nearest bucket's values.
        await tab.hover("#chart-online svg .overlay")
        await tab.wait_for(VISIBLE, "#chart-online .tip", timeout=2, what="the chart's read-out")
        tip = await tab.evaluate("document.querySelector('#chart-online .tip').textContent")
        assert re.search(r"Online \(avg\): \d+.*Online \(max\): \d+", tip), tip
        await tab.screenshot(ARTIFACTS / "dashboard-firefox-history.png", full_page=True)
    finally:
        await alice.close()
