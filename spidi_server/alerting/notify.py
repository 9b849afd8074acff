"""Alert notifications: signed, retried webhooks and SMTP email, rate limited per rule and room.

The evaluator calls ``Notifier.notify(alert, channels)`` for each transition to ``firing`` and
each ``firing -> resolved``; delivery runs in tasks of its own, so evaluation never waits on an
HTTP or SMTP server. ``in_app`` channels are not handled here (``feed.py`` delivers them).

Rate limit: at most one notification per rule and room per ``alert_rate_limit_s`` (0: none),
whichever process sends it: the first notification of a window takes the Redis key
``spidi:alert:notified:<ruleId>:<roomId>`` (SET NX PX), and any other in the window, firing or
resolved, is suppressed (counted, logged, not delivered). When Redis cannot be asked, the
notification is sent: a duplicate is better than a lost critical alert.

Webhook requests (``WebhookSender``, shared with the room hooks of ``hooks.py``) are a POST of
the JSON body with::

    Content-Type: application/json
    User-Agent: spidi
    X-Spidi-Event: alert                 (room hooks: the hook's event name)
    X-Spidi-Delivery: <uuid>             the same on every retry of one delivery: dedupe on it
    X-Spidi-Timestamp: <unix seconds>    of this attempt
    X-Spidi-Signature: sha256=<hex>      HMAC-SHA256 of "<timestamp>.<body>" keyed with
                                         webhook_secret; absent when webhook_secret is empty

A receiver checks it with ``verify_signature`` (or the same three lines in its own language).

Where a webhook may go is ``egress.py``'s policy, checked on the addresses actually connected to;
a refused delivery is not retried (``WebhookResult.refused``). Redirects are never followed.

The module is long because delivery is: two channels, each with its retries, timeouts and error
counting, behind the one rate limit they share.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parsedate_to_datetime
from typing import TYPE_CHECKING

import aiohttp
import orjson
from yarl import URL

from .. import logs
from ..stores import keys
from .egress import EgressPolicy, EgressRefused, PolicyResolver

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings

log = logging.getLogger("spidi.alerting.notify")

EXTERNAL_CHANNELS = ("webhook", "email")
RETRY_AFTER_MAX_S = 60.0  # a receiver's Retry-After is honoured up to this
JITTER = 0.1  # up to +10 % on each backoff, so retries from many alerts do not arrive in step


# -- signatures ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Spidi-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    header: str | None,
    *,
    max_age_s: float | None = None,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (``X-Spidi-Signature``) signs ``body`` and ``timestamp`` (``X-Spidi-Timestamp``).

    ``body`` must be the raw request body, byte for byte. False when the header is missing or
    malformed, or when ``secret`` is empty (Spidi then sends no signature). With ``max_age_s``
    the timestamp must also be within that many seconds of ``now`` (default: the clock), which
    refuses a replayed request; a retry carries a fresh timestamp, so a small window works.
    """
    if not secret or not header or not header.startswith("sha256="):
        return False
    if isinstance(body, str):
        body = body.encode()
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if max_age_s is not None and abs((time.time() if now is None else now) - sent) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, str(timestamp).strip(), body), header.strip())


# -- webhooks ------------------------------------------------------------------------------------


@dataclass
class WebhookResult:
    """How one delivery ended: delivered or given up, after how many attempts."""

    ok: bool
    delivery_id: str
    attempts: int
    status: int | None = None  # the last HTTP status; None when the last attempt got no answer
    error: str | None = None  # why the last attempt failed
    refused: bool = False  # the address policy refused the host: nothing was sent, nor retried


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


class WebhookSender:
    """POSTs JSON to webhooks: signed, with a per-attempt timeout, retried with backoff.

    One ``aiohttp.ClientSession`` (made on first use, so the sender can be built outside the
    loop) is reused for every delivery. Retried: connection errors, timeouts, 5xx and 429
    (after its ``Retry-After`` when given, at most ``RETRY_AFTER_MAX_S``); any other status
    ends the delivery at once (a 4xx will not get better). Up to ``webhook_retries`` retries,
    the n-th after ``webhook_backoff_s * 2**n`` plus a little jitter.

    Hosts are checked with the ``egress`` policy: a literal address before anything is sent, a
    name by the connector's ``PolicyResolver`` (so the connection goes to a checked address). A
    refused host ends the delivery at once (``refused``). Redirects are not followed: a 3xx is a
    failed delivery, so a receiver cannot bounce the POST to an address the policy refuses.
    """

    def __init__(self, settings: Settings, metrics: NodeMetrics | None = None):
        self.settings = settings
        self.metrics = metrics
        self.policy = EgressPolicy.from_settings(settings)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=PolicyResolver(self.policy)),
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s),
            )
        return self._session

    def headers(self, body: bytes, event: str, delivery_id: str, timestamp: int) -> dict[str, str]:
        """The headers of one attempt (signed when ``webhook_secret`` is set)."""
        out = {
            "Content-Type": "application/json",
            "User-Agent": "spidi",
            "X-Spidi-Event": event,
            "X-Spidi-Delivery": delivery_id,
            "X-Spidi-Timestamp": str(timestamp),
        }
        if self.settings.webhook_secret:
            out["X-Spidi-Signature"] = sign(self.settings.webhook_secret, timestamp, body)
        return out

    async def post(
        self, url: str, payload: dict | bytes, *, event: str = "alert", purpose: str = "alert"
    ) -> WebhookResult:
        """Deliver ``payload`` to ``url``; never raises (but is cancellable).

        ``purpose`` labels ``spidi_webhook_retries`` ("alert" or "hook"). Each failed attempt is
        logged as ``webhook_failed`` with the URL's host only (a URL may carry a token).
        """
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        delivery_id = str(uuid.uuid4())
        host = URL(url).host
        refused = self.policy.refusal_of_host(host) if host else None
        if refused is not None:
            return self._refused(delivery_id, host, refused, purpose, event)
        retries = self.settings.webhook_retries
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                headers = self.headers(body, event, delivery_id, int(time.time()))
                async with self._client().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    if 200 <= status < 300:
                        return WebhookResult(True, delivery_id, attempt, status)
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    retryable = status == 429 or status >= 500
                    error = f"HTTP {status}"
            except asyncio.CancelledError:
                raise
            except aiohttp.InvalidURL as exc:  # will not get better
                retryable, error = False, f"invalid URL: {exc}"
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, EgressRefused):  # a permanent failure: no retry
                    return self._refused(delivery_id, host, exc.os_error.reason, purpose, event, attempt)
                retryable, error = True, f"{type(exc).__name__}: {exc}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                retryable, error = True, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            will_retry = retryable and attempt <= retries
            logs.event(
                log,
                "webhook_failed",
                logging.WARNING,
                host=host,
                status=status,
                attempt=attempt,
                purpose=purpose,
                event_type=event,
                delivery_id=delivery_id,
                error=error,
                will_retry=will_retry,
            )
            if not will_retry:
                return WebhookResult(False, delivery_id, attempt, status, error)
            if self.metrics is not None:
                self.metrics.webhook_retries.labels(purpose=purpose).inc()
            if retry_after is not None:
                delay = retry_after
            else:
                delay = self.settings.webhook_backoff_s * 2 ** (attempt - 1)
                delay *= 1.0 + random.uniform(0.0, JITTER)
            await asyncio.sleep(delay)

    def _refused(
        self, delivery_id: str, host: str | None, reason: str, purpose: str, event: str, attempt: int = 1
    ) -> WebhookResult:
        """The result of a delivery the address policy refused, logged."""
        logs.event(
            log,
            "webhook_refused",
            logging.WARNING,
            host=host,
            reason=reason,
            purpose=purpose,
            event_type=event,
            delivery_id=delivery_id,
            hint="allow it with webhook_allowed_networks or webhook_allowed_hosts",
        )
        return WebhookResult(False, delivery_id, attempt, error=f"refused: {reason}", refused=True)

    async def close(self) -> None:
        """Close the HTTP session (a later ``post`` opens a new one)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


# -- email ---------------------------------------------------------------------------------------


def _utc(ms) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _one_line(value) -> str:
    """Header-safe text (no CR/LF: a rule name must not add header lines)."""
    return " ".join(str(value if value is not None else "").split())


def email_subject(alert: dict) -> str:
    """``[Spidi] FIRING critical: <rule name> in <room code>``."""
    return _one_line(
        f"[Spidi] {str(alert.get('state', '')).upper()} {alert.get('severity', '')}: "
        f"{alert.get('ruleName', '')} in {alert.get('roomCode', '')}"
    )


def email_text(alert: dict) -> str:
    """The plain-text body of an alert email: what fired where, then the room's metrics."""
    state = str(alert.get("state", ""))
    lines = [
        f"{state.upper()} ({alert.get('severity')}): {alert.get('ruleName')} "
        f"in room {alert.get('roomCode')} (tenant {alert.get('tenant')})",
        "",
        f"State:      {state} (was {alert.get('previousState')})",
        f"Severity:   {alert.get('severity')}",
        f"Rule:       {alert.get('ruleName')} ({alert.get('kind')}, id {alert.get('ruleId')})",
        f"Room:       {alert.get('roomCode')} (id {alert.get('roomId')}, tenant {alert.get('tenant')})",
        f"Condition:  {alert.get('expression')}",
    ]
    if alert.get("threshold") is not None or alert.get("value") is not None:
        lines.append(
            f"Value:      {_figure(alert.get('value'))} (threshold {_figure(alert.get('threshold'))})"
        )
    lines += [
        f"Since:      {_utc(alert.get('since'))}",
        f"At:         {_utc(alert.get('at'))}",
        "",
        "Room metrics:",
    ]
    metrics = alert.get("metrics") or {}
    width = max((len(name) for name in metrics), default=0)
    lines += [f"  {name.ljust(width)}  {_figure(value)}" for name, value in metrics.items()]
    lines += [
        "",
        f"Alert id {alert.get('alertId')}, episode {alert.get('episodeId')} (acknowledge the episode).",
        "The alert as JSON is attached (alert.json).",
    ]
    return "\n".join(lines) + "\n"


def _transient(exc: BaseException) -> bool:
    """Whether an SMTP failure may pass on a second try (4xx, dropped or refused connection)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, smtplib.SMTPException | ssl.SSLError):  # not supported, bad certificate...
        return False
    return isinstance(exc, OSError)  # refused, reset, timed out


# -- the notifier --------------------------------------------------------------------------------


class Notifier:
    """Delivers alert transitions to a rule's webhook and email channels, rate limited."""

    email_retry_delay_s = 2.0  # wait before the one retry of a transiently failed email

    def __init__(
        self,
        settings: Settings,
        redis,
        metrics: NodeMetrics,
        *,
        smtp_ssl_context: ssl.SSLContext | None = None,
    ):
        """``smtp_ssl_context`` verifies the SMTP server (default: the system's trusted CAs)."""
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.webhooks = WebhookSender(settings, metrics)
        self.smtp_ssl_context = smtp_ssl_context
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._smtp_missing_logged = False

    def notify(self, alert: dict, channels: list[dict]) -> None:
        """Schedule the delivery of ``alert`` to ``channels``; returns at once.

        Only ``firing`` and ``firing -> resolved`` transitions notify; anything else (and a rule
        with no webhook or email channel) is ignored and takes no rate-limit slot.
        """
        external = [c for c in channels if c.get("type") in EXTERNAL_CHANNELS]
        state, before = alert.get("state"), alert.get("previousState")
        if not external or not (state == "firing" or (state == "resolved" and before == "firing")):
            return
        if self._closed:
            logs.event(
                log,
                "alert_notification_dropped",
                logging.WARNING,
                reason="notifier closed",
                rule_id=alert.get("ruleId"),
                room_id=alert.get("roomId"),
                state=state,
            )
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(alert, external), name=f"spidi-notify-{alert.get('alertId')}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the deliveries scheduled so far; False if some are still running at ``timeout``."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def close(self, timeout: float = 5.0) -> None:
        """Let in-flight deliveries finish for up to ``timeout`` s, cancel the rest, close HTTP.

        An email already handed to its SMTP thread cannot be interrupted: that thread ends by
        itself within ``smtp_timeout_s`` per SMTP step.
        """
        self._closed = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
            for task in pending:
                task.cancel()
            if pending:
                logs.event(log, "alert_notifications_cancelled", logging.WARNING, count=len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        await self.webhooks.close()

    # -- delivery ----------------------------------------------------------------------------

    async def _deliver(self, alert: dict, channels: list[dict]) -> None:
        try:
            if not await self._take_slot(alert):
                for channel in channels:
                    self.metrics.alert_notifications.labels(
                        channel=channel["type"], outcome="suppressed"
                    ).inc()
                logs.event(
                    log,
                    "alert_notification_suppressed",
                    rule_id=alert.get("ruleId"),
                    room_id=alert.get("roomId"),
                    state=alert.get("state"),
                    alert_id=alert.get("alertId"),
                    rate_limit_s=self.settings.alert_rate_limit_s,
                )
                return
            sends = [
                self._webhook(alert, c) if c["type"] == "webhook" else self._email(alert, c) for c in channels
            ]
            for outcome in await asyncio.gather(*sends, return_exceptions=True):
                if isinstance(outcome, Exception):  # a bug: the other channels were still served
                    logs.event(log, "alert_notification_error", logging.ERROR, error=repr(outcome))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not vanish silently inside a task
            log.exception("alert_notification_error")

    async def _take_slot(self, alert: dict) -> bool:
        """Whether this notification may go out: the rule-and-room window was free (now taken)."""
        window_s = self.settings.alert_rate_limit_s
        if window_s <= 0:
            return True
        key = keys.alert_notified(str(alert.get("ruleId")), str(alert.get("roomId")))
        try:
            taken = await self.redis.set(key, str(alert.get("alertId")), nx=True, px=int(window_s * 1000))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logs.event(
                log,
                "alert_rate_limit_unavailable",
                logging.WARNING,
                error=str(exc),
                rule_id=alert.get("ruleId"),
                room_id=alert.get("roomId"),
            )
            return True
        return bool(taken)

    def _count(self, channel: str, ok: bool, refused: bool = False) -> None:
        outcome = "sent" if ok else "refused" if refused else "failed"
        self.metrics.alert_notifications.labels(channel=channel, outcome=outcome).inc()

    async def _webhook(self, alert: dict, channel: dict) -> None:
        result = await self.webhooks.post(channel["url"], alert, event="alert", purpose="alert")
        self._count("webhook", result.ok, result.refused)
        logs.event(
            log,
            "alert_notification_sent" if result.ok else "alert_notification_failed",
            logging.INFO if result.ok else logging.WARNING,
            channel="webhook",
            host=URL(channel["url"]).host,
            rule_id=alert.get("ruleId"),
            room_id=alert.get("roomId"),
            state=alert.get("state"),
            delivery_id=result.delivery_id,
            attempts=result.attempts,
            status=result.status,
            error=result.error,
        )

    def email_message(self, alert: dict, recipients: list[str]) -> EmailMessage:
        """The email of one alert: readable text, the alert JSON attached."""
        msg = EmailMessage()
        msg["Subject"] = email_subject(alert)
        msg["From"] = self.settings.smtp_from
        msg["To"] = ", ".join(recipients)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain="spidi")
        msg.set_content(email_text(alert))
        msg.add_attachment(
            orjson.dumps(alert, option=orjson.OPT_INDENT_2),
            maintype="application",
            subtype="json",
            filename="alert.json",
        )
        return msg

    async def _email(self, alert: dict, channel: dict) -> None:
        s = self.settings
        recipients = list(channel.get("to") or s.smtp_to)
        fields = {"rule_id": alert.get("ruleId"), "room_id": alert.get("roomId"), "state": alert.get("state")}
        if not s.smtp_host or not recipients:
            self._count("email", False)
            if not s.smtp_host:
                if not self._smtp_missing_logged:  # once: every alert would say the same
                    self._smtp_missing_logged = True
                    logs.event(log, "email_not_configured", logging.WARNING, reason="smtp_host is empty")
            else:
                logs.event(
                    log,
                    "alert_notification_failed",
                    logging.WARNING,
                    channel="email",
                    error="no recipients (channel has no 'to' and smtp_to is empty)",
                    **fields,
                )
            return
        msg = self.email_message(alert, recipients)
        error = None
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(self._smtp_send, msg, recipients)
                self._count("email", True)
                logs.event(
                    log,
                    "alert_notification_sent",
                    channel="email",
                    recipients=len(recipients),
                    attempts=attempt,
                    **fields,
                )
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt == 1 and _transient(exc):
                    logs.event(log, "email_retry", logging.INFO, error=error, **fields)
                    await asyncio.sleep(self.email_retry_delay_s)
                    continue
                break
        self._count("email", False)
        logs.event(
            log,
            "alert_notification_failed",
            logging.WARNING,
            channel="email",
            host=s.smtp_host,
            error=error,
            **fields,
        )

    def _smtp_send(self, msg: EmailMessage, recipients: list[str]) -> None:
        """Send one message (in a worker thread: smtplib blocks)."""
        s = self.settings
        context = self.smtp_ssl_context or ssl.create_default_context()
        if s.smtp_tls == "ssl":
            client = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s, context=context)
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
        with client:
            if s.smtp_tls == "starttls":
                client.starttls(context=context)
            if s.smtp_user:
                client.login(s.smtp_user, s.smtp_password)
            client.send_message(msg, from_addr=s.smtp_from, to_addrs=recipients)


__all__ = [
    "Notifier",
    "WebhookResult",
    "WebhookSender",
    "email_subject",
    "email_text",
    "sign",
    "verify_signature",
]
