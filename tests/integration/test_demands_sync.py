"""Demand sync against Azurite and fake Azure DevOps / ServiceNow peers that answer as the real ones do."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.azure_devops import AzureDevOpsClient
from shared.demands.boards import AzureBoards
from shared.demands.model import Demand
from shared.demands.reconcile import reconcile
from shared.demands.sync import DEMANDS_SCOPE, POISON, QUEUE, DemandSync, demand_message
from shared.devops.hooks import dispatch, event_from_dict
from shared.idempotency import TABLE as IDEMPOTENCY
from shared.idempotency import Idempotency, idempotency_key
from shared.runtime import Runtime
from shared.settings import load_settings
from tests.conftest import load_fixture
from tests.fixtures.demands.peers import reset_demand_state, start_peers

SYS_ID = "5f3c0a7e1b2d4c6e8f9a0b1c2d3e4f50"


@pytest.fixture
def peers(httpserver):
    return start_peers(httpserver)


@pytest.fixture
def rt(env, peers, tmp_path):
    settings = load_settings({**env, **peers.env()}, local_settings=tmp_path / "absent.json")
    reset_demand_state(env["AzureWebJobsStorage"])
    yield Runtime(settings)
    reset_demand_state(env["AzureWebJobsStorage"])  # delayed retries must not reach a later test


@pytest.fixture
def sync(rt):
    return DemandSync(rt.settings, rt.storage, rng=lambda: 1.0)


def drain(runtime, queue):
    """Every visible message of a queue, parsed, acknowledged."""
    out = []
    while batch := runtime.storage.receive(queue, max_messages=32, visibility_timeout=5):
        for message in batch:
            out.append(json.loads(message.text()))
            runtime.storage.ack(queue, message)
    return out


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def approved(peers, **changes):
    doc = {**load_fixture("demands/demand-approved.json"), **changes}
    peers.servicenow.add_demand(doc["sysId"], doc["number"], doc["title"])
    return doc


def test_an_approved_demand_becomes_one_work_item_and_is_written_back(peers, sync):
    # GIVEN an approved demand in ServiceNow
    doc = approved(peers)
    # WHEN the worker runs its message
    outcome = sync.handle(demand_message(Demand.from_payload(doc)))
    # THEN one Feature exists with the demand's fields, tags and a hyperlink to the record
    assert outcome.status == "done", outcome
    [item] = peers.ado.work_items.values()
    fields = item["fields"]
    assert fields["System.WorkItemType"] == "Feature"
    assert fields["System.Title"] == doc["title"]
    assert fields["System.Tags"] == "SN:DMND0001234; CC:CC-4711"
    assert fields["Microsoft.VSTS.Common.Priority"] == 2
    assert "budget alert" in fields["Microsoft.VSTS.Common.AcceptanceCriteria"]
    assert "Alex Example" in fields["System.Description"]
    assert item["relations"][0]["rel"] == "Hyperlink" and SYS_ID in item["relations"][0]["url"]
    # AND ServiceNow has the id, the URL and a work note
    record = peers.servicenow.records[SYS_ID]
    assert record["u_azure_devops_work_item"] == str(item["id"])
    assert record["u_azure_devops_url"].endswith(f"/Platform%20Team/_workitems/edit/{item['id']}")
    assert peers.servicenow.notes(SYS_ID) == [
        f"Azure Boards work item {item['id']} created for DMND0001234: {record['u_azure_devops_url']}"
    ]


def test_a_repeated_approval_updates_the_same_work_item_and_never_creates_a_second(peers, sync):
    doc = approved(peers)
    sync.handle(demand_message(Demand.from_payload(doc)))
    # the same approval again (a retried Flow step): nothing changes, no new revision, no new note
    again = sync.handle(demand_message(Demand.from_payload(doc)))
    assert again.status == "skipped" and len(peers.ado.work_items) == 1
    [item] = peers.ado.work_items.values()
    assert item["rev"] == 1 and len(peers.servicenow.notes(SYS_ID)) == 1
    # an edited approval: the same work item gets the change, people's tags are kept
    item["fields"]["System.Tags"] += "; squad-payments"
    edited = sync.handle(demand_message(Demand.from_payload({**doc, "title": "Sandbox subscriptions, self-service"})))
    assert edited.status == "done" and len(peers.ado.work_items) == 1
    assert item["fields"]["System.Title"] == "Sandbox subscriptions, self-service"
    assert "squad-payments" in item["fields"]["System.Tags"] and "SN:DMND0001234" in item["fields"]["System.Tags"]
    assert len(item["relations"]) == 1
    assert "updated from the re-sent demand" in peers.servicenow.notes(SYS_ID)[-1]


def test_without_its_link_record_the_work_item_is_found_by_its_sn_tag(peers, sync, rt):
    doc = approved(peers)
    sync.handle(demand_message(Demand.from_payload(doc)))
    # GIVEN the link and idempotency records are lost (another storage account, a restore...)
    rt.storage.delete("demands", "demand", SYS_ID)
    for row in list(rt.storage.query(IDEMPOTENCY, "PartitionKey eq @pk", pk=DEMANDS_SCOPE.name)):
        rt.storage.delete(IDEMPOTENCY, row["PartitionKey"], row["RowKey"])
    fresh = DemandSync(replace(rt.settings), rt.storage)
    # WHEN the approval comes again THEN the tagged work item is adopted, not duplicated
    outcome = fresh.handle(demand_message(Demand.from_payload(doc)))
    assert outcome.status == "done" and len(peers.ado.work_items) == 1
    assert fresh.links.of_demand(SYS_ID).work_item_id == next(iter(peers.ado.work_items))


def test_throttling_is_retried_later_with_retry_after_honoured(peers, sync, rt):
    doc = approved(peers)
    peers.ado.fail("POST", r"/wit/wiql$", 429, headers={"Retry-After": "37"})
    outcome = sync.handle(demand_message(Demand.from_payload(doc)))
    assert outcome.status == "retry" and outcome.delay_seconds >= 37
    assert peers.ado.work_items == {}
    # the message is back on the queue, invisible for the delay, with the next attempt number
    assert drain(rt, QUEUE) == []
    # the next attempt (as the queue will deliver it) goes through
    assert sync.handle({**demand_message(Demand.from_payload(doc)), "attempt": 2}).status == "done"
    assert len(peers.ado.work_items) == 1


def test_a_create_that_timed_out_is_not_repeated_blindly(peers, rt):
    doc = approved(peers)
    slow = DemandSync(
        rt.settings,
        rt.storage,
        boards=AzureBoards(
            AzureDevOpsClient(f"{peers.base}/example-org", "Platform Team", pat="pat-for-tests", timeout=0.3)
        ),
        rng=lambda: 0.0,
    )
    # the create reaches Azure DevOps (the item exists) but the answer comes too late
    peers.ado.fail("POST", r"/wit/workitems/\$Feature$", 0, delay=0.6)
    first = slow.handle(demand_message(Demand.from_payload(doc)))
    assert first.status == "retry" and "timed out" in first.detail
    wait_for(lambda: len(peers.ado.work_items) == 1)  # the peer finishes the create after we gave up
    # the retry finds it by its SN: tag and writes back, without a second work item
    second = slow.handle({**demand_message(Demand.from_payload(doc)), "attempt": 2})
    assert second.status == "done" and len(peers.ado.work_items) == 1
    assert peers.servicenow.records[SYS_ID]["u_azure_devops_work_item"] == str(next(iter(peers.ado.work_items)))


def test_a_tf_error_goes_to_poison_at_once_with_an_alert(peers, sync, rt):
    doc = approved(peers)
    broken = DemandSync(replace(rt.settings, azure_devops_acceptance_criteria_field="Custom.Criteria"), rt.storage)
    outcome = broken.handle(demand_message(Demand.from_payload(doc)))
    assert outcome.status == "poisoned" and "TF51535" in outcome.detail
    [poisoned] = drain(rt, POISON)
    assert poisoned["demand"]["sysId"] == SYS_ID and "TF51535" in poisoned["error"]
    [alert] = drain(rt, "alerts")
    assert alert["alert"]["kind"] == "delivery_failing" and "DMND0001234" in alert["alert"]["title"]
    assert "replay-poison" in alert["alert"]["summary"]


def test_refused_credentials_are_not_retried_and_raise_one_alert_a_day(peers, rt):
    doc = approved(peers)
    worker = DemandSync(replace(rt.settings, azure_devops_pat="expired-pat"), rt.storage)
    for _ in range(2):
        assert worker.handle(demand_message(Demand.from_payload(doc))).status == "poisoned"
    alerts = drain(rt, "alerts")
    assert {a["alert"]["dedupe_key"] for a in alerts} == {
        f"demand-sync-failing:UpstreamAuthError:{datetime.now(UTC).date().isoformat()}"
    }
    assert len(drain(rt, POISON)) == 2 and peers.ado.work_items == {}


def test_after_the_last_attempt_a_transient_failure_goes_to_poison(peers, sync, rt):
    doc = approved(peers)
    peers.ado.fail("POST", r"/wit/wiql$", 503, times=1)
    last = rt.settings.demands_max_attempts
    outcome = sync.handle({**demand_message(Demand.from_payload(doc)), "attempt": last})
    assert outcome.status == "poisoned" and f"after {last} attempts" in outcome.detail
    assert len(drain(rt, POISON)) == 1 and len(drain(rt, "alerts")) == 1


def test_a_message_that_is_not_json_is_poisoned_not_crashing_the_worker(sync, rt):
    assert sync.handle(b"{not json").status == "poisoned"
    [poisoned] = drain(rt, POISON)
    assert poisoned["type"] == "unknown"


def _env_of(rt):
    from shared.settings import specs

    out = {}
    for spec in specs():
        value = getattr(rt.settings, spec.attr)
        if isinstance(value, tuple):
            value = ",".join(v if isinstance(v, str) else "=".join(v) for v in value)
        out[spec.name] = str(value)
    return out


# -- Azure DevOps -> ServiceNow --


def _sync_one(peers, sync):
    sync.handle(demand_message(Demand.from_payload(approved(peers))))
    return next(iter(peers.ado.work_items))


def test_moving_the_work_item_to_done_completes_the_demand_with_a_note(peers, sync, rt):
    work_item_id = _sync_one(peers, sync)
    event = event_from_dict(peers.ado.move(work_item_id, "Done", by="Dana Example"))
    # the hook's handler queues the step; the worker applies it once
    outcome = dispatch(event, rt)
    assert any("queued" in str(v) for v in outcome.handled.values())
    [step] = drain(rt, QUEUE)
    assert sync.handle(step).status == "done"
    assert peers.servicenow.records[SYS_ID]["state"] == "Completed"
    assert peers.servicenow.notes(SYS_ID)[-1].startswith(
        f"Azure Boards: Dana Example moved Feature {work_item_id} from New to Done"
    )
    # the same notification delivered twice changes nothing more
    assert sync.handle(step).status == "skipped"
    assert len(peers.servicenow.notes(SYS_ID)) == 2


def test_an_unmapped_state_adds_a_note_only_and_a_field_edit_is_ignored(peers, sync, rt):
    work_item_id = _sync_one(peers, sync)
    dispatch(event_from_dict(peers.ado.move(work_item_id, "Review")), rt)
    [step] = drain(rt, QUEUE)
    assert sync.handle(step).status == "done"
    assert peers.servicenow.records[SYS_ID]["state"] == "Approved"
    assert "no demand state is mapped" in peers.servicenow.notes(SYS_ID)[-1]
    edit = peers.ado.move(work_item_id, "Review")
    edit["resource"]["fields"] = {"System.Title": {"oldValue": "a", "newValue": "b"}}
    assert dispatch(event_from_dict(edit), rt).handled  # acknowledged ...
    assert drain(rt, QUEUE) == []  # ... and nothing queued


def test_the_syncs_own_revisions_are_ignored_no_ping_pong(peers, sync, rt):
    work_item_id = _sync_one(peers, sync)
    item = peers.ado.work_items[work_item_id]
    # an update by the sync itself, echoed back by the hook as if it had changed the state
    sync.links.mark_own_revision(work_item_id, item["rev"] + 1)
    echo = peers.ado.move(work_item_id, "Done", by="ValueFlow sync")
    dispatch(event_from_dict(echo), rt)
    [step] = drain(rt, QUEUE)
    outcome = sync.handle(step)
    assert outcome.status == "skipped" and "sync's own" in outcome.detail
    assert peers.servicenow.records[SYS_ID]["state"] == "Approved"


def test_builds_and_releases_linked_to_the_work_item_add_an_audit_note_once(peers, sync, rt):
    work_item_id = _sync_one(peers, sync)
    peers.ado.build_work_items[1207] = [work_item_id, 999]
    for name in ("demands/build-complete.json", "demands/release-deployment-completed.json"):
        dispatch(event_from_dict(load_fixture(name)), rt)
    steps = drain(rt, QUEUE)
    assert [s["buildIds"] for s in steps] == [[1207], [1207]]
    assert [sync.handle(s).status for s in steps] == ["done", "done"]
    assert [sync.handle(s).status for s in steps] == ["skipped", "skipped"]  # redelivered: no second note
    notes = peers.servicenow.notes(SYS_ID)[1:]
    assert notes == [
        f"Azure DevOps audit (work item {work_item_id}): Build checkout-ci checkout-ci_20261120.3: succeeded. "
        "Build checkout-ci_20261120.3 succeeded",
        f"Azure DevOps audit (work item {work_item_id}): Release Release-17 to production: succeeded. "
        "Deployment of release Release-17 on environment production succeeded.",
    ]


# -- reconciliation --


def test_reconciliation_repairs_a_lost_approval_and_a_lost_state_change(peers, sync, rt):
    # GIVEN one demand synced whose Done never reached ServiceNow, and one approval that never arrived
    work_item_id = _sync_one(peers, sync)
    peers.ado.move(work_item_id, "Done")  # the notification is lost
    lost = "0123456789abcdef0123456789abcdef"
    peers.servicenow.add_demand(lost, "DMND0001300", "Cost dashboards per squad", priority="3", cost_center="CC-12")
    peers.servicenow.add_demand("f" * 32, "DMND0000001", "Old rejected demand", approval="rejected")
    # WHEN reconciliation runs
    report = reconcile(sync, datetime.now(UTC) - timedelta(days=1))
    # THEN it fixed both and says so
    assert report.checked == 2 and not report.failed
    assert sorted((f["number"], f["action"]) for f in report.fixed) == [
        ("DMND0001234", "state"),
        ("DMND0001300", "create"),
    ]
    assert peers.servicenow.records[SYS_ID]["state"] == "Completed"
    assert "Reconciliation" in peers.servicenow.notes(SYS_ID)[-1]
    assert len(peers.ado.work_items) == 2
    assert peers.servicenow.records[lost]["u_azure_devops_work_item"]
    # AND a second run finds everything in sync
    again = reconcile(sync, datetime.now(UTC) - timedelta(days=1))
    assert again.fixed == [] and again.in_sync == 2


def test_reconciliation_ignores_rows_a_misspelt_query_would_let_through(peers, sync):
    peers.servicenow.add_demand("e" * 32, "DMND0000002", "Rejected", approval="rejected")
    typo = replace(sync.settings, servicenow_demand_approved_query="aproval=approved")
    report = reconcile(DemandSync(typo, sync.store), datetime.now(UTC) - timedelta(days=1))
    # ServiceNow ignored the unknown field and returned everything; none of it really matches
    assert report.checked == 0 and peers.ado.work_items == {}


def test_reconcile_cli_reports_what_it_fixed(peers, rt, monkeypatch, capsys):
    from shared.cli.__main__ import main
    from shared.settings import reset_settings

    peers.servicenow.add_demand("0123456789abcdef0123456789abcdef", "DMND0001300", "Cost dashboards per squad")
    for name, value in _env_of(rt).items():
        monkeypatch.setenv(name, value)
    reset_settings()
    assert main(["demands", "reconcile", "--since", "1d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 to fix" in out and "DMND0001300" in out and "would fix (dry run)" in out
    assert peers.ado.work_items == {}
    assert main(["demands", "reconcile", "--since", "1d", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["number"] for f in report["fixed"]] == ["DMND0001300"] and len(peers.ado.work_items) == 1
    assert main(["demands", "reconcile", "--since", "yesterday"]) == 2


def test_servicenow_throttling_the_write_back_retries_it_without_a_second_work_item(peers, sync):
    doc = approved(peers)
    peers.servicenow.fail("PATCH", rf"/dmn_demand/{SYS_ID}$", 429, headers={"Retry-After": "12"})
    first = sync.handle(demand_message(Demand.from_payload(doc)))
    assert first.status == "retry" and first.delay_seconds >= 12 and len(peers.ado.work_items) == 1
    assert peers.servicenow.notes(SYS_ID) == []
    second = sync.handle({**demand_message(Demand.from_payload(doc)), "attempt": 2})
    assert second.status == "done" and len(peers.ado.work_items) == 1
    assert len(peers.servicenow.notes(SYS_ID)) == 1


def _expire_lease(rt, key):
    """The holder's lease runs out (what the clock does in production, without waiting 5 minutes)."""
    held = rt.storage.get(IDEMPOTENCY, DEMANDS_SCOPE.partition(key), key)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    fields = {k: v for k, v in held.items() if k not in ("PartitionKey", "RowKey") and not k.startswith("odata")}
    rt.storage.upsert(IDEMPOTENCY, DEMANDS_SCOPE.partition(key), key, {**fields, "LeaseUntil": past})


def test_a_create_held_by_a_crashed_worker_is_retried_after_its_lease_then_done_once(peers, sync, rt):
    doc = approved(peers)
    create_key = idempotency_key("create", SYS_ID, 0)
    # GIVEN another worker claimed the demand's create and crashed before finishing it
    assert Idempotency(rt.storage).claim(DEMANDS_SCOPE, create_key).status == "new"
    # WHEN the message comes, THEN it is retried after what is left of the holder's lease, not acknowledged
    busy = sync.handle(demand_message(Demand.from_payload(doc)))
    lease = DEMANDS_SCOPE.lease.total_seconds()
    assert busy.status == "retry" and lease - 30 <= busy.delay_seconds <= lease, busy
    assert peers.ado.work_items == {} and drain(rt, POISON) == []
    # AND once the lease has run out, the retried message takes the create over: one work item, written back
    _expire_lease(rt, create_key)
    done = sync.handle({**demand_message(Demand.from_payload(doc)), "attempt": 2})
    assert done.status == "done" and len(peers.ado.work_items) == 1
    assert peers.servicenow.records[SYS_ID]["u_azure_devops_work_item"] == str(next(iter(peers.ado.work_items)))
    assert rt.storage.get(IDEMPOTENCY, DEMANDS_SCOPE.partition(create_key), create_key)["Status"] == "COMPLETED"


def test_two_workers_on_the_same_demand_at_once_create_one_work_item_and_one_note(peers, rt):
    doc = approved(peers)
    first, second = (DemandSync(rt.settings, rt.storage, rng=lambda: 1.0) for _ in range(2))
    create_key = idempotency_key("create", SYS_ID, 0)
    # GIVEN the first worker is inside its create (Azure DevOps answers slowly)
    peers.ado.fail("POST", r"/wit/workitems/\$Feature$", 0, delay=1.0)
    outcomes = {}
    worker = threading.Thread(
        target=lambda: outcomes.update(first=first.handle(demand_message(Demand.from_payload(doc))))
    )
    worker.start()
    wait_for(lambda: rt.storage.get(IDEMPOTENCY, DEMANDS_SCOPE.partition(create_key), create_key) is not None)
    # WHEN a duplicate delivery of the same message reaches the second worker meanwhile
    duplicate = second.handle(demand_message(Demand.from_payload(doc)))
    worker.join(10)
    # THEN the duplicate is retried after the holder's lease instead of creating a second work item
    assert duplicate.status == "retry" and duplicate.delay_seconds > 60, duplicate
    assert outcomes["first"].status == "done" and len(peers.ado.work_items) == 1
    # AND its retry finds every step done: nothing new, one work note
    again = second.handle({**demand_message(Demand.from_payload(doc)), "attempt": 2})
    assert again.status == "skipped" and len(peers.ado.work_items) == 1
    assert len(peers.servicenow.notes(SYS_ID)) == 1
