"""Cost anomaly episodes as the Logic Apps see them: list open ones, give feedback, look one up.

Listing and feedback go through the cost capability (`shared.costs.feedback.list_episodes`, and
`shared.review.feedback.record_feedback`, which keeps the feedback history); `get_episode` reads the
warehouse table COST_ANOMALIES (`shared/migrations/0010_costs.sql`). The cost stack is imported inside
the functions: the approval functions must not load pandas at import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.errors import NotFoundError


@dataclass(frozen=True)
class EpisodeView:
    """The fields of a cost episode the approval workflow needs, whatever its source."""

    episode_id: str
    status: str
    severity: str
    owner: str
    series_id: str
    series_kind: str
    subscription_id: str
    start_date: str
    last_flagged_date: str
    impact_usd_per_hour: float
    impact_usd_per_day: float
    expected_usd_per_day: float
    total_excess_usd: float
    top_causes: tuple[str, ...]
    verdict: str
    currency: str = ""  # the series' billing currency: amounts above are in it
    provider: str = ""  # azure|aws|gcp|oci for resource series ('' for aggregates)

    @property
    def resource_id(self) -> str:
        """The Azure resource of a resource-level episode ('' for squad/service/subscription series)."""
        return self.series_id if self.series_id.lower().startswith("/subscriptions/") else ""

    def as_wire(self) -> dict[str, Any]:
        return {
            "id": self.episode_id,
            "status": self.status,
            "severity": self.severity,
            "owner": self.owner,
            "seriesId": self.series_id,
            "seriesKind": self.series_kind,
            "subscriptionId": self.subscription_id,
            "startDate": self.start_date,
            "lastFlaggedDate": self.last_flagged_date,
            "impactUsdPerHour": self.impact_usd_per_hour,
            "impactUsdPerDay": self.impact_usd_per_day,
            "totalExcessUsd": self.total_excess_usd,
            "topCauses": list(self.top_causes),
            "verdict": self.verdict,
            "currency": self.currency,
            "provider": self.provider,
        }


def episode_view(obj: Any) -> EpisodeView:
    """Adapt a cost episode (a dataclass, a dict or a COST_ANOMALIES row) to an EpisodeView."""

    def get(*names: str, default: Any = "") -> Any:
        for name in names:
            for variant in (name, name.upper()):
                value = obj.get(variant) if isinstance(obj, dict) else getattr(obj, variant, None)
                if value is not None:
                    return value
        return default

    def num(*names: str) -> float:
        try:
            return float(get(*names, default=0.0) or 0.0)
        except (TypeError, ValueError):
            return 0.0

    return EpisodeView(
        episode_id=str(get("episode_id", "id")),
        status=str(get("status")),
        severity=str(get("severity")),
        owner=str(get("owner")),
        series_id=str(get("series_id", "resource_id")),
        series_kind=str(get("series_kind", default="resource")),
        subscription_id=str(get("subscription_id")),
        start_date=str(get("start_date")),
        last_flagged_date=str(get("last_flagged_date")),
        impact_usd_per_hour=num("excess_usd_per_hour", "impact_usd_per_hour"),
        impact_usd_per_day=num("excess_usd_per_day", "impact_usd_per_day"),
        expected_usd_per_day=num("expected", "expected_usd_per_day"),
        total_excess_usd=num("total_excess_usd"),
        top_causes=_causes(get("contributors", "top_causes", default=())),
        verdict=str(get("verdict")),
        currency=str(get("currency") or ""),
        provider=str(get("provider") or ""),
    )


def _causes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip().startswith(("[", "{")) else value.split(",")
        except ValueError:
            value = value.split(",")
    if isinstance(value, dict):
        value = list(value)
    out = []
    for item in value or ():
        if isinstance(item, (tuple, list)) and len(item) == 3:  # CostEpisode contributors: (member, $/day, share)
            member, increase, share = item
            out.append(f"{member} +${float(increase):,.2f}/day ({float(share):.0%})")
        elif isinstance(item, dict):
            label = item.get("member") or item.get("name") or item.get("id") or json.dumps(item, sort_keys=True)
            out.append(str(label))
        elif str(item).strip():
            out.append(str(item).strip())
    return tuple(out[:5])


def list_anomalies(runtime: Any, status: str, owner: str) -> list[EpisodeView]:
    """Episodes with this status ('' = any) and owner ('' = any), biggest excess first."""
    from shared.costs.feedback import list_episodes

    status = "" if status == "any" else status
    episodes = [episode_view(e) for e in list_episodes(runtime, status or None, owner or None)]
    return sorted(episodes, key=lambda e: -e.impact_usd_per_hour)


def get_episode(runtime: Any, episode_id: str) -> EpisodeView:
    """One episode by id; NotFoundError when there is none."""
    with runtime.warehouse.session() as wh:
        rows = wh.query("SELECT * FROM COST_ANOMALIES WHERE EPISODE_ID = %s", (episode_id,))
    if not rows:
        raise NotFoundError(f"no cost episode {episode_id}")
    return episode_view(rows[0])


def give_feedback(runtime: Any, episode_id: str, verdict: str, by: str, why: str) -> EpisodeView:
    """Record planned / not_anomaly (suppresses the episode) or confirmed; NotFoundError for an unknown id."""
    from shared.review.feedback import record_feedback

    get_episode(runtime, episode_id)
    result = record_feedback(runtime, episode_id, verdict, by, why)
    return episode_view(result) if result is not None else get_episode(runtime, episode_id)
