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
from shared.errors import BatchRejected, StorageError, TransientUpstreamError
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


def test_a_transaction_runs_on_the_calling_thread_and_answers_each_operation(store, monkeypatch):
    import threading

    # GIVEN a row to update under its etag, and a count of the threads started meanwhile
    pk = uuid.uuid4().hex
    etag = store.insert_etag("roundtrips", pk, "a", {"v": 1})
    started: list[str] = []
    start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    # WHEN a transaction of several kinds of operation runs, then one with a stale etag
    answers = store.transact(
        "roundtrips",
        [
            ("update", {"PartitionKey": pk, "RowKey": "a", "v": 2}, {"mode": "replace", "etag": etag}),
            ("create", {"PartitionKey": pk, "RowKey": "b", "s": "it's"}),
            ("upsert", {"PartitionKey": pk, "RowKey": "c", "v": 3}),
        ],
    )
    with pytest.raises(BatchRejected) as rejected:
        store.transact(
            "roundtrips",
            [
                ("create", {"PartitionKey": pk, "RowKey": "d"}),
                ("update", {"PartitionKey": pk, "RowKey": "a", "v": 9}, {"mode": "replace", "etag": etag}),
            ],
        )
    # THEN each operation has its new etag, the stale one is named, nothing of it was written,
    # and no thread was started for either (azure-core would start four per transaction)
    assert [bool(a.get("etag")) for a in answers] == [True, True, True]
    assert store.get("roundtrips", pk, "a")["_etag"] == answers[0]["etag"]
    assert rejected.value.index == 1
    rows = {r["RowKey"]: r for r in store.query("roundtrips", "PartitionKey eq @pk", pk=pk)}
    assert sorted(rows) == ["a", "b", "c"] and rows["a"]["v"] == 2 and rows["b"]["s"] == "it's"
    assert started == []


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


class _AnswerLost:
    """The real store, but the first transaction commits and then fails as a read timeout would."""

    def __init__(self, store):
        self._store, self.lost = store, False

    def __getattr__(self, name):
        return getattr(self._store, name)

    def transact(self, table, operations):
        result = self._store.transact(table, operations)
        if not self.lost:
            self.lost = True
            raise StorageError("read timed out (committed)")
        return result


def _batch_with_lost_answer(store, count: int) -> tuple[list[PolicyStateEvent], list[str]]:
    """`count` events admitted as messages msg-<run>-<i>, whose first transaction commits and then
    answers with a timeout (the other partitions' transactions are not reached)."""
    run = uuid.uuid4().hex[:6]
    events = [_event(f"/r/{run}/{i}", "2026-11-29T12:00:01.0000000Z") for i in range(count)]
    messages = [f"msg-{run}-{i}" for i in range(count)]
    with pytest.raises(StorageError):
        PolicyStateLedger(_AnswerLost(store)).admit_many(events, messages)
    return events, messages


def test_a_batch_whose_answer_was_lost_is_admitted_again_for_the_same_messages_only(store):
    # GIVEN a batch of 40 events (one partition's worth lands in one transaction) whose first
    # transaction commits but answers with a timeout
    events, messages = _batch_with_lost_answer(store, 40)
    # WHEN the same messages come back (another instance: no process memory)
    retried = PolicyStateLedger(store).admit_many(events, messages)
    # THEN every event is admitted: rows its own messages wrote are not mistaken for duplicates
    assert [a.outcome for a in retried] == [NEW] * 40
    # AND the same events as other messages (a redelivery by Event Grid) are duplicates
    again = PolicyStateLedger(store).admit_many(events[:5], [f"other-{i}" for i in range(5)])
    assert [a.outcome for a in again] == [DUPLICATE] * 5


def test_a_lost_batch_retried_beside_a_redelivered_copy_admits_its_own_message_once(store):
    # GIVEN events whose batch transaction committed with its answer lost
    events, own = _batch_with_lost_answer(store, 20)
    written = [store.get(TABLE, state_partition(state_row_key(e)), state_row_key(e)) is not None for e in events]
    assert any(written)  # the lost transaction's rows (the other partitions were not reached)
    # WHEN they come back in one batch, each behind Event Grid's redelivered copy of it (another
    # message), so the copy is the one the batch tries first
    copies = [f"copy-of-{m}" for m in own]
    batch = [e for pair in zip(events, events, strict=True) for e in pair]
    ids = [m for pair in zip(copies, own, strict=True) for m in pair]
    admitted = [a.outcome for a in PolicyStateLedger(store).admit_many(batch, ids)]
    # THEN each event is admitted exactly once: for the message whose lost attempt wrote its row,
    # else for the first copy
    expected = [[DUPLICATE, NEW] if w else [NEW, DUPLICATE] for w in written]
    assert admitted == [outcome for pair in expected for outcome in pair]


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


def test_a_one_operation_transaction_answers_as_a_batch_would(store):
    # GIVEN a row, and transactions of one operation each (sent as the plain operation)
    pk = uuid.uuid4().hex
    [created] = store.transact("roundtrips", [("create", {"PartitionKey": pk, "RowKey": "a", "v": 1})])
    # THEN a create of an existing key and an update with a stale etag are refused at index 0
    with pytest.raises(BatchRejected) as exists:
        store.transact("roundtrips", [("create", {"PartitionKey": pk, "RowKey": "a", "v": 2})])
    assert exists.value.index == 0
    row = {"PartitionKey": pk, "RowKey": "a", "v": 3}
    [updated] = store.transact("roundtrips", [("update", row, {"mode": "replace", "etag": created["etag"]})])
    with pytest.raises(BatchRejected) as stale:
        store.transact("roundtrips", [("update", {**row, "v": 4}, {"mode": "replace", "etag": created["etag"]})])
    assert stale.value.index == 0
    # AND the etag answered is the row's etag (a caller writes again without reading)
    assert updated["etag"] == store.get("roundtrips", pk, "a")["_etag"] and store.get("roundtrips", pk, "a")["v"] == 3


class _Counted:
    """A StateStore that records the name of every table operation."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def __getattr__(self, name):
        if name in ("insert", "insert_etag", "get", "upsert", "replace_if_unchanged", "transact", "delete", "query"):
            self.calls.append(name)
        return getattr(self.store, name)


def test_a_squads_first_alert_leases_its_storm_permits_and_the_webhooks_rate_share_in_one_write(store):
    # GIVEN an instance's storm gate and Teams budget on one store, and a webhook nobody posted to yet
    counted = _Counted(store)
    url = f"https://prod-01.westeurope.logic.azure.com/workflows/{uuid.uuid4().hex}"
    clock = lambda: NOW.timestamp()  # noqa: E731
    budget, gate = SharedRateBudget(counted, 4, clock), StormGate(counted, 10, 10)
    webhook = "webhook-" + hashlib.sha256(url.encode()).hexdigest()[:8]
    squad = f"squad-{uuid.uuid4().hex[:6]}"
    # WHEN its first alert is admitted with the share lease, then posts
    decision = gate.admit(_alert(1), squad, "id-1", NOW, webhook=webhook, share=budget.share_lease(url))
    wait = budget.take(url)
    # THEN one transaction wrote both (the counter with its block of permits, and the share), and the
    # post took its slot without a further storage operation
    assert decision.status == DELIVER and wait == 0.0
    assert counted.calls == ["transact"]
    rows = {r["RowKey"]: r for r in store.query("teamsbudget", "PartitionKey eq @pk", pk=webhook)}
    assert sorted(k.split("-")[0] for k in rows) == ["share", "storm"]
    # AND the next alerts of the squad in the window cost no storm write and no lease while the share lasts
    counted.calls.clear()
    for i in range(2, 5):
        assert gate.admit(_alert(i), squad, f"id-{i}", NOW, webhook=webhook, share=budget.share_lease(url)).seq == i
    assert counted.calls == []


def test_a_share_another_instance_holds_leaves_the_counter_write_alone_and_the_budget_holds(store):
    # GIVEN four instances holding the four shares of a webhook
    url = f"https://prod-01.westeurope.logic.azure.com/workflows/{uuid.uuid4().hex}"
    clock = lambda: NOW.timestamp() + 0.5  # noqa: E731
    others = [SharedRateBudget(store, 4, clock) for _ in range(4)]
    assert [b.take(url) for b in others] == [0.0] * 4
    webhook = "webhook-" + hashlib.sha256(url.encode()).hexdigest()[:8]
    # WHEN a fifth instance, which knows nothing of them, admits an alert with a share lease
    budget, gate = SharedRateBudget(store, 4, clock), StormGate(store, 10, 10)
    share = budget.share_lease(url)
    assert share is not None and share.op[0] == "create"
    decision = gate.admit(_alert(1), f"squad-{uuid.uuid4().hex[:6]}", "id-1", NOW, webhook=webhook, share=share)
    # THEN the storm decision is taken (the counter written alone) and no share was taken from the others
    assert decision.status == DELIVER and decision.seq == 1
    assert budget.take(url) > 0  # it waits for a share like any instance
    holders = {r["Holder"] for r in store.query("teamsbudget", "PartitionKey eq @pk", pk=webhook) if "Holder" in r}
    assert holders == {b.holder for b in others}


def test_a_digest_message_from_before_the_move_still_lists_its_window(store):
    from shared.alerts.storm import StormWindow

    # GIVEN a window counted in the old layout (table alertstorms, one partition per squad and window)
    squad = f"squad-{uuid.uuid4().hex[:6]}"
    gate = StormGate(store, 1, 10)
    decisions = [gate.admit(_alert(i), squad, f"id-{i}", NOW) for i in range(3)]
    assert [d.status for d in decisions] == [DELIVER, DIGEST, DIGEST]
    # WHEN a digest message without "webhook" names it
    window = StormWindow(squad, decisions[0].window.start, 10)
    # THEN its held-back alerts are listed from there
    assert [a.dedupe_key for a in gate.held_back(window)] == ["storm-1", "storm-2"]
