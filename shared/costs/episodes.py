"""Anomaly episodes: pure transitions from one scored day to the next, and the alerts they raise.

One episode per series from its first flagged day until the series is back to normal (the first scored day
that is not an anomaly, or the series disappears). Alerts: `open` when it opens, `update` when its severity
grows past what was last alerted (warning -> critical), `resolve` when it closes. A series marked `planned`
or `not_anomaly` is suppressed until a date: its episodes are tracked but raise no alert. Replaying a day
an episode has already seen changes nothing (`last_scored_date`), so reruns and partition retries are safe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from shared.costs.explain import explain_episode, explanation_facts

SEVERITY_RANK = {"none": 0, "warning": 1, "critical": 2}
VERDICTS = ("planned", "not_anomaly", "confirmed")
SUPPRESSING_VERDICTS = ("planned", "not_anomaly")

# (member id, dollar increase on the day, share of the summed increases)
Contributor = tuple[str, float, float]


@dataclass(frozen=True)
class SeriesDay:
    """One series scored on one day by the engine, with what the alert needs."""

    series_id: str
    series_kind: str
    series_bucket: int
    day: date
    status: str
    anomaly: bool
    severity: str
    reason: str
    cost: float
    expected: float
    lower: float
    upper: float
    excess_usd_per_day: float
    excess_usd_per_hour: float
    excess_pct: float
    owner: str = ""
    subscription_id: str = ""
    contributors: tuple[Contributor, ...] = ()
    # why the engine decided so (shared.costs.explain); None for days not scored by the engine
    explanation: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CostEpisode:
    """An anomaly episode of one series; the figures are those of its latest flagged day."""

    episode_id: str
    series_id: str
    series_kind: str
    series_bucket: int
    start_date: date
    last_flagged_date: date
    last_scored_date: date
    end_date: date | None
    status: str
    severity: str
    alerted_severity: str | None
    reason: str
    owner: str
    subscription_id: str
    cost: float
    expected: float
    lower: float
    upper: float
    excess_usd_per_day: float
    excess_usd_per_hour: float
    excess_pct: float
    peak_excess_usd_per_day: float
    total_excess_usd: float
    contributors: tuple[Contributor, ...]
    suppressed: bool = False
    verdict: str = ""
    verdict_by: str = ""
    verdict_why: str = ""
    # the explanation of its latest flagged day (shared.costs.explain); None when loaded without it
    explanation: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def top_cause(self) -> str:
        if not self.contributors:
            return ""
        member, increase, share = self.contributors[0]
        return f"{member} +${increase:,.2f}/day ({share:.0%})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (dates ISO) for the CLI and the HTTP functions."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, date):
                out[key] = value.isoformat()
            elif key == "contributors":
                out[key] = [
                    {"member": m, "increase_usd_per_day": round(i, 2), "share": round(s, 4)} for m, i, s in value
                ]
            elif isinstance(value, float):
                out[key] = round(value, 4)
            elif key == "explanation":
                continue
            else:
                out[key] = value
        out["top_cause"] = self.top_cause
        out["explanation"] = explain_episode(self)
        return out


@dataclass(frozen=True)
class EpisodeEvent:
    """An alert to raise: `open`, `update` or `resolve` of an episode."""

    action: str
    episode: CostEpisode

    @property
    def key(self) -> str:
        """Idempotency key of the alert: one per episode, action and severity."""
        return f"{self.episode.episode_id}:{self.action}:{self.episode.severity}"


def episode_id(series_id: str, start: date) -> str:
    """Stable id of the episode of `series_id` that started on `start` (the MERGE key, hashed)."""
    digest = hashlib.sha256(f"{series_id}|{start.isoformat()}".encode()).hexdigest()
    return "ce-" + digest[:20]


def advance(
    episode: CostEpisode | None, day: SeriesDay, suppressed_until: date | None = None
) -> tuple[CostEpisode | None, EpisodeEvent | None]:
    """Move the open episode of a series (or None) through one scored day.

    Returns (the episode after the day — closed ones included, None when there is none —, the alert to raise
    or None). A day the open episode has already seen returns it unchanged with no alert."""
    if episode is not None and episode.last_scored_date >= day.day:
        return episode, None
    suppressed = suppressed_until is not None and day.day <= suppressed_until
    if day.anomaly:
        if episode is None:
            opened = CostEpisode(
                episode_id=episode_id(day.series_id, day.day),
                series_id=day.series_id,
                series_kind=day.series_kind,
                series_bucket=day.series_bucket,
                start_date=day.day,
                last_flagged_date=day.day,
                last_scored_date=day.day,
                end_date=None,
                status="open",
                severity=day.severity,
                alerted_severity=None if suppressed else day.severity,
                reason=day.reason,
                owner=day.owner,
                subscription_id=day.subscription_id,
                cost=day.cost,
                expected=day.expected,
                lower=day.lower,
                upper=day.upper,
                excess_usd_per_day=day.excess_usd_per_day,
                excess_usd_per_hour=day.excess_usd_per_hour,
                excess_pct=day.excess_pct,
                peak_excess_usd_per_day=day.excess_usd_per_day,
                total_excess_usd=day.excess_usd_per_day,
                contributors=day.contributors,
                suppressed=suppressed,
                explanation=day.explanation,
            )
            return opened, None if suppressed else EpisodeEvent("open", opened)
        severity = max(episode.severity, day.severity, key=lambda s: SEVERITY_RANK.get(s, 0))
        grown = replace(
            episode,
            last_flagged_date=day.day,
            last_scored_date=day.day,
            severity=severity,
            reason=day.reason,
            owner=day.owner or episode.owner,
            cost=day.cost,
            expected=day.expected,
            lower=day.lower,
            upper=day.upper,
            excess_usd_per_day=day.excess_usd_per_day,
            excess_usd_per_hour=day.excess_usd_per_hour,
            excess_pct=day.excess_pct,
            peak_excess_usd_per_day=max(episode.peak_excess_usd_per_day, day.excess_usd_per_day),
            total_excess_usd=episode.total_excess_usd + day.excess_usd_per_day,
            contributors=day.contributors or episode.contributors,
            suppressed=suppressed or episode.verdict in SUPPRESSING_VERDICTS,
            explanation=day.explanation or episode.explanation,
        )
        alerted_rank = SEVERITY_RANK.get(episode.alerted_severity or "none", 0)
        if not suppressed and SEVERITY_RANK.get(severity, 0) > alerted_rank:
            action = "open" if episode.alerted_severity is None else "update"
            grown = replace(grown, alerted_severity=severity)
            return grown, EpisodeEvent(action, grown)
        return grown, None
    if episode is None:
        return None, None
    closed = replace(episode, status="closed", end_date=episode.last_flagged_date, last_scored_date=day.day)
    if episode.alerted_severity is not None and not suppressed:
        return closed, EpisodeEvent("resolve", closed)
    return closed, None


def apply_feedback(
    episode: CostEpisode, verdict: str, by: str, why: str, today: date, suppress_days: int
) -> tuple[CostEpisode, date | None]:
    """Record a verdict; returns (episode, the date alerts for its series are suppressed until, or None).

    `planned` and `not_anomaly` suppress the series for `suppress_days` from today; `confirmed` does not."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    if not by.strip():
        raise ValueError("say who gives the feedback (by)")
    suppress = verdict in SUPPRESSING_VERDICTS
    updated = replace(episode, verdict=verdict, verdict_by=by.strip(), verdict_why=why.strip(), suppressed=suppress)
    return updated, (today + timedelta(days=suppress_days)) if suppress else None


# -- alerts (fields of the shared.alerts.model.Alert contract) ------------------------------------------------

KIND_ANOMALY = "cost_anomaly"
KIND_DATA_LATE = "cost_data_late"


def alert_resource_id(episode: CostEpisode) -> str:
    """The resource an alert is about: the resource id, `/subscriptions/<id>`, or `owner:`/`service:` + name."""
    if episode.series_kind == "resource":
        return episode.series_id
    if episode.series_kind == "subscription":
        return f"/subscriptions/{episode.series_id}"
    return f"{episode.series_kind}:{episode.series_id}"


def series_label(episode: CostEpisode) -> str:
    if episode.series_kind == "resource":
        return episode.series_id.rstrip("/").split("/")[-1] or episode.series_id
    return f"{episode.series_kind} {episode.series_id}"


def anomaly_alert_fields(event: EpisodeEvent, correlation_id: str = "") -> dict[str, Any]:
    """The Alert contract's fields for an episode event (kind, severity, title, facts, links, dedupe key...)."""
    e = event.episode
    label = series_label(e)
    if event.action == "resolve":
        severity = "info"
        title = f"Cost back to normal: {label} (anomaly {e.start_date}..{e.end_date})"
    else:
        severity = e.severity if e.severity in ("warning", "critical") else "warning"
        verb = "grew to critical" if event.action == "update" else "anomaly"
        title = f"Cost {verb}: {label} +${e.excess_usd_per_day:,.0f}/day (+{_pct(e.excess_pct)})"
    facts: list[tuple[str, str]] = [
        ("Series", f"{e.series_kind}: {e.series_id}"),
        ("Owner", e.owner or "(untagged)"),
        ("Since", e.start_date.isoformat()),
        ("Actual / expected (day)", f"${e.cost:,.2f} / ${e.expected:,.2f} (band ${e.lower:,.2f}..${e.upper:,.2f})"),
        ("Excess", f"${e.excess_usd_per_day:,.2f}/day, ${e.excess_usd_per_hour:,.2f}/hour, +{_pct(e.excess_pct)}"),
        ("Severity", e.severity),
        ("Reason", e.reason),
    ]
    for member, increase, share in e.contributors[:3]:
        facts.append(("Top cause", f"{member}: +${increase:,.2f}/day ({share:.0%})"))
    if event.action != "resolve":
        facts.extend(explanation_facts(explain_episode(e)))
    links: list[tuple[str, str]] = []
    if e.series_kind == "resource" and e.series_id.startswith("/subscriptions/"):
        links.append(("Cost analysis", f"https://portal.azure.com/#@/resource{e.series_id}/costanalysis"))
    summary = f"{label} cost ${e.cost:,.2f} on {e.last_flagged_date} against ${e.expected:,.2f} expected" + (
        f"; top cause {e.top_cause}" if e.contributors else ""
    )
    return {
        "kind": KIND_ANOMALY,
        "severity": severity,
        "title": title,
        "resource_id": alert_resource_id(e),
        "owner": e.owner,
        "facts": tuple(facts),
        "links": tuple(links),
        "dedupe_key": f"cost-anomaly:{e.episode_id}",
        "correlation_id": correlation_id,
        "action": event.action,
        "incident": None,
        "summary": summary,
    }


def data_late_alert_fields(day: date, detail: str, correlation_id: str = "") -> dict[str, Any]:
    return {
        "kind": KIND_DATA_LATE,
        "severity": "warning",
        "title": f"Cost data for {day} is late or partial: anomaly scoring postponed",
        "resource_id": "cost-data",
        "owner": "",
        "facts": (("Date", day.isoformat()), ("Check", detail)),
        "links": (),
        "dedupe_key": f"cost-data-late:{day.isoformat()}",
        "correlation_id": correlation_id,
        "action": "open",
        "incident": None,
        "summary": f"The daily cost scan did not score {day}: {detail}. It scores the day once the data is complete.",
    }


def _pct(value: float) -> str:
    return "new" if value == float("inf") or value > 1e6 else f"{value:,.0f}%"


EXPLAINED_SHARE = 0.6


def explained_share(contributors: tuple[Contributor, ...], excess_usd_per_day: float, explained: set[str]) -> float:
    """Part of an aggregate's excess that members already alerted on their own account for (0..1).

    `contributors` are (member id, increase $, share); `explained` the member ids with their own open
    episode (a resource, or a resource of a squad whose aggregate already alerted)."""
    if excess_usd_per_day <= 0:
        return 0.0
    covered = sum(max(increase, 0.0) for member, increase, _ in contributors if member in explained)
    return min(covered / excess_usd_per_day, 1.0)


def is_explained(episode: CostEpisode, explained: set[str]) -> bool:
    """An aggregate anomaly whose growth is mostly that of already-alerted members: one cause, one alert."""
    return episode.series_kind != "resource" and (
        explained_share(episode.contributors, episode.excess_usd_per_day, explained) >= EXPLAINED_SHARE
    )
