"""The typed settings module: resolution order, validation, secrets never echoed."""

import json
from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.settings import load_settings, lookup, specs

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_apply_when_nothing_is_set(tmp_path):
    s = load_settings({}, local_settings=tmp_path / "none.json")
    assert s.warehouse == "embedded"
    assert s.cost_critical_usd_per_hour == 1000.0
    assert s.cost_min_impact_usd_per_day == 10.0
    assert s.remediation_mode == "dry-run"
    assert s.valueflow_port == 7071
    assert s.owner_tag_keys == ("owner", "squad", "team")


def test_environment_wins_over_local_settings_file(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"VALUEFLOW_PORT": "7100", "OUTBOX_DIR": "/tmp/o"}}))
    s = load_settings({"VALUEFLOW_PORT": "17071"}, local_settings=path)
    assert s.valueflow_port == 17071
    assert s.outbox_dir == "/tmp/o"


def test_every_bad_setting_is_named_with_what_is_wrong(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(
            {"VALUEFLOW_PORT": "abc", "REMEDIATION_MODE": "yolo", "COST_CRITICAL_USD_PER_HOUR": "-5"},
            local_settings=tmp_path / "none.json",
        )
    text = err.value.detail
    assert "VALUEFLOW_PORT: expected a whole number from 1 to 65535; got 'abc'" in text
    assert "REMEDIATION_MODE: expected one of dry-run, enforce" in text
    assert "COST_CRITICAL_USD_PER_HOUR" in text
    assert {e["setting"] for e in err.value.errors} == {
        "VALUEFLOW_PORT",
        "REMEDIATION_MODE",
        "COST_CRITICAL_USD_PER_HOUR",
    }


def test_secret_values_are_never_echoed_in_errors(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(
            {"TEAMS_DEFAULT_WEBHOOK_URL": "ftp://hooks.invalid/s3cr3t-token"}, local_settings=tmp_path / "n.json"
        )
    assert "s3cr3t-token" not in err.value.detail
    assert "TEAMS_DEFAULT_WEBHOOK_URL" in err.value.detail
    assert "(value hidden)" in err.value.detail


def test_plain_http_is_refused_for_non_loopback_urls(tmp_path):
    with pytest.raises(SettingsError, match="ARM_ENDPOINT: plain http is allowed only for loopback"):
        load_settings({"ARM_ENDPOINT": "http://management.example.net"}, local_settings=tmp_path / "n.json")
    s = load_settings({"ARM_ENDPOINT": "http://127.0.0.1:9999/"}, local_settings=tmp_path / "n.json")
    assert s.arm_endpoint == "http://127.0.0.1:9999"


def test_snowflake_warehouse_requires_account_user_and_a_credential(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings({"WAREHOUSE": "snowflake"}, local_settings=tmp_path / "n.json")
    names = {e["setting"] for e in err.value.errors}
    assert {"SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_PRIVATE_KEY"} <= names


def test_servicenow_needs_basic_or_oauth_credentials(tmp_path):
    with pytest.raises(SettingsError, match="SERVICENOW_USERNAME"):
        load_settings({"SERVICENOW_INSTANCE_URL": "https://dev.service-now.com"}, local_settings=tmp_path / "n.json")


def test_schedule_must_be_six_field_ncrontab(tmp_path):
    with pytest.raises(SettingsError, match="COST_SCAN_SCHEDULE: expected a 6-field NCRONTAB"):
        load_settings({"COST_SCAN_SCHEDULE": "30 6 * * *"}, local_settings=tmp_path / "n.json")


def test_broken_local_settings_file_is_reported_with_its_path(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text("{not json")
    with pytest.raises(SettingsError, match="local.settings.json: not valid JSON"):
        load_settings({}, local_settings=path)


def test_binding_expression_lookup_falls_back_to_the_declared_default():
    assert lookup("COST_SCAN_SCHEDULE", {}) == "0 30 6 * * *"
    assert lookup("COST_SCAN_SCHEDULE", {"COST_SCAN_SCHEDULE": "0 0 7 * * *"}) == "0 0 7 * * *"
    assert lookup("NOT_A_SETTING", {}) is None


def test_sample_settings_file_and_settings_doc_list_every_setting():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    table = (ROOT / "docs" / "settings.md").read_text()
    for spec in specs():
        assert spec.name in sample, f"{spec.name} missing from local.settings.sample.json"
        assert f"`{spec.name}`" in table, f"{spec.name} missing from the settings table in docs/settings.md"


def test_no_module_but_settings_reads_the_environment():
    offenders = []
    for folder in ("shared", "functions"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "settings.py":
                continue
            text = path.read_text()
            if "os.environ" in text or "os.getenv" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
