"""The weekly digest card, pure: which week, trends, targets, failed deployments with their problem."""

from __future__ import annotations

from datetime import date

import pytest

from shared.alerts.model import Alert
from shared.dora.digest import digest_alert_fields, digest_week
from shared.errors import SettingsError
from shared.settings import load_settings


def _entry(deployments, failed, per_day, lead, restore, level):
    return {
        "deployments": deployments, "failedDeployments": failed,
        "changeFailureRate": failed / deployments if deployments else None, "deploymentsPerDay": per_day,
        "leadTimeHours": {"median": lead, "p90": lead}, "timeToRestoreHours": {"median": restore}, "level": level,
    }  # fmt: skip


def test_digest_covers_the_last_complete_iso_week():
    assert digest_week(date(2026, 3, 9)) == (date(2026, 3, 2), date(2026, 3, 8))  # a Monday
    assert digest_week(date(2026, 3, 15)) == (date(2026, 3, 2), date(2026, 3, 8))  # a Sunday


def test_digest_shows_trend_targets_and_why_deploys_failed():
    failed = [{
        "deployId": "c1", "service": "checkout", "finishedAt": "2026-03-02T10:00:00Z",
        "problem": {"id": "pA", "title": "Checkout 500s", "minutesAfterDeploy": 30.0, "url": "https://dt.example.test/p/pA"},
    }]  # fmt: skip
    fields = digest_alert_fields(
        "payments", (date(2026, 3, 2), date(2026, 3, 8)), _entry(10, 1, 1.43, 20.0, 0.5, "high"),
        _entry(20, 0, 0.71, 30.0, 2.0, "high"), failed,
    )  # fmt: skip
    alert = Alert(**fields)  # the alert pipeline's own gate accepts it
    facts = dict(alert.facts)
    assert alert.kind == "digest" and alert.owner == "payments" and alert.incident is False
    assert alert.severity == "warning"  # CFR 10% misses the 5% target
    assert "↑ vs last 4 weeks (better)" in facts["Deployment frequency"] and "met" in facts["Deployment frequency"]
    assert (
        "↓ vs last 4 weeks (better)" in facts["Lead time for changes"]
        and "target < 48 h: met" in facts["Lead time for changes"]
    )
    assert facts["Change failure rate"].startswith("10.0% (1 of 10)") and "missed" in facts["Change failure rate"]
    assert "30 min" in facts["Time to restore"] and "target < 1 h: met" in facts["Time to restore"]
    assert facts["Failed: checkout 2026-03-02T10:00:00Z"].startswith("P1 pA 'Checkout 500s' started 30 min after")
    assert alert.links == (("Problem pA", "https://dt.example.test/p/pA"),)
    assert alert.dedupe_key == "dora-digest:payments:2026-03-02"


def test_a_quiet_squad_gets_an_info_digest_without_data():
    fields = digest_alert_fields("(unmapped)", (date(2026, 3, 2), date(2026, 3, 8)), None, None, [])
    alert = Alert(**fields)
    assert alert.severity == "info" and alert.owner == "" and dict(alert.facts)["Level"] == "n/a"


def test_bad_priority_rules_stop_the_app_naming_the_setting(tmp_path):
    with pytest.raises(SettingsError, match="DORA_PRIORITY_RULES"):
        load_settings({"DORA_PRIORITY_RULES": "severity=ERROR"}, local_settings=tmp_path / "none.json")
    with pytest.raises(SettingsError, match="DORA_DIGEST_SCHEDULE"):
        load_settings({"DORA_DIGEST_SCHEDULE": "weekly"}, local_settings=tmp_path / "none.json")
