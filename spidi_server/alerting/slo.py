"""Latency SLOs: the objective, the SLI read off the latency histograms, and the error-budget
arithmetic. Plain objects and functions, no I/O (the reads are in ``history.sql.slos``).

The SLI is always the share of heartbeats whose client latency is at or under the threshold,
counted exactly from the per-room, per-minute histograms (``dat_spd_room_stats.latency_hist``,
buckets ``events.LATENCY_BUCKETS_MS``: a count per upper bound, latency <= bound). That is why the
threshold must be one of the bounds. An SLO gives its objective in one of two forms:

    share       share of heartbeats <= T ms >= target     e.g. T = 150, target = 0.99
    percentile  pP client latency <= T ms                 e.g. T = 150, P = 95

and a percentile objective is the share objective with target = P / 100: "p95 <= 150 ms" holds
exactly when at least 95 % of the heartbeats are at or under 150 ms. Over a window:

    compliance        good / total                        (None without heartbeats)
    error budget      (1 - target) x total heartbeats may be slow
    burn rate         (bad / total) / (1 - target)        1 = spending the budget exactly over
                                                          the SLO window; 0 without heartbeats
    budget remaining  1 - burn rate over the SLO window   a fraction of the budget; below 0 when
                                                          overspent, 1 without heartbeats

Burn-rate alerting (kind ``slo_burn``) follows the Google SRE workbook's multi-window,
multi-burn-rate alerts: a ``page`` rule fires when the burn rate is above 14.4 over 1 h AND over
5 m (2 % of a 30-day budget in an hour), a ``ticket`` rule when it is above 6 over 6 h AND 30 m.
The long window makes the alert significant, the short one lets it end soon after a recovery.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..stores.events import LATENCY_BUCKETS_MS

OBJECTIVES = ("percentile", "share")
MAX_WINDOW_DAYS = 90
DEFAULT_WINDOW_DAYS = 28

# The burn-rate windows the status reports, by label, in seconds.
BURN_WINDOWS: dict[str, int] = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21_600, "3d": 259_200}
# What the evaluator needs for alerting (the status adds 3d and the SLO window).
ALERT_WINDOWS = ("5m", "30m", "1h", "6h")

# Burn policies of an slo_burn rule: (long window, short window, default factor).
BURN_POLICIES: dict[str, tuple[str, str, float]] = {
    "page": ("1h", "5m", 14.4),
    "ticket": ("6h", "30m", 6.0),
}


class SloError(ValueError):
    """An SLO that cannot be used; ``field`` names the offending field (camelCase, as in the API)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


def bucket_count(threshold_ms: float) -> int:
    """How many histogram buckets hold latencies at or under ``threshold_ms`` (a bucket bound);
    SloError for any other value, listing the bounds."""
    for i, bound in enumerate(LATENCY_BUCKETS_MS):
        if float(threshold_ms) == float(bound):
            return i + 1
    allowed = ", ".join(str(b) for b in LATENCY_BUCKETS_MS)
    raise SloError(
        "thresholdMs",
        f"must be one of the latency histogram's bucket bounds ({allowed} ms), so the share under it "
        f"is counted exactly; got {threshold_ms:g}",
    )


def objective_target(objective: str, percentile: float | None, target: float | None) -> float:
    """The SLI target share of an objective as the API gives it (SloError naming the field)."""
    if objective == "percentile":
        if target is not None:
            raise SloError(
                "target", "only with objective share (a percentile objective's target is percentile / 100)"
            )
        if percentile is None:
            raise SloError("percentile", "is required when objective is percentile (e.g. 95 for p95)")
        if not 0 < percentile < 100:
            raise SloError("percentile", "must be between 0 and 100 (exclusive), e.g. 95 or 99.9")
        return round(percentile / 100.0, 12)
    if objective == "share":
        if percentile is not None:
            raise SloError("percentile", "only with objective percentile")
        if target is None:
            raise SloError("target", "is required when objective is share (e.g. 0.99)")
        if not 0 < target < 1:
            raise SloError("target", "must be a share between 0 and 1 (exclusive), e.g. 0.99")
        return float(target)
    raise SloError("objective", f"must be one of {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class Counts:
    """Heartbeats of a window: at or under the threshold (``good``) and in all (``total``)."""

    good: int = 0
    total: int = 0

    @property
    def bad(self) -> int:
        return self.total - self.good


def compliance(c: Counts) -> float | None:
    """The SLI over a window: good / total (None without heartbeats)."""
    return c.good / c.total if c.total else None


def burn_rate(c: Counts, target: float) -> float:
    """How fast the window spends the error budget: (bad / total) / (1 - target); 0 without heartbeats."""
    return (c.bad / c.total) / (1.0 - target) if c.total else 0.0


def budget_remaining(c: Counts, target: float) -> float:
    """The share of the window's error budget left: 1 - burn rate (negative when overspent)."""
    return 1.0 - burn_rate(c, target)


def burn_variables(counts: dict[str, Counts], target: float) -> dict[str, float]:
    """The CEL variables of an slo_burn rule (``burnRate5m`` ...) from per-window counts."""
    return {"burnRate" + w: burn_rate(counts.get(w, Counts()), target) for w in ALERT_WINDOWS}


@dataclass(frozen=True)
class Slo:
    """One SLO as the evaluator uses it (a row of ``dat_spd_slo``)."""

    slo_id: str
    tenant: str
    name: str
    scope: str
    room_id: str | None
    room_type_id: str | None
    threshold_ms: float
    target: float
    window_days: int

    @property
    def buckets(self) -> int:
        """Histogram buckets counted as good."""
        return bucket_count(self.threshold_ms)

    def covers(self, room_id: str, room_type_id: str | None) -> bool:
        """Whether a room's heartbeats count toward this SLO."""
        if self.scope == "room":
            return room_id == self.room_id
        if self.scope == "room_type":
            return room_type_id is not None and room_type_id == self.room_type_id
        return True
