"""``/topic/alerts``: alert transitions to the monitors and admins of a tenant, on every process.

The evaluator (one per cluster) publishes each transition on ``spidi:alerts`` and keeps the
tenant's open alerts (pending, firing) in ``spidi:alerts:active:<tenant>``. Every process relays
the channel to its local subscribers of the alert's tenant, after a snapshot of the open alerts:
a subscriber sees the open alerts first, then every change, whichever process it is on. The
channel is heard on the process's one pub/sub connection (``fanout.RoomFanout``, which hands each
message to ``deliver``), so it follows that connection's reconnects and cluster-node moves.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from ..protocol import destinations as dest
from ..stores import keys

if TYPE_CHECKING:
    from ..presence import Subscription


def alert_key(rule_id: str, room_id: str) -> str:
    """The field of one rule's alert in one room, in the state and active hashes."""
    return f"{rule_id}/{room_id}"


class AlertFeed:
    """Local ``/topic/alerts`` subscribers by tenant, fed from Redis pub/sub through ``deliver``."""

    def __init__(self, redis):
        self.redis = redis
        self.subs: dict[str, list[Subscription]] = {}
        self._pending: dict[int, list[dict]] = {}  # subscriptions waiting for their snapshot

    async def subscribe(self, sub: Subscription, tenant: str) -> None:
        """Register ``sub`` for ``tenant``'s alerts; send the open alerts, then every change."""
        # Registered before the snapshot is read, with changes held back until it is sent: a
        # change is then in the snapshot, or delivered after it (or both: alerts are idempotent
        # by ruleId/roomId and state).
        held: list[dict] = []
        self._pending[id(sub)] = held
        self.subs.setdefault(tenant, []).append(sub)
        try:
            raw = await self.redis.hvals(keys.alerts_active(tenant))
        finally:
            self._pending.pop(id(sub), None)
        alerts = sorted((orjson.loads(v) for v in raw), key=lambda a: a.get("since", 0))
        sub.send(dest.TOPIC_ALERTS, {"type": "ALERTS", "alerts": alerts, "ts": int(time.time() * 1000)})
        for payload in held:
            sub.send(dest.TOPIC_ALERTS, payload)

    def remove(self, matches) -> None:
        """Forget the subscriptions ``matches`` accepts (UNSUBSCRIBE, closed connection)."""
        for tenant, subs in list(self.subs.items()):
            kept = [s for s in subs if not matches(s)]
            if kept:
                self.subs[tenant] = kept
            else:
                del self.subs[tenant]

    def deliver(self, payload: dict) -> None:
        """Hand one published alert message to the local subscribers of its tenant."""
        for sub in list(self.subs.get(payload.get("tenant"), ())):
            held = self._pending.get(id(sub))
            if held is not None:
                held.append(dict(payload))
            else:
                sub.send(dest.TOPIC_ALERTS, dict(payload))  # a copy each: send() numbers it


async def publish_acknowledgement(
    redis, tenant: str, rule_id: str, room_id: str, alert_id: str, by: str, at_ms: int
) -> None:
    """An operator acknowledged an alert: mark it in the open alerts and tell every subscriber."""
    field = alert_key(rule_id, room_id)
    active = keys.alerts_active(tenant)
    raw = await redis.hget(active, field)
    if raw is not None:
        alert = orjson.loads(raw)
        if alert.get("episodeId") == alert_id or alert.get("alertId") == alert_id:
            alert["acknowledgedBy"], alert["acknowledgedAt"] = by, at_ms
            await redis.hset(active, field, orjson.dumps(alert))
    message = {
        "type": "ALERT_ACK",
        "tenant": tenant,
        "ruleId": rule_id,
        "roomId": room_id,
        "alertId": alert_id,
        "acknowledgedBy": by,
        "acknowledgedAt": at_ms,
    }
    await redis.publish(keys.ALERTS_CHANNEL, orjson.dumps(message))
