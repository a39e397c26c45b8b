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


def test_rows_written_before_the_partition_spread_are_moved_then_resolved_once(env, tmp_path, httpserver, fake_arm):
    """An upgrade over a version that kept the ledger in `state` and escalations in `open-alert`: the
    first batch of a new worker moves them, so the compliance event resolves the old alert and a
    redelivered violation does not raise a second one."""
    import hashlib

    from shared.policy.dedupe import TABLE as STATE_TABLE
    from shared.policy.dedupe import state_partition, state_row_key
    from shared.policy.effects import violation_key
    from shared.policy.events import parse_policy_event
    from shared.policy.worker import REMEDIATIONS_TABLE, move_unspread_rows, spread_partition

    settings = load_settings(
        {**env, "ARM_ENDPOINT": httpserver.url_for("").rstrip("/")}, local_settings=tmp_path / "none.json"
    )
    store = StateStore.from_settings(settings)
    alerts(store)  # what earlier tests left on the queue
    raw = events(AUDIT, 1, copies=1, seed=4)[0]
    raw["subject"] = raw["subject"].replace("st0", "stupgrade")
    violation = json.dumps({"event": _parsed(raw), "received_at": datetime.now(UTC).isoformat()})
    before = PolicyWorker(store, settings, Arm.from_settings(settings, sleep=lambda s: None))
    assert before.process(violation).status == "alerted"
    assert len(alerts(store)) == 1
    # as the old version wrote them: the same rows in the unspread partitions
    event = parse_policy_event(raw)
    ledger_row = state_row_key(event)
    alert_row = hashlib.sha256(
        violation_key(event.assignment_id, event.definition_reference_id, event.resource_id).encode()
    ).hexdigest()
    for old, new, row in (
        ("state", state_partition(ledger_row), ledger_row),
        ("open-alert", spread_partition("open-alert", alert_row), alert_row),
    ):
        entity = store.get(STATE_TABLE, new, row)
        assert entity is not None
        store.insert(
            STATE_TABLE,
            old,
            row,
            {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey") and not k.startswith("_")},
        )
        store.delete(STATE_TABLE, new, row)
    store.insert(REMEDIATIONS_TABLE, "pending", "0" * 64, {"ResourceId": "/subscriptions/x/old", "Window": 1})

    after = PolicyWorker(store, settings, Arm.from_settings(settings, sleep=lambda s: None))
    assert after.process(violation).status == "duplicate"  # the moved ledger row still knows it
    assert alerts(store) == []  # the redelivered violation raised nothing
    for table, old in ((STATE_TABLE, "state"), (STATE_TABLE, "open-alert"), (REMEDIATIONS_TABLE, "pending")):
        assert list(store.query(table, "PartitionKey eq @pk", pk=old)) == []
    assert store.get(REMEDIATIONS_TABLE, "pending-00", "0" * 64) is not None
    store.delete(REMEDIATIONS_TABLE, "pending-00", "0" * 64)  # not a real violation: no plan may see it
    raw["data"]["complianceState"] = "Compliant"
    raw["data"]["timestamp"] = "2026-11-20T18:00:00Z"
    compliant = json.dumps({"event": _parsed(raw), "received_at": datetime.now(UTC).isoformat()})
    assert after.process(compliant).status == "resolved"
    assert [a["action"] for a in alerts(store)] == ["resolve"]
    assert move_unspread_rows(store) == {}  # nothing left: three queries
