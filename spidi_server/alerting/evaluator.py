"""The alert evaluator: exactly one per cluster, elected with a Redis lease.

Every server process runs an ``AlertEvaluator``; each interval it tries to take or renew the lease
``spidi:alert:leader`` (SET NX PX; renewed only by its holder). The holder evaluates; the others
wait. A holder that dies stops renewing, and the lease lapses after ``alert_lease_s``, when another
process takes it: failover within a few seconds, without any coordination beyond Redis. A holder
that stops cleanly deletes the lease so a successor takes over at its next tick.

One evaluation round: reload rules and rooms from PostgreSQL when due, read the metrics of every
room a rule targets from Redis (cluster-wide: every node's sessions), run each rule's CEL condition
per room, and advance the alert's lifecycle. Each transition is, in one Redis pipeline: a history
event for the writer (``alert_event`` -> ``dat_spd_alert_event``), the tenant's open alerts hash,
the evaluator's state hash (so a successor continues where this one stopped), and a message on
``spidi:alerts`` (``/topic/alerts`` on every process). Firing and resolved-from-firing transitions
are also handed to the notifier (webhook, email; rate limited).

Rules of kind slo_burn also get their SLO's burn rates per room (slo_reader.py: PostgreSQL
reads in the background, at most once per slo_refresh_s per SLO, cached between rounds).

The rules and the lifecycle are plain objects elsewhere (rules.py, lifecycle.py), the room
metrics' reads in readings.py; what stays here is the round and its I/O — the lease, the rule
loads and the one pipeline per transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING

import orjson

from .. import logs
from ..history.sql import alerts as alert_sql
from ..history.sql import slos as slo_sql
from ..stores import events, keys
from ..stores.client import pipeline_publish
from ..tasks import cancel_and_wait
from .anomaly_watch import AnomalyWatch
from .feed import alert_key
from .lifecycle import FIRING, INACTIVE, PENDING, RESOLVED, AlertState, step
from .readings import RoomRef, room_metrics, share, silent_sessions
from .rules import AlertRule, AlertRuleError
from .slo_reader import SloReader

if TYPE_CHECKING:
    from ..metrics import NodeMetrics
    from ..settings import Settings
    from ..stores.hot_store import HotStore

log = logging.getLogger("spidi.alerting")

# Take the lease if free, renew it if ours; 1 when held after the call.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Delete the lease only if ours (a stale holder must not delete its successor's lease).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AlertEvaluator:
    """Runs the rules of every tenant while this process holds the evaluator lease."""

    def __init__(self, settings: Settings, store: HotStore, dsn: str, metrics: NodeMetrics, node_id: str):
        self.settings = settings
        self.store = store
        self.redis = store.redis
        self.dsn = dsn
        self.metrics = metrics
        self.holder = f"{node_id}:{uuid.uuid4().hex[:8]}"  # a restarted process is a new holder
        self.leader = False
        self.rules: list[AlertRule] = []
        self.rooms: dict[str, RoomRef] = {}  # stored rooms of the rules' tenants, by id
        self.states: dict[str, AlertState] = {}  # "<ruleId>/<roomId>" -> state (while leader)
        self.rounds = 0
        self._loaded_at = 0.0
        self._rules_loaded = False
        self._load_failing = False
        self._bad_rules: set[str] = set()  # rule ids already reported as unusable
        self._conn = None  # psycopg connection, used from one worker thread at a time
        self._task: asyncio.Task | None = None
        self._lease = self.redis.register_script(_LEASE)
        self._release = self.redis.register_script(_RELEASE)
        self.node_id = node_id
        self.notifier = None  # notify.Notifier, made on first use
        self.hooks = None  # hooks.RoomHooks while leading with room_hooks_url set
        self.slo = SloReader(settings, metrics, dsn)  # SLOs and their burn rates, for slo_burn rules
        self.anomalies = AnomalyWatch(settings, dsn, metrics)  # anomaly rules' readings and stored flags
        self._found: dict = {}  # (rule id, room id) -> anomaly_watch.Found, this round's

    async def start(self) -> None:
        """Start competing for the lease and evaluating while holding it."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spidi-alert-evaluator")

    async def stop(self) -> None:
        """Stop evaluating; hand the lease over at once; finish in-flight notifications."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self.leader:
            with contextlib.suppress(Exception):  # Redis gone: the lease lapses by itself
                await self._release(keys=[keys.ALERT_LEADER], args=[self.holder])
            await self._lose_lead()
        await self.slo.stop(self.settings.shutdown_timeout_s)
        if self.notifier is not None:
            await self.notifier.close(self.settings.shutdown_timeout_s)
        if self._conn is not None:
            await asyncio.to_thread(self._close_pg)
        await self.anomalies.close()

    async def _run(self) -> None:
        interval = self.settings.alert_interval_s
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or PostgreSQL away: try again next interval
                logs.event(log, "alert_round_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def tick(self, now_ms: int | None = None) -> None:
        """One round: hold the lease, then (as leader) evaluate every rule."""
        lease_ms = int(self.settings.alert_lease_s * 1000)
        try:
            held = bool(await self._lease(keys=[keys.ALERT_LEADER], args=[self.holder, lease_ms]))
        except Exception:
            # Cannot tell whether we still hold it: stop acting as leader before it could lapse.
            if self.leader:
                await self._lose_lead()
            raise
        if not held:
            if self.leader:
                await self._lose_lead()
            return
        if not self.leader:
            await self._take_lead()
        if (
            time.monotonic() - self._loaded_at >= self.settings.alert_rules_refresh_s
            or not self._rules_loaded
        ):
            await self._reload()
        started = time.perf_counter()
        await self.evaluate(now_ms if now_ms is not None else int(time.time() * 1000))
        self.metrics.alert_evaluation_seconds.set(time.perf_counter() - started)
        self.rounds += 1

    async def _take_lead(self) -> None:
        raw = await self.redis.hgetall(keys.ALERT_STATE)
        self.states = {}
        for field, value in raw.items():
            with contextlib.suppress(ValueError, TypeError):
                self.states[_text(field)] = AlertState.from_json(value)
        self.leader = True
        self._rules_loaded = False
        self.metrics.alert_leader.set(1)
        logs.event(log, "alert_evaluator_leader", holder=self.holder, alerts=len(self.states))
        from . import hooks

        if self.settings.room_hooks_url:
            self.hooks = hooks.RoomHooks(self.settings, self.redis, self.metrics, self.node_id)
            await self.hooks.start()
        else:
            await hooks.drop_hooks_group(self.redis)  # a group nobody reads would stop stream trimming

    async def _lose_lead(self) -> None:
        self.leader = False
        self.states = {}
        self.slo.reset()
        self.anomalies.reset()
        self.metrics.alert_leader.set(0)
        logs.event(log, "alert_evaluator_follower", logging.WARNING, holder=self.holder)
        if self.hooks is not None:
            hooks, self.hooks = self.hooks, None
            await hooks.stop()

    # -- rules and rooms -----------------------------------------------------------------------

    async def _reload(self) -> None:
        try:
            rows, rooms, slo_rows = await asyncio.to_thread(self._load)
        except Exception as exc:  # PostgreSQL away: keep evaluating the rules already loaded
            if not self._load_failing:  # once per outage, not once per interval
                logs.event(log, "alert_rules_load_failed", logging.WARNING, error=str(exc))
            self._load_failing = True
            await asyncio.to_thread(self._close_pg)
            self._loaded_at = time.monotonic()
            return
        rules = []
        for row in rows:
            rule = AlertRule(
                rule_id=row["rule_id"],
                tenant=row["tenant"],
                name=row["name"],
                kind=row["kind"],
                expression=row["expression"],
                resolve_expression=row["resolve_expression"],
                threshold=row["threshold"],
                share=row["share"],
                slo_id=row["slo_id"],
                burn_policy=row["burn_policy"],
                scope=row["scope"],
                room_id=row["room_id"],
                room_type_id=row["room_type_id"],
                severity=row["severity"],
                for_seconds=row["for_seconds"],
                channels=row["channels"] or [],
                enabled=row["enabled"],
            )
            try:
                rules.append(rule.compile())
            except AlertRuleError as exc:  # stored around the API (e.g. by hand): skip, say so once
                if rule.rule_id not in self._bad_rules:
                    self._bad_rules.add(rule.rule_id)
                    logs.event(
                        log, "alert_rule_unusable", logging.ERROR, rule_id=rule.rule_id, error=str(exc)
                    )
        if self._load_failing:
            logs.event(log, "alert_rules_load_recovered")
        self._load_failing = False
        self.rules = rules
        self.slo.load(slo_rows)
        self.rooms = {
            r["room_id"]: RoomRef(r["room_id"], r["tenant"], r["code"], r["room_type_id"], r["capacity"] or 0)
            for r in rooms
        }
        self._rules_loaded = True
        self._loaded_at = time.monotonic()

    def _load(self) -> tuple[list[dict], list[dict], list[dict]]:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
        rules = alert_sql.load_rules(self._conn)
        rooms = alert_sql.load_rooms(self._conn, sorted({r["tenant"] for r in rules}))
        return rules, rooms, slo_sql.load_slos(self._conn)

    def _close_pg(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    async def _targets(self) -> dict[str, list[RoomRef]]:
        """The rooms each rule applies to, by rule id."""
        live: dict[str, dict[str, str]] = {}
        for tenant in {r.tenant for r in self.rules if r.scope == "tenant"}:
            live[tenant] = await self.store.tenant_rooms(tenant)
        out: dict[str, list[RoomRef]] = {}
        for rule in self.rules:
            if rule.scope == "room":
                room = self.rooms.get(rule.room_id)
                out[rule.rule_id] = [room] if room is not None and room.tenant == rule.tenant else []
            elif rule.scope == "room_type":
                out[rule.rule_id] = [
                    r
                    for r in self.rooms.values()
                    if r.tenant == rule.tenant and r.room_type_id == rule.room_type_id
                ]
            else:
                rooms = {r.room_id: r for r in self.rooms.values() if r.tenant == rule.tenant}
                for room_id, code in live.get(rule.tenant, {}).items():
                    rooms.setdefault(room_id, RoomRef(room_id, rule.tenant, code))
                out[rule.rule_id] = list(rooms.values())
        return out

    # -- evaluation ----------------------------------------------------------------------------

    async def evaluate(self, now_ms: int) -> None:
        """Run every rule over its rooms and publish the transitions."""
        targets = await self._targets()
        self.slo.refresh(self.rules, now_ms)  # in the background: this round uses the figures at hand
        rooms = {r.room_id: r for refs in targets.values() for r in refs}
        metrics = await room_metrics(self.store, self.settings, list(rooms.values()), now_ms)
        # A heartbeat rule counts the sessions silent longer than its own threshold.
        default_silence = self.settings.alert_stale_heartbeat_s
        silent = await silent_sessions(
            self.redis,
            (
                (room.room_id, rule.silence_s(default_silence))
                for rule in self.rules
                if rule.silence_s(default_silence) != default_silence
                for room in targets.get(rule.rule_id, ())
            ),
            now_ms,
        )
        self._found = await self.anomalies.evaluate(self.rules, targets, metrics, now_ms)
        pipe = self.redis.pipeline(transaction=False)
        notify: list[tuple[dict, list[dict]]] = []
        seen: set[str] = set()
        for rule in self.rules:
            for room in targets.get(rule.rule_id, ()):
                slo = self.slo.slos.get(rule.slo_id) if rule.kind == "slo_burn" else None
                if rule.kind == "slo_burn" and (
                    slo is None or not slo.covers(room.room_id, room.room_type_id)
                ):
                    continue  # a room the SLO does not cover (an open alert of it is closed below)
                key = alert_key(rule.rule_id, room.room_id)
                seen.add(key)
                values = metrics[room.room_id]
                if slo is not None:
                    values = {**values, **self.slo.variables(slo.slo_id, room.room_id)}
                silence = rule.silence_s(default_silence)
                if silence != default_silence:
                    count = silent[(room.room_id, silence)]
                    values = {**values, "silentShare": share(count, values["online"])}
                if rule.anomaly_types:  # its anomaly metrics, at its own sensitivity
                    values = {**values, **self._found[(rule.rule_id, room.room_id)].counts}
                self.metrics.alert_evaluations.inc()
                alert = self.states.get(key) or AlertState()
                try:
                    fires = rule.fires(values)
                    resolves = alert.state == FIRING and rule.resolves(values)
                except Exception as exc:  # e.g. division by zero in a custom rule: not an alert
                    self.metrics.alert_evaluation_errors.inc()
                    if rule.rule_id not in self._bad_rules:
                        self._bad_rules.add(rule.rule_id)
                        logs.event(
                            log,
                            "alert_rule_failed",
                            logging.WARNING,
                            rule_id=rule.rule_id,
                            room_id=room.room_id,
                            error=str(exc),
                        )
                    continue
                before = alert.state
                new = step(alert, fires, resolves, rule.for_seconds * 1000, now_ms)
                if new is None:
                    continue
                self.states[key] = alert
                ack = await self._acknowledgement(rule.tenant, key, alert) if before == PENDING else {}
                payload = self._transition(pipe, rule, room, values, alert, before, new, now_ms, ack)
                if new == FIRING or (new == RESOLVED and before == FIRING):
                    notify.append((payload, rule.channels))
        if self._rules_loaded:
            # Alerts whose rule or room is gone (deleted, disabled, out of scope) end here.
            for key in [k for k in self.states if k not in seen]:
                alert = self.states[key]
                if alert.state in (PENDING, FIRING):
                    self._orphan(pipe, key, alert, now_ms)
                self.states.pop(key, None)
                pipe.hdel(keys.ALERT_STATE, key)
        if len(pipe):
            await pipe.execute()
        if notify and self.notifier is None:
            from .notify import Notifier

            self.notifier = Notifier(self.settings, self.redis, self.metrics)
        for payload, channels in notify:
            self.notifier.notify(payload, channels)

    async def _acknowledgement(self, tenant: str, key: str, alert: AlertState) -> dict:
        """Who acknowledged the episode while it was pending (kept when it goes on to fire)."""
        raw = await self.redis.hget(keys.alerts_active(tenant), key)
        if raw is None:
            return {}
        open_alert = orjson.loads(raw)
        if open_alert.get("episodeId") != alert.episode_id or not open_alert.get("acknowledgedBy"):
            return {}
        return {
            "acknowledgedBy": open_alert["acknowledgedBy"],
            "acknowledgedAt": open_alert.get("acknowledgedAt"),
        }

    def _transition(
        self,
        pipe,
        rule: AlertRule,
        room: RoomRef,
        values: dict,
        alert: AlertState,
        before: str,
        new: str,
        now_ms: int,
        ack: dict,
    ) -> dict:
        alert_id = str(uuid.uuid4())
        if before == INACTIVE:
            alert.episode_id = alert_id
        alert.tenant, alert.room_code = rule.tenant, values["roomCode"]
        payload = {
            "type": "ALERT",
            "alertId": alert_id,
            "episodeId": alert.episode_id,
            "ruleId": rule.rule_id,
            "ruleName": rule.name,
            "kind": rule.kind,
            "severity": rule.severity,
            "expression": rule.expression,
            "threshold": rule.threshold,
            "state": new,
            "previousState": before,
            "tenant": rule.tenant,
            "roomId": room.room_id,
            "roomCode": values["roomCode"],
            "value": rule.value(values),
            "since": alert.since_ms,
            "at": now_ms,
            "metrics": values,
        }
        payload.update(ack)
        found = self._found.get((rule.rule_id, room.room_id))
        if found is not None:  # each anomaly explains itself: metric, value, baseline, group
            payload["anomalies"] = [f.to_json() for f in found.flags]
        self._record(pipe, payload, alert)
        self.metrics.alert_transitions.labels(state=new).inc()
        if new == FIRING:
            self.metrics.alerts_triggered.labels(kind=rule.kind, severity=rule.severity).inc()
        logs.event(
            log,
            "alert_" + new,
            logging.WARNING if new == FIRING else logging.INFO,
            rule_id=rule.rule_id,
            rule=rule.name,
            room_id=room.room_id,
            room_code=values["roomCode"],
            tenant=rule.tenant,
            value=payload["value"],
            severity=rule.severity,
        )
        return payload

    def _orphan(self, pipe, key: str, alert: AlertState, now_ms: int) -> None:
        """Resolve an open alert whose rule or room no longer applies (no notification)."""
        rule_id, _, room_id = key.partition("/")
        payload = {
            "type": "ALERT",
            "alertId": str(uuid.uuid4()),
            "episodeId": alert.episode_id,
            "ruleId": rule_id,
            "ruleName": None,
            "kind": None,
            "severity": None,
            "expression": None,
            "threshold": None,
            "state": RESOLVED,
            "previousState": alert.state,
            "tenant": alert.tenant,
            "roomId": room_id,
            "roomCode": alert.room_code or None,
            "value": None,
            "since": alert.since_ms,
            "at": now_ms,
            "metrics": None,
            "reason": "rule or room no longer applies",
        }
        alert.state = INACTIVE
        self._record(pipe, payload, alert, orphan=True)
        self.metrics.alert_transitions.labels(state=RESOLVED).inc()

    def _record(self, pipe, payload: dict, alert: AlertState, orphan: bool = False) -> None:
        """Queue a transition's writes: history event, open alerts, state, announcement."""
        tenant, key = payload["tenant"], alert_key(payload["ruleId"], payload["roomId"])
        body = orjson.dumps(payload)
        if self.settings.history and tenant:
            details = {
                k: payload[k]
                for k in (
                    "ruleName",
                    "expression",
                    "threshold",
                    "previousState",
                    "since",
                    "episodeId",
                    "metrics",
                    "anomalies",
                )
                if payload.get(k) is not None
            }
            if orphan:
                details["reason"] = payload["reason"]
            event = events.alert_event(
                alert_id=payload["alertId"],
                rule_id=payload["ruleId"],
                tenant=tenant,
                room_id=payload["roomId"],
                room_code=payload["roomCode"],
                state=payload["state"],
                alert_kind=payload["kind"],
                severity=payload["severity"],
                value=payload["value"],
                at=payload["at"],
                details=orjson.dumps(details).decode(),
            )
            pipe.xadd(events.STREAM, events.encode(event), maxlen=events.STREAM_MAXLEN, approximate=True)
        if tenant:
            if payload["state"] == RESOLVED:
                pipe.hdel(keys.alerts_active(tenant), key)
            else:
                pipe.hset(keys.alerts_active(tenant), key, body)
        if alert.state == INACTIVE:
            pipe.hdel(keys.ALERT_STATE, key)
        else:
            pipe.hset(keys.ALERT_STATE, key, alert.to_json())
        if tenant:
            pipeline_publish(pipe, keys.ALERTS_CHANNEL, body)
