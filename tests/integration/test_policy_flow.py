"""Worker, plan and watch on Azurite with a fake ARM: the whole decision path, no local host."""

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug import Request, Response

from shared.adapters.arm import Arm
from shared.adapters.storage import StateStore
from shared.policy.remediation import run_plan
from shared.policy.watch import watch_remediations
from shared.policy.worker import WORK_QUEUE, PolicyWorker, accept_event
from shared.settings import load_settings
from tests.conftest import load_fixture

SUB = "3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"
FIX = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyAssignments/storage-secure-transfer"
AUDIT = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyAssignments/storage-audit"


class FakeArm:
    """Documented ARM behaviour, kept in memory: effects per assignment, tags, remediation state machine."""

    def __init__(self, states=("Accepted", "Running", "Failed")):
        self.puts: list[dict] = []
        self.states = list(states)
        self.gets = 0

    def __call__(self, request: Request) -> Response:
        path = request.path
        if path.endswith("/queryResults"):
            action = "audit" if "storage-audit" in request.args.get("$filter", "") else "deployifnotexists"
            return _json({"value": [{"policyDefinitionAction": action}]})
        if "/remediations/" in path and path.endswith("/listDeployments"):
            return _json(
                {
                    "value": [
                        {
                            "remediatedResourceId": "/subscriptions/x/st1",
                            "status": "Failed",
                            "error": {"code": "InvalidTemplate", "message": "diagnostic setting name too long"},
                        },
                        {"remediatedResourceId": "/subscriptions/x/st2", "status": "Succeeded"},
                    ]
                }
            )
        if "/remediations/" in path and request.method == "PUT":
            self.puts.append({"path": path, "body": request.get_json()})
            return _json({"properties": {"provisioningState": "Accepted"}}, 201)
        if "/remediations/" in path and request.method == "GET":
            state = self.states[min(self.gets, len(self.states) - 1)]
            self.gets += 1
            return _json(
                {
                    "properties": {
                        "provisioningState": state,
                        "deploymentStatus": {"totalDeployments": 2, "successfulDeployments": 1, "failedDeployments": 1},
                    }
                }
            )
        if request.method == "GET":
            return _json({"id": path, "tags": {"squad": "payments"}})
        return _json({"error": {"code": "NotFound"}}, 404)


def _json(doc, status=200):
    return Response(json.dumps(doc), status, content_type="application/json")


@pytest.fixture
def fake_arm(httpserver):
    arm = FakeArm()
    httpserver.expect_request(__import__("re").compile(".*")).respond_with_handler(arm)
    return arm


def events(assignment, n_resources, copies=2, seed=1):
    base = load_fixture("policy/eventgrid-subscription-single-policy.json")[0]
    out = []
    for i in range(n_resources):
        e = json.loads(json.dumps(base))
        e["id"] = f"{assignment[-5:]}-{i}"
        e["subject"] = (
            f"/subscriptions/{SUB}/resourceGroups/rg-{i % 3}/providers/Microsoft.Storage/storageAccounts/st{i}"
        )
        e["data"]["policyAssignmentId"] = assignment
        out.extend([e] * copies)
    random.Random(seed).shuffle(out)
    return out


def drain(store, worker):
    statuses = []
    while True:
        batch = store.receive(WORK_QUEUE, max_messages=32)
        if not batch:
            return statuses
        for msg in batch:
            statuses.append(worker.process(msg.body, dequeue_count=msg.dequeue_count).status)
            store.ack(WORK_QUEUE, msg)


def alerts(store):
    out = []
    while True:
        batch = store.receive("alerts", max_messages=32)
        if not batch:
            return out
        for m in batch:
            out.append(json.loads(m.body)["alert"])
            store.ack("alerts", m)


def test_duplicated_shuffled_burst_creates_one_task_and_one_alert_per_violation_then_reports_failure(
    env, tmp_path, httpserver, fake_arm
):
    # GIVEN a fresh storage namespace (queues and tables shared by the session are emptied first)
    settings = load_settings(
        {
            **env,
            "ARM_ENDPOINT": httpserver.url_for("").rstrip("/"),
            "REMEDIATION_MODE": "enforce",
            "REMEDIATION_WINDOW_SECONDS": "60",
            "POLICY_INCIDENT_ASSIGNMENTS": "*/storage-audit",
        },
        local_settings=tmp_path / "none.json",
    )
    store = StateStore.from_settings(settings)
    for q in (WORK_QUEUE, "alerts"):
        while batch := store.receive(q, max_messages=32):
            for m in batch:
                store.ack(q, m)
    for table in ("policystate", "remediations"):
        for row in list(store.query(table)):
            store.delete(table, row["PartitionKey"], row["RowKey"])
    arm = Arm.from_settings(settings, sleep=lambda s: None)
    worker = PolicyWorker(store, settings, arm)
    received = datetime.now(UTC) - timedelta(minutes=5)
    # WHEN 30 remediable violations and 4 audit ones arrive twice each, shuffled
    for raw in events(FIX, 30) + events(AUDIT, 4, seed=2):
        assert accept_event(store, raw, received_at=received).status == "queued"
    statuses = drain(store, worker)
    # THEN each violation is acted on once, the redeliveries are dropped
    assert statuses.count("duplicate") == 34
    assert statuses.count("pending-remediation") == 30 and statuses.count("alerted") == 4
    opened = alerts(store)
    assert len(opened) == 4 and len({a["dedupe_key"] for a in opened}) == 4
    assert all(a["incident"] is True and a["owner"] == "payments" for a in opened)
    # WHEN the watch plans the closed window
    run = run_plan(store, settings, arm)
    # THEN one task at the subscription (resources span 3 resource groups), PUT once
    assert len(fake_arm.puts) == 1 and list(run.created) == [run.plan.tasks[0].name]
    assert fake_arm.puts[0]["path"].startswith(
        f"/subscriptions/{SUB}/providers/Microsoft.PolicyInsights/remediations/vf-"
    )
    assert run_plan(store, settings, arm).plan.tasks == ()  # nothing left pending: no second task
    # WHEN the task runs and then fails
    assert list(watch_remediations(store, arm).values()) == ["Accepted"]
    assert list(watch_remediations(store, arm).values()) == ["Running"]
    assert list(watch_remediations(store, arm).values()) == ["Failed"]
    assert watch_remediations(store, arm) == {}  # final: no longer watched
    # THEN one incident with the failed deployment's error
    (result,) = alerts(store)
    assert result["kind"] == "remediation_result" and result["incident"] is True and result["severity"] == "critical"
    assert any("InvalidTemplate" in v for _, v in result["facts"])


def test_compliant_event_resolves_the_open_alert_on_azurite(env, tmp_path, httpserver, fake_arm):
    settings = load_settings(
        {**env, "ARM_ENDPOINT": httpserver.url_for("").rstrip("/")}, local_settings=tmp_path / "none.json"
    )
    store = StateStore.from_settings(settings)
    worker = PolicyWorker(store, settings, Arm.from_settings(settings, sleep=lambda s: None))
    raw = events(AUDIT, 1, copies=1, seed=3)[0]
    raw["subject"] = raw["subject"].replace("st0", "stresolve")
    item = json.dumps({"event": _parsed(raw), "received_at": datetime.now(UTC).isoformat()})
    assert worker.process(item).status == "alerted"
    raw["data"]["complianceState"] = "Compliant"
    raw["data"]["timestamp"] = "2026-11-20T18:00:00Z"
    item = json.dumps({"event": _parsed(raw), "received_at": datetime.now(UTC).isoformat()})
    assert worker.process(item).status == "resolved"


def _parsed(raw):
    from shared.policy.events import parse_policy_event

    return parse_policy_event(raw).as_dict()
