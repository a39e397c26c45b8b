"""Cost alerts: each episode event (and each late day) is enqueued on the alert pipeline once, an
aggregate's alert is held back when its members already told the same story (one cause, one alert),
and a critical episode asks for an approval."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from shared.alerts.delivery import enqueue_alert
from shared.alerts.model import Alert
from shared.costs import store
from shared.costs.approval import request_approval
from shared.costs.currency import with_currency_and_provider
from shared.costs.episodes import EpisodeEvent, anomaly_alert_fields, is_explained
from shared.idempotency import Scope
from shared.observability import correlation_id
from shared.runtime import Runtime

# one partition named after the scope (listed and looked up as `PartitionKey eq 'cost-alerts'`)
ALERTS_SCOPE = Scope("cost-alerts", expires_after=timedelta(days=120), spread=1)


@dataclass
class AlertCounts:
    sent: int = 0
    muted: int = 0
    events: dict[str, int] = field(default_factory=dict)


def alert_events(runtime: Runtime, kind: str, start: date, day: date, events: list[EpisodeEvent]) -> AlertCounts:
    """Raise the alerts of one kind's events of one day (each once); critical opens/updates ask for approval."""
    counts = AlertCounts()
    base_currency = runtime.settings.cost_threshold_currency
    explained = explained_members(runtime, kind, start, day) if kind != "resource" and events else set()
    for event in events:
        counts.events[event.action] = counts.events.get(event.action, 0) + 1
        if mute(runtime, event, explained):
            counts.muted += 1
            continue
        fields = with_currency_and_provider(anomaly_alert_fields(event, correlation_id()), event.episode, base_currency)
        counts.sent += send_alert(runtime, event.key, fields)
        if event.episode.severity == "critical" and event.action in ("open", "update"):
            request_approval(runtime, event.episode)
    return counts


def send_alert(runtime: Runtime, key: str, fields: dict[str, Any]) -> int:
    """Enqueue an alert once per key: 1 if sent now, 0 if it was sent before. TransientUpstreamError while
    another worker holds the key (its alert may never go out if it crashed: the caller retries after its lease)."""

    def effect() -> dict[str, Any]:
        enqueue(runtime, fields)
        return {"dedupe_key": fields["dedupe_key"]}

    outcome = runtime.idempotency.once(ALERTS_SCOPE, key, effect).raise_if_busy(f"cost alert {key}")
    return 1 if outcome.ran else 0


def enqueue(runtime: Runtime, fields: dict[str, Any]) -> None:
    """Hand an alert to the alert-delivery pipeline (queue `alerts`); BadInputError if the contract rejects it."""
    enqueue_alert(runtime.storage, Alert(**fields))


def explained_members(runtime: Runtime, kind: str, start: date, day: date) -> set[str]:
    """Resources whose growth already reached their squad: their own open episode, or (for subscription
    and service totals) an open episode of their squad's total."""
    with runtime.warehouse.session() as wh:
        members = set(store.open_episodes(wh, "resource"))
        if kind in ("subscription", "service"):
            squads = set(store.open_episodes(wh, "owner"))
            if squads:
                attributes = store.resource_attributes(wh, start, day)
                members |= {r for r, a in attributes.items() if (a.get("owner") or store.UNOWNED) in squads}
    return members


def mute(runtime: Runtime, event: EpisodeEvent, explained: set[str]) -> bool:
    """Hold back an aggregate's alert that would repeat alerts its members already raised (one cause, one alert).

    Its resolve is held back too when its open alert never went out."""
    episode = event.episode
    if episode.series_kind == "resource":
        return False
    if event.action in ("open", "update"):
        return is_explained(episode, explained)
    sent = any(
        runtime.idempotency.record(ALERTS_SCOPE, f"{episode.episode_id}:open:{severity}")
        for severity in ("warning", "critical")
    )
    return not sent
