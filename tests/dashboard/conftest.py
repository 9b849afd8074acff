"""Real browsers for the dashboard's tests: Playwright driving Debian's chromium, and Debian's
firefox-esr driven over WebDriver BiDi (``bidi.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Installed in a page: records each data-state the connection indicator takes (window.__connStates).
# A retry drawn near zero by the full jitter leaves "reconnecting" up for a few ms only, less than
# a poll's period: tests look for it in the record instead.
RECORD_CONN_STATES = """(() => {
  window.__connStates = [];
  const el = document.querySelector('#conn');
  // Records come batched: each one's old value, then the value now, so no state is skipped.
  new MutationObserver((records) => {
    for (const r of records) window.__connStates.push(r.oldValue);
    window.__connStates.push(el.dataset.state);
  }).observe(el, { attributes: true, attributeFilter: ['data-state'], attributeOldValue: true });
})()"""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """SPIDI_CHROMIUM, else Debian's /usr/bin/chromium, else whatever `chromium` is on PATH."""
    for candidate in (os.environ.get("SPIDI_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def firefox_path() -> str | None:
    """SPIDI_FIREFOX, else Debian's /usr/bin/firefox-esr, else whatever `firefox-esr` is on PATH."""
    for candidate in (os.environ.get("SPIDI_FIREFOX"), "/usr/bin/firefox-esr", shutil.which("firefox-esr")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
async def browser():
    """One headless Chromium per module; each test opens its own context (fresh sessionStorage)."""
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the browser test needs it")
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    try:
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await pw.stop()


@pytest.fixture
async def page(browser):
    """A fresh browser context (empty sessionStorage) and page; fails the test on uncaught page errors."""
    context = await browser.new_context(viewport={"width": 1360, "height": 920})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(msg) -> None:
        # A 404/503 of the history API shows as "Failed to load resource": expected, not a page bug.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            errors.append(msg.text)

    page.on("console", console)
    yield page
    await context.close()
    assert not errors, errors


@pytest.fixture
async def firefox(tmp_path):
    """A headless firefox-esr on a fresh profile and a WebDriver BiDi session on it; killed afterwards."""
    path = firefox_path()
    if path is None:
        pytest.skip(
            "firefox-esr is not installed (apt-get install -y firefox-esr); the Firefox test needs it"
        )
    from .bidi import launch_firefox

    async with launch_firefox(path, tmp_path / "firefox") as session:
        yield session
