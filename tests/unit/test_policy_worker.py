"""The worker on an in-memory store and a fake ARM: dedupe, remediate vs escalate, resolve, bad items."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.errors import StorageError, TransientUpstreamError
from shared.policy.remediation import run_plan, set_kill_switch
from shared.policy.worker import (
    MAX_DEQUEUE_COUNT,
    WORK_QUEUE,
    PolicyWorker,
    accept_event,
    pending_rows,
    read_counters,
)
from shared.settings import load_settings
from tests.conftest import load_fixture
from tests.unit.policy_memory import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
ALERTS_QUEUE = "alerts"
RECEIVED = datetime(2026, 11, 20, 14, 3, 30, tzinfo=UTC)


class FakeArm:
    def __init__(self, effect="deployIfNotExists", tags=None):
        self.effect = effect
        self.tags = tags if tags is not None else {"Owner": "payments-squad"}
        self.effect_calls = 0
        self.puts = []
        self.fail_effect = False

    def policy_effect(self, resource_id, assignment_id, reference_id=""):
        self.effect_calls += 1
        if self.fail_effect:
            raise TransientUpstreamError("ARM down")
        return self.effect

    def resource_tags(self, resource_id):
        return self.tags

    def put_remediation(self, scope, name, assignment_id, reference_id, **knobs):
        self.puts.append({"scope": scope, "name": name, "assignment": assignment_id, "ref": reference_id, **knobs})
        return {"properties": {"provisioningState": "Accepted"}}


def settings(tmp_path, **extra):
    env = {"REMEDIATION_WINDOW_SECONDS": "60", **extra}
    return load_settings(env, local_settings=tmp_path / "none.json")


def alerts(store):
    return [m["alert"] for m in store.sent(ALERTS_QUEUE)]


def work_item(name, **data_changes):
    raw = load_fixture(f"policy/{name}")[0]
    raw["data"].update(data_changes)
    store = MemoryStore()
    assert accept_event(store, raw, received_at=RECEIVED).status == "queued"
    return json.dumps(store.sent(WORK_QUEUE)[0])


def test_host_json_max_dequeue_count_matches_the_poison_alert_threshold():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == MAX_DEQUEUE_COUNT


def test_bad_events_are_acknowledged_and_counted_by_reason():
    store = MemoryStore()
    for case in load_fixture("policy/bad-events.json"):
        assert accept_event(store, case["event"], received_at=RECEIVED).status == "rejected"
    counters = read_counters(store)
    assert counters["rejected-missing-fields"] == 4
    assert counters["rejected-unknown-event-type"] == 2
    assert counters["rejected-other-topic"] == 2
    assert not store.sent(WORK_QUEUE)


def test_remediable_violation_becomes_pending_once_and_duplicates_are_dropped(tmp_path):
    store, arm = MemoryStore(), FakeArm()
    worker = PolicyWorker(store, settings(tmp_path), arm)
    item = work_item("eventgrid-subscription-single-policy.json")
    assert worker.process(item).status == "pending-remediation"
    assert worker.process(item).status == "duplicate"
    older = work_item("eventgrid-subscription-single-policy.json", timestamp="2026-11-20T13:00:00Z")
    assert worker.process(older).status == "stale"
    assert len(pending_rows(store)) == 1
    assert arm.effect_calls == 1 and not store.sent(ALERTS_QUEUE)


def test_audit_violation_alerts_the_owner_once_and_compliance_resolves_it(tmp_path):
    store, arm = MemoryStore(), FakeArm(effect="audit")
    worker = PolicyWorker(store, settings(tmp_path, POLICY_INCIDENT_ASSIGNMENTS="*/storage-*"), arm)
    assert worker.process(work_item("eventgrid-subscription-single-policy.json")).status == "alerted"
    newer = work_item("eventgrid-subscription-single-policy.json", timestamp="2026-11-20T14:30:00Z")
    assert worker.process(newer).status == "already-alerted"  # still NonCompliant: no second alert/incident
    assert worker.process(work_item("eventgrid-compliant.json")).status == "resolved"
    opened, resolved = alerts(store)
    assert opened["kind"] == "policy_violation" and opened["action"] == "open"
    assert opened["owner"] == "payments-squad" and opened["incident"] is True
    assert resolved["action"] == "resolve" and resolved["dedupe_key"] == opened["dedupe_key"]


def test_no_incident_for_assignments_not_marked_as_requiring_one(tmp_path):
    store = MemoryStore()
    worker = PolicyWorker(store, settings(tmp_path), FakeArm(effect="deny", tags={}))
    worker.process(work_item("eventgrid-subscription-single-policy.json"))
    (alert,) = alerts(store)
    assert alert["incident"] is False and alert["owner"] == ""


def test_failure_rolls_back_dedupe_so_the_retry_is_processed_and_last_attempt_alerts(tmp_path):
    store, arm = MemoryStore(), FakeArm()
    arm.fail_effect = True
    worker = PolicyWorker(store, settings(tmp_path), arm)
    item = work_item("eventgrid-subscription-single-policy.json")
    with pytest.raises(TransientUpstreamError):
        worker.process(item, dequeue_count=1)
    assert not store.sent(ALERTS_QUEUE)
    with pytest.raises(TransientUpstreamError):
        worker.process(item, dequeue_count=MAX_DEQUEUE_COUNT, message_id="msg-1")
    (poison,) = alerts(store)
    assert poison["kind"] == "remediation_result" and "policy-work-poison" in poison["title"]
    arm.fail_effect = False
    assert worker.process(item).status == "pending-remediation"


def test_malformed_work_item_is_dropped_and_counted(tmp_path):
    store = MemoryStore()
    worker = PolicyWorker(store, settings(tmp_path), FakeArm())
    assert worker.process(b"{not json").status == "rejected"
    assert read_counters(store)["rejected-malformed-work-item"] == 1


def test_plan_of_closed_window_creates_one_task_in_enforce_and_none_in_dry_run(tmp_path):
    for mode, expected_puts in (("enforce", 1), ("dry-run", 0)):
        store, arm = MemoryStore(), FakeArm()
        s = settings(tmp_path, REMEDIATION_MODE=mode, REMEDIATION_RESOURCE_COUNT="42")
        worker = PolicyWorker(store, s, arm)
        worker.process(work_item("eventgrid-subscription-single-policy.json"))
        # the window is still open: nothing yet
        assert not run_plan(store, s, arm, now=RECEIVED).plan.tasks
        run = run_plan(store, s, arm, now=datetime(2026, 11, 20, 15, tzinfo=UTC))
        assert len(arm.puts) == expected_puts
        assert len(run.plan.tasks) == 1
        assert not pending_rows(store)
        if mode == "enforce":
            assert arm.puts[0]["resource_count"] == 42 and arm.puts[0]["ref"] == ""


def test_kill_switch_in_the_table_stops_the_next_plan_without_redeploy(tmp_path):
    store, arm = MemoryStore(), FakeArm()
    s = settings(tmp_path, REMEDIATION_MODE="enforce")
    worker = PolicyWorker(store, s, arm)
    item = work_item("eventgrid-subscription-single-policy.json")
    worker.process(item)
    assignment = json.loads(item)["event"]["assignment_id"]
    set_kill_switch(store, assignment.upper(), reason="bad template", by="test")
    run = run_plan(store, s, arm, now=datetime(2026, 11, 21, tzinfo=UTC))
    assert not arm.puts and run.plan.tasks[0].decision == "kill-switch"


class LostAnswers(MemoryStore):
    """A store where the named writes commit and then fail as a read timeout would (once each)."""

    def __init__(self, *lose: tuple[str, str]) -> None:
        super().__init__()
        self.lose = set(lose)  # (operation, table or partition prefix)

    def _lost(self, operation: str, table: str, partition: str) -> bool:
        hit = next((x for x in self.lose if x[0] == operation and (x[1] == table or partition.startswith(x[1]))), None)
        if hit is not None:
            self.lose.discard(hit)
        return hit is not None

    def insert(self, table, partition, row, fields):
        inserted = super().insert(table, partition, row, fields)
        if self._lost("insert", table, partition):
            raise StorageError("read timed out (the write was committed)")
        return inserted

    def delete(self, table, partition, row):
        if self._lost("delete", table, partition):
            raise StorageError("read timed out")
        super().delete(table, partition, row)


def test_a_ledger_write_whose_answer_was_lost_does_not_turn_the_retry_into_a_duplicate(tmp_path):
    store = LostAnswers(("insert", "policystate"))
    item = work_item("eventgrid-subscription-single-policy.json")
    # GIVEN the ledger insert commits but its answer is lost: the attempt fails
    with pytest.raises(StorageError):
        PolicyWorker(store, settings(tmp_path), FakeArm()).process(item, message_id="msg-1")
    assert not pending_rows(store)
    # WHEN the host redelivers the same message (to another instance: no process memory)
    retry = PolicyWorker(store, settings(tmp_path), FakeArm()).process(item, dequeue_count=2, message_id="msg-1")
    # THEN its own earlier write is recognised and the violation is acted on
    assert retry.status == "pending-remediation" and len(pending_rows(store)) == 1
    # AND the same event delivered again as another message is still a duplicate
    again = PolicyWorker(store, settings(tmp_path), FakeArm()).process(item, message_id="msg-2")
    assert again.status == "duplicate"


def test_an_open_alert_write_whose_answer_was_lost_still_sends_the_alert_once(tmp_path):
    store = LostAnswers(("insert", "open-alert"))
    item = work_item("eventgrid-subscription-single-policy.json")
    worker = PolicyWorker(store, settings(tmp_path), FakeArm(effect="audit"))
    # GIVEN the open-alert row commits but its answer is lost: nothing was queued
    with pytest.raises(StorageError):
        worker.process(item, message_id="msg-1")
    assert not alerts(store)
    # WHEN the same message is retried THEN the alert goes out, once
    assert worker.process(item, dequeue_count=2, message_id="msg-1").status == "alerted"
    newer = work_item("eventgrid-subscription-single-policy.json", timestamp="2026-11-20T14:30:00Z")
    assert worker.process(newer, message_id="msg-3").status == "already-alerted"
    assert len(alerts(store)) == 1


def test_a_failed_rollback_does_not_drop_the_retry_of_the_same_message(tmp_path):
    store = LostAnswers(("delete", "policystate"))
    arm = FakeArm()
    arm.fail_effect = True
    item = work_item("eventgrid-subscription-single-policy.json")
    # GIVEN the effect lookup fails and the ledger row cannot be rolled back
    with pytest.raises(TransientUpstreamError):
        PolicyWorker(store, settings(tmp_path), arm).process(item, message_id="msg-1")
    # WHEN the same message is retried once ARM answers THEN it is acted on, not dropped
    arm.fail_effect = False
    assert (
        PolicyWorker(store, settings(tmp_path), arm).process(item, message_id="msg-1").status == "pending-remediation"
    )
