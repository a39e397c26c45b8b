"""Remediation planning: coalescing, narrowest scope, deterministic names, guard rails, the tenant cap."""

from shared.policy.planning import (
    CREATE,
    DENIED,
    DRY_RUN,
    KILLED,
    NOT_ALLOWED,
    OVER_CAP,
    RUNNING,
    Guardrails,
    PendingViolation,
    RemediationKey,
    narrowest_scope,
    plan_remediations,
    task_name,
)

SUB = "/subscriptions/3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"
SUB2 = "/subscriptions/9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
SUB_ASSIGNMENT = f"{SUB}/providers/Microsoft.Authorization/policyAssignments/storage-secure-transfer"
MG_ASSIGNMENT = (
    "/providers/Microsoft.Management/managementGroups/mg-platform/providers/Microsoft.Authorization/"
    "policyAssignments/aks-baseline"
)
ENFORCE = Guardrails(mode="enforce")


def res(sub, rg, name):
    return f"{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"


def violations(assignment, resources, ref="", window=100):
    return [PendingViolation(assignment, ref, r, window) for r in resources]


def test_burst_of_events_for_one_assignment_creates_one_task():
    # GIVEN 5,000 violations (each delivered twice) of one assignment in one window across 40 resource groups
    resources = [res(SUB, f"rg-{i % 40}", f"st{i}") for i in range(5000)]
    pending = violations(SUB_ASSIGNMENT, resources * 2)
    # WHEN planned
    plan = plan_remediations(pending, ENFORCE)
    # THEN one task at the subscription that covers them all
    assert len(plan.tasks) == 1
    task = plan.tasks[0]
    assert task.decision == CREATE and task.key.scope == SUB and len(task.resources) == 5000


def test_resources_in_one_resource_group_get_a_resource_group_task():
    plan = plan_remediations(violations(SUB_ASSIGNMENT, [res(SUB, "rg-a", "x"), res(SUB, "RG-A", "y")]), ENFORCE)
    assert [t.key.scope for t in plan.tasks] == [f"{SUB}/resourceGroups/rg-a"]


def test_resources_in_several_subscriptions_get_the_management_group_of_the_assignment():
    scope = narrowest_scope([res(SUB, "a", "x"), res(SUB2, "b", "y")], MG_ASSIGNMENT)
    assert scope == "/providers/Microsoft.Management/managementGroups/mg-platform"


def test_initiative_members_are_separate_tasks_per_definition_reference():
    pending = violations(MG_ASSIGNMENT, [res(SUB2, "rg", "a")], ref="aksDiagnosticSettings") + violations(
        MG_ASSIGNMENT, [res(SUB2, "rg", "a")], ref="aksAzurePolicyAddon"
    )
    plan = plan_remediations(pending, ENFORCE)
    assert sorted(t.key.definition_reference_id for t in plan.tasks) == ["aksAzurePolicyAddon", "aksDiagnosticSettings"]


def test_task_names_are_deterministic_per_key_and_window():
    key = RemediationKey(SUB_ASSIGNMENT, "", SUB)
    assert task_name(key, 7) == task_name(RemediationKey(SUB_ASSIGNMENT.upper(), "", SUB.upper()), 7)
    assert task_name(key, 7) != task_name(key, 8)
    first = plan_remediations(violations(SUB_ASSIGNMENT, [res(SUB, "a", "x")]), ENFORCE)
    again = plan_remediations(violations(SUB_ASSIGNMENT, [res(SUB, "a", "x")]), ENFORCE)
    assert first.tasks[0].name == again.tasks[0].name and first.tasks[0].name.startswith("vf-")


def test_a_running_task_for_the_key_defers_the_next_one():
    pending = violations(SUB_ASSIGNMENT, [res(SUB, "a", "x"), res(SUB, "b", "y")])
    key_id = RemediationKey(SUB_ASSIGNMENT, "", SUB).id
    plan = plan_remediations(pending, ENFORCE, running_keys=[key_id], running_count=1)
    assert [t.decision for t in plan.tasks] == [RUNNING]
    assert plan.deferred and not plan.to_create


def test_two_windows_of_one_key_create_only_the_oldest_now():
    pending = violations(SUB_ASSIGNMENT, [res(SUB, "a", "x")], window=1) + violations(
        SUB_ASSIGNMENT, [res(SUB, "a", "y")], window=2
    )
    plan = plan_remediations(pending, ENFORCE)
    assert [(t.window, t.decision) for t in plan.tasks] == [(1, CREATE), (2, RUNNING)]


def test_the_tenant_cap_queues_the_rest():
    assignments = [f"{SUB}/providers/Microsoft.Authorization/policyAssignments/a{i}" for i in range(10)]
    pending = [PendingViolation(a, "", res(SUB, "rg", "x"), 1) for a in assignments]
    plan = plan_remediations(pending, Guardrails(mode="enforce", max_concurrent=100), running_count=97)
    assert plan.summary() == {CREATE: 3, OVER_CAP: 7}


def test_dry_run_decides_but_creates_nothing():
    plan = plan_remediations(violations(SUB_ASSIGNMENT, [res(SUB, "a", "x")]), Guardrails())
    assert [t.decision for t in plan.tasks] == [DRY_RUN] and not plan.to_create
    assert plan.settled == list(plan.tasks)


def test_deny_list_wins_over_allow_list_and_kill_switch_wins_over_both():
    pending = violations(SUB_ASSIGNMENT, [res(SUB, "a", "x")])
    denied = Guardrails(mode="enforce", allowed=("*",), denied=("*/policyassignments/storage-*",))
    assert plan_remediations(pending, denied).tasks[0].decision == DENIED
    not_allowed = Guardrails(mode="enforce", allowed=("*/managementGroups/*",))
    assert plan_remediations(pending, not_allowed).tasks[0].decision == NOT_ALLOWED
    killed = Guardrails(mode="enforce", killed=frozenset({SUB_ASSIGNMENT.lower()}))
    task = plan_remediations(pending, killed).tasks[0]
    assert task.decision == KILLED and "kill switch" in task.reason
