"""Episode transitions, feedback suppression, the alerts they raise, and the data-freshness check (pure)."""

from dataclasses import replace
from datetime import date, timedelta

import pytest

from shared.alerts.model import Alert
from shared.costs.episodes import (
    SeriesDay,
    advance,
    anomaly_alert_fields,
    apply_feedback,
    data_late_alert_fields,
    episode_id,
)
from shared.costs.freshness import check_freshness

D0 = date(2026, 11, 10)
VM = "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm-1"


def day(offset: int, *, anomaly: bool, severity: str = "warning", excess: float = 100.0) -> SeriesDay:
    return SeriesDay(
        series_id=VM, series_kind="resource", series_bucket=7, day=D0 + timedelta(days=offset), status="scored",
        anomaly=anomaly, severity=severity if anomaly else "none", reason="spike" if anomaly else "none",
        cost=200.0 + excess, expected=200.0, lower=180.0, upper=230.0, excess_usd_per_day=excess,
        excess_usd_per_hour=excess / 24, excess_pct=excess / 2, owner="squad-a", subscription_id="s1",
        contributors=(("D4s v5", excess, 1.0),),
    )  # fmt: skip


def test_an_episode_opens_grows_to_critical_once_and_resolves_when_back_to_normal():
    # GIVEN a series flagged three days running, the second day critical, then normal
    episode, event = advance(None, day(0, anomaly=True))
    assert event.action == "open" and episode.status == "open" and episode.start_date == D0
    episode, event = advance(episode, day(1, anomaly=True, severity="critical", excess=30_000))
    assert event.action == "update" and episode.severity == "critical" and episode.alerted_severity == "critical"
    # a critical day that is smaller again raises nothing: it has been said
    episode, event = advance(episode, day(2, anomaly=True, severity="warning", excess=500))
    assert event is None and episode.severity == "critical" and episode.peak_excess_usd_per_day == 30_000
    assert episode.total_excess_usd == 100 + 30_000 + 500
    episode, event = advance(episode, day(3, anomaly=False))
    # THEN it closes, ending on its last flagged day, with one resolve
    assert event.action == "resolve" and episode.status == "closed" and episode.end_date == D0 + timedelta(days=2)
    assert episode.episode_id == episode_id(VM, D0)


def test_replaying_a_day_the_episode_has_seen_changes_nothing_and_alerts_nothing():
    episode, _ = advance(None, day(0, anomaly=True))
    again, event = advance(episode, day(0, anomaly=True, severity="critical", excess=99_999))
    assert again == episode and event is None


def test_a_normal_day_without_an_episode_is_nothing():
    assert advance(None, day(0, anomaly=False)) == (None, None)


def test_suppressed_series_is_tracked_without_alerts_and_alerts_again_after_the_suppression():
    episode, event = advance(None, day(0, anomaly=True), suppressed_until=D0 + timedelta(days=1))
    assert event is None and episode.suppressed and episode.alerted_severity is None
    episode, event = advance(episode, day(1, anomaly=True), suppressed_until=D0 + timedelta(days=1))
    assert event is None
    # the suppression ran out while the anomaly continues: the squad hears of it now, as an open
    episode, event = advance(episode, day(2, anomaly=True), suppressed_until=D0 + timedelta(days=1))
    assert event.action == "open"


def test_closing_an_episode_that_never_alerted_sends_no_resolve():
    episode, _ = advance(None, day(0, anomaly=True), suppressed_until=D0)
    closed, event = advance(episode, day(1, anomaly=False))
    assert closed.status == "closed" and event is None


def test_feedback_planned_suppresses_for_the_configured_days_and_confirmed_does_not():
    episode, _ = advance(None, day(0, anomaly=True))
    planned, until = apply_feedback(episode, "planned", "ana", "load test", D0, 14)
    assert until == D0 + timedelta(days=14) and planned.suppressed and planned.verdict_by == "ana"
    confirmed, until = apply_feedback(episode, "confirmed", "ana", "real", D0, 14)
    assert until is None and not confirmed.suppressed
    with pytest.raises(ValueError, match="verdict must be one of"):
        apply_feedback(episode, "maybe", "ana", "", D0, 14)


def test_alert_fields_fit_the_alert_contract_and_name_the_top_cause():
    episode, event = advance(None, day(0, anomaly=True, severity="critical", excess=36_000))
    alert = Alert(**anomaly_alert_fields(event, "cid-1"))
    assert alert.severity == "critical" and alert.owner == "squad-a" and alert.resource_id == VM
    assert alert.dedupe_key == f"cost-anomaly:{episode.episode_id}"
    assert ("Top cause", "D4s v5: +$36,000.00/day (100%)") in alert.facts
    aggregate = replace(episode, series_kind="subscription", series_id="s1")
    assert Alert(**anomaly_alert_fields(replace(event, episode=aggregate))).resource_id == "/subscriptions/s1"
    late = Alert(**data_late_alert_fields(D0, "no usage rows"))
    assert late.kind == "cost_data_late" and late.dedupe_key == "cost-data-late:2026-11-10"


def _stats(days: int, count: int = 100, total: float = 1000.0) -> dict:
    return {D0 - timedelta(days=i): (count, total) for i in range(1, days + 1)}


def test_freshness_complete_day():
    stats = {**_stats(28), D0: (99, 990.0)}
    assert check_freshness(D0, stats).complete


def test_freshness_missing_day_is_late():
    verdict = check_freshness(D0, _stats(28))
    assert verdict.status == "late" and "no usage rows" in verdict.detail


def test_freshness_far_fewer_series_than_usual_is_late():
    verdict = check_freshness(D0, {**_stats(28), D0: (40, 1000.0)})
    assert verdict.status == "late" and "40 resources" in verdict.detail


def test_freshness_total_far_below_the_same_weekday_is_late_but_a_cheap_weekend_is_not():
    stats = _stats(28)
    for week in range(1, 5):  # this weekday is always cheap (a weekend dip)
        stats[D0 - timedelta(days=7 * week)] = (100, 300.0)
    assert check_freshness(D0, {**stats, D0: (100, 290.0)}).complete
    assert check_freshness(D0, {**stats, D0: (100, 100.0)}).status == "late"


def test_freshness_without_any_data_is_no_data_and_short_history_is_accepted():
    assert check_freshness(D0, {}).status == "no_data"
    assert check_freshness(D0, {**_stats(3), D0: (5, 10.0)}).complete


def test_aggregate_growth_mostly_from_alerted_members_is_explained():
    from shared.costs.episodes import explained_share

    contributors = (("vm-a", 600.0, 0.9), ("vm-b", 60.0, 0.09), ("vm-c", 6.0, 0.01))
    assert explained_share(contributors, 666.0, {"vm-a"}) == pytest.approx(600 / 666)
    assert explained_share(contributors, 666.0, set()) == 0.0
    # a decrease or no excess explains nothing, and shares never exceed the whole
    assert explained_share(contributors, 0.0, {"vm-a"}) == 0.0
    assert explained_share(contributors, 100.0, {"vm-a", "vm-b"}) == 1.0
