"""Real loopback receivers for notification tests: an aiohttp webhook endpoint and an SMTP inbox."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from ..certs import write_self_signed


def free_port() -> int:
    """A TCP port nobody listens on right now (for a receiver started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


@dataclass
class Received:
    """One request the webhook receiver answered."""

    at: float  # monotonic
    headers: dict
    body: bytes
    status: int

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 recording every POST; answers from ``plan``, then ``status``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.plan: list[int | tuple[int, dict]] = []  # statuses (or (status, headers)) for the next requests
        self.status = 200
        self.delay = 0.0  # seconds before answering
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=not-for-logs"

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.ok]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.plan.pop(0) if self.plan else self.status
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        self.requests.append(Received(time.monotonic(), dict(request.headers), body, status))
        return web.Response(status=status, headers=headers)


class Inbox:
    """aiosmtpd handler keeping every message; ``fail_next`` answers 451 to that many DATA commands."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.fail_next = 0
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        if self.fail_next:
            self.fail_next -= 1
            return "451 4.3.0 Try again later"
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"spidi" and auth_data.password == b"pw"
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)


async def start_smtp(inbox: Inbox, **kwargs) -> Controller:
    """An aiosmtpd server on 127.0.0.1 (started in its own thread)."""
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    await asyncio.to_thread(controller.start)
    return controller


def self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for 127.0.0.1 made here: (server context, client context trusting it)."""
    cert_file, key_file = write_self_signed(directory)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
