"""Alert rules: the built-in kinds, the room metrics an expression may use, and CEL compilation.

Every rule is evaluated the same way: a CEL expression (Common Expression Language, compiled and
run by the ``common-expression-language`` package, never Python ``eval``) over one room's
metrics. The built-in kinds only write that expression for the operator from a threshold:

    capacity        utilization > T                                  T = 0.8
    latency         avgLatencyMs > T                                 T = 500 (ms)
    heartbeat       oldestHeartbeatAgeS > T                          T = 60 (s)
                    with a share S: oldestHeartbeatAgeS > T && silentShare >= S
    heartbeat_rate  staleSessions > 0 || heartbeatRateDrop > T       T = 0.5
    anomaly         joinStorms + ... > 0 (the rule's flag types)      T = 3.5 (robust z-score)
    custom          the operator's expression, e.g. online > 900 && avgLatencyMs > 300
    slo_burn        burnRate1h > F && burnRate5m > F      (policy page, F = 14.4)
                    burnRate6h > F && burnRate30m > F     (policy ticket, F = 6)

``slo_burn`` watches one latency SLO (``slo.py``): the burn rates of its error budget, per room of
the rule's targets that the SLO covers, over two windows that must both exceed the factor (the
Google SRE workbook's multi-window, multi-burn-rate alert). Its burn-rate variables exist for it
alone: a custom rule cannot name them.

``heartbeat`` is ADR-0001's rule: an online session of the room (or, with ``share``, at least that
share of them) has been silent longer than T seconds. ``silentShare`` is the one metric that
depends on the rule: the share of online sessions silent longer than a heartbeat rule's T, and
longer than ``alert_stale_heartbeat_s`` for every other rule. ``heartbeat_rate`` is the older
heartbeat-rate-drop rule (stored rules of kind heartbeat before migration 0009 are of this kind).
``anomaly`` counts the room's anomaly flags (``anomaly.py``) of the types it names at its z-score
threshold T; the flag types are the anomaly metrics its expression adds up, so the expression is
the one place they are stored. A custom rule may use the same metrics (at ``anomaly_z_threshold``).

A firing alert resolves only when its *resolve* expression holds. For the built-ins that is the
threshold lowered by the hysteresis (``alert_hysteresis``, 10 %: capacity fires above 0.8 and
resolves below 0.72), so a value hovering at the threshold does not flap; a custom rule may give
its own, and otherwise resolves when its expression no longer holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import cel

from . import slo

KINDS = ("capacity", "latency", "heartbeat", "heartbeat_rate", "anomaly", "custom", "slo_burn")
SEVERITIES = ("info", "warning", "critical")
SCOPES = ("room", "room_type", "tenant")
CHANNEL_TYPES = ("in_app", "webhook", "slack", "teams", "pagerduty", "email")

# An anomaly rule's default z-score is the operator's anomaly_z_threshold (``default_z`` below).
DEFAULT_THRESHOLDS = {"capacity": 0.8, "latency": 500.0, "heartbeat": 60.0, "heartbeat_rate": 0.5}
# Kinds whose threshold is a ratio in (0, 1].
RATIO_KINDS = ("capacity", "heartbeat_rate")

# The room metrics an expression may use: name -> (CEL type, meaning). The evaluator provides
# exactly these; a rule naming anything else is refused when it is created.
VARIABLES: dict[str, tuple[str, str]] = {
    "online": ("int", "sessions in the room, every node"),
    "capacity": ("int", "the room's capacity"),
    "utilization": ("double", "online / capacity (0 when capacity is 0)"),
    "peak": ("int", "most sessions at once this hour"),
    "users": ("int", "distinct users in the room"),
    "avgLatencyMs": ("double", "mean of the sessions' last reported latency, ms"),
    "staleSessions": ("int", "online sessions whose last heartbeat is older than alert_stale_heartbeat_s"),
    "oldestHeartbeatAgeS": ("double", "age of the oldest last heartbeat among online sessions, s"),
    "silentShare": (
        "double",
        "share of online sessions silent longer than the rule's threshold (a heartbeat rule) or "
        "alert_stale_heartbeat_s (any other rule); 0 when the room is empty",
    ),
    "heartbeatRateDrop": (
        "double",
        "share of online sessions that missed their heartbeat (none for 1.5 intervals): how far the "
        "room's heartbeat rate fell below the expected online / interval",
    ),
    # Anomaly flags of the room now (alerting/anomaly.py), one metric per flag type (ANOMALY_VARIABLES)
    "joinStorms": (
        "int",
        "join storm flags: joins in the last minute far above the hour-of-week baseline",
    ),
    "leaveStorms": (
        "int",
        "leave storm flags: ends (leave, timeout, disconnect) in the last minute likewise",
    ),
    "latencySpikes": ("int", "latency flags: the last minute's p95 far above the hour-of-week baseline"),
    "massDisconnects": (
        "int",
        "mass disconnect flags: one appVersion, os or IP prefix (/24, /48) with many disconnect, "
        "timeout or node_lost ends in the last minute",
    ),
    "flappingClients": (
        "int",
        "clients (user + clientId) reconnecting more than anomaly_flap_reconnects times",
    ),
    "roomCode": ("string", "the room's code"),
    "tenant": ("string", "the room's tenant"),
}
# The anomaly metrics, one per flag type (alerting/anomaly.py): how many flags of that type the room
# raises now, at an anomaly rule's z-score threshold (anomaly_z_threshold in other rules).
ANOMALY_VARIABLES = {
    "join_storm": "joinStorms",
    "leave_storm": "leaveStorms",
    "latency_spike": "latencySpikes",
    "mass_disconnect": "massDisconnects",
    "flapping": "flappingClients",
}
ANOMALY_TYPES = tuple(ANOMALY_VARIABLES)

# The variables of an slo_burn rule only: its SLO's burn rate per window, per room (slo.py).
SLO_VARIABLES: dict[str, tuple[str, str]] = {
    "burnRate" + w: ("double", f"the SLO's error-budget burn rate over the last {w} (slo_burn rules only)")
    for w in slo.ALERT_WINDOWS
}

# A context with every variable, used to type-check an expression when a rule is created.
_SAMPLE = {
    "online": 7,
    "capacity": 10,
    "utilization": 0.7,
    "peak": 9,
    "users": 5,
    "avgLatencyMs": 42.5,
    "staleSessions": 1,
    "oldestHeartbeatAgeS": 3.5,
    "silentShare": 0.125,
    "heartbeatRateDrop": 0.25,
    "joinStorms": 0,
    "leaveStorms": 0,
    "latencySpikes": 0,
    "massDisconnects": 0,
    "flappingClients": 0,
    "roomCode": "room",
    "tenant": "tenant",
}
_SLO_SAMPLE = {name: 1.5 for name in SLO_VARIABLES}

MAX_EXPRESSION = 1000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")  # a PagerDuty Events API v2 integration key


class AlertRuleError(ValueError):
    """A rule that cannot be used; ``field`` names the offending field (camelCase, as in the API)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


def compile_expression(text: str, field_name: str = "expression", slo_burn: bool = False) -> cel.Program:
    """Compile a CEL expression over the room metrics; AlertRuleError with the parser's message.

    Besides parsing, the expression must name only known metrics (with ``slo_burn``, also the
    burn rates) and evaluate to a boolean (checked by running it once over sample metrics).
    """
    known = {**VARIABLES, **SLO_VARIABLES} if slo_burn else VARIABLES
    sample = {**_SAMPLE, **_SLO_SAMPLE} if slo_burn else _SAMPLE
    if not isinstance(text, str) or not text.strip():
        raise AlertRuleError(field_name, "must be a non-empty CEL expression")
    if len(text) > MAX_EXPRESSION:
        raise AlertRuleError(field_name, f"must be at most {MAX_EXPRESSION} characters")
    try:
        program = cel.compile(text)
    except Exception as exc:  # the library raises ValueError with the parser's message
        raise AlertRuleError(field_name, f"not a valid CEL expression: {exc}") from None
    unknown = sorted(set(program.variables()) - known.keys())
    if unknown:
        raise AlertRuleError(field_name, f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        result = program.execute(sample)
    except Exception as exc:
        raise AlertRuleError(field_name, f"cannot be evaluated: {exc}") from None
    if not isinstance(result, bool):
        raise AlertRuleError(field_name, f"must evaluate to a boolean, got {type(result).__name__}")
    return program


def _number(value: float) -> str:
    """A CEL double literal (always with a decimal point: CEL does not compare int to double loosely)."""
    text = repr(float(value))
    return text if ("." in text or "e" in text) else text + ".0"


def builtin_expressions(
    kind: str, threshold: float, hysteresis: float, share: float | None = None
) -> tuple[str, str]:
    """(fire, resolve) CEL expressions of a built-in kind at ``threshold`` (and a heartbeat rule's
    ``share``: the hysteresis then applies to the share)."""
    low = round(threshold * (1.0 - hysteresis), 9)
    if kind == "capacity":
        return f"utilization > {_number(threshold)}", f"utilization < {_number(low)}"
    if kind == "latency":
        return f"avgLatencyMs > {_number(threshold)}", f"avgLatencyMs < {_number(low)}"
    if kind == "heartbeat":
        if share is None:
            return f"oldestHeartbeatAgeS > {_number(threshold)}", f"oldestHeartbeatAgeS < {_number(low)}"
        # The age term is implied by the share (share > 0), and says which silence is counted.
        return (
            f"oldestHeartbeatAgeS > {_number(threshold)} && silentShare >= {_number(share)}",
            f"silentShare < {_number(round(share * (1.0 - hysteresis), 9))}",
        )
    if kind == "anomaly":
        raise AlertRuleError("kind", "an anomaly rule's expressions come from anomaly_expressions")
    if kind == "heartbeat_rate":
        return (
            f"staleSessions > 0 || heartbeatRateDrop > {_number(threshold)}",
            f"staleSessions == 0 && heartbeatRateDrop < {_number(low)}",
        )
    raise AlertRuleError("kind", f"must be one of {', '.join(KINDS)}")


def check_anomaly_types(kind: str, types: Any) -> tuple[str, ...] | None:
    """The flag types an anomaly rule watches (every type when None); refused for other kinds."""
    if types is None:
        return ANOMALY_TYPES if kind == "anomaly" else None
    if kind != "anomaly":
        raise AlertRuleError("anomalyTypes", "applies to the anomaly kind only")
    if not isinstance(types, list | tuple) or not types or not all(t in ANOMALY_TYPES for t in types):
        raise AlertRuleError("anomalyTypes", f"must be a non-empty list of {', '.join(ANOMALY_TYPES)}")
    return tuple(t for t in ANOMALY_TYPES if t in types)  # one order: the same types, the same text


def anomaly_expressions(types: tuple[str, ...]) -> tuple[str, str]:
    """(fire, resolve) of an anomaly rule: any flag of its types, and none left."""
    total = " + ".join(ANOMALY_VARIABLES[t] for t in types)
    return f"{total} > 0", f"{total} == 0"


def anomaly_types_of(*expressions: str | None) -> tuple[str, ...]:
    """The flag types whose metrics the expressions name (what the evaluator must compute)."""
    names: set[str] = set()
    for text in expressions:
        if text:
            try:
                names |= set(cel.compile(text).variables())
            except ValueError:  # a malformed expression uses no metric (compile_expression says why)
                continue
    return tuple(t for t, name in ANOMALY_VARIABLES.items() if name in names)


VALUE_METRIC = {
    "capacity": "utilization",
    "latency": "avgLatencyMs",
    "heartbeat": "oldestHeartbeatAgeS",
    "heartbeat_rate": "heartbeatRateDrop",
}


def check_threshold(kind: str, threshold: Any, default_z: float | None = None) -> float | None:
    """The threshold a rule of ``kind`` uses (its default when None; ``default_z`` for anomaly)."""
    if kind == "custom":
        if threshold is not None:
            raise AlertRuleError(
                "threshold", "applies to the built-in kinds only; a custom rule has an expression"
            )
        return None
    if threshold is None and kind == "anomaly":
        if default_z is None:
            raise AlertRuleError("threshold", "an anomaly rule needs a z-score threshold")
        return float(default_z)
    if threshold is None:
        return DEFAULT_THRESHOLDS[kind]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold <= 0:
        raise AlertRuleError("threshold", "must be a positive number")
    if kind in RATIO_KINDS and threshold > 1:
        raise AlertRuleError("threshold", f"a {kind} threshold is a ratio between 0 and 1")
    return float(threshold)


# The fields each channel type takes; ``url`` of pagerduty is optional (default: PagerDuty's own).
CHANNEL_FIELDS = {
    "in_app": {"type"},
    "webhook": {"type", "url"},
    "slack": {"type", "url"},
    "teams": {"type", "url"},
    "pagerduty": {"type", "routingKey", "url"},
    "email": {"type", "to"},
}
URL_CHANNELS = ("webhook", "slack", "teams")  # the URL is required


def _url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None


def check_share(kind: str, share: Any) -> float | None:
    """A heartbeat rule's share of silent sessions (None: any one session); refused for other kinds."""
    if share is None:
        return None
    if kind != "heartbeat":
        raise AlertRuleError("share", "applies to the heartbeat kind only")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise AlertRuleError("share", "must be a ratio in (0, 1]: the share of online sessions silent")
    return float(share)


def check_channels(value: Any) -> list[dict]:
    """Validate a rule's notification channels; returns them normalised.

    ``{"type": "in_app"}``, ``{"type": "webhook", "url": "https://..."}`` (also ``slack``: an
    incoming webhook URL, ``teams``: a workflow webhook URL), ``{"type": "pagerduty",
    "routingKey": "<32-character integration key>"}`` (``url`` optional: the Events API v2
    endpoint) or ``{"type": "email", "to": ["ops@example.com"]}`` (``to`` optional: ``smtp_to``).
    """
    if not isinstance(value, list):
        raise AlertRuleError("channels", "must be a list of channel objects")
    out = []
    for i, channel in enumerate(value):
        where = f"channels[{i}]"
        if not isinstance(channel, dict) or channel.get("type") not in CHANNEL_TYPES:
            raise AlertRuleError(where, f"must be an object whose type is one of {', '.join(CHANNEL_TYPES)}")
        kind = channel["type"]
        extra = sorted(set(channel) - CHANNEL_FIELDS[kind])
        if extra:
            raise AlertRuleError(where, f"unknown field(s) {', '.join(extra)} for a {kind} channel")
        if kind in URL_CHANNELS or "url" in channel:
            url = channel.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
                raise AlertRuleError(f"{where}.url", "must be an http:// or https:// URL")
            if not _url_host(url):
                raise AlertRuleError(f"{where}.url", "must be an http:// or https:// URL with a host")
        if kind == "pagerduty":
            key = channel.get("routingKey")
            if not isinstance(key, str) or not _ROUTING_KEY.match(key):
                raise AlertRuleError(
                    f"{where}.routingKey",
                    "must be the 32-character integration key of a PagerDuty service (Events API v2)",
                )
        if kind == "email" and "to" in channel:
            to = channel["to"]
            if (
                not isinstance(to, list)
                or not to
                or not all(isinstance(a, str) and _EMAIL.match(a) for a in to)
            ):
                raise AlertRuleError(f"{where}.to", "must be a non-empty list of email addresses")
        out.append(dict(channel))
    return out


@dataclass
class AlertRule:
    """One rule as the evaluator uses it (a row of ``dat_spd_alert_rule``)."""

    rule_id: str
    tenant: str
    name: str
    kind: str
    expression: str
    resolve_expression: str | None = None
    threshold: float | None = None
    share: float | None = None  # heartbeat rules: the share of sessions silent (None: any one)
    slo_id: str | None = None  # slo_burn rules: the SLO watched
    burn_policy: str | None = None  # slo_burn rules: page or ticket (slo.BURN_POLICIES)
    scope: str = "tenant"
    room_id: str | None = None
    room_type_id: str | None = None
    severity: str = "warning"
    for_seconds: int = 0
    channels: list[dict] = field(default_factory=list)
    enabled: bool = True
    _fire: cel.Program | None = field(default=None, repr=False, compare=False)
    _resolve: cel.Program | None = field(default=None, repr=False, compare=False)
    anomaly_types: tuple[str, ...] = field(default=(), compare=False)  # the flag types its expressions use

    def compile(self) -> AlertRule:
        """Compile both expressions (AlertRuleError if either is unusable)."""
        burn = self.kind == "slo_burn"
        self._fire = compile_expression(self.expression, slo_burn=burn)
        self._resolve = (
            compile_expression(self.resolve_expression, "resolveExpression", slo_burn=burn)
            if self.resolve_expression
            else None
        )
        self.anomaly_types = anomaly_types_of(self.expression, self.resolve_expression)
        return self

    def fires(self, metrics: dict) -> bool:
        """Whether the condition holds for a room's metrics."""
        return self._fire.execute(metrics) is True

    def resolves(self, metrics: dict) -> bool:
        """Whether a firing alert may resolve (hysteresis): the resolve expression, else not firing."""
        if self._resolve is None:
            return self._fire.execute(metrics) is not True
        return self._resolve.execute(metrics) is True

    def value(self, metrics: dict) -> float | None:
        """The figure an alert reports: the built-in's metric (None for custom rules)."""
        if self.kind == "anomaly":  # the number of flags raised of its types
            return float(sum(metrics.get(ANOMALY_VARIABLES[t], 0) for t in self.anomaly_types))
        if self.kind == "slo_burn":  # the long window's burn rate
            name = "burnRate" + slo.BURN_POLICIES[self.burn_policy or "page"][0]
        elif self.kind == "heartbeat" and self.share is not None:
            name = "silentShare"
        else:
            name = VALUE_METRIC.get(self.kind)
        return None if name is None else float(metrics.get(name, 0))

    def silence_s(self, default_s: float) -> float:
        """How long a session must be silent to count in this rule's ``silentShare``."""
        return float(self.threshold) if self.kind == "heartbeat" and self.threshold else default_s


def make_rule_expressions(
    kind: str,
    threshold: Any,
    expression: Any,
    resolve_expression: Any,
    hysteresis: float,
    share: Any = None,
    burn_policy: str | None = None,
    anomaly_types: Any = None,
    default_z: float | None = None,
) -> tuple[str, str | None, float | None]:
    """(expression, resolveExpression, threshold) to store for a rule as the API receives it.

    Built-in kinds take a threshold (or their default) and write both expressions, a heartbeat
    rule also its optional ``share`` (checked with ``check_share``), an anomaly rule its flag types
    (``anomaly_types``, every type when None) and z-score (``default_z`` when None); a custom rule takes an
    expression and optionally a resolve expression. Each is compiled here, so a bad one is refused
    at create time with the CEL parser's message. An slo_burn rule takes its ``burn_policy``
    (page or ticket) and a burn-rate factor as threshold (default: the policy's).
    """
    if kind not in KINDS:
        raise AlertRuleError("kind", f"must be one of {', '.join(KINDS)}")
    if kind == "slo_burn":
        return _burn_rule(threshold, expression, resolve_expression, hysteresis, share, burn_policy)
    if burn_policy is not None:
        raise AlertRuleError("burnPolicy", "applies to the slo_burn kind only")
    value = check_threshold(kind, threshold, default_z)
    share = check_share(kind, share)
    types = check_anomaly_types(kind, anomaly_types)
    if kind != "custom":
        if expression is not None or resolve_expression is not None:
            raise AlertRuleError(
                "expression", f"a {kind} rule writes its own expression from threshold; use kind custom"
            )
        if kind == "anomaly":
            fire, resolve = anomaly_expressions(types)
        else:
            fire, resolve = builtin_expressions(kind, value, hysteresis, share)
        return fire, resolve, value
    if expression is None:
        raise AlertRuleError("expression", "is required for a custom rule")
    compile_expression(expression)
    if resolve_expression is not None:
        compile_expression(resolve_expression, "resolveExpression")
    return expression, resolve_expression, None


def _burn_rule(
    threshold: Any, expression: Any, resolve: Any, hysteresis: float, share: Any, policy: str | None
) -> tuple[str, str, float]:
    """(expression, resolveExpression, factor) of an slo_burn rule (``make_rule_expressions``)."""
    if policy not in slo.BURN_POLICIES:
        raise AlertRuleError("burnPolicy", f"must be one of {', '.join(slo.BURN_POLICIES)}")
    if share is not None:
        raise AlertRuleError("share", "applies to the heartbeat kind only")
    if expression is not None or resolve is not None:
        raise AlertRuleError(
            "expression", "an slo_burn rule writes its own expression from burnPolicy and threshold"
        )
    if threshold is None:
        threshold = slo.BURN_POLICIES[policy][2]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold <= 0:
        raise AlertRuleError("threshold", "must be a positive burn-rate factor, e.g. 14.4")
    # Both windows above the factor fire; either below it less the hysteresis resolves (the short
    # window recovers first: the alert ends soon after the problem does).
    long_w, short_w, _ = slo.BURN_POLICIES[policy]
    factor, low = float(threshold), round(float(threshold) * (1.0 - hysteresis), 9)
    return (
        f"burnRate{long_w} > {_number(factor)} && burnRate{short_w} > {_number(factor)}",
        f"burnRate{long_w} < {_number(low)} || burnRate{short_w} < {_number(low)}",
        factor,
    )
