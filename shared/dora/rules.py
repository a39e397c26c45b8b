"""The platform's rules, pure: production environments, problem priority, DORA levels, targets, badges.

Levels follow the four performance clusters of the DORA report (Accelerate State of DevOps 2024, the
latest edition that publishes them; the 2025 report describes team profiles instead):

| metric | elite | high | medium | low |
|---|---|---|---|---|
| deployment frequency | on demand (>= 1/day) | daily to weekly | weekly to monthly | less than monthly |
| lead time for changes | < 1 day | 1 day - 1 week | 1 week - 1 month | > 1 month |
| change failure rate | 5% | 20% | 10% | 40% |
| failed deployment recovery time | < 1 hour | < 1 day | < 1 day | 1 week - 1 month |

The report's clusters are centroids, not bands (medium fails less often than high), so each metric
is graded by the bands in `LEVEL_BANDS`, and a service's level is the lowest of its graded metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LEVELS = ("elite", "high", "medium", "low")

# upper bounds per level (inclusive unless noted); deployment frequency is a lower bound per day
LEVEL_BANDS: dict[str, tuple[float, float, float]] = {
    "deploymentsPerDay": (1.0, 1 / 7, 1 / 30),  # >= these: elite, high, medium; below: low
    "leadTimeHours": (24.0, 168.0, 720.0),  # < 1 day, <= 1 week, <= 1 month; above: low
    "changeFailureRate": (0.05, 0.20, 0.30),  # <= 5%, <= 20%, <= 30% (between the 20% and 40% clusters)
    "timeToRestoreHours": (1.0, 24.0, 168.0),  # < 1 hour, < 1 day, <= 1 week; above: low
}

# the platform's KPIs (issue 14): on demand, lead time < 2 days, CFR < 5%, restore < 1 hour
TARGETS: dict[str, tuple[str, float]] = {
    "deploymentsPerDay": (">=", 1.0),
    "leadTimeHours": ("<", 48.0),
    "changeFailureRate": ("<", 0.05),
    "timeToRestoreHours": ("<", 1.0),
}


def is_production(environment: str, production: Iterable[str]) -> bool:
    """True when `environment` is one of the production names (case-insensitive)."""
    names = {p.strip().lower() for p in production}
    return environment.strip().lower() in names


def grade(metric: str, value: float | None) -> str | None:
    """The DORA level of one metric value (None when the value is unknown)."""
    if value is None:
        return None
    elite, high, medium = LEVEL_BANDS[metric]
    if metric == "deploymentsPerDay":
        return "elite" if value >= elite else "high" if value >= high else "medium" if value >= medium else "low"
    if metric == "leadTimeHours":
        return "elite" if value < elite else "high" if value <= high else "medium" if value <= medium else "low"
    if metric == "timeToRestoreHours":
        return "elite" if value < elite else "high" if value < high else "medium" if value <= medium else "low"
    return "elite" if value <= elite else "high" if value <= high else "medium" if value <= medium else "low"


def overall_level(
    deployments: int,
    per_day: float | None,
    lead_median: float | None,
    cfr: float | None,
    restore_median: float | None,
) -> str | None:
    """The lowest level among the graded metrics; None for a service with no production deployments."""
    if not deployments:
        return None
    grades = [
        grade("deploymentsPerDay", per_day),
        grade("leadTimeHours", lead_median),
        grade("changeFailureRate", cfr),
        grade("timeToRestoreHours", restore_median),
    ]
    known = [g for g in grades if g is not None]
    return max(known, key=LEVELS.index) if known else None


def meets_target(metric: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, bound = TARGETS[metric]
    return value >= bound if op == ">=" else value < bound


# -- problem priority --

PRIORITY_FIELDS = ("severity", "impact", "env", "source", "title")
DEFAULT_PRIORITY_RULES = "severity=AVAILABILITY|ERROR & env=production -> P1; env=production -> P2; * -> P3"
_PRIORITY = re.compile(r"^P[1-5]$")


@dataclass(frozen=True)
class PriorityRule:
    conditions: tuple[tuple[str, tuple[str, ...]], ...]  # (field, accepted values lower-case); () = always
    priority: str

    def matches(self, facts: dict[str, set[str]], production: set[str]) -> bool:
        for name, accepted in self.conditions:
            values = facts.get(name, set())
            wanted = set(accepted)
            if name == "env" and "production" in wanted:
                wanted |= production
            if name == "title":
                if not any(w in v for v in values for w in wanted):
                    return False
            elif not values & wanted:
                return False
        return True


def parse_priority_rules(text: str) -> tuple[PriorityRule, ...]:
    """`cond & cond -> P1; ...; * -> P3` (first match wins); ValueError names the bad rule.

    A condition is `field=value|value`, fields: severity (Dynatrace severityLevel, e.g. AVAILABILITY,
    ERROR, PERFORMANCE, RESOURCE_CONTENTION, CUSTOM_ALERT), impact (APPLICATION, SERVICES,
    INFRASTRUCTURE, ENVIRONMENT), env (from the entity tags / management zones; `production` means
    any DORA_PRODUCTION_ENVIRONMENTS name), source (dynatrace, servicenow), title (substring)."""
    rules = []
    for i, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            continue
        cond_text, arrow, priority = part.partition("->")
        priority = priority.strip().upper()
        if not arrow or not _PRIORITY.match(priority):
            raise ValueError(f"rule {i + 1} {part!r}: expected 'conditions -> P1' .. 'P5'")
        conditions: list[tuple[str, tuple[str, ...]]] = []
        if cond_text.strip() != "*":
            for cond in cond_text.split("&"):
                name, eq, values = cond.strip().partition("=")
                name = name.strip().lower()
                if not eq or name not in PRIORITY_FIELDS:
                    raise ValueError(
                        f"rule {i + 1} {part!r}: condition {cond.strip()!r} must be field=value with field one of "
                        + ", ".join(PRIORITY_FIELDS)
                    )
                accepted = tuple(v.strip().lower() for v in values.split("|") if v.strip())
                if not accepted:
                    raise ValueError(f"rule {i + 1} {part!r}: condition {cond.strip()!r} has no value")
                conditions.append((name, accepted))
        rules.append(PriorityRule(tuple(conditions), priority))
    if not rules:
        raise ValueError("no rule: write at least '* -> P3'")
    return tuple(rules)


def priority_for(facts: Mapping[str, Iterable[str]], rules: Sequence[PriorityRule], production: Iterable[str]) -> str:
    """The priority of the first rule the problem's facts match; P5 when none does."""
    lowered = {k: {str(v).strip().lower() for v in vs if str(v).strip()} for k, vs in facts.items()}
    prod = {p.strip().lower() for p in production}
    for rule in rules:
        if rule.matches(lowered, prod):
            return rule.priority
    return "P5"


# -- badges (the adoption program) --


@dataclass(frozen=True)
class Badge:
    id: str
    name: str
    rule: str


BADGES = (
    Badge("cicd-master", "CI/CD Master", "at least one production deployment per day and a change failure rate <= 5%"),
    Badge("fast-lane", "Fast Lane", "median lead time for changes under 48 hours (the platform target)"),
    Badge("quick-recovery", "Quick Recovery", "every P1 restored, median time to restore under 1 hour"),
    Badge("safe-shipper", "Safe Shipper", "at least 10 production deployments and none failed"),
    Badge("finops-saver", "FinOps Saver", "no open cost anomaly and cost lower than in the previous period"),
)


def badges_for(entry: dict[str, Any]) -> list[dict[str, str]]:
    """The badges a squad (or service) entry of the leaderboard earns, each with why."""
    out = []
    deployments = entry.get("deployments") or 0
    cfr = entry.get("changeFailureRate")
    per_day = entry.get("deploymentsPerDay") or 0.0
    lead = (entry.get("leadTimeHours") or {}).get("median")
    restore = (entry.get("timeToRestoreHours") or {}).get("median")
    earned = {
        "cicd-master": per_day >= 1.0 and cfr is not None and cfr <= 0.05,
        "fast-lane": lead is not None and lead < 48.0,
        "quick-recovery": restore is not None and restore < 1.0 and not entry.get("unresolvedP1"),
        "safe-shipper": deployments >= 10 and entry.get("failedDeployments", 0) == 0,
        "finops-saver": entry.get("openCostAnomalies") == 0
        and entry.get("cost") is not None
        and entry.get("previousCost") is not None
        and entry["cost"] < entry["previousCost"],
    }
    for badge in BADGES:
        if earned[badge.id]:
            out.append({"id": badge.id, "name": badge.name, "rule": badge.rule})
    return out
