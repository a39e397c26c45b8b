"""DORA end to end on Azurite + the embedded warehouse + fake peers (Azure DevOps, Backstage):
HTTP acceptance, the queue worker, the service-hook handler with commit lookup, backfill, digest,
scorecard and leaderboard."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from pytest_httpserver import HTTPServer

from shared.alerts.delivery import QUEUE as ALERTS_QUEUE
from shared.devops.hooks import dispatch, event_from_dict
from shared.dora import service
from shared.dora.digest import DIGEST_SCOPE, send_digests
from shared.dora.scorecard import replace_component_resources
from shared.errors import BadInputError, NotFoundError, TransientUpstreamError, UnauthorizedError
from shared.idempotency import TABLE as IDEMPOTENCY
from shared.idempotency import Idempotency
from shared.runtime import Runtime
from shared.settings import load_settings
from tests.conftest import load_fixture
from tests.fixtures.approvals.seed import seed_episode

PROJECT = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c"
REPO = "f4a3c6a1-2b7e-4d0e-8c61-0d2f3e9a1b55"
SERVICE_MAP = [
    {"service": "checkout", "squad": "payments", "component": "checkout", "aliases": ["checkout-ci", "checkout-api"]},
    {"service": "search", "squad": "discovery", "aliases": ["search-deploy", "search-api"]},
]
VM = "/subscriptions/00000000-0000-0000-0000-00000000aaaa/resourceGroups/rg-batch/providers/Microsoft.Compute/virtualMachines/vm-runaway"


@pytest.fixture
def dora_runtime(env, tmp_path, httpserver: HTTPServer):
    values = {
        **env,
        "DORA_SERVICE_MAP": json.dumps(SERVICE_MAP),
        "DYNATRACE_WEBHOOK_SECRET": "dt-secret-for-tests",
        "AZURE_DEVOPS_ORG_URL": httpserver.url_for("/example-org"),
        "AZURE_DEVOPS_PROJECT": "shop",
        "AZURE_DEVOPS_PAT": "pat-for-tests",
        "BACKSTAGE_URL": httpserver.url_for("/backstage"),
        "BACKSTAGE_TOKEN": "backstage-token-for-tests",
    }
    runtime = Runtime(load_settings(values, local_settings=tmp_path / "absent.json"))
    _drain(runtime, service.QUEUE)
    _drain(runtime, ALERTS_QUEUE)
    return runtime


def _drain(runtime: Runtime, queue: str) -> list[dict]:
    out = []
    while batch := runtime.storage.receive(queue, max_messages=32):
        for m in batch:
            out.append(json.loads(m.text()))
            runtime.storage.ack(queue, m)
    return out


def _work(runtime: Runtime) -> list[dict]:
    """The queue worker: every queued dora-events message written to the warehouse."""
    results = []
    while batch := runtime.storage.receive(service.QUEUE, max_messages=32):
        for m in batch:
            results.append(service.handle_queue_message(runtime, m.body))
            runtime.storage.ack(service.QUEUE, m)
    return results


def _dora_handlers_registered() -> None:
    """Registration happens when shared.dora.ado_events is first imported; another test that swaps the hook
    registry for a temporary one can have swallowed it, so make sure it is in the live registry."""
    from shared.devops.hooks import register
    from shared.dora import ado_events
    from shared.dora.azure_pipelines import RELEASE_EVENT, RUN_EVENT, STAGE_EVENT

    for event_type in (STAGE_EVENT, RUN_EVENT, RELEASE_EVENT):
        register(event_type)(ado_events.on_deployment_event)


def _deploy(i: str, finished: str, **kw):
    return {"id": i, "service": "checkout", "environment": "production", "result": "succeeded",
            "finishedAt": finished, **kw}  # fmt: skip


def test_deployments_are_acknowledged_queued_and_written(dora_runtime):
    body = json.dumps([_deploy("gh-1", "2026-03-02T10:00:00Z", commitTime="2026-03-02T08:00:00Z"),
                       _deploy("gh-2", "2026-03-02T14:00:00+02:00")]).encode()  # fmt: skip
    assert service.accept_deployments(dora_runtime, body) == {"accepted": 2, "ids": ["gh-1", "gh-2"]}
    assert service.accept_deployments(dora_runtime, body)["accepted"] == 2  # a retry: same ids
    assert [r["written"] for r in _work(dora_runtime)] == [2, 2]
    [entry] = service.metrics(dora_runtime, from_="2026-03-02", to="2026-03-02")["services"]
    assert (entry["service"], entry["deployments"], entry["leadTimeHours"]["median"]) == ("checkout", 2, 2.0)


def test_a_bad_payload_gets_a_precise_400_and_nothing_is_queued(dora_runtime):
    body = json.dumps([_deploy("ok", "2026-03-02T10:00:00Z"), _deploy("bad", "not a time")]).encode()
    with pytest.raises(BadInputError) as caught:
        service.accept_deployments(dora_runtime, body)
    assert caught.value.errors == [
        {"field": "items[1].finishedAt", "message": "not an ISO 8601 timestamp: 'not a time'"}
    ]
    with pytest.raises(BadInputError, match="not valid JSON"):
        service.accept_deployments(dora_runtime, b"{oops")
    assert dora_runtime.storage.queue_length(service.QUEUE) == 0


def test_large_batches_travel_as_a_blob(dora_runtime):
    batch = [
        _deploy(f"bulk-{i}", "2026-03-03T10:00:00Z", url="https://ci.example.test/" + "x" * 200) for i in range(400)
    ]
    service.accept_deployments(dora_runtime, json.dumps(batch).encode())
    [message] = dora_runtime.storage.peek(service.QUEUE)
    assert "itemsBlob" in json.loads(message.text())
    assert _work(dora_runtime) == [{"kind": "deployments", "written": 400}]


def test_dynatrace_webhook_needs_its_secret_and_is_mapped(dora_runtime):
    body = json.dumps(load_fixture("dora/dynatrace-problem-open.json")).encode()
    for headers in ({}, {"X-Webhook-Secret": "wrong"}):
        with pytest.raises(UnauthorizedError, match="X-Webhook-Secret"):
            service.accept_problems(dora_runtime, body, headers)
    answer = service.accept_problems(dora_runtime, body, {"x-webhook-secret": "dt-secret-for-tests"})
    assert answer["problems"][0]["priority"] == "P1"
    resolved = json.dumps(load_fixture("dora/dynatrace-problem-resolved.json")).encode()
    service.accept_problems(dora_runtime, resolved, {"X-Webhook-Secret": "dt-secret-for-tests"})
    _work(dora_runtime)
    with dora_runtime.warehouse.session() as wh:
        [row] = wh.query(
            "SELECT P.STATE, P.PRIORITY, S.SERVICE FROM PROBLEMS P JOIN PROBLEM_SERVICES S USING (PROBLEM_ID)"
        )
    assert (row["STATE"], row["PRIORITY"], row["SERVICE"]) == ("resolved", "P1", "checkout")


def test_pipeline_stage_hook_looks_up_the_commit_time_and_fails_by_the_rule(dora_runtime, httpserver):
    # GIVEN Azure Repos knows the commit (committer date), and Dynatrace reports a P1 30 minutes after the stage
    httpserver.expect_request(
        f"/example-org/{PROJECT}/_apis/git/repositories/f4a3c6a1-2b7e-4d0e-8c61-0d2f3e9a1b55/commits/"
        "3f2b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
    ).respond_with_json({"commitId": "3f2b9c4d", "committer": {"date": "2026-03-02T06:00:00Z"}})
    _dora_handlers_registered()
    payload = load_fixture("dora/ado-stage-completed.json")
    del payload["resource"]["repositories"]  # the commit id (run resources) without its date: look it up
    event = event_from_dict(payload)
    outcome = dispatch(event, dora_runtime)
    assert "production, succeeded" in next(iter(outcome.handled.values()))
    dispatch(event, dora_runtime)  # Azure DevOps retried: the same row
    service.accept_problems(
        dora_runtime, json.dumps(load_fixture("dora/dynatrace-problem-open.json")).encode(),
        {"X-Webhook-Secret": "dt-secret-for-tests"},
    )  # fmt: skip
    _work(dora_runtime)
    [entry] = service.metrics(dora_runtime, service="checkout", from_="2026-03-02", to="2026-03-02")["services"]
    assert (entry["deployments"], entry["failedDeployments"], entry["changeFailureRate"]) == (1, 1, 1.0)
    assert entry["leadTimeHours"]["median"] == pytest.approx(4.0000343, abs=1e-6)
    [failed] = service.failed(dora_runtime, from_="2026-03-02", to="2026-03-02")
    assert failed["problem"]["id"].startswith("dynatrace:") and failed["problem"][
        "minutesAfterDeploy"
    ] == pytest.approx(30, abs=0.01)


def test_backfill_reads_past_runs_with_stage_timelines(dora_runtime, httpserver):
    httpserver.expect_request("/example-org/shop/_apis/build/builds").respond_with_json({
        "count": 1,
        "value": [{
            "id": 4711, "project": {"id": PROJECT}, "definition": {"id": 42, "name": "checkout-ci"},
            "sourceVersion": "3f2b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "repository": {"id": REPO},
            "startTime": "2026-03-02T09:41:12Z", "finishTime": "2026-03-02T10:01:00Z",
            "requestedFor": {"displayName": "Dev One"},
        }],
    })  # fmt: skip
    httpserver.expect_request("/example-org/shop/_apis/build/builds/4711/timeline").respond_with_json({
        "records": [
            {"type": "Stage", "identifier": "Build", "name": "Build", "state": "completed", "result": "succeeded",
             "startTime": "2026-03-02T09:41:20Z", "finishTime": "2026-03-02T09:50:00Z"},
            {"type": "Stage", "identifier": "Deploy_Production", "name": "Deploy to production", "state": "completed",
             "result": "succeeded", "startTime": "2026-03-02T09:50:05Z", "finishTime": "2026-03-02T10:00:00Z"},
            {"type": "Job", "name": "deploy", "state": "completed", "result": "succeeded"},
        ]
    })  # fmt: skip
    httpserver.expect_request(
        f"/example-org/{PROJECT}/_apis/git/repositories/{REPO}/commits/3f2b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
    ).respond_with_json({"committer": {"date": "2026-03-02T08:00:00Z"}})
    report = service.backfill(dora_runtime, datetime(2026, 3, 1))
    assert report == {"deployments": 1, "production": 1, "withCommitTime": 1}  # the Build stage is no deployment
    # the same id as the stage event: a hook delivered later does not double count
    _dora_handlers_registered()
    dispatch(event_from_dict(load_fixture("dora/ado-stage-completed.json")), dora_runtime)
    [entry] = service.metrics(dora_runtime, service="checkout", from_="2026-03-02", to="2026-03-02")["services"]
    assert entry["deployments"] == 1


def test_weekly_digest_goes_through_the_alert_pipeline_once(dora_runtime):
    data = load_fixture("dora/handcomputed.json")
    service.accept_deployments(dora_runtime, json.dumps(data["deployments"]).encode())
    service.accept_problems(
        dora_runtime, json.dumps(data["problems"]).encode(), {"X-Webhook-Secret": "dt-secret-for-tests"}
    )
    _work(dora_runtime)
    report = send_digests(dora_runtime, today=date(2026, 3, 11))  # the week 2026-03-02 .. 03-08
    assert report["week"] == "2026-03-02" and report["sent"] == report["squads"] == 2
    alerts = [m["alert"] for m in _drain(dora_runtime, ALERTS_QUEUE)]
    payments = next(a for a in alerts if a["owner"] == "payments")
    assert payments["kind"] == "digest" and payments["incident"] is False and payments["severity"] == "warning"
    facts = dict(payments["facts"])
    assert facts["Change failure rate"].startswith("50.0% (2 of 4)") and "missed" in facts["Change failure rate"]
    assert any(k.startswith("Failed: checkout") and "P1 pA" in v for k, v in payments["facts"])
    assert send_digests(dora_runtime, today=date(2026, 3, 12))["sent"] == 0  # the same week: once


def _digest_owners(runtime: Runtime) -> list[str]:
    return sorted(m["alert"]["owner"] for m in _drain(runtime, ALERTS_QUEUE) if m["alert"]["kind"] == "digest")


def test_a_digest_held_by_a_crashed_run_fails_the_run_for_a_retry_then_goes_out_once(dora_runtime):
    key = "dora-digest:payments:2026-05-04"
    # GIVEN an earlier run claimed the payments digest of the week 2026-05-04 and crashed
    assert Idempotency(dora_runtime.storage).claim(DIGEST_SCOPE, key).status == "new"
    # WHEN the timer runs: the other squad's digest goes out, and the run fails with a retry after the lease
    with pytest.raises(TransientUpstreamError, match="payments") as busy:
        send_digests(dora_runtime, today=date(2026, 5, 13))
    assert 0 < busy.value.retry_after <= DIGEST_SCOPE.lease.total_seconds()
    assert _digest_owners(dora_runtime) == ["discovery"]
    # THEN the retry after the lease sends the crashed run's digest, and only that one
    held = dora_runtime.storage.get(IDEMPOTENCY, DIGEST_SCOPE.partition(key), key)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    fields = {k: v for k, v in held.items() if k not in ("PartitionKey", "RowKey") and not k.startswith("odata")}
    dora_runtime.storage.upsert(IDEMPOTENCY, DIGEST_SCOPE.partition(key), key, {**fields, "LeaseUntil": past})
    retried = send_digests(dora_runtime, today=date(2026, 5, 13))
    assert (retried["sent"], retried["skipped"]) == (1, 1) and _digest_owners(dora_runtime) == ["payments"]
    assert send_digests(dora_runtime, today=date(2026, 5, 14))["sent"] == 0


def test_a_digest_run_beside_another_run_of_the_same_week_sends_each_squad_once(dora_runtime):
    key = "dora-digest:discovery:2026-05-11"
    # GIVEN another run (the CLI beside the timer) is sending the discovery digest right now
    other = Idempotency(dora_runtime.storage)
    assert other.claim(DIGEST_SCOPE, key).status == "new"
    # WHEN this run comes: it sends payments and leaves discovery to the other run, asking for a retry
    with pytest.raises(TransientUpstreamError, match="discovery"):
        send_digests(dora_runtime, today=date(2026, 5, 20))
    # AND the other run finishes sending its digest
    other.complete(DIGEST_SCOPE, key, {"squad": "discovery"})
    # THEN the retry sends nothing more: one digest per squad
    retried = send_digests(dora_runtime, today=date(2026, 5, 20))
    assert (retried["sent"], retried["skipped"]) == (0, 2)
    assert _digest_owners(dora_runtime) == ["payments"]


def test_scorecard_for_a_backstage_component(dora_runtime):
    seed_episode(dora_runtime)  # an open critical cost anomaly on VM
    with dora_runtime.warehouse.session() as wh:
        replace_component_resources(wh, [(VM, "checkout")], "csv")
        wh.execute(
            "INSERT INTO COST_DAILY (SOURCE_KEY, RUN_ID, USAGE_DATE, RESOURCE_ID, SERIES_BUCKET, CHARGE_CATEGORY, "
            "IS_USAGE, COST, CURRENCY) VALUES ('k', 'r', %s, %s, 1, 'Usage', TRUE, 120.5, 'EUR'), "
            "('k', 'r', %s, %s, 1, 'Usage', TRUE, 999, 'EUR')",
            (date(2026, 11, 20), VM.lower(), date(2026, 10, 31), VM.lower()),
        )
    dora_runtime.storage.upsert("policystate", "state", "row-1", {
        "ComplianceState": "NonCompliant", "ResourceId": VM, "AssignmentId": "/providers/x/policyAssignments/tags",
        "DefinitionReferenceId": "", "Timestamp_": "2026-11-21T10:00:00Z",
    })  # fmt: skip
    service.accept_deployments(dora_runtime, json.dumps([_deploy("sc-1", "2026-11-23T10:00:00Z")]).encode())
    _work(dora_runtime)
    card = service.scorecard(dora_runtime, "component:default/checkout", today=date(2026, 11, 25))
    assert card["component"] == "checkout" and card["dora"][0]["deployments"] == 1
    assert card["policyViolations"]["open"] == 1 and card["costAnomalies"]["open"] == 1
    assert card["cost"] == {"monthToDate": {"EUR": 120.5}, "since": "2026-11-01"}
    assert card["dora"][0]["meetsTarget"]["changeFailureRate"] is True
    with pytest.raises(NotFoundError):
        service.scorecard(dora_runtime, "component:default/nothing-here", today=date(2026, 11, 25))
    with pytest.raises(BadInputError):
        service.scorecard(dora_runtime, None)


def test_leaderboard_ranks_squads_with_badges_and_catalog_sync(dora_runtime, httpserver):
    httpserver.expect_request(
        "/backstage/api/catalog/entities/by-query", headers={"Authorization": "Bearer backstage-token-for-tests"}
    ).respond_with_json({"items": [
        {"kind": "Component", "metadata": {"name": "billing", "annotations": {"dev.azure.com/build-definition": "billing-ci"}},
         "spec": {"owner": "group:default/payments"}},
    ], "pageInfo": {}})  # fmt: skip
    from shared.dora.backstage import sync_catalog

    assert sync_catalog(dora_runtime) == {"components": 1}
    batch = [{**_deploy(f"b-{i}", f"2026-03-{2 + i:02d}T10:00:00Z", commitTime=f"2026-03-{2 + i:02d}T09:00:00Z"),
              "service": "billing-ci"} for i in range(7)]  # fmt: skip
    service.accept_deployments(dora_runtime, json.dumps(batch).encode())
    _work(dora_runtime)
    board = service.leaderboard(dora_runtime, from_="2026-03-02", to="2026-03-08")
    [payments] = board["squads"]
    assert payments["squad"] == "payments" and payments["rank"] == 1 and payments["deployments"] == 7
    assert {b["id"] for b in payments["badges"]} >= {"cicd-master", "fast-lane"}
    assert {b["id"] for b in board["badges"]} >= {"cicd-master", "finops-saver"}


def test_problem_secret_is_optional(dora_runtime):
    open_runtime = Runtime(replace(dora_runtime.settings, dynatrace_webhook_secret=""))
    body = json.dumps(
        {"id": "x", "services": ["a"], "priority": "P3", "state": "open", "startedAt": "2026-03-02T10:00:00Z"}
    )
    assert service.accept_problems(open_runtime, body.encode(), {})["accepted"] == 1
