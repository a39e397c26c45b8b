"""On the local host: critical anomaly -> Logic App asked -> webhook subscription -> approve -> one ARM
write -> audit record and Teams message -> the Logic App run called back; replays change nothing."""

import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from werkzeug import Response

from shared.alerts.outbox import key_hash
from shared.approvals.audit import read_audit
from shared.approvals.requests import request_approval
from tests.conftest import start_host, stop_host
from tests.fixtures.approvals.seed import load, seed_episode

pytestmark = pytest.mark.e2e

EPISODE = load("episode-critical-vm.json")
VM = EPISODE["SERIES_ID"]
RG = VM.split("/providers/")[0]


def _wait(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def peers(httpserver):
    """One local server playing ARM (documented answers: GET 200 with tags, POST deallocate 202 empty)
    and the approval Logic App (trigger 202, webhook callback 200)."""
    httpserver.expect_request(VM, method="GET").respond_with_json(load("arm-vm.json"))
    httpserver.expect_request(RG, method="GET").respond_with_json({"id": RG, "tags": {}})
    httpserver.expect_request(VM + "/deallocate", method="POST").respond_with_response(Response(status=202))
    httpserver.expect_request("/logicapp/trigger", method="POST").respond_with_response(Response(status=202))
    httpserver.expect_request("/logicapp/callback/run-1", method="POST").respond_with_response(Response(status=200))
    return httpserver


def _requests_to(server, path, method):
    return [r for r, _ in server.log if r.path == path and r.method == method]


def test_critical_anomaly_approved_through_the_logic_app_runs_one_arm_action(env, runtime, peers, tmp_path):
    base = f"http://127.0.0.1:{peers.port}"
    host_env = {
        **env,
        "REMEDIATION_MODE": "enforce",
        "ARM_ENDPOINT": base,
        "APPROVAL_LOGIC_APP_URL": base + "/logicapp/trigger",
        "CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
    }
    # GIVEN a critical episode in the warehouse, and the cost job asking the Logic App
    seed_episode(runtime)
    from shared.runtime import Runtime
    from shared.settings import load_settings

    asking = Runtime(load_settings(host_env, local_settings=tmp_path / "absent.json"))
    assert request_approval(asking, EPISODE).state == "requested"
    asked = _requests_to(peers, "/logicapp/trigger", "POST")
    assert len(asked) == 1 and asked[0].json["episodeId"] == EPISODE["EPISODE_ID"]
    host = start_host(host_env, tmp_path / "host.log")
    try:
        # WHEN the Logic App's webhook action subscribes, and the manager approves
        subscribe = {**load("logic-app-subscribe.json"), "callbackUrl": base + "/logicapp/callback/run-1?sig=fake"}
        started = time.monotonic()
        status, _, body = host.request("POST", "/api/approvals", subscribe, headers={"Idempotency-Key": "run-1"})
        assert status == 202, body
        assert (body["status"], body["callbackRegistered"]) == ("pending", True)
        decision = {"decision": "approve", "approver": "manager@example.test", "reason": "runaway batch"}
        key = {"Idempotency-Key": "decision-1"}
        status, _, first = host.request(
            "POST", f"/api/approvals/{EPISODE['EPISODE_ID']}/decision", decision, headers=key
        )
        assert status == 202 and first["status"] == "approved" and first["outcome"]["state"] == "queued"
        assert time.monotonic() - started < 5, "the HTTP answers must come within seconds"

        # THEN the worker deallocates the VM once and calls the waiting run back with the decision
        assert _wait(lambda: _requests_to(peers, "/logicapp/callback/run-1", "POST")), host.log()[-3000:]
        callback = _requests_to(peers, "/logicapp/callback/run-1", "POST")[0].json
        assert (callback["decision"], callback["approver"]) == ("approve", "manager@example.test")
        assert callback["outcome"]["state"] == "executed"
        assert len(_requests_to(peers, VM + "/deallocate", "POST")) == 1
        # ... with an audit record in operational state and the warehouse, and a Teams message in the outbox
        rows = read_audit(runtime.storage, EPISODE["EPISODE_ID"])
        assert [(r["decision"], r["outcome"], r["approver"]) for r in rows] == [
            ("approve", "executed", "manager@example.test")
        ]
        with runtime.warehouse.session() as wh:
            audit = wh.query("SELECT DECISION, OUTCOME, MODE FROM APPROVAL_AUDIT")
        assert audit == [{"DECISION": "approve", "OUTCOME": "executed", "MODE": "enforce"}]
        outbox = Path(env["OUTBOX_DIR"])
        marker = key_hash(f"approval-audit:{EPISODE['EPISODE_ID']}")
        assert _wait(lambda: any(marker in p.name for p in outbox.glob("teams-*.json"))), host.log()[-3000:]

        # WHEN the same decision is replayed with its key, and again without one
        status, headers, again = host.request(
            "POST", f"/api/approvals/{EPISODE['EPISODE_ID']}/decision", decision, headers=key
        )
        assert status == 202 and again == first and headers.get("Idempotent-Replayed") == "true"
        status, _, conflict = host.request("POST", f"/api/approvals/{EPISODE['EPISODE_ID']}/decision", decision)
        assert status == 409 and conflict["earlierDecision"]["approver"] == "manager@example.test"
        time.sleep(1.5)
        # THEN still exactly one ARM write and one callback
        assert len(_requests_to(peers, VM + "/deallocate", "POST")) == 1
        assert len(_requests_to(peers, "/logicapp/callback/run-1", "POST")) == 1
    finally:
        stop_host(host)


def _fuzz_finds_no_server_error(host, examples: int = 20) -> int:
    """schemathesis against the served OpenAPI document: positive and negative cases per operation."""
    status, _, doc = host.request("GET", "/api/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(doc)
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=examples // 2,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                nonlocal calls
                response = case.call(base_url=host.base_url + "/api", headers={"x-functions-key": host.key}, timeout=10)
                calls += 1
                assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"

            check()
    return calls


def test_bad_requests_get_problem_bodies_and_a_fuzzer_finds_no_500(env, tmp_path):
    host = start_host(env, tmp_path / "host.log")
    try:
        status, _, body = host.request("POST", "/api/approvals", raw=b"{not json")
        assert status == 400 and body["type"].endswith("bad-input") and body["detail"]
        status, _, body = host.request("POST", "/api/approvals", {"episodeId": 5, "action": "stop"})
        assert status == 400 and {e["field"] for e in body["errors"]} >= {"episodeId", "callbackUrl"}
        status, _, body = host.request(
            "POST",
            "/api/approvals",
            {"callbackUrl": "https://evil.example/cb", "episodeId": "ce-1", "action": "stop"},
        )
        assert status == 400 and body["errors"][0]["field"] == "callbackUrl"
        status, _, body = host.request(
            "POST",
            "/api/approvals",
            {"callbackUrl": "https://x.logic.azure.com/cb", "episodeId": "ce-1", "action": "nuke"},
        )
        assert status == 400 and body["errors"][0]["field"] == "action"
        status, _, body = host.request("POST", "/api/approvals/nope/decision", {"decision": "approve", "approver": "a"})
        assert status == 404
        status, _, body = host.request("POST", "/api/incidents", raw=b'{"title": "' + b"x" * 300_000 + b'"}')
        assert status == 413
        status, _, body = host.request("GET", "/api/openapi.json")
        assert status == 200 and body["openapi"] == "3.0.3"
        # property-based: no generated request (valid or not) makes any operation answer 5xx
        started = time.monotonic()
        calls = _fuzz_finds_no_server_error(host)
        assert calls >= 70 and time.monotonic() - started < 60
    finally:
        stop_host(host)
