"""A missing or refused ARM credential is a configuration error: fail once, clearly, alert once; never retried."""

import json

from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy

from shared.adapters.arm import Arm, ArmCredentialError
from shared.policy.worker import POISON_QUEUE, PolicyWorker, read_counters
from tests.unit.policy_memory import MemoryStore
from tests.unit.test_policy_worker import alerts, settings, work_item

DUMP = (
    "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
    "Attempted credentials:\n\tEnvironmentCredential: EnvironmentCredential authentication unavailable.\n"
    "\tManagedIdentityCredential: ManagedIdentityCredential authentication unavailable.\n" * 5
)


class NoCredential:
    calls = 0

    def get_token(self, *scopes, **kwargs):
        NoCredential.calls += 1
        raise ClientAuthenticationError(message=DUMP)


def _arm(now):
    cred = NoCredential()
    slept = []
    arm = Arm(
        "https://management.azure.com",
        auth_policy=BearerTokenCredentialPolicy(cred, "https://management.azure.com/.default"),
        credential=cred,
        sleep=slept.append,
        clock=lambda: now[0],
    )
    return arm, slept


def test_a_missing_credential_fails_at_once_in_one_line_and_is_not_asked_again_for_a_minute():
    NoCredential.calls = 0
    now = [1000.0]
    arm, slept = _arm(now)
    for call in (
        lambda: arm.request("GET", "/subscriptions/s/resourceGroups/rg", "2021-04-01"),
        lambda: arm.policy_effect("/subscriptions/s/resourceGroups/rg/providers/x/y", "/subscriptions/s/a"),
    ):
        try:
            call()
            raise AssertionError("expected ArmCredentialError")
        except ArmCredentialError as err:
            assert "\n" not in err.detail and "DefaultAzureCredential failed" in err.detail
            assert "VALUEFLOW_FAKE_ARM" in err.detail and err.status == 502
    assert NoCredential.calls == 1 and slept == []  # no retries, no backoff, the credential asked once
    now[0] += 61
    try:
        arm.request("GET", "/subscriptions/s", "2022-12-01")
    except ArmCredentialError:
        pass
    assert NoCredential.calls == 2


def test_policy_work_items_hitting_a_credential_problem_are_parked_with_one_alert_not_retried(tmp_path):
    NoCredential.calls = 0
    store = MemoryStore()
    arm, _ = _arm([0.0])
    worker = PolicyWorker(store, settings(tmp_path), arm)
    outcomes = [
        worker.process(work_item("eventgrid-subscription-single-policy.json", timestamp=f"2026-11-20T14:0{i}:00Z"))
        for i in range(3)
    ]
    # THEN nothing raises (the host does not redeliver), each item waits in the poison queue for a replay
    assert [o.status for o in outcomes] == ["parked"] * 3
    parked = store.sent(POISON_QUEUE)
    assert len(parked) == 3 and all("event" in (json.loads(p) if isinstance(p, str) else p) for p in parked)
    # AND one alert says what is wrong and what to do
    sent = alerts(store)
    assert len(sent) == 1 and "refused our credential" in sent[0]["title"]
    assert read_counters(store)["parked-credential"] == 3
    assert NoCredential.calls == 1


def test_the_watch_timer_skips_in_one_line_when_the_credential_is_missing(tmp_path, caplog):
    from shared.policy.watch import remediation_cycle
    from shared.policy.worker import (
        PENDING_PARTITION,
        REMEDIATIONS_TABLE,
        pending_row_key,
        pending_rows,
        spread_partition,
    )

    store = MemoryStore()
    arm, _ = _arm([0.0])
    # GIVEN a violation waiting in a window that has closed, and no usable credential
    assignment = "/subscriptions/s/providers/Microsoft.Authorization/policyAssignments/a"
    resource = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa"
    row = pending_row_key(assignment, "", resource)
    store.upsert(
        REMEDIATIONS_TABLE,
        spread_partition(PENDING_PARTITION, row),
        row,
        {
            "AssignmentId": assignment,
            "DefinitionReferenceId": "",
            "ResourceId": resource,
            "Window": 0,
            "Effect": "deployifnotexists",
            "EventTimestamp": "2026-11-20T14:00:00Z",
        },
    )
    # WHEN the timer runs THEN it reports the skip in one line, raises nothing, and the violation still waits
    report = remediation_cycle(store, settings(tmp_path, REMEDIATION_MODE="enforce"), arm)
    assert "no usable Azure credential" in report.get("skipped", ""), report
    assert [r for r in caplog.records if "remediation watch skipped" in r.getMessage()]
    assert all("Traceback" not in r.getMessage() for r in caplog.records)
    assert [r["ResourceId"] for r in pending_rows(store)] == [resource]


def test_the_planner_knows_the_credential_error_by_its_kind():
    from shared.policy.remediation import CREDENTIAL_ERROR_KIND

    assert ArmCredentialError.kind == CREDENTIAL_ERROR_KIND
