"""doctor checks for real, read-only: ServiceNow, ARM, Teams (shape only), warehouse migrations, storage."""

import base64
import json
import subprocess
import sys

from werkzeug import Response

from shared.connectivity import (
    check_arm_live,
    check_servicenow_live,
    check_storage_live,
    check_teams_shape,
    check_warehouse_live,
)
from shared.runtime import Runtime
from shared.settings import load_settings
from tests.conftest import ROOT, free_port

INCIDENT = "/api/now/table/incident"


def _runtime(env, tmp_path, **extra):
    return Runtime(load_settings({**env, **extra}, local_settings=tmp_path / "absent.json"))


def test_servicenow_check_reads_one_incident_with_the_real_credentials_and_fails_on_a_wrong_password(
    env, tmp_path, httpserver
):
    good = "Basic " + base64.b64encode(b"valueflow:right").decode()

    def table(request):
        assert request.method == "GET" and request.args["sysparm_limit"] == "1"
        if request.headers.get("Authorization") != good:
            return Response(json.dumps({"error": {"message": "User Not Authenticated"}}), 401)
        return Response(json.dumps({"result": [{"sys_id": "abc"}]}), 200, content_type="application/json")

    httpserver.expect_request(INCIDENT).respond_with_handler(table)
    base = {"SERVICENOW_INSTANCE_URL": httpserver.url_for("").rstrip("/"), "SERVICENOW_USERNAME": "valueflow"}
    ok = check_servicenow_live(_runtime(env, tmp_path, **base, SERVICENOW_PASSWORD="right"))
    assert ok.status == "ok" and "incident table readable" in ok.detail
    bad = check_servicenow_live(_runtime(env, tmp_path, **base, SERVICENOW_PASSWORD="wrong"))
    assert bad.status == "fail" and "refused our credentials (401)" in bad.detail and "wrong" not in bad.detail


def test_arm_check_reads_one_subscription_and_reports_a_refusal(env, tmp_path, httpserver):
    sub = {"subscriptionId": "3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11", "displayName": "platform-prod"}
    httpserver.expect_request("/subscriptions").respond_with_json({"value": [sub]})
    rt = _runtime(env, tmp_path, ARM_ENDPOINT=httpserver.url_for("").rstrip("/"))
    ok = check_arm_live(rt)
    assert ok.status == "ok" and "platform-prod" in ok.detail
    httpserver.clear()
    httpserver.expect_request("/subscriptions").respond_with_json(
        {"error": {"code": "AuthorizationFailed", "message": "no read"}}, status=403
    )
    bad = check_arm_live(rt)
    assert bad.status == "fail" and "AuthorizationFailed" in bad.detail


def test_teams_check_never_posts_and_judges_shape_and_allow_list(env, tmp_path, httpserver):
    routes = {"routes": {"payments": {"teams_webhook_url": "https://hooks.example.com/teams/payments"}}}
    refused = check_teams_shape(_runtime(env, tmp_path, ALERT_ROUTES=json.dumps(routes)))
    assert refused.status == "fail" and "TEAMS_WEBHOOK_ALLOWED_HOSTS" in refused.detail
    workflows = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=x"
    legacy = "https://contoso.webhook.office.com/webhookb2/abc/IncomingWebhook/def/ghi"
    ok = check_teams_shape(_runtime(env, tmp_path, TEAMS_DEFAULT_WEBHOOK_URL=workflows))
    assert ok.status == "ok" and "not posted to" in ok.detail and "sig=" not in ok.detail
    old = check_teams_shape(_runtime(env, tmp_path, TEAMS_DEFAULT_WEBHOOK_URL=legacy))
    assert old.status == "warn" and "Workflows" in old.detail
    assert httpserver.log == []  # nothing was posted anywhere


def test_warehouse_check_says_which_migrations_are_pending(env, tmp_path):
    rt = _runtime(env, tmp_path)
    before = check_warehouse_live(rt)
    assert before.status == "warn" and "pending" in before.detail and "0050_cost_feedback.sql" in before.detail
    rt.warehouse  # noqa: B018 - applies the migrations
    after = check_warehouse_live(rt)
    assert after.status == "ok" and "SELECT 1 ok" in after.detail


def test_storage_check_says_to_start_azurite_when_the_local_emulator_is_down(env, tmp_path):
    ports = [free_port() for _ in range(3)]
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"BlobEndpoint=http://127.0.0.1:{ports[0]}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{ports[1]}/"
        f"devstoreaccount1;TableEndpoint=http://127.0.0.1:{ports[2]}/devstoreaccount1"
    )
    down = check_storage_live(_runtime(env, tmp_path, AzureWebJobsStorage=conn))
    assert down.status == "fail" and "start Azurite with `make run`" in down.detail
    assert check_storage_live(_runtime(env, tmp_path)).status == "ok"


def test_doctor_cli_shows_a_wrong_servicenow_password_as_a_failure(env, tmp_path, httpserver):
    httpserver.expect_request(INCIDENT).respond_with_json({"error": {"message": "User Not Authenticated"}}, status=401)
    run_env = {
        **env,
        "PATH": "/usr/bin:/bin",
        "SERVICENOW_INSTANCE_URL": httpserver.url_for("").rstrip("/"),
        "SERVICENOW_USERNAME": "valueflow",
        "SERVICENOW_PASSWORD": "wrong",
        "VALUEFLOW_FAKE_ARM": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "doctor"], cwd=ROOT, env=run_env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("servicenow"))
    assert "FAIL" in line and "401" in line
    assert "overall: unhealthy" in done.stdout
