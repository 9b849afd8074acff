"""Alerting: rules over room metrics, one evaluator per cluster, notifications and room hooks.

    rules.py      the rule model, built-in kinds, CEL compilation and validation (no I/O)
    lifecycle.py  pending -> firing -> resolved, per rule and room (no I/O)
    evaluator.py  the Redis lease, the evaluation loop, transitions to events/feed/notifications
    feed.py       /topic/alerts on every process (Redis pub/sub), acknowledgements
    notify.py     deliveries to a rule's external channels, the rate limit (per rule)
    formats.py    what each channel says: Slack blocks, Teams Adaptive Card, PagerDuty Events
                  API v2, email text (pure functions, no I/O)
    webhooks.py   HTTP POSTs of JSON: HMAC-SHA256 signed (webhook), retried, egress-checked
    hooks.py      room lifecycle webhooks (room_occupied/vacated, batched member_joined/left)

The alert message (STOMP ``/topic/alerts`` body with ``type: "ALERT"``, webhook body, email
attachment) is one JSON object:

    type          "ALERT"
    alertId       id of this transition's event (``dat_spd_alert_event.id``)
    episodeId     id of the event that opened the episode (its pending, or firing, event):
                  the one operators acknowledge
    ruleId, ruleName, kind, severity, expression, threshold (null for custom rules)
    state         "pending", "firing" or "resolved"
    previousState "inactive", "pending" or "firing"
    tenant, roomId, roomCode
    value         the built-in kind's metric (utilization, avgLatencyMs, heartbeatRateDrop), else null
    since         epoch ms the condition started to hold (for resolved: the episode's start)
    at            epoch ms of this transition
    metrics       the room's metrics the rule saw (rules.VARIABLES)
"""
