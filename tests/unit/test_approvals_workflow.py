"""The approval state machine and the guard rails of cost actions, without any I/O."""

from datetime import UTC, datetime

import pytest

from shared.approvals.actions import ActionTarget, GuardRails, resolve_action, run_action
from shared.approvals.callbacks import callback_problem
from shared.approvals.workflow import AlreadyDecidedError, Approval, decide

VM = "/subscriptions/sub-a/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
POOL = "/subscriptions/sub-a/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1/agentPools/np1"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _approval(**kw):
    base = dict(
        approval_id="ce-1",
        episode_id="ce-1",
        action="stop",
        resource_id=VM,
        owner="squad-a",
        severity="critical",
        impact_usd_per_hour=1250.0,
        expected_usd_per_day=500.0,
        summary="",
        requested_at=NOW.isoformat(),
    )
    return Approval(**{**base, **kw})


class FakeArm:
    def __init__(self, tags=None):
        self.calls = []
        self.tags = tags or {}

    def request(self, method, path, api_version, body=None):
        self.calls.append((method, path))
        if method == "GET":
            return {"tags": self.tags.get(path, {}), "properties": {"enableAutoScaling": True, "minCount": 2}}
        return None


def test_a_pending_approval_is_decided_once_and_a_second_decision_names_the_first():
    approved = decide(_approval(), "approve", "alice", "go", NOW)
    assert approved.status == "approved" and approved.decision.approver == "alice"
    with pytest.raises(AlreadyDecidedError) as err:
        decide(approved, "reject", "bob", "", NOW)
    assert err.value.status == 409 and err.value.earlier["decision"] == "approve"


def test_approval_survives_a_round_trip_through_json_and_never_shows_its_callback():
    a = decide(_approval(callback_url="https://x.logic.azure.com/cb?sig=secret-sig"), "reject", "bob", "no", NOW)
    assert Approval.from_json(a.to_json()) == a
    assert "secret-sig" not in str(a.as_wire()) and a.as_wire()["callbackRegistered"] is True


def test_intents_resolve_to_the_action_of_the_resource_type_and_unknown_ones_are_refused():
    assert resolve_action("stop", VM).name == "deallocate_vm"
    assert resolve_action("scale_down", POOL).name == "scale_aks_nodepool"
    assert resolve_action("apply_budget", VM).name == "apply_budget"
    with pytest.raises(Exception, match="unknown action"):
        resolve_action("delete_everything", VM)
    with pytest.raises(Exception, match="does not apply"):
        resolve_action("scale_down", VM)


def test_dry_run_calls_nothing_and_says_what_it_would_do():
    arm = FakeArm()
    outcome = run_action("stop", ActionTarget(VM), GuardRails("dry-run", (), "valueflow:protected"), lambda: arm)
    assert outcome.state == "dry_run" and "/deallocate" in outcome.detail
    assert arm.calls == []


def test_enforce_reads_tags_first_then_makes_exactly_one_write():
    arm = FakeArm()
    outcome = run_action("stop", ActionTarget(VM), GuardRails("enforce", (), "valueflow:protected"), lambda: arm)
    assert outcome.state == "executed"
    writes = [c for c in arm.calls if c[0] != "GET"]
    assert writes == [("POST", VM + "/deallocate")]


@pytest.mark.parametrize("tag_on", [VM, "/subscriptions/sub-a/resourceGroups/rg"])
def test_a_protected_tag_on_the_resource_or_its_group_refuses_the_action(tag_on):
    arm = FakeArm(tags={tag_on: {"ValueFlow:Protected": "True"}})
    outcome = run_action("stop", ActionTarget(VM), GuardRails("enforce", (), "valueflow:protected"), lambda: arm)
    assert outcome.state == "refused" and "valueflow:protected" in outcome.detail
    assert all(c[0] == "GET" for c in arm.calls)


def test_a_protected_subscription_is_refused_before_any_call_even_in_enforce_mode():
    arm = FakeArm()
    outcome = run_action(
        "stop", ActionTarget(VM), GuardRails("enforce", ("SUB-A",), "valueflow:protected"), lambda: arm
    )
    assert outcome.state == "refused" and arm.calls == []


def test_scaling_a_pool_puts_it_at_its_autoscaler_minimum_with_autoscaling_off():
    class PoolArm(FakeArm):
        def request(self, method, path, api_version, body=None):
            self.calls.append((method, path, body))
            return {"properties": {"enableAutoScaling": True, "minCount": 2, "maxCount": 9, "count": 7}}

    arm = PoolArm()
    outcome = run_action("scale_down", ActionTarget(POOL), GuardRails("enforce", (), "p"), lambda: arm)
    put = [c for c in arm.calls if c[0] == "PUT"]
    assert outcome.state == "executed" and len(put) == 1
    assert put[0][2]["properties"]["count"] == 2 and put[0][2]["properties"]["enableAutoScaling"] is False


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://prod-12.westeurope.logic.azure.com/workflows/x/runs/y?sig=abc", True),
        ("https://logic.azure.com.evil.example/cb", False),
        ("http://prod-12.westeurope.logic.azure.com/cb", False),
        ("https://user:pw@prod-12.westeurope.logic.azure.com/cb", False),
        ("https://169.254.169.254/metadata", False),
        ("http://127.0.0.1:8080/cb", False),  # loopback only when listed verbatim
        ("file:///etc/passwd", False),
    ],
)
def test_callback_urls_are_called_only_on_allowed_https_hosts(url, allowed):
    assert (callback_problem(url, ("*.logic.azure.com",)) is None) is allowed


def test_loopback_callbacks_are_allowed_when_listed_for_local_runs_and_tests():
    assert callback_problem("http://127.0.0.1:8080/cb", ("127.0.0.1",)) is None
