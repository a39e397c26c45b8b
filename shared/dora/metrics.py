"""The four keys, pure: the query window, the JSON shape of `GET /api/dora/metrics`, and a plain-Python
reference of what the warehouse views compute (tests and `bench/bench_dora.py` compare the two).

Definitions (docs/dora.md, the DESIGN contract):
- a deployment counts when it `succeeded` in a production environment; it *failed* when a P1 problem
  on the same service starts within 60 minutes after its `finishedAt` (both ends inclusive, instants);
- lead time = `finishedAt - commitTime` of those deployments (median and p90, linear interpolation
  like Snowflake's MEDIAN / PERCENTILE_CONT); time to restore = `resolvedAt - startedAt` of the
  resolved P1 problems of the service started in the window (median);
- a problem merges order-independently: resolved once any message resolved it, the highest priority
  seen, the union of services, the earliest start.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from shared.dora.model import Deployment, Problem, iso, parse_instant
from shared.dora.rules import overall_level
from shared.errors import BadInputError

FAILURE_WINDOW = timedelta(minutes=60)
HOUR = 3600.0


@dataclass(frozen=True)
class Window:
    """The instants a query covers: `start` inclusive; `end` inclusive or exclusive (a date's next midnight)."""

    start: datetime | None
    end: datetime | None
    end_inclusive: bool
    label_from: str | None
    label_to: str | None

    def contains(self, t: datetime) -> bool:
        if self.start is not None and t < self.start:
            return False
        if self.end is not None:
            return t <= self.end if self.end_inclusive else t < self.end
        return True

    def days(self) -> float:
        """Length in days (at least one hour's worth, so a tiny window does not divide by zero)."""
        if self.start is None or self.end is None:
            return 0.0
        return max((self.end - self.start).total_seconds() / 86400.0, 1 / 24)

    def bounded(self, first: datetime | None, today: date) -> Window:
        """Fill missing ends: from the first event's day; to the end of today (or of the last event's day)."""
        start, end, inclusive = self.start, self.end, self.end_inclusive
        label_from, label_to = self.label_from, self.label_to
        if start is None and first is not None:
            start = datetime.combine(first.date(), datetime.min.time())
            label_from = start.date().isoformat()
        if end is None:
            end = datetime.combine(today + timedelta(days=1), datetime.min.time())
            inclusive = False
            label_to = today.isoformat()
            if start is not None and end <= start:
                end = start + timedelta(days=1)
                label_to = start.date().isoformat()
        return Window(start, end, inclusive, label_from, label_to)


def parse_bound(text: str | None, name: str, *, upper: bool) -> tuple[datetime | None, bool, str | None]:
    """(instant, inclusive, label) of `from`/`to`: a date `YYYY-MM-DD` (whole day) or an ISO timestamp."""
    if text is None or not str(text).strip():
        return None, True, None
    value = str(text).strip()
    if len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise BadInputError(f"{name}: {value!r} is not a date YYYY-MM-DD or an ISO 8601 timestamp") from None
        at = datetime.combine(day + timedelta(days=1) if upper else day, datetime.min.time())
        return at, not upper, value
    try:
        instant = parse_instant(value)
    except ValueError as exc:
        raise BadInputError(f"{name}: {exc} (or give a date YYYY-MM-DD)") from None
    return instant, True, iso(instant)


def parse_window(from_text: str | None, to_text: str | None) -> Window:
    start, _, label_from = parse_bound(from_text, "from", upper=False)
    end, inclusive, label_to = parse_bound(to_text, "to", upper=True)
    if start is not None and end is not None and (end < start or (end == start and not inclusive)):
        raise BadInputError(f"from ({label_from}) is after to ({label_to})")
    return Window(start, end, inclusive, label_from, label_to)


# -- the JSON shape --


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def service_entry(
    service: str,
    deployments: int,
    failed: int,
    lead_median: float | None,
    lead_p90: float | None,
    restore_median: float | None,
    days: float,
) -> dict[str, Any]:
    """One element of `services` in the metrics response."""
    per_day = deployments / days if days > 0 else None
    cfr = failed / deployments if deployments else None
    return {
        "service": service,
        "deployments": int(deployments),
        "failedDeployments": int(failed),
        "changeFailureRate": cfr,
        "deploymentsPerDay": _round(per_day),
        "leadTimeHours": {"median": _round(lead_median), "p90": _round(lead_p90)},
        "timeToRestoreHours": {"median": _round(restore_median)},
        "level": overall_level(deployments, per_day, lead_median, cfr, restore_median),
    }


# -- the reference computation --


def percentile_cont(values: Sequence[float], fraction: float) -> float | None:
    """Linear-interpolated percentile (Snowflake PERCENTILE_CONT / MEDIAN); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = fraction * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def merge_problem(current: Problem | None, message: Problem) -> Problem:
    """Fold one more message of a problem in, independent of arrival order (resolve-once)."""
    if current is None:
        return message
    resolved_ats = [t for t in (current.resolved_at, message.resolved_at) if t is not None]
    state = "resolved" if "resolved" in (current.state, message.state) else "open"
    return replace(
        current,
        services=tuple(dict.fromkeys(current.services + message.services)),
        priority=min(current.priority, message.priority),
        state=state,
        started_at=min(current.started_at, message.started_at),
        resolved_at=min(resolved_ats) if state == "resolved" and resolved_ats else None,
        title=message.title or current.title,
        url=message.url or current.url,
    )


def failing_problems(deploy: Deployment, p1_by_service: dict[str, list[Problem]]) -> list[Problem]:
    """The P1 problems on the deploy's service starting within 60 minutes after it finished."""
    end = deploy.finished_at + FAILURE_WINDOW
    return [p for p in p1_by_service.get(deploy.service, ()) if deploy.finished_at <= p.started_at <= end]


def reference_metrics(
    deploys: Iterable[Deployment],
    problems: Iterable[Problem],
    production: Iterable[str],
    window: Window,
    *,
    keep: Callable[[str], bool] = lambda _s: True,
    today: date | None = None,
) -> dict[str, Any]:
    """The metrics response computed in plain Python from merged problems (one per id) and deployments."""
    prod = {p.strip().lower() for p in production}
    counted = [
        d for d in deploys if d.result == "succeeded" and d.environment.strip().lower() in prod and keep(d.service)
    ]
    p1_by_service: dict[str, list[Problem]] = defaultdict(list)
    p1 = [p for p in problems if p.priority == "P1"]
    for p in p1:
        for s in p.services:
            p1_by_service[s].append(p)
    first_candidates = [d.finished_at for d in counted] + [p.started_at for p in p1 if any(keep(s) for s in p.services)]
    bounded = window.bounded(min(first_candidates) if first_candidates else None, today or date.today())
    days = bounded.days()
    stats: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "failed": 0, "lead": [], "restore": []})
    for d in counted:
        if not bounded.contains(d.finished_at):
            continue
        entry = stats[d.service]
        entry["n"] += 1
        if failing_problems(d, p1_by_service):
            entry["failed"] += 1
        if d.commit_time is not None:
            entry["lead"].append((d.finished_at - d.commit_time).total_seconds() / HOUR)
    for p in p1:
        if not bounded.contains(p.started_at):
            continue
        for s in p.services:
            if not keep(s):
                continue
            entry = stats[s]
            if p.state == "resolved" and p.resolved_at is not None:
                entry["restore"].append((p.resolved_at - p.started_at).total_seconds() / HOUR)
    services = [
        service_entry(
            s,
            e["n"],
            e["failed"],
            percentile_cont(e["lead"], 0.5),
            percentile_cont(e["lead"], 0.9),
            percentile_cont(e["restore"], 0.5),
            days,
        )
        for s, e in sorted(stats.items())
    ]
    return {"from": bounded.label_from, "to": bounded.label_to, "services": services}


def reference_failed_deploys(
    deploys: Iterable[Deployment], problems: Iterable[Problem], production: Iterable[str]
) -> list[tuple[str, str]]:
    """(deploy id, problem id) pairs: every counted deployment and each P1 problem that failed it, sorted."""
    prod = {p.strip().lower() for p in production}
    p1_by_service: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        if p.priority == "P1":
            for s in p.services:
                p1_by_service[s].append(p)
    pairs: list[tuple[str, str]] = []
    for d in deploys:
        if d.result == "succeeded" and d.environment.strip().lower() in prod:
            pairs.extend((d.id, p.id) for p in failing_problems(d, p1_by_service))
    return sorted(pairs)
