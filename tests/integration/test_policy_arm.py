"""The ARM adapter against a fake ARM (pytest-httpserver) built from ARM's documented behaviour:
200/201 on a remediation PUT, 429 with Retry-After, 409 RetryableErrorDueToAnotherOperation,
policy states queried through azure-mgmt-policyinsights, listDeployments."""

import json

import pytest
from werkzeug import Response

from shared.adapters.arm import (
    DEV_TOKEN,
    REMEDIATION_API_VERSION,
    Arm,
    ArmThrottled,
    StaticBearerPolicy,
    WriteBudget,
    parse_retry_after,
)
from shared.errors import ConflictError, NotFoundError

SUB = "3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg-payments-prod"
ASSIGNMENT = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyAssignments/storage-secure-transfer"
REMEDIATION = f"{SCOPE}/providers/Microsoft.PolicyInsights/remediations/vf-task"


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def arm(httpserver, sleeps):
    return Arm(httpserver.url_for("").rstrip("/"), auth_policy=StaticBearerPolicy(), sleep=sleeps, rng=lambda: 0.5)


def arm_error(status, code, message="", headers=None):
    return Response(
        json.dumps({"error": {"code": code, "message": message}}),
        status,
        headers or {},
        content_type="application/json",
    )


def test_remediation_put_sends_the_2024_10_01_body_with_the_static_dev_bearer(httpserver, arm):
    httpserver.expect_oneshot_request(
        REMEDIATION, method="PUT", query_string={"api-version": REMEDIATION_API_VERSION}
    ).respond_with_json({"name": "vf-task", "properties": {"provisioningState": "Accepted"}}, status=201)
    doc = arm.put_remediation(
        SCOPE, "vf-task", ASSIGNMENT, "", resource_count=500, parallel_deployments=10, failure_threshold=0.1
    )
    assert doc["properties"]["provisioningState"] == "Accepted"
    ((request, _),) = httpserver.log
    assert request.headers["Authorization"] == f"Bearer {DEV_TOKEN}"
    props = request.get_json()["properties"]
    assert props == {
        "policyAssignmentId": ASSIGNMENT,
        "resourceDiscoveryMode": "ExistingNonCompliant",
        "resourceCount": 500,
        "parallelDeployments": 10,
        "failureThreshold": {"percentage": 0.1},
    }  # no policyDefinitionReferenceId for a single policy


def test_initiative_remediation_carries_the_definition_reference(httpserver, arm):
    httpserver.expect_oneshot_request(REMEDIATION, method="PUT").respond_with_json({"properties": {}}, status=200)
    arm.put_remediation(
        SCOPE,
        "vf-task",
        ASSIGNMENT,
        "aksDiagnosticSettings",
        resource_count=1,
        parallel_deployments=1,
        failure_threshold=1.0,
    )
    assert httpserver.log[0][0].get_json()["properties"]["policyDefinitionReferenceId"] == "aksDiagnosticSettings"


def test_429_is_honoured_with_its_retry_after_and_pauses_the_subscription(httpserver, arm, sleeps):
    httpserver.expect_ordered_request(REMEDIATION, method="PUT").respond_with_response(
        arm_error(429, "TooManyRequests", "throttled", {"Retry-After": "2"})
    )
    httpserver.expect_ordered_request(REMEDIATION, method="PUT").respond_with_json({"properties": {}}, status=201)
    arm.put_remediation(
        SCOPE, "vf-task", ASSIGNMENT, "", resource_count=1, parallel_deployments=1, failure_threshold=1.0
    )
    assert arm.stats["throttled"] == 1 and arm.stats["transient_conflicts"] == 0
    assert sleeps and sleeps[0] >= 2.0  # never earlier than ARM asked
    # the next write to the same subscription waits out the pause (it is not free to go at once)
    assert arm.budget.take(SUB.lower()) > 0


def test_retryable_error_due_to_another_operation_is_a_transient_conflict_not_throttling(httpserver, arm, sleeps):
    httpserver.expect_ordered_request(REMEDIATION, method="PUT").respond_with_response(
        arm_error(409, "RetryableErrorDueToAnotherOperation", "Operation is not allowed ... Please retry later.")
    )
    httpserver.expect_ordered_request(REMEDIATION, method="PUT").respond_with_json({"properties": {}}, status=200)
    arm.put_remediation(
        SCOPE, "vf-task", ASSIGNMENT, "", resource_count=1, parallel_deployments=1, failure_threshold=1.0
    )
    assert arm.stats["transient_conflicts"] == 1 and arm.stats["throttled"] == 0
    assert 0 < sleeps[0] <= 1.0  # a short jittered backoff, no Retry-After pause
    assert arm.budget.take(SUB.lower()) == 0


def test_a_plain_409_conflict_is_not_retried(httpserver, arm):
    httpserver.expect_oneshot_request(REMEDIATION, method="PUT").respond_with_response(
        arm_error(409, "Conflict", "another remediation with this name has a different assignment")
    )
    with pytest.raises(ConflictError, match="Conflict"):
        arm.put_remediation(
            SCOPE, "vf-task", ASSIGNMENT, "", resource_count=1, parallel_deployments=1, failure_threshold=1.0
        )
    assert len(httpserver.log) == 1


def test_a_retry_after_longer_than_we_may_wait_raises_throttled_with_the_delay(httpserver, sleeps):
    arm = Arm(httpserver.url_for("").rstrip("/"), auth_policy=StaticBearerPolicy(), sleep=sleeps, max_wait=10)
    httpserver.expect_request(REMEDIATION, method="GET").respond_with_response(
        arm_error(429, "TooManyRequests", "", {"Retry-After": "120"})
    )
    with pytest.raises(ArmThrottled) as err:
        arm.get_remediation(SCOPE, "vf-task")
    assert err.value.retry_after >= 120 and not sleeps


def test_404_is_not_found(httpserver, arm):
    httpserver.expect_request(REMEDIATION, method="GET").respond_with_response(arm_error(404, "RemediationNotFound"))
    with pytest.raises(NotFoundError):
        arm.get_remediation(SCOPE, "vf-task")


def test_policy_effect_comes_from_the_latest_policy_state_through_the_sdk(httpserver, arm):
    resource = f"{SCOPE}/providers/Microsoft.Storage/storageAccounts/stpaymentsprod01"
    httpserver.expect_request(
        f"{resource}/providers/Microsoft.PolicyInsights/policyStates/latest/queryResults", method="POST"
    ).respond_with_json({"value": [{"policyAssignmentId": ASSIGNMENT, "policyDefinitionAction": "deployifnotexists"}]})
    assert arm.policy_effect(resource, ASSIGNMENT) == "deployifnotexists"
    request = httpserver.log[0][0]
    assert "policyassignmentid eq" in request.args["$filter"].lower()
    assert request.headers["Authorization"] == f"Bearer {DEV_TOKEN}"


def test_policy_states_query_honours_429_too(httpserver, arm, sleeps):
    resource = f"{SCOPE}/providers/Microsoft.Storage/storageAccounts/st1"
    uri = f"{resource}/providers/Microsoft.PolicyInsights/policyStates/latest/queryResults"
    httpserver.expect_ordered_request(uri, method="POST").respond_with_response(
        arm_error(429, "TooManyRequests", "", {"Retry-After": "1"})
    )
    httpserver.expect_ordered_request(uri, method="POST").respond_with_json(
        {"value": [{"policyDefinitionAction": "audit"}]}
    )
    assert arm.policy_effect(resource, ASSIGNMENT, "ref1") == "audit"
    assert arm.stats["throttled"] == 1 and sleeps[0] >= 1


def test_list_deployments_returns_the_failed_deployments_errors(httpserver, arm):
    httpserver.expect_request(f"{REMEDIATION}/listDeployments", method="POST").respond_with_json(
        {"value": [{"remediatedResourceId": "/x", "status": "Failed", "error": {"code": "E", "message": "m"}}]}
    )
    assert arm.remediation_deployments(SCOPE, "vf-task")[0]["error"]["code"] == "E"


def test_resource_tags_of_a_deleted_resource_are_empty(httpserver, arm):
    httpserver.expect_request("/subscriptions/s/resourceGroups/r/providers/A.B/c/d").respond_with_response(
        arm_error(404, "ResourceNotFound")
    )
    assert arm.resource_tags("/subscriptions/s/resourceGroups/r/providers/A.B/c/d") == {}


def test_write_budget_refills_at_its_rate_per_subscription():
    now = [0.0]
    budget = WriteBudget(rate=10, burst=2, clock=lambda: now[0])
    assert budget.take("a") == 0 and budget.take("a") == 0
    assert budget.take("a") == pytest.approx(0.1)  # third write within the same instant waits for a token
    assert budget.take("b") == 0  # another subscription has its own bucket
    now[0] = 10.0
    assert budget.take("a") == 0


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10)
    assert parse_retry_after("soon") is None
