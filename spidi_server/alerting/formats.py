"""What an alert notification says, per channel: pure functions alert -> message, no I/O.

``notify.py`` sends what these build. The alert is the ``ALERT`` message of ``/topic/alerts``
(``ruleId``, ``episodeId``, ``state``, ``severity``, ``metrics``...); ``suppressed`` is how many
episodes the rate limit kept from the channels since the last notification of the same window
key (said in the text, so an operator knows the one message stands for more).

- ``webhook``: the alert JSON itself (built nowhere: sent as is, signed).
- ``email``: ``email_subject`` and ``email_text`` (the JSON goes along as an attachment).
- ``slack``: an incoming-webhook message, ``text`` (the notification and fallback line) plus
  Block Kit ``blocks`` (header, fields, context).
- ``teams``: a Teams workflow ("Post to a channel when a webhook request is received") message
  carrying one Adaptive Card.
- ``pagerduty``: a PagerDuty Events API v2 event: ``trigger`` when firing, ``resolve`` when
  resolved, ``dedup_key`` = the episode id, so the resolve closes the incident the trigger opened.
"""

from __future__ import annotations

from datetime import UTC, datetime

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
# Spidi's severities -> PagerDuty's (critical, error, warning, info); unknown ones count as warning.
PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}
ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_VERSION = "1.4"  # what Teams renders in channels and chats
SLACK_HEADER_MAX = 150  # Block Kit: a header's plain text
SLACK_FIELD_MAX = 2000  # Block Kit: one field of a section
PAGERDUTY_SUMMARY_MAX = 1024


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


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def headline(alert: dict) -> str:
    """``FIRING critical: <rule name> in <room code>``, on one line."""
    return _one_line(
        f"{str(alert.get('state', '')).upper()} {alert.get('severity', '')}: "
        f"{alert.get('ruleName', '')} in {alert.get('roomCode', '')}"
    )


def suppressed_note(suppressed: int) -> str | None:
    """The sentence telling that this notification stands for ``suppressed`` more episodes."""
    if suppressed <= 0:
        return None
    what = "episode" if suppressed == 1 else "episodes"
    return f"{suppressed} more alert {what} of this rule were not notified (rate limit); see the alert feed."


def facts(alert: dict) -> list[tuple[str, str]]:
    """(title, value) pairs every chat format shows, in this order."""
    out = [
        ("State", f"{alert.get('state')} (was {alert.get('previousState')})"),
        ("Severity", str(alert.get("severity"))),
        ("Rule", f"{alert.get('ruleName')} ({alert.get('kind')})"),
        ("Room", f"{alert.get('roomCode')} (tenant {alert.get('tenant')})"),
        ("Condition", str(alert.get("expression"))),
    ]
    if alert.get("threshold") is not None or alert.get("value") is not None:
        out.append(("Value", f"{_figure(alert.get('value'))} (threshold {_figure(alert.get('threshold'))})"))
    out += [("Since", _utc(alert.get("since"))), ("At", _utc(alert.get("at")))]
    return out


# -- email ---------------------------------------------------------------------------------------


def email_subject(alert: dict) -> str:
    """``[Spidi] FIRING critical: <rule name> in <room code>``."""
    return "[Spidi] " + headline(alert)


def email_text(alert: dict, suppressed: int = 0) -> str:
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
    note = suppressed_note(suppressed)
    if note:
        lines += ["", note]
    lines += [
        "",
        f"Alert id {alert.get('alertId')}, episode {alert.get('episodeId')} (acknowledge the episode).",
        "The alert as JSON is attached (alert.json).",
    ]
    return "\n".join(lines) + "\n"


# -- Slack ---------------------------------------------------------------------------------------


def _slack_escape(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup (``<!channel>`` pings everyone): escape them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alert: dict, suppressed: int = 0) -> dict:
    """A Slack incoming-webhook message: ``text`` (notification and fallback) and ``blocks``."""
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{title}*\n{_slack_escape(value)}", SLACK_FIELD_MAX)}
        for title, value in facts(alert)
    ][:10]  # a section holds at most 10 fields
    context = [
        f"Spidi alert {alert.get('alertId')}, episode {alert.get('episodeId')}",
    ]
    note = suppressed_note(suppressed)
    if note:
        context.append(note)
    return {
        "text": _slack_escape(headline(alert)),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _cut(headline(alert), SLACK_HEADER_MAX)},
            },
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(c)} for c in context]},
        ],
    }


# -- Microsoft Teams -----------------------------------------------------------------------------


def teams_message(alert: dict, suppressed: int = 0) -> dict:
    """A Teams workflow webhook message: one Adaptive Card attachment."""
    state = alert.get("state")
    color = (
        "Good" if state == "resolved" else "Attention" if alert.get("severity") == "critical" else "Warning"
    )
    body: list[dict] = [
        {
            "type": "TextBlock",
            "text": headline(alert),
            "weight": "Bolder",
            "size": "Medium",
            "color": color,
            "wrap": True,
        },
        {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts(alert)]},
        {
            "type": "TextBlock",
            "text": f"Alert {alert.get('alertId')}, episode {alert.get('episodeId')}",
            "isSubtle": True,
            "size": "Small",
            "wrap": True,
        },
    ]
    note = suppressed_note(suppressed)
    if note:
        body.append({"type": "TextBlock", "text": note, "isSubtle": True, "wrap": True})
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": ADAPTIVE_CARD_SCHEMA,
                    "type": "AdaptiveCard",
                    "version": ADAPTIVE_CARD_VERSION,
                    "body": body,
                },
            }
        ],
    }


# -- PagerDuty -----------------------------------------------------------------------------------


def pagerduty_event(alert: dict, routing_key: str, suppressed: int = 0) -> dict:
    """A PagerDuty Events API v2 event: ``trigger`` (firing) or ``resolve``, keyed by the episode.

    A resolve carries only what PagerDuty reads of it (routing key, action, dedup key).
    """
    resolved = alert.get("state") == "resolved"
    event: dict = {
        "routing_key": routing_key,
        "event_action": "resolve" if resolved else "trigger",
        "dedup_key": str(alert.get("episodeId")),
    }
    if resolved:
        return event
    details = {title.lower(): value for title, value in facts(alert)}
    details.update(
        ruleId=alert.get("ruleId"),
        roomId=alert.get("roomId"),
        alertId=alert.get("alertId"),
        episodeId=alert.get("episodeId"),
        metrics=alert.get("metrics") or {},
    )
    note = suppressed_note(suppressed)
    if note:
        details["suppressed"] = note
    event["payload"] = {
        "summary": _cut(headline(alert), PAGERDUTY_SUMMARY_MAX),
        "source": f"spidi room {alert.get('tenant')}/{alert.get('roomCode')}",
        "severity": PAGERDUTY_SEVERITY.get(str(alert.get("severity")), "warning"),
        "component": str(alert.get("roomCode")),
        "group": str(alert.get("tenant")),
        "class": str(alert.get("kind")),
        "custom_details": details,
    }
    if isinstance(alert.get("at"), int | float):  # optional for PagerDuty, but then it must be a time
        event["payload"]["timestamp"] = _utc(alert["at"])
    event["client"] = "Spidi"
    return event


__all__ = [
    "PAGERDUTY_EVENTS_URL",
    "email_subject",
    "email_text",
    "facts",
    "headline",
    "pagerduty_event",
    "slack_message",
    "suppressed_note",
    "teams_message",
]
