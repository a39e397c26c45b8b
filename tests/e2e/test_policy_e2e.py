"""Policy remediation through the real local host: Event Grid webhook -> queue worker -> watch timer -> fake ARM."""

import copy
import json
import re
import time
from pathlib import Path

import pytest
from werkzeug import Request, Response

from shared.adapters.storage import StateStore
from shared.policy.worker import pending_rows
from tests.conftest import load_fixture, start_host, stop_host

pytestmark = pytest.mark.e2e

SUB = "3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"
WEBHOOK = "/runtime/webhooks/eventgrid?functionName=policy_events"


class RecordingArm:
    """A local fake ARM that records remediation PUTs (documented answers: 201 + Accepted)."""

    def __init__(self):
        self.puts = []
        self.broken = False

    def __call__(self, request: Request) -> Response:
        if self.broken and request.path.endswith("/queryResults"):  # a 400 is never retried by the client
            return _json({"error": {"code": "InvalidQuery", "message": "broken on purpose"}}, 400)
        if request.path.endswith("/queryResults"):
            return _json({"value": [{"policyDefinitionAction": "deployIfNotExists"}]})
        if "/remediations/" in request.path and request.method == "PUT":
            self.puts.append({"path": request.path, "query": dict(request.args), "body": request.get_json()})
            return _json({"properties": {"provisioningState": "Accepted"}}, 201)
        if "/remediations/" in request.path:
            return _json({"properties": {"provisioningState": "Running"}})
        return _json({"id": request.path, "tags": {"owner": "payments"}})


def _json(doc, status=200):
    return Response(json.dumps(doc), status, content_type="application/json")


@pytest.fixture
def policy_host(env, tmp_path, httpserver):
    arm = RecordingArm()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(arm)
    store = StateStore.from_connection_string(env["AzureWebJobsStorage"])
    for table in ("policystate", "remediations"):  # Azurite is shared by the session
        for row in list(store.query(table)):
            store.delete(table, row["PartitionKey"], row["RowKey"])
    host_json = tmp_path / "host.json"
    host_json.write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {
                    "queues": {
                        "maxDequeueCount": 5,
                        "visibilityTimeout": "00:00:00",
                        "maxPollingInterval": "00:00:00.2",
                    }
                },
            }
        )
    )
    host_env = {
        **env,
        "ARM_ENDPOINT": httpserver.url_for("").rstrip("/"),
        "REMEDIATION_MODE": "enforce",
        "REMEDIATION_WINDOW_SECONDS": "2",
        "REMEDIATION_WATCH_SCHEDULE": "0 0 0 1 1 *",  # only when asked, through the admin API
    }
    host = start_host(host_env, tmp_path / "host.log", extra=["--host-json", str(host_json)])
    host.arm = arm
    host.store = store
    host.outbox = Path(env["OUTBOX_DIR"])
    yield host
    stop_host(host)


def burst(n_resources=25, copies=2):
    base = load_fixture("policy/eventgrid-subscription-single-policy.json")[0]
    out = []
    for i in range(n_resources):
        e = copy.deepcopy(base)
        e["id"] = f"e2e-{i}"
        e["subject"] = f"/subscriptions/{SUB}/resourceGroups/rg-e2e/providers/Microsoft.Storage/storageAccounts/st{i}"
        out.extend([e] * copies)
    return out


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_event_burst_through_the_local_host_becomes_one_remediation_put(policy_host):
    host = policy_host
    # GIVEN a burst of 25 NonCompliant resources delivered twice, plus one CloudEvents event and bad events
    for chunk in (burst()[i : i + 10] for i in range(0, 50, 10)):
        status, _, _ = host.request("POST", WEBHOOK, chunk, headers={"aeg-event-type": "Notification"})
        assert status == 200
    cloud = load_fixture("policy/cloudevents-subscription-single-policy.json")
    cloud[0]["subject"] = f"/subscriptions/{SUB}/resourceGroups/rg-e2e/providers/Microsoft.Storage/storageAccounts/stce"
    status, _, _ = host.request("POST", WEBHOOK, cloud, headers={"Content-Type": "application/cloudevents-batch+json"})
    assert status == 200
    bad = [c["event"] for c in load_fixture("policy/bad-events.json")[:3]]
    status, _, _ = host.request("POST", WEBHOOK, bad, headers={"aeg-event-type": "Notification"})
    assert status == 200, "bad events are acknowledged so Event Grid does not retry them"

    # WHEN the worker has drained the queue and the coalescing window has closed
    def pending():
        return pending_rows(host.store)

    assert wait_for(lambda: host.store.queue_length("policy-work") == 0 and len(pending()) == 26), host.log()[-3000:]
    time.sleep(2.1)
    status, _, _ = host.request("POST", "/admin/functions/remediation_watch", {"input": ""})
    assert status == 202
    # THEN the fake ARM recorded exactly one remediation PUT for the resource group, API 2024-10-01
    assert len(host.arm.puts) == 1, host.arm.puts
    put = host.arm.puts[0]
    assert put["path"].startswith(f"/subscriptions/{SUB}/resourceGroups/rg-e2e/providers/Microsoft.PolicyInsights/")
    assert put["query"]["api-version"] == "2024-10-01"
    assert put["body"]["properties"]["resourceDiscoveryMode"] == "ExistingNonCompliant"
    (task,) = host.store.query("remediations", "PartitionKey eq @pk", pk="task")
    # a burst that straddles two windows leaves the later window pending until the running task ends
    assert all(int(p["Window"]) > int(task["Window"]) for p in pending())
    # AND the bad events were counted by reason
    counters = {r["RowKey"]: r["Count"] for r in host.store.query("policystate", "PartitionKey eq @pk", pk="counter")}
    assert counters.get("rejected-unknown-event-type", 0) >= 1 and counters.get("rejected-other-topic", 0) >= 1
    # AND a second watch creates nothing new (the task is running)
    host.request("POST", "/admin/functions/remediation_watch", {"input": ""})
    assert len(host.arm.puts) == 1

    # WHEN a work item fails on every attempt (ARM refuses the policy states query)
    host.arm.broken = True
    doomed = copy.deepcopy(burst(1, 1)[0])
    doomed["id"] = "e2e-doomed"
    doomed["data"]["policyAssignmentId"] = doomed["data"]["policyAssignmentId"].replace("storage-", "doomed-")
    assert host.request("POST", WEBHOOK, [doomed], headers={"aeg-event-type": "Notification"})[0] == 200
    # THEN after maxDequeueCount attempts it lands in policy-work-poison, counted (and alerted)
    assert wait_for(lambda: host.store.queue_length("policy-work-poison") >= 1), host.log()[-3000:]
    counters = {r["RowKey"]: r["Count"] for r in host.store.query("policystate", "PartitionKey eq @pk", pk="counter")}
    assert counters.get("poison-work-items") == 1

    def poison_alert_delivered():
        return any("policy-work-poison" in f.read_text() for f in host.outbox.rglob("*.json"))

    assert wait_for(poison_alert_delivered), "the poison alert reached no channel (outbox)"
