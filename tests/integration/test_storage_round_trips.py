"""On Azurite: storage clients built once, entity-group transactions, the storm counter in one round trip,
the ledger spread over partitions and admitted per batch, the Teams budget shared by instances, and one
composition root (approvals and remediation share one Arm)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from shared.adapters.storage import StateStore
from shared.adapters.teams import SharedRateBudget
from shared.alerts.model import Alert
from shared.alerts.storm import DELIVER, DIGEST, StormGate
from shared.approvals.arm_client import arm_for
from shared.errors import BatchRejected, TransientUpstreamError
from shared.policy.dedupe import DUPLICATE, NEW, STALE, TABLE, PolicyStateLedger, state_partition, state_row_key
from shared.policy.events import PolicyStateEvent

NOW = datetime(2026, 11, 29, 12, 3, tzinfo=UTC)


@pytest.fixture
def store(env):
    return StateStore.from_connection_string(env["AzureWebJobsStorage"])


def test_table_and_queue_clients_are_built_once_per_name(store):
    assert store._table("roundtrips") is store._table("roundtrips")
    assert store._queue("roundtrips-q") is store._queue("roundtrips-q")


def test_a_transaction_is_all_or_nothing_and_names_the_operation_that_failed(store):
    pk = uuid.uuid4().hex
    store.insert("roundtrips", pk, "b", {"v": 0})
    with pytest.raises(BatchRejected) as rejected:
        store.transact(
            "roundtrips",
            [("create", {"PartitionKey": pk, "RowKey": r}) for r in ("a", "b", "c")],
        )
    assert rejected.value.index == 1
    assert [r["RowKey"] for r in store.query("roundtrips", "PartitionKey eq @pk", pk=pk)] == ["b"]
    answers = store.transact("roundtrips", [("create", {"PartitionKey": pk, "RowKey": "d"})])
    assert answers[0]["etag"]


def _alert(i: int) -> Alert:
    return Alert(
        kind="policy_violation",
        severity="warning",
        title=f"alert {i}",
        resource_id=f"/x/{i}",
        owner="squad-storm",
        facts=(),
        links=(),
        dedupe_key=f"storm-{i}",
    )


def test_two_instances_count_one_squads_storm_together_and_a_replay_gets_the_same_answer(store):
    # GIVEN two instances' gates (each with its own cached counter) and a threshold of 10
    squad = f"squad-{uuid.uuid4().hex[:6]}"
    gates = [StormGate(store, 10, 10), StormGate(store, 10, 10)]
    # WHEN 12 distinct alerts for one squad arrive alternately at both
    decisions = [gates[i % 2].admit(_alert(i), squad, f"id-{i}", NOW) for i in range(12)]
    # THEN exactly 10 go out and 2 wait for the digest, whatever instance counted them
    assert [d.status for d in decisions].count(DELIVER) == 10
    assert [d.status for d in decisions].count(DIGEST) == 2
    assert sorted(d.seq for d in decisions) == list(range(1, 13))
    assert any(d.schedule_digest for d in decisions)
    # AND a replay of a held alert on the other instance is held again, not counted
    replay = gates[1].admit(_alert(11), squad, "id-11", NOW)
    assert replay.status == DIGEST and replay.seq == decisions[11].seq
    assert len(gates[0].held_back(decisions[0].window)) == 2


def _event(resource: str, timestamp: str) -> PolicyStateEvent:
    return PolicyStateEvent(
        event_id=uuid.uuid4().hex,
        event_type="Microsoft.PolicyInsights.PolicyStateChanged",
        topic="/subscriptions/s",
        resource_id=resource,
        subscription_id="s",
        timestamp=timestamp,
        assignment_id="/subscriptions/s/providers/Microsoft.Authorization/policyAssignments/a",
        definition_id="/providers/Microsoft.Authorization/policyDefinitions/d",
        definition_reference_id="",
        compliance_state="NonCompliant",
    )


def test_the_ledger_admits_a_batch_once_per_key_spread_over_partitions(store):
    # GIVEN a batch of 60 deliveries: 40 resources, 20 of them delivered twice (once older)
    run = uuid.uuid4().hex[:6]
    newer = [_event(f"/r/{run}/{i}", "2026-11-29T12:00:01.0000000Z") for i in range(40)]
    older = [_event(f"/r/{run}/{i}", "2026-11-29T12:00:00.0000000Z") for i in range(20)]
    ledger = PolicyStateLedger(store)
    # WHEN it is admitted at once
    admissions = ledger.admit_many(newer + older)
    # THEN each key is new once, the older copies are stale; rows sit in the key's hash partition
    assert [a.outcome for a in admissions[:40]] == [NEW] * 40
    assert [a.outcome for a in admissions[40:]] == [STALE] * 20
    partitions = {state_partition(state_row_key(e)) for e in newer}
    assert len(partitions) > 8 and all(p.startswith("state-") for p in partitions)
    row = state_row_key(newer[0])
    assert store.get(TABLE, state_partition(row), row)["Timestamp_"] == newer[0].timestamp
    # AND another process (no memory) sees the redeliveries as duplicates
    again = PolicyStateLedger(store).admit_many(newer[:5])
    assert [a.outcome for a in again] == [DUPLICATE] * 5


def test_the_teams_budget_holds_across_instances(store):
    # GIVEN two instances' budgets on the same webhook, at the same instant
    url = f"https://prod-01.westeurope.logic.azure.com/workflows/{uuid.uuid4().hex}"
    clock = lambda: 1_800_000_000.25  # noqa: E731
    budgets = [SharedRateBudget(store, 4, clock), SharedRateBudget(store, 4, clock)]
    # WHEN six posts ask for a slot within the same second
    waits = [budgets[i % 2].take(url) for i in range(6)]
    # THEN four get one and the rest wait for the next second
    assert waits[:4] == [0.0] * 4
    assert all(w == pytest.approx(0.75) for w in waits[4:])
    # AND in the next second each instance posts twice again without a storage operation
    next_second = lambda: 1_800_000_001.1  # noqa: E731
    calls: list[str] = []

    class Counted:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(store, name)

    for budget in budgets:
        budget.clock, budget.store = next_second, Counted()
    assert [budgets[i % 2].take(url) for i in range(4)] == [0.0] * 4
    assert calls == []
    # AND a third instance waits while every share is leased, and gets one once a lease has ended
    third = SharedRateBudget(store, 4, next_second)
    assert third.take(url) > 0
    third.clock = lambda: 1_800_000_000.25 + 30 + 0.1  # noqa: E731
    assert third.take(url) == 0.0


def test_approvals_and_remediation_share_the_process_arm_and_its_write_budget(runtime):
    assert arm_for(runtime) is runtime.arm
    assert runtime.policy_worker.arm is runtime.arm
    assert runtime.alert_delivery is runtime.alert_delivery
    assert runtime.alert_delivery.teams.session is runtime.http


def test_a_teams_post_takes_a_slot_of_the_shared_budget(store, httpserver):
    from shared.adapters.teams import TeamsWebhook

    # GIVEN two instances' Teams clients sharing the budget in storage, at the same instant
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=202)
    url = httpserver.url_for("/hook")
    clock = lambda: 1_900_000_000.5  # noqa: E731
    sleeps: list[float] = []
    clients = [
        TeamsWebhook((), budget=SharedRateBudget(store, 4, clock), sleep=sleeps.append, max_wait=0.4) for _ in range(2)
    ]
    # WHEN five posts go out within that second
    for i in range(4):
        assert clients[i % 2].post(url, {"type": "message"}) == 202
    # THEN the fifth is told to retry after the second is over (0.5 s > the 0.4 s it may sleep)
    with pytest.raises(TransientUpstreamError):
        clients[0].post(url, {"type": "message"})
    assert len(httpserver.log) == 4


def test_pending_violations_spread_over_partitions_and_rows_from_before_the_spread_are_still_listed(store):
    from shared.policy.worker import PENDING_PARTITION, REMEDIATIONS_TABLE, pending_rows, spread_partition

    run = uuid.uuid4().hex
    rows = [hashlib.sha256(f"{run}-{i}".encode()).hexdigest() for i in range(40)]
    for row in rows:
        store.upsert(REMEDIATIONS_TABLE, spread_partition(PENDING_PARTITION, row), row, {"Run": run})
    store.upsert(REMEDIATIONS_TABLE, PENDING_PARTITION, f"{run}-legacy", {"Run": run})  # written before the spread
    mine = [r for r in pending_rows(store) if r.get("Run") == run]
    assert len(mine) == 41
    assert len({r["PartitionKey"] for r in mine}) > 8
