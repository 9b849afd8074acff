"""Anomaly flags: a room's recent activity against its own hour-of-week baseline, explained.

Plain objects and arithmetic, no I/O (the reads and the stored flags are ``anomaly_watch.py``'s).

Baseline. For the hour of week now (UTC), the room's minutes of that same hour in each of the last
``anomaly_baseline_weeks`` weeks since the room's first statistics row (minutes without a row count
as zero: nobody joined): the median and the MAD (median absolute deviation) of joins per minute,
ends per minute (leaves, timeouts, disconnects), abnormal ends per minute (timeouts and disconnects,
``node_lost`` included) and the latency p95 of the minutes that have one. Median and MAD ignore the
odd outlier week that a mean and a standard deviation would chase.

Flags, each naming its metric, value, baseline and group:

* ``join_storm`` / ``leave_storm``: joins (ends) in the last minute against the baseline's.
* ``latency_spike``: the last complete minute's latency p95 against the baseline's.
* ``mass_disconnect``: abnormal ends (disconnect, timeout, node_lost) in the last minute of one
  ``appVersion``, ``os`` or IP prefix (/24 IPv4, /48 IPv6) against the room's abnormal ends per minute.
* ``flapping``: a client (user + clientId) that opened more than ``anomaly_flap_reconnects`` new
  sessions in the room within ``anomaly_flap_window_s``.

A rate is anomalous when its robust z-score ``(x - median) / (1.4826 * MAD)`` exceeds the rule's
threshold AND it lies at least ``anomaly_min_excess`` events (``anomaly_latency_min_excess_ms`` for
latency) above the median. 1.4826 * MAD estimates the standard deviation of normal data, so z reads
like the usual z-score. The scale has a floor of one event (1 ms), and the excess a floor of its
own: a room whose baseline is a flat zero (MAD 0) would otherwise flag on two joins. Storms and
latency need a baseline (no history: no judgement); a mass disconnect without one is judged against
a zero baseline, and flapping needs none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

MAD_SCALE = 1.4826  # MAD -> standard deviation of a normal distribution
ABNORMAL_ENDS = ("disconnect", "timeout", "node_lost")
GROUP_DIMENSIONS = ("appVersion", "os", "ip")


@dataclass(frozen=True)
class Stat:
    """A baseline figure: median and MAD."""

    median: float
    mad: float


@dataclass(frozen=True)
class Baseline:
    """A room's baseline for one hour of week; ``minutes`` the minutes it stands on."""

    minutes: int
    latency_minutes: int
    joins: Stat
    leaves: Stat
    drops: Stat
    latency_p95: Stat | None


@dataclass
class Recent:
    """A room's recent activity: the last minute's joins and ends, the last complete minute's
    latency p95, abnormal ends by group ("appVersion=1.2", "os=iOS", "ip=10.0.0.0/24") and the
    reconnects of each client ("user/clientId") in the flapping window."""

    joins: int = 0
    leaves: int = 0
    latency_p95: float | None = None
    drops: dict[str, int] = field(default_factory=dict)
    reconnects: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sensitivity:
    """What makes a flag: the rule's z-score and the operator's floors."""

    z: float
    min_excess: float = 10
    latency_min_excess_ms: float = 100.0
    flap_reconnects: int = 5


@dataclass(frozen=True)
class Flag:
    """One anomaly, explaining itself."""

    flag: str
    metric: str
    value: float
    group: str | None = None
    median: float | None = None
    mad: float | None = None
    z: float | None = None
    threshold: float | None = None
    minutes: int | None = None  # the baseline's minutes

    @property
    def key(self) -> str:
        """What identifies the anomaly from one evaluation to the next."""
        return f"{self.flag}/{self.group or ''}"

    def to_json(self) -> dict:
        """The flag as alerts and the API show it."""
        return {
            "flag": self.flag,
            "metric": self.metric,
            "value": self.value,
            "group": self.group,
            "baselineMedian": self.median,
            "baselineMad": self.mad,
            "baselineMinutes": self.minutes,
            "z": None if self.z is None else round(self.z, 3),
            "threshold": self.threshold,
        }


def robust_z(x: float, stat: Stat, floor: float = 1.0) -> float:
    """(x - median) / (1.4826 * MAD), the scale never below ``floor``."""
    return (x - stat.median) / max(MAD_SCALE * stat.mad, floor)


def ip_prefix(ip: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of an address; None for a missing or malformed one."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def drop_groups(rows: Iterable[tuple[str | None, str | None, str | None, int]]) -> dict[str, int]:
    """Abnormal ends by group, from (app_version, os, ip, count) rows."""
    out: dict[str, int] = {}
    for app_version, os_name, ip, count in rows:
        for dim, value in (("appVersion", app_version), ("os", os_name), ("ip", ip_prefix(ip))):
            if value:
                key = f"{dim}={value}"
                out[key] = out.get(key, 0) + int(count)
    return out


def _rate_flag(
    flag: str, metric: str, x: float, stat: Stat, minutes: int, sens: Sensitivity, excess: float, floor: float
) -> Flag | None:
    z = robust_z(x, stat, floor)
    if z > sens.z and x - stat.median >= excess:
        return Flag(flag, metric, float(x), None, stat.median, stat.mad, z, sens.z, minutes)
    return None


def flags(baseline: Baseline | None, recent: Recent, sens: Sensitivity, types: Iterable[str]) -> list[Flag]:
    """The anomalies of ``types`` a room shows now."""
    wanted = set(types)
    out: list[Flag] = []
    if baseline is not None and baseline.minutes:
        m = baseline.minutes
        if "join_storm" in wanted:
            out.append(
                _rate_flag(
                    "join_storm", "joinsPerMin", recent.joins, baseline.joins, m, sens, sens.min_excess, 1.0
                )
            )
        if "leave_storm" in wanted:
            out.append(
                _rate_flag(
                    "leave_storm",
                    "leavesPerMin",
                    recent.leaves,
                    baseline.leaves,
                    m,
                    sens,
                    sens.min_excess,
                    1.0,
                )
            )
        if "latency_spike" in wanted and baseline.latency_p95 is not None and recent.latency_p95 is not None:
            out.append(
                _rate_flag(
                    "latency_spike",
                    "latencyP95Ms",
                    recent.latency_p95,
                    baseline.latency_p95,
                    baseline.latency_minutes,
                    sens,
                    sens.latency_min_excess_ms,
                    1.0,
                )
            )
    if "mass_disconnect" in wanted:
        drops = baseline.drops if baseline is not None and baseline.minutes else Stat(0.0, 0.0)
        minutes = baseline.minutes if baseline is not None else 0
        for group, count in sorted(recent.drops.items()):
            found = _rate_flag(
                "mass_disconnect", "abnormalEndsPerMin", count, drops, minutes, sens, sens.min_excess, 1.0
            )
            if found is not None:
                out.append(Flag(**{**found.__dict__, "group": group}))
    if "flapping" in wanted:
        for client, reconnects in sorted(recent.reconnects.items()):
            if reconnects > sens.flap_reconnects:
                out.append(
                    Flag(
                        "flapping",
                        "reconnects",
                        float(reconnects),
                        client,
                        threshold=float(sens.flap_reconnects),
                    )
                )
    return [f for f in out if f is not None]


def counts(found: Iterable[Flag], types: Iterable[str], variables: dict[str, str]) -> dict[str, int]:
    """The rule's CEL anomaly metrics: flags per type (``variables``: type -> metric name)."""
    out = {variables[t]: 0 for t in types}
    for f in found:
        name = variables[f.flag]
        if name in out:
            out[name] += 1
    return out
