"""The app never indexes zero functions: importing function_app does no settings validation, no
network and no cost stack; a bad setting fails only the functions that read it, and health says so.

Each case imports function_app in a fresh interpreter, as the Functions worker does, with the
environment of the case (the worker reads app settings from the environment too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# GIVEN settings an operator can get wrong on a first deployment
BROKEN = {
    "REMEDIATION_MODE": "bogus",
    "WAREHOUSE": "snowflake",
    "SNOWFLAKE_ACCOUNT": "",
    "ALERT_ROUTES": "{not json",
    # a Key Vault reference the platform could not resolve reaches the code as text
    "SERVICENOW_PASSWORD": "@Microsoft.KeyVault(SecretUri=https://kv-dev-abc123.vault.azure.net/secrets/servicenow-password/)",
    "SERVICENOW_INSTANCE_URL": "https://example.service-now.com",
    "SERVICENOW_USERNAME": "valueflow",
}

_PROBE = r"""
import json, sys
import function_app
import azure.functions as func

functions = function_app.app.get_functions()  # what the worker indexes (call once: it validates)
names = sorted(f.get_function_name() for f in functions)
out = {"functions": names, "heavy": [m for m in ("pandas", "numpy", "pyarrow", "scipy") if m in sys.modules]}
if "--health" in sys.argv:
    health = next(f for f in functions if f.get_function_name() == "health")
    req = func.HttpRequest("GET", "http://localhost/api/health", headers={}, params={}, route_params={}, body=b"")
    resp = health.get_user_function()(req)
    out["health_status"] = resp.status_code
    out["health"] = json.loads(resp.get_body())
if "--policy-mode" in sys.argv:
    from shared.runtime import get_runtime
    from shared.errors import SettingsError
    try:
        get_runtime().settings.remediation_mode
    except SettingsError as err:
        out["policy_error"] = err.detail
print(json.dumps(out))
"""


def probe(env: dict[str, str], *args: str) -> dict:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("WEBSITE_", "SNOWFLAKE_", "ALERT_", "REMEDIATION"))
    }
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=ROOT,
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def good_functions(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("good")
    return probe({"OUTBOX_DIR": str(folder / "outbox"), "WAREHOUSE_PATH": str(folder / "wh")})["functions"]


def test_importing_function_app_loads_no_cost_stack(good_functions, tmp_path):
    result = probe({"OUTBOX_DIR": str(tmp_path / "o")})
    assert result["heavy"] == [], "pandas/numpy/pyarrow must load only inside the cost functions"
    assert {"health", "alert_delivery", "policy_events", "cost_daily_scan", "approvals_create"} <= set(good_functions)


def test_every_function_is_registered_with_broken_settings(good_functions, base_env, tmp_path):
    # WHEN the worker imports the app with them
    result = probe({**base_env, **BROKEN})
    # THEN every function is still there
    assert result["functions"] == good_functions


def test_a_bad_setting_fails_the_functions_that_read_it_naming_it(base_env):
    result = probe({**base_env, **BROKEN}, "--policy-mode")
    assert result["policy_error"].startswith("app setting REMEDIATION_MODE: expected one of dry-run, enforce")
    assert "bogus" in result["policy_error"]


def test_health_in_azure_names_every_bad_setting_and_is_honest_about_channels(env, tmp_path):
    # GIVEN an Azure-like environment: no Teams, no ServiceNow, a secret missing, broken settings
    azure_env = {
        **env,
        **{k: v for k, v in BROKEN.items() if not k.startswith("SERVICENOW")},
        "SERVICENOW_INSTANCE_URL": "",
        "SNOWFLAKE_PRIVATE_KEY": "@Microsoft.KeyVault(SecretUri=https://kv-dev-abc123.vault.azure.net/secrets/snowflake-private-key/)",
        "WEBSITE_SITE_NAME": "func-valueflow-dev-abc123",
        "WEBSITE_INSTANCE_ID": "0123456789abcdef",
    }
    # WHEN /api/health is called
    result = probe(azure_env, "--health")
    body = result["health"]
    checks = {c["name"]: c for c in body["dependencies"]}
    # THEN each bad setting is named, an unresolved Key Vault reference as such, values never shown
    assert result["health_status"] == 503 and body["status"] == "unhealthy"
    assert checks["setting REMEDIATION_MODE"]["status"] == "fail"
    assert checks["setting SNOWFLAKE_ACCOUNT"]["detail"] == "required when WAREHOUSE=snowflake"
    assert "unresolved Key Vault reference" in checks["setting SNOWFLAKE_PRIVATE_KEY"]["detail"]
    assert checks["alert routes"]["status"] == "fail" and "ALERT_ROUTES" in checks["alert routes"]["detail"]
    # AND the channels say the alerts are not delivered, and where they go instead (never a local folder)
    assert checks["servicenow"]["status"] == "warn"
    assert "not configured" in checks["servicenow"]["detail"]
    assert "blob container alerts-outbox" in checks["servicenow"]["detail"]
    assert "not delivered" in checks["teams"]["detail"]
    assert str(tmp_path) not in json.dumps(body)
    assert "kv-dev-abc123" not in json.dumps(body)
    # AND checks that need a broken setting report it instead of failing the answer
    assert checks["warehouse"]["status"] == "fail"
    assert "SNOWFLAKE" in checks["warehouse"]["detail"]


def _azure_settings(env, tmp_path, **extra):
    from shared.settings import load_settings

    azure_env = {**env, "WEBSITE_SITE_NAME": "func-valueflow-dev-abc123", **extra}
    return load_settings(azure_env, local_settings=tmp_path / "absent.json", strict=False)


def test_in_azure_an_unconfigured_channel_writes_the_blob_outbox_never_delivered(env, tmp_path):
    from shared.adapters.storage import StateStore
    from shared.alerts.delivery import AlertDelivery, alert_message
    from shared.alerts.model import Alert
    from tests.conftest import load_fixture

    # GIVEN the app in Azure with neither Teams nor ServiceNow configured
    settings = _azure_settings(env, tmp_path)
    store = StateStore.from_settings(settings)
    alert = Alert.from_dict({**load_fixture("alerts/cost_anomaly.json"), "dedupe_key": "cost:azure-outbox"})
    # WHEN an alert is delivered
    outcome = AlertDelivery.from_settings(settings, store).handle(alert_message(alert))
    # THEN it is in the blob container the operator reads, reported as outbox (never delivered)
    statuses = {r.channel: r.status for r in outcome.results}
    assert statuses["teams"] == "outbox" and "delivered" not in statuses.values()
    blobs = store.list_blobs("alerts-outbox")
    assert any(name.startswith("teams-open-") for name in blobs), blobs
    assert not (tmp_path / "outbox").exists()


def test_in_azure_without_an_outbox_container_the_alert_fails_as_not_configured(env, tmp_path):
    from shared.adapters.storage import StateStore
    from shared.alerts.delivery import AlertDelivery, alert_message
    from shared.alerts.model import Alert
    from tests.conftest import load_fixture

    settings = _azure_settings(env, tmp_path, OUTBOX_CONTAINER="none")
    store = StateStore.from_settings(settings)
    alert = Alert.from_dict({**load_fixture("alerts/cost_anomaly.json"), "dedupe_key": "cost:azure-none"})
    outcome = AlertDelivery.from_settings(settings, store).handle(alert_message(alert))
    teams = next(r for r in outcome.results if r.channel == "teams")
    assert teams.status == "failed" and "not configured" in teams.detail
    assert teams.reason == "not configured (no outbox in Azure)"
    assert "teams" in outcome.poisoned
