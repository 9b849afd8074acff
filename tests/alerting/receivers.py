"""Real loopback receivers for notification tests: an aiohttp webhook endpoint, receivers that
check the Slack, Teams and PagerDuty formats as those services would, and an SMTP inbox."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
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


# -- receivers that check a service's format, as the service would ------------------------------

SLACK_BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text"}
PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}


def slack_problems(body) -> list[str]:
    """What Slack's incoming webhooks would refuse in ``body`` (Block Kit limits included)."""
    if not isinstance(body, dict):
        return ["not an object"]
    out = []
    if not isinstance(body.get("text"), str) or not body["text"]:
        out.append("text: a non-empty string (the notification and fallback) is required with blocks")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return out + ["blocks: a list of 1 to 50 blocks"]
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in SLACK_BLOCK_TYPES:
            out.append(f"blocks[{i}].type: unknown {kind!r}")
        elif kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 1 <= len(text.get("text") or "") <= 150:
                out.append(f"blocks[{i}]: a header is plain_text of 1 to 150 characters")
        elif kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                out.append(f"blocks[{i}]: a section needs text or fields")
            for j, f in enumerate(fields or []):
                if f.get("type") not in ("mrkdwn", "plain_text") or not 1 <= len(f.get("text") or "") <= 2000:
                    out.append(f"blocks[{i}].fields[{j}]: a text object of 1 to 2000 characters")
            if fields is not None and len(fields) > 10:
                out.append(f"blocks[{i}].fields: at most 10")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                out.append(f"blocks[{i}].elements: 1 to 10 elements")
    return out


def teams_problems(body) -> list[str]:
    """What a Teams workflow webhook ("post to a channel") would refuse in ``body``."""
    if not isinstance(body, dict) or body.get("type") != "message":
        return ['type: must be "message"']
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return ["attachments: a non-empty list"]
    out = []
    for i, attachment in enumerate(attachments):
        if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
            out.append(f"attachments[{i}].contentType: must be application/vnd.microsoft.card.adaptive")
        card = attachment.get("content") or {}
        if card.get("type") != "AdaptiveCard":
            out.append(f"attachments[{i}].content.type: must be AdaptiveCard")
        if not str(card.get("$schema", "")).startswith("http://adaptivecards.io/schemas/"):
            out.append(f"attachments[{i}].content.$schema: the Adaptive Card schema")
        if not isinstance(card.get("version"), str) or not card["version"].startswith("1."):
            out.append(f"attachments[{i}].content.version: a 1.x version string")
        body_items = card.get("body")
        if not isinstance(body_items, list) or not body_items:
            out.append(f"attachments[{i}].content.body: a non-empty list of elements")
            continue
        for j, item in enumerate(body_items):
            if item.get("type") == "TextBlock" and not isinstance(item.get("text"), str):
                out.append(f"body[{j}]: a TextBlock needs text")
            elif item.get("type") == "FactSet":
                if not all(
                    isinstance(f.get("title"), str) and isinstance(f.get("value"), str) for f in item["facts"]
                ):
                    out.append(f"body[{j}]: facts are title/value strings")
            elif item.get("type") not in ("TextBlock", "FactSet"):
                out.append(f"body[{j}].type: unexpected {item.get('type')!r}")
    return out


def pagerduty_problems(body) -> list[str]:
    """What PagerDuty's Events API v2 (``/v2/enqueue``) would refuse in ``body``."""
    if not isinstance(body, dict):
        return ["not an object"]
    out = []
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        out.append("routing_key: the 32-character integration key")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        out.append("event_action: trigger, acknowledge or resolve")
    dedup = body.get("dedup_key")
    if action in ("acknowledge", "resolve") and not dedup:
        out.append("dedup_key: required to acknowledge or resolve")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        out.append("dedup_key: a string of at most 255 characters")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return out + ["payload: required to trigger"]
        if not isinstance(payload.get("summary"), str) or not 1 <= len(payload["summary"]) <= 1024:
            out.append("payload.summary: 1 to 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            out.append("payload.source: required")
        if payload.get("severity") not in PAGERDUTY_SEVERITIES:
            out.append("payload.severity: critical, error, warning or info")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
            except (AttributeError, ValueError):
                out.append("payload.timestamp: an ISO 8601 time")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            out.append("payload.custom_details: an object")
    return out


FORMAT_CHECKS = {"slack": slack_problems, "teams": teams_problems, "pagerduty": pagerduty_problems}


class FormatReceiver(WebhookReceiver):
    """A webhook receiver answering like the service of ``kind``: 400 with the problems of a body
    the service would refuse (kept in ``refused``), else Slack's 200 or Teams' and PagerDuty's 202."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.refused: list[list[str]] = []

    @property
    def accepted(self) -> list[dict]:
        """The JSON bodies of the requests the service would have taken."""
        return [r.json for r in self.requests if r.ok]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            problems = FORMAT_CHECKS[self.kind](orjson.loads(body))
        except orjson.JSONDecodeError:
            problems = ["not JSON"]
        if request.content_type != "application/json":
            problems.append(f"Content-Type: {request.content_type}")
        status = 400 if problems else 200 if self.kind == "slack" else 202
        if problems:
            self.refused.append(problems)
        self.requests.append(Received(time.monotonic(), dict(request.headers), body, status))
        return web.Response(status=status, text="; ".join(problems) or "ok")


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
