"""Alerting on a Redis Cluster: lease, metrics reads, open alerts, /topic/alerts and events."""

from __future__ import annotations

from spidi_server.stores import keys

from ..alerting.test_evaluator import add_rule, alert_node, events_in_pg, join, leave, monitor, next_alert


async def test_alert_fires_and_resolves_on_a_cluster(pg_dsn, redis_cluster, node_factory):
    rule_id = add_rule(pg_dsn, "default", "capacity", threshold=0.0001)
    node = await alert_node(node_factory, pg_dsn, redis_url=redis_cluster.url, node_id="cl-alerts")
    mon, snapshot = await monitor(node)
    assert snapshot["alerts"] == []
    clients: list = []
    (sid,) = await join(node, "cl-room", 1, clients)
    firing = await next_alert(mon, "firing")
    assert firing["ruleId"] == rule_id and node.alerts.leader
    assert (await node.store.redis.get(keys.ALERT_LEADER)).decode().startswith("cl-alerts:")
    await leave(clients[0], sid)
    resolved = await next_alert(mon, "resolved")
    assert resolved["episodeId"] == firing["alertId"]
    assert [r["state"] for r in await events_in_pg(pg_dsn, rule_id, 2)] == ["firing", "resolved"]
