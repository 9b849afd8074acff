"""Locust through the Python SDK: each Locust user is one ``SpidiClient`` (clients/python) in a room.

The SDK is asyncio; Locust is gevent. One event loop per Locust process (uvloop when installed:
its I/O is libuv's, which gevent's monkey-patching does not touch) is stepped by one greenlet in
slices of ``PUMP_S``, so the SDK and Locust share the one OS thread and nothing crosses threads.
The clients heartbeat, measure and reconnect by themselves; Locust records, as request type
``SDK``:

| name | what |
|---|---|
| ``join`` | ``join()``: connect, CONNECT, HELLO to WELCOME |
| ``latency`` | each user's smoothed heartbeat round trip (``latency_ms``), sampled every tick |
| ``reconnect`` | failures only: a reconnection attempt (``reconnecting``) |
| ``error`` | failures only: an error event (code in the message) |

By hand (a node started with the same ``SPIDI_JWT_SECRET``, or give ``SPIDI_TOKEN_USER``)::

    SPIDI_JWT_SECRET=... locust -f loadtests/sdk_locustfile.py --host ws://127.0.0.1:8765 \\
        --headless -u 50 -r 10 -t 1m

``SPIDI_LOAD_ROOMS`` (10) rooms named ``sdk-0`` ..; ``SPIDI_LOAD_TENANT`` (default).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import time
from pathlib import Path

import gevent
from locust import User, constant, task

try:
    from spidi_client import SpidiClient
except ImportError:  # run from the repository without installing the SDK
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))
    from spidi_client import SpidiClient

REQUEST_TYPE = "SDK"
PUMP_S = 0.005  # the event loop runs this long, then Locust's greenlets get their turn
ROOMS = int(os.environ.get("SPIDI_LOAD_ROOMS", "10"))
TENANT = os.environ.get("SPIDI_LOAD_TENANT", "default")

_loop: asyncio.AbstractEventLoop | None = None
_ids = itertools.count()


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's SDK event loop, stepped by a greenlet (started on first use)."""
    global _loop
    if _loop is None:
        try:
            import uvloop

            _loop = uvloop.new_event_loop()
        except ImportError:
            _loop = asyncio.new_event_loop()
        gevent.spawn(_pump, _loop)
    return _loop


def _pump(loop: asyncio.AbstractEventLoop) -> None:
    while True:
        loop.run_until_complete(asyncio.sleep(PUMP_S))
        gevent.sleep(0)


def run(coro, timeout: float = 30.0):
    """Run ``coro`` on the SDK loop; wait for it cooperatively (other greenlets keep running)."""
    task_ = event_loop().create_task(coro)
    deadline = time.monotonic() + timeout
    while not task_.done():
        if time.monotonic() > deadline:
            task_.cancel()
            raise TimeoutError(f"no answer within {timeout} s")
        gevent.sleep(0.01)
    return task_.result()


def token_for(sub: str) -> str:
    """``SPIDI_TOKEN_USER``, or an HS256 token minted from ``SPIDI_JWT_SECRET`` for ``sub``."""
    token = os.environ.get("SPIDI_TOKEN_USER")
    if token:
        return token
    secret = os.environ.get("SPIDI_JWT_SECRET")
    if not secret:
        raise RuntimeError("set SPIDI_TOKEN_USER or SPIDI_JWT_SECRET")
    import jwt  # pyjwt, only needed when minting

    now = int(time.time())
    claims = {"sub": sub, "roles": ["spidi:user"], "tenant": TENANT, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


class SdkPresenceUser(User):
    """One device: a SpidiClient joined to a room for the whole run."""

    wait_time = constant(1.0)

    def on_start(self) -> None:
        n = next(_ids)
        sub = f"sdk-user-{n}"

        async def get_token() -> str:
            return token_for(sub)

        self.sdk = SpidiClient(
            url=f"{self.host.rstrip('/')}/ws",
            get_token=get_token,
            room=f"sdk-{n % ROOMS}",
            client_id=f"locust-{n}",
            app_version="load",
        )
        self.sdk.on("reconnecting", lambda attempt, delay_s: self._failure("reconnect", f"attempt {attempt}"))
        self.sdk.on("error", lambda code, message: self._failure("error", f"{code}: {message}"))
        started = time.perf_counter()
        try:
            run(self.sdk.join())
        except Exception as exc:
            self._fire("join", started, exc)
            self.stop()
            return
        self._fire("join", started, None)

    def on_stop(self) -> None:
        if getattr(self, "sdk", None) is not None:
            with contextlib.suppress(Exception):  # stopping: nothing to report
                run(self.sdk.close(), timeout=5)

    @task
    def sample_latency(self) -> None:
        latency = self.sdk.latency_ms
        if latency is not None and self.sdk.connected:
            self.environment.events.request.fire(
                request_type=REQUEST_TYPE,
                name="latency",
                response_time=latency,
                response_length=0,
                exception=None,
            )

    def _fire(self, name: str, started: float, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=exc,
        )

    def _failure(self, name: str, message: str) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=0,
            response_length=0,
            exception=RuntimeError(message),
        )
