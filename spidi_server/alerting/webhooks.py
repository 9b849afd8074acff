"""Webhook delivery: signed JSON POSTs, retried with backoff, to addresses the egress policy allows.

``WebhookSender`` serves the alert channels of ``notify.py`` (the signed ``webhook``, and the
``slack``, ``teams`` and ``pagerduty`` formats, which are sent unsigned: those services
authenticate by the secret in their URL or body) and the room hooks of ``hooks.py``. A signed
request is a POST of the JSON body with::

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
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import aiohttp
import orjson
from yarl import URL

from .. import logs
from .egress import EgressPolicy, EgressRefused, PolicyResolver

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings

# The notifier's logger: these events (webhook_failed, webhook_refused) were always logged there.
log = logging.getLogger("spidi.alerting.notify")

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


def url_host(url: str) -> str | None:
    """The host of ``url``, or None when it has none or does not parse (never the URL itself,
    whose path or query may carry a token)."""
    try:
        return URL(url).host or None
    except (ValueError, TypeError):
        return None


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

    def headers(
        self, body: bytes, event: str, delivery_id: str, timestamp: int, *, signed: bool = True
    ) -> dict[str, str]:
        """The headers of one attempt: with ``signed``, Spidi's (signed when ``webhook_secret`` is
        set); without, only the content type and user agent (for a service's own format)."""
        out = {"Content-Type": "application/json", "User-Agent": "spidi"}
        if not signed:
            return out
        out |= {
            "X-Spidi-Event": event,
            "X-Spidi-Delivery": delivery_id,
            "X-Spidi-Timestamp": str(timestamp),
        }
        if self.settings.webhook_secret:
            out["X-Spidi-Signature"] = sign(self.settings.webhook_secret, timestamp, body)
        return out

    async def post(
        self,
        url: str,
        payload: dict | bytes,
        *,
        event: str = "alert",
        purpose: str = "alert",
        signed: bool = True,
    ) -> WebhookResult:
        """Deliver ``payload`` to ``url``; never raises (but is cancellable).

        ``purpose`` labels ``spidi_webhook_retries`` ("alert" or "hook"). Each failed attempt is
        logged as ``webhook_failed`` with the URL's host only (a URL may carry a token). Without
        ``signed`` the X-Spidi-* headers are left out (Slack, Teams, PagerDuty).
        """
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        delivery_id = str(uuid.uuid4())
        host = url_host(url)
        if host is None:  # nothing to connect to (a stored URL that no longer parses)
            logs.event(
                log,
                "webhook_failed",
                logging.WARNING,
                purpose=purpose,
                event_type=event,
                delivery_id=delivery_id,
                error="invalid URL (no host)",
                will_retry=False,
            )
            return WebhookResult(False, delivery_id, 1, error="invalid URL (no host)")
        refused = self.policy.refusal_of_host(host)
        if refused is not None:
            return self._refused(delivery_id, host, refused, purpose, event)
        retries = self.settings.webhook_retries
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                headers = self.headers(body, event, delivery_id, int(time.time()), signed=signed)
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
            except aiohttp.InvalidURL:  # will not get better; its text is the URL, token and all
                retryable, error = False, f"invalid URL (host {host!r})"
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


__all__ = ["WebhookResult", "WebhookSender", "sign", "url_host", "verify_signature"]
