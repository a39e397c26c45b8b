"""Every flag explained: the explanation dict of the engine's decision, on episodes, cards and incidents."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pytest

from shared.alerts import cards, incidents
from shared.alerts.model import Alert
from shared.alerts.routing import AlertRoute
from shared.costs.episodes import SeriesDay, advance, anomaly_alert_fields
from shared.costs.explain import explain_episode, explain_scores, explanation_facts
from shared.costs.scoring import score_last_day

START = np.datetime64("2025-01-01", "D")
DATES = np.arange(START, START + 90)
WEEKDAY = (DATES.astype(np.int64) + 3) % 7
VM = "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm-1"
CONTRACT_KEYS = {
    "reason", "expected", "lower", "upper", "actual", "excessPerDay", "excessPerHour", "contributors",
    "historyDays", "seasonality",
}  # fmt: skip


def _spiking_vm() -> tuple[np.ndarray, object]:
    rng = np.random.default_rng(3)
    costs = 200.0 * np.where(WEEKDAY >= 5, 0.4, 1.0) * np.exp(rng.normal(0, 0.04, 90))
    costs[-1] = 900.0
    return costs, score_last_day(costs[None, :], DATES)


def test_a_flagged_day_is_explained_with_band_excess_and_the_data_it_was_decided_on():
    # GIVEN a VM at $200 on weekdays, $80 at weekends, that costs $900 today
    costs, result = _spiking_vm()
    assert result.anomaly[0]
    # WHEN its decision is explained, with the meters behind it
    doc = explain_scores(result, 0, currency="EUR", contributors=[("D4s v5", 640.0, 0.91), ("Disk", 60.0, 0.09)])
    # THEN the contract's fields are there, camelCase, JSON-ready
    assert set(doc) >= CONTRACT_KEYS
    assert doc["reason"] == "spike" and doc["actual"] == 900.0 and doc["currency"] == "EUR"
    assert doc["lower"] < doc["expected"] < doc["upper"] < doc["actual"]
    assert doc["excessPerDay"] == pytest.approx(900.0 - doc["expected"], abs=0.01)
    assert doc["excessPerHour"] == pytest.approx(doc["excessPerDay"] / 24, abs=0.01)
    assert doc["historyDays"] == 56 and doc["seasonality"] == "weekly"
    assert doc["contributors"][0] == {"name": "D4s v5", "cost": 640.0, "share": 0.91}
    assert 0 < doc["noisePct"] < 20 and doc["day"] == str(DATES[-1])
    json.dumps(doc, allow_nan=False)
    # currency is omitted when it is not known
    assert "currency" not in explain_scores(result, 0)


def _day(offset: int, explanation: dict | None) -> SeriesDay:
    return SeriesDay(
        series_id=VM, series_kind="resource", series_bucket=1, day=date(2025, 3, 31) + timedelta(days=offset),
        status="scored", anomaly=True, severity="warning", reason="spike", cost=900.0, expected=200.0, lower=170.0,
        upper=240.0, excess_usd_per_day=700.0, excess_usd_per_hour=700 / 24, excess_pct=350.0, owner="squad-a",
        contributors=(("D4s v5", 640.0, 0.91),), explanation=explanation,
    )  # fmt: skip


def test_an_episode_carries_the_explanation_of_its_latest_flagged_day_plus_its_own_figures():
    _, result = _spiking_vm()
    first = explain_scores(result, 0)
    episode, _ = advance(None, _day(0, first))
    second = {**first, "actual": 950.0}
    episode, _ = advance(episode, _day(1, second))
    doc = explain_episode(episode)
    assert doc["actual"] == 950.0 and doc["episodeId"] == episode.episode_id
    assert doc["startDate"] == "2025-03-31" and doc["peakExcessPerDay"] == 700.0 and doc["totalExcess"] == 1400.0
    # the episode's JSON view (CLI, mirror, API) has it too
    assert episode.as_dict()["explanation"]["historyDays"] == 56


def test_an_episode_recorded_without_explanation_is_explained_from_its_figures():
    episode, _ = advance(None, _day(0, None))
    doc = explain_episode(episode)
    assert doc["reason"] == "spike" and doc["expected"] == 200.0 and doc["upper"] == 240.0
    assert doc["contributors"] == [{"name": "D4s v5", "cost": 640.0, "share": 0.91}]


def test_teams_cards_and_servicenow_incidents_say_why_the_cost_was_flagged():
    _, result = _spiking_vm()
    episode, event = advance(None, _day(0, explain_scores(result, 0)))
    alert = Alert(**anomaly_alert_fields(event, "cid"))
    why = dict(explanation_facts(explain_episode(episode)))
    assert why["Why flagged"].startswith("spike: actual $900.00 above the expected band")
    assert "56 days of history" in why["Decided on"] and "seasonality weekly" in why["Decided on"]
    # WHEN the alert becomes a Teams card and a ServiceNow incident
    card = cards.teams_payload(cards.alert_content(alert, "squad-a"), "https://example.logic.azure.com/workflows/x")
    facts = next(b for b in card["attachments"][0]["content"]["body"] if b["type"] == "FactSet")["facts"]
    body = incidents.incident_fields(alert, AlertRoute(squad="squad-a"))
    # THEN both show the reason, the band and the data behind the decision
    assert {"title": "Why flagged", "value": why["Why flagged"]} in facts
    assert {"title": "Decided on", "value": why["Decided on"]} in facts
    assert f"Why flagged: {why['Why flagged']}" in body["description"]
    assert f"Decided on: {why['Decided on']}" in body["description"]
