"""Alert notifications to a rule's external channels, rate limited per rule.

The evaluator calls ``Notifier.notify(alert, channels)`` for each transition to ``firing`` and
each ``firing -> resolved``; delivery runs in tasks of its own, so evaluation never waits on an
HTTP or SMTP server. ``in_app`` channels are not handled here (``feed.py`` delivers them, live
and never rate limited). The external channels:

    webhook    the alert JSON, signed (``webhooks.py``)
    slack      a Slack incoming webhook message (``formats.slack_message``)
    teams      a Teams workflow webhook message with an Adaptive Card (``formats.teams_message``)
    pagerduty  a PagerDuty Events API v2 trigger / resolve, dedup key = the episode id
    email      SMTP, readable text with the alert JSON attached

Rate limit: the limit counts *episodes*. At most one firing episode of a rule is notified per
``alert_rate_limit_s`` (0: none), whichever process sends it: the first takes the Redis key
``spidi:alert:notified:<ruleId>`` (SET NX PX; ``...:<ruleId>:<roomId>`` with
``alert_rate_limit_per_room``), any other in the window is suppressed (counted, logged, not
delivered; the next notification of the key says how many were). A resolve goes out exactly
when its episode's firing went out (``spidi:alert:episode-notified:<episodeId>``), whatever the
window: an incident opened in PagerDuty or announced in a chat is always closed, and nobody is
told of the end of an episode they were never told of. When Redis cannot be asked, the
notification is sent: a duplicate is better than a lost critical alert.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

import orjson

from .. import logs
from ..stores import keys
from . import formats, rules
from .formats import email_subject, email_text
from .webhooks import WebhookResult, WebhookSender, sign, url_host, verify_signature

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings

log = logging.getLogger("spidi.alerting.notify")

# Every channel type but in_app (which feed.py serves).
EXTERNAL_CHANNELS = tuple(t for t in rules.CHANNEL_TYPES if t != "in_app")
# Built from the alert by formats.py and POSTed unsigned (those services check their own secret).
CHAT_FORMATS = {"slack": formats.slack_message, "teams": formats.teams_message}
# How long the mark "this episode's firing was notified" waits for its resolve; an episode firing
# longer than this resolves without a notification.
EPISODE_MARK_S = 30 * 86_400


# -- email ---------------------------------------------------------------------------------------


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
    """Delivers alert transitions to a rule's external channels, rate limited."""

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
        with no external channel) is ignored and takes no rate-limit slot.
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
            admitted, suppressed = await self._admit(alert)
            if not admitted:
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
                    episode_id=alert.get("episodeId"),
                    rate_limit_s=self.settings.alert_rate_limit_s,
                    per_room=self.settings.alert_rate_limit_per_room,
                )
                return
            sends = [
                self._email(alert, c, suppressed)
                if c["type"] == "email"
                else self._http(alert, c, suppressed)
                for c in channels
            ]
            for outcome in await asyncio.gather(*sends, return_exceptions=True):
                if isinstance(outcome, Exception):  # a bug: the other channels were still served
                    logs.event(log, "alert_notification_error", logging.ERROR, error=repr(outcome))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not vanish silently inside a task
            log.exception("alert_notification_error")

    def window_keys(self, alert: dict) -> tuple[str, str]:
        """(window key, suppressed-count key) of the alert's rule, or rule and room (per-room mode)."""
        rule = str(alert.get("ruleId"))
        room = str(alert.get("roomId")) if self.settings.alert_rate_limit_per_room else None
        return keys.alert_notified(rule, room), keys.alert_suppressed(rule, room)

    async def _admit(self, alert: dict) -> tuple[bool, int]:
        """(whether this notification goes out, episodes suppressed since the last one of its window).

        A firing takes the window of its rule (and room) if free, and marks its episode; a resolve
        goes out when its episode was marked. Redis unreachable: sent.
        """
        window_s = self.settings.alert_rate_limit_s
        if window_s <= 0:
            return True, 0
        episode = str(alert.get("episodeId"))
        mark = keys.alert_episode_notified(episode)
        window, suppressed_key = self.window_keys(alert)
        try:
            if alert.get("state") == "resolved":
                return bool(await self.redis.delete(mark)), 0
            if await self.redis.set(window, episode, nx=True, px=int(window_s * 1000)):
                pipe = self.redis.pipeline(transaction=False)
                pipe.set(mark, alert.get("alertId") or "1", ex=EPISODE_MARK_S)
                pipe.getdel(suppressed_key)
                _, suppressed = await pipe.execute()
                return True, int(suppressed or 0)
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(suppressed_key)
            pipe.expire(suppressed_key, EPISODE_MARK_S)
            await pipe.execute()
            return False, 0
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
            return True, 0

    def _count(self, channel: str, ok: bool, refused: bool = False) -> None:
        outcome = "sent" if ok else "refused" if refused else "failed"
        self.metrics.alert_notifications.labels(channel=channel, outcome=outcome).inc()

    async def _http(self, alert: dict, channel: dict, suppressed: int) -> None:
        """One HTTP channel: the signed alert JSON (webhook) or a service's own format."""
        kind = channel["type"]
        if kind == "webhook":
            url, payload = channel["url"], alert
        elif kind == "pagerduty":
            url = channel.get("url") or formats.PAGERDUTY_EVENTS_URL
            payload = formats.pagerduty_event(alert, channel["routingKey"], suppressed)
        else:
            url, payload = channel["url"], CHAT_FORMATS[kind](alert, suppressed)
        result = await self.webhooks.post(
            url, payload, event="alert", purpose="alert", signed=kind == "webhook"
        )
        self._count(kind, result.ok, result.refused)
        logs.event(  # the host only: a URL (Slack, Teams) or the body (PagerDuty) carries a secret
            log,
            "alert_notification_sent" if result.ok else "alert_notification_failed",
            logging.INFO if result.ok else logging.WARNING,
            channel=kind,
            host=url_host(url),
            rule_id=alert.get("ruleId"),
            room_id=alert.get("roomId"),
            state=alert.get("state"),
            delivery_id=result.delivery_id,
            attempts=result.attempts,
            status=result.status,
            error=result.error,
        )

    def email_message(self, alert: dict, recipients: list[str], suppressed: int = 0) -> EmailMessage:
        """The email of one alert: readable text, the alert JSON attached."""
        msg = EmailMessage()
        msg["Subject"] = email_subject(alert)
        msg["From"] = self.settings.smtp_from
        msg["To"] = ", ".join(recipients)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain="spidi")
        msg.set_content(email_text(alert, suppressed))
        msg.add_attachment(
            orjson.dumps(alert, option=orjson.OPT_INDENT_2),
            maintype="application",
            subtype="json",
            filename="alert.json",
        )
        return msg

    async def _email(self, alert: dict, channel: dict, suppressed: int = 0) -> None:
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
        msg = self.email_message(alert, recipients, suppressed)
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
    "EXTERNAL_CHANNELS",
    "Notifier",
    "WebhookResult",
    "WebhookSender",
    "email_subject",
    "email_text",
    "sign",
    "verify_signature",
]
