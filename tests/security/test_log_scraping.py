"""After a full run on the local host (key in the URL everywhere, a Logic App callback with a SAS
signature, Event Grid handshakes, refusals), the log holds the key once, where the README says, and
no SAS signature at all."""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
from pathlib import Path

import pytest
from werkzeug import Response

from tests.conftest import SAMPLES, start_host, stop_host
from tests.fixtures.approvals.seed import load, seed_episode

pytestmark = pytest.mark.e2e

EPISODE = load("episode-critical-vm.json")
VM = EPISODE["SERIES_ID"]
RG = VM.split("/providers/")[0]


def _wait(predicate, seconds: float = 45.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_full_run_logs_the_key_once_and_no_sas_signature(env, runtime, httpserver, tmp_path):
    key = "k" + secrets.token_urlsafe(24)  # recognisable in a log, unlike the fixtures' default
    sig = "S" + secrets.token_urlsafe(24)
    base = f"http://127.0.0.1:{httpserver.port}"
    httpserver.expect_request(VM, method="GET").respond_with_json(load("arm-vm.json"))
    httpserver.expect_request(RG, method="GET").respond_with_json({"id": RG, "tags": {}})
    httpserver.expect_request(VM + "/deallocate", method="POST").respond_with_response(Response(status=202))
    httpserver.expect_request("/cb/run-1", method="POST").respond_with_response(Response(status=200))
    host_env = {
        **env,
        "LOCAL_FUNCTION_KEY": key,
        "REMEDIATION_MODE": "enforce",
        "ARM_ENDPOINT": base,
        "CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
    }
    # Azurite lives for the whole session: an episode (and approval) id of this test only
    episode_id = "ce-" + secrets.token_hex(10)
    seed_episode(runtime, {**EPISODE, "EPISODE_ID": episode_id})
    host = start_host(host_env, tmp_path / "host.log")
    host.key = key
    code = "code=" + urllib.parse.quote(key)
    try:
        # keys in the query string, as Event Grid subscriptions and service hooks send them
        assert host.request("GET", f"/api/health?{code}", key=False)[0] in (200, 503)
        assert host.request("GET", f"/api/anomalies?status=open&{code}", key=False)[0] == 200
        validation = json.loads((SAMPLES / "eventgrid-subscription-validation.json").read_text())
        status, _, _ = host.request(
            "POST",
            f"/runtime/webhooks/eventgrid?functionName=policy_events&{code}",
            validation,
            headers={"aeg-event-type": "SubscriptionValidation"},
            key=False,
        )
        assert status == 200
        assert host.request("GET", f"/api/anomalies?code={key}x", key=False)[0] == 401  # a near miss
        assert host.request("POST", f"/api/nowhere?{code}&sig={sig}", {}, key=False)[0] == 404
        # a Logic App subscribes with a SAS callback, a manager approves, the worker calls it back
        callback = f"{base}/cb/run-1?api-version=2016-06-01&sp=%2Fruns%2F&sv=1.0&sig={sig}"
        subscribe = {
            **load("logic-app-subscribe.json"),
            "episodeId": episode_id,
            "callbackUrl": callback,
            "runId": "run-1",
        }
        assert host.request("POST", f"/api/approvals?{code}", subscribe, key=False)[0] == 202
        refused = {**subscribe, "callbackUrl": f"https://attacker.example\\.logic.azure.com/cb?sig={sig}"}
        assert host.request("POST", "/api/approvals", refused)[0] == 400
        decision = {"decision": "approve", "approver": "manager@example.test", "reason": "runaway"}
        assert host.request("POST", f"/api/approvals/{episode_id}/decision", decision)[0] == 202
        called = lambda: any(r.path == "/cb/run-1" for r, _ in httpserver.log)  # noqa: E731
        assert _wait(called), host.log()[-3000:]
        time.sleep(0.5)  # let the worker write its last lines
    finally:
        stop_host(host)
    log = host.log()
    # THEN the key appears once, on the start line the README describes, and nowhere else
    lines_with_key = [line for line in log.splitlines() if key in line]
    assert len(lines_with_key) == 1 and lines_with_key[0].startswith("Function key"), lines_with_key
    assert sig not in log
    # nor in the audit trail (operational state and warehouse) or the Teams messages of the outbox
    from shared.approvals.audit import read_audit

    assert read_audit(runtime.storage, episode_id)
    assert sig not in json.dumps(read_audit(runtime.storage, episode_id), default=str)
    with runtime.warehouse.session() as wh:
        assert sig not in json.dumps(wh.query("SELECT * FROM APPROVAL_AUDIT"), default=str)
    outbox = Path(env["OUTBOX_DIR"])
    assert all(sig not in p.read_text() for p in outbox.rglob("*.json"))
    # and the access lines are there, masked (the run did log the requests)
    assert re.search(r"code=\*\*\*", log) and re.search(r"sig=\*\*\*", log), log[-3000:]
