"""A small WebDriver BiDi client, enough to drive a stock Firefox in the dashboard's browser test.

Firefox speaks WebDriver BiDi natively (its Remote Agent): start it with
``--remote-debugging-port``, open a WebSocket on ``ws://127.0.0.1:<port>/session``, send
``session.new``, then JSON commands. Playwright cannot do this with a stock Firefox (it needs its
own patched build), hence this module:

* ``BiDiSession``: commands with ids, each awaiting its own response (bounded), errors raised
  with the browser's message, events handed to listeners;
* ``Tab``: one top-level browsing context: navigate, run JavaScript (values converted to and
  from Python), poll a JS predicate until true, click like a user, screenshots;
* ``launch_firefox``: a headless Firefox on a fresh profile, port 0, its whole process group
  killed on the way out.

Spec: https://w3c.github.io/webdriver-bidi/ (command shapes as Firefox implements them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

COMMAND_TIMEOUT_S = 10.0


class BiDiError(Exception):
    """The browser answered a command with an error."""

    def __init__(self, method: str, error: str, message: str, stacktrace: str = ""):
        super().__init__(f"{method}: {error}: {message}")
        self.method = method
        self.error = error
        self.message = message
        self.stacktrace = stacktrace


class JavaScriptError(Exception):
    """The script run in the page threw."""

    def __init__(self, details: dict):
        self.details = details
        where = f" (line {details.get('lineNumber')}, column {details.get('columnNumber')})"
        super().__init__(str(details.get("text", "exception")) + where)


@dataclass(frozen=True)
class Remote:
    """A reference to a value that stays in the page (a DOM node, a window...)."""

    shared_id: str | None
    handle: str | None = None
    type: str = ""

    def reference(self) -> dict:
        return {"sharedId": self.shared_id} if self.shared_id else {"handle": self.handle}


def to_local(value: Any) -> dict:
    """A Python value as a BiDi LocalValue (a script argument)."""
    if isinstance(value, Remote):
        return value.reference()
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "value": value}
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return {
                "type": "number",
                "value": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"),
            }
        return {"type": "number", "value": value}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, list | tuple):
        return {"type": "array", "value": [to_local(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "object", "value": [[str(k), to_local(v)] for k, v in value.items()]}
    raise TypeError(f"cannot pass {type(value).__name__} to the page")


def from_remote(value: dict) -> Any:
    """A BiDi RemoteValue as Python: primitives, lists and dicts; anything else as a ``Remote``."""
    kind = value.get("type")
    if kind in ("undefined", "null"):
        return None
    if kind in ("string", "boolean"):
        return value["value"]
    if kind == "number":
        v = value["value"]
        return float(v) if isinstance(v, str) else v  # "NaN", "-0", "Infinity", "-Infinity"
    if kind == "bigint":
        return int(value["value"])
    if kind in ("array", "set") and "value" in value:
        return [from_remote(v) for v in value["value"]]
    if kind in ("object", "map") and "value" in value:
        return {k if isinstance(k, str) else repr(from_remote(k)): from_remote(v) for k, v in value["value"]}
    return Remote(value.get("sharedId"), value.get("handle"), kind or "")


class BiDiSession:
    """One WebDriver BiDi session over one WebSocket."""

    def __init__(self, ws):
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future]] = {}
        self._listeners: dict[str, list[Callable[[dict], None]]] = {}
        self.session_id = ""
        self.capabilities: dict = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, capabilities: dict | None = None, timeout: float = COMMAND_TIMEOUT_S):
        """Open the WebSocket and start a session (``session.new``)."""
        # Full-page screenshots come back base64-encoded in one message: allow large messages.
        ws = await asyncio.wait_for(
            websockets.connect(url, max_size=64 * 2**20, ping_interval=None, open_timeout=timeout), timeout
        )
        session = cls(ws)
        try:
            result = await session.send(
                "session.new", {"capabilities": {"alwaysMatch": capabilities or {}}}, timeout
            )
        except BaseException:
            await session.close()
            raise
        session.session_id = result["sessionId"]
        session.capabilities = result["capabilities"]
        return session

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if message.get("type") == "event":
                    for listener in list(self._listeners.get(message["method"], ())):
                        listener(message["params"])
                    continue
                entry = self._pending.pop(message.get("id"), None)
                if entry is None:
                    continue  # an answer to a command whose waiter gave up
                method, future = entry
                if future.done():
                    continue
                if message.get("type") == "error":
                    error = BiDiError(
                        method,
                        message.get("error", "error"),
                        message.get("message", ""),
                        message.get("stacktrace", ""),
                    )
                    future.set_exception(error)
                else:
                    future.set_result(message.get("result", {}))
        except websockets.ConnectionClosed:
            pass
        finally:
            for method, future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"{method}: the browser closed the connection"))
            self._pending.clear()

    async def send(self, method: str, params: dict | None = None, timeout: float = COMMAND_TIMEOUT_S) -> dict:
        """Send one command and wait (at most ``timeout`` s) for its result."""
        command_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[command_id] = (method, future)
        try:
            await self._ws.send(json.dumps({"id": command_id, "method": method, "params": params or {}}))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"{method}: no answer from the browser within {timeout} s") from None
        finally:
            self._pending.pop(command_id, None)

    def on(self, event: str, listener: Callable[[dict], None]) -> None:
        """Call ``listener(params)`` for each ``event`` (subscribe to it too: ``subscribe``)."""
        self._listeners.setdefault(event, []).append(listener)

    async def subscribe(self, *events: str) -> None:
        await self.send("session.subscribe", {"events": list(events)})

    async def top_level_tab(self) -> Tab:
        """The first top-level browsing context (the tab the browser started with)."""
        tree = await self.send("browsingContext.getTree", {"maxDepth": 0})
        if not tree["contexts"]:
            created = await self.send("browsingContext.create", {"type": "tab"})
            return Tab(self, created["context"])
        return Tab(self, tree["contexts"][0]["context"])

    async def close(self) -> None:
        """Close the WebSocket (the session is not ended: see ``end``)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 5)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

    async def end(self) -> None:
        """``session.end``, then close the WebSocket; errors of a dying browser are ignored."""
        with contextlib.suppress(BiDiError, ConnectionError, TimeoutError, websockets.ConnectionClosed):
            await self.send("session.end", timeout=5)
        await self.close()


class Tab:
    """One top-level browsing context."""

    def __init__(self, session: BiDiSession, context: str):
        self.session = session
        self.context = context

    async def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Load ``url`` and wait for the load event."""
        params = {"context": self.context, "url": url, "wait": "complete"}
        await self.session.send("browsingContext.navigate", params, timeout)

    async def set_viewport(self, width: int, height: int) -> None:
        params = {"context": self.context, "viewport": {"width": width, "height": height}}
        await self.session.send("browsingContext.setViewport", params)

    def _script_result(self, result: dict) -> Any:
        if result.get("type") == "exception":
            raise JavaScriptError(result.get("exceptionDetails", {}))
        return from_remote(result["result"])

    async def evaluate(self, expression: str, timeout: float = COMMAND_TIMEOUT_S) -> Any:
        """The value of a JS expression (a promise is awaited)."""
        params = {
            "expression": expression,
            "target": {"context": self.context},
            "awaitPromise": True,
            "resultOwnership": "none",
        }
        return self._script_result(await self.session.send("script.evaluate", params, timeout))

    async def call(self, function: str, *args: Any, timeout: float = COMMAND_TIMEOUT_S) -> Any:
        """Call a JS function declaration, e.g. ``"(sel) => document.querySelector(sel).textContent"``."""
        params = {
            "functionDeclaration": function,
            "arguments": [to_local(a) for a in args],
            "target": {"context": self.context},
            "awaitPromise": True,
            "resultOwnership": "none",
        }
        return self._script_result(await self.session.send("script.callFunction", params, timeout))

    async def wait_for(
        self, function: str, *args: Any, timeout: float = 5.0, what: str = "", poll_s: float = 0.05
    ):
        """Poll the JS function until it returns something truthy; return that, or raise TimeoutError.

        A throw in the page counts as "not yet" (the element may not exist yet); the last value or
        error is in the timeout's message.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = await self.call(function, *args, timeout=max(1.0, deadline - time.monotonic()))
                if last:
                    return last
            except JavaScriptError as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"not true within {timeout} s: {what or function} (last: {last!r})")
            await asyncio.sleep(poll_s)

    async def query(self, selector: str) -> Remote:
        """The first element matching ``selector``; LookupError if there is none."""
        node = await self.call("(sel) => document.querySelector(sel)", selector)
        if not isinstance(node, Remote):
            raise LookupError(f"no element matches {selector!r}")
        return node

    async def _perform(self, *sources: dict) -> None:
        await self.session.send("input.performActions", {"context": self.context, "actions": list(sources)})

    async def _move_to(self, selector: str) -> list[dict]:
        """Scroll the element into view; the pointer move onto its centre."""
        node = await self.query(selector)
        await self.call("(el) => el.scrollIntoView({block: 'center', inline: 'center'})", node)
        return [
            {
                "type": "pointerMove",
                "x": 0,
                "y": 0,
                "origin": {"type": "element", "element": node.reference()},
            }
        ]

    async def hover(self, selector: str) -> None:
        """Move the mouse onto the element's centre."""
        await self._perform({"type": "pointer", "id": "mouse", "actions": await self._move_to(selector)})

    async def click(self, selector: str) -> None:
        """Click the element's centre with the mouse (real input events), after scrolling it into view."""
        press = [{"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]
        await self._perform(
            {"type": "pointer", "id": "mouse", "actions": await self._move_to(selector) + press}
        )

    async def type(self, selector: str, text: str) -> None:
        """Click into the element, then type ``text`` key by key."""
        await self.click(selector)
        keys = [{"type": kind, "value": ch} for ch in text for kind in ("keyDown", "keyUp")]
        await self._perform({"type": "key", "id": "keyboard", "actions": keys})

    async def screenshot(self, path: Path, full_page: bool = True) -> None:
        """A PNG of the viewport, or of the whole document."""
        params = {
            "context": self.context,
            "origin": "document" if full_page else "viewport",
            "format": {"type": "image/png"},
        }
        result = await self.session.send("browsingContext.captureScreenshot", params, timeout=20)
        path.write_bytes(base64.b64decode(result["data"]))


# -- a stock Firefox, headless, on a fresh profile ------------------------------------------------

# Quiet and offline: no first-run pages, no update or telemetry traffic, no proxy for loopback.
# (The Remote Agent applies its own "recommended" automation prefs on top.)
FIREFOX_PREFS = {
    "remote.active-protocols": 1,  # WebDriver BiDi only (no CDP)
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "network.proxy.type": 0,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "extensions.update.enabled": False,
    "browser.tabs.warnOnClose": False,
    "dom.disable_open_during_load": False,
}

_LISTENING = re.compile(rb"WebDriver BiDi listening on (ws://\S+)")


def _user_js(prefs: dict) -> str:
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@contextlib.asynccontextmanager
async def launch_firefox(
    executable: str, workdir: Path, startup_timeout: float = 30.0
) -> AsyncIterator[BiDiSession]:
    """A headless Firefox with a new profile under ``workdir``, and a BiDi session on it.

    The Remote Agent listens on a port of its choosing (port 0); its address is read from the
    browser's stderr (``workdir/firefox.log``). On the way out: ``browser.close``, then the whole
    process group (the content processes too) is killed and the profile deleted.
    """
    profile = workdir / "profile"
    profile.mkdir(parents=True)
    (profile / "user.js").write_text(_user_js(FIREFOX_PREFS))
    log_path = workdir / "firefox.log"
    env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "MOZ_HEADLESS": "1"}
    args = [
        "--headless",
        "--no-remote",
        "--remote-debugging-port",
        "0",
        "--profile",
        str(profile),
        "about:blank",
    ]
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            executable,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # its own process group: killed as one below
        )
    session = None
    try:
        deadline = time.monotonic() + startup_timeout
        while not (match := _LISTENING.search(log_path.read_bytes())):
            if proc.returncode is not None:
                raise RuntimeError(f"firefox exited ({proc.returncode}) at start-up:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"firefox did not start its Remote Agent in {startup_timeout} s:\n{_tail(log_path)}"
                )
            await asyncio.sleep(0.05)
        session = await BiDiSession.connect(match.group(1).decode() + "/session")
        yield session
    finally:
        try:
            if session is not None:
                with contextlib.suppress(
                    BiDiError, ConnectionError, TimeoutError, websockets.ConnectionClosed
                ):
                    await session.send("browser.close", timeout=5)
                await session.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        finally:
            _kill_group(proc.pid, signal.SIGKILL)  # stragglers, or all of it if it did not quit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            shutil.rmtree(profile, ignore_errors=True)  # ~40 MB; the log stays


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_bytes()[-n:].decode(errors="replace")
