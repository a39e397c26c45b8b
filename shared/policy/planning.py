"""Remediation planning: coalesced violations in, a `RemediationPlan` out. Pure: no I/O, no clock.

A burst of violations for one assignment becomes one task per (assignment, definition reference,
scope) per coalescing window, at the narrowest scope that covers the resources of that window.
Task names hash the key and the window, so re-planning the same pending violations after a
crash names the same task (ARM's PUT is then an idempotent update, not a second task).
Guard rails decide what may run: mode, deny/allow patterns, kill switches, tasks already running
for the key, and the tenant's cap on concurrent remediation tasks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

# Why a task is not created now; "create" and "dry-run" are the two outcomes that are not a refusal.
CREATE = "create"
DRY_RUN = "dry-run"
DENIED = "denied"
NOT_ALLOWED = "not-allowed"
KILLED = "kill-switch"
RUNNING = "running"
OVER_CAP = "over-cap"

_ASSIGNMENT_MARK = "/providers/microsoft.authorization/policyassignments/"


@dataclass(frozen=True)
class PendingViolation:
    """A NonCompliant resource waiting for a remediation task of its assignment (from the worker)."""

    assignment_id: str
    definition_reference_id: str
    resource_id: str
    window: int  # coalescing window number: received-at epoch seconds // window length


@dataclass(frozen=True)
class RemediationKey:
    assignment_id: str
    definition_reference_id: str
    scope: str

    @property
    def id(self) -> str:
        """Stable, case-insensitive text of the key (what running tasks are matched on)."""
        return "|".join(p.lower() for p in (self.assignment_id, self.definition_reference_id, self.scope))


@dataclass(frozen=True)
class PlannedTask:
    key: RemediationKey
    window: int
    name: str
    resources: tuple[str, ...]
    decision: str  # CREATE, DRY_RUN or one of the refusals
    reason: str = ""

    @property
    def will_run(self) -> bool:
        return self.decision == CREATE


@dataclass(frozen=True)
class Guardrails:
    """What may be remediated. Patterns are fnmatch patterns on the assignment id, case-insensitive."""

    mode: str = "dry-run"
    allowed: tuple[str, ...] = ("*",)
    denied: tuple[str, ...] = ()
    killed: frozenset[str] = frozenset()  # lower-case assignment ids with their kill switch on
    max_concurrent: int = 100

    def refusal(self, assignment_id: str) -> tuple[str, str] | None:
        """(decision, reason) when a guard rail refuses the assignment, else None."""
        lowered = assignment_id.lower()
        if lowered in self.killed:
            return KILLED, "the assignment's kill switch is on"
        hit = next((p for p in self.denied if fnmatchcase(lowered, p.lower())), None)
        if hit:
            return DENIED, f"denied by REMEDIATION_DENIED_ASSIGNMENTS pattern {hit!r}"
        if not any(fnmatchcase(lowered, p.lower()) for p in self.allowed):
            return NOT_ALLOWED, "not matched by REMEDIATION_ALLOWED_ASSIGNMENTS"
        return None


@dataclass(frozen=True)
class RemediationPlan:
    mode: str
    tasks: tuple[PlannedTask, ...] = field(default_factory=tuple)

    def with_decision(self, *decisions: str) -> list[PlannedTask]:
        return [t for t in self.tasks if t.decision in decisions]

    @property
    def to_create(self) -> list[PlannedTask]:
        return self.with_decision(CREATE)

    @property
    def settled(self) -> list[PlannedTask]:
        """Tasks whose violations are done with: created, reported in dry-run, or refused for good."""
        return self.with_decision(CREATE, DRY_RUN, DENIED, NOT_ALLOWED, KILLED)

    @property
    def deferred(self) -> list[PlannedTask]:
        """Tasks to plan again at the next watch: a task for the key runs, or the tenant cap is reached."""
        return self.with_decision(RUNNING, OVER_CAP)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks:
            out[t.decision] = out.get(t.decision, 0) + 1
        return out


def assignment_scope(assignment_id: str) -> str:
    """The scope an assignment is assigned at: everything before `/providers/Microsoft.Authorization/...`."""
    idx = assignment_id.lower().find(_ASSIGNMENT_MARK)
    return assignment_id[:idx] if idx > 0 else ""


def resource_group_of(resource_id: str) -> str:
    """`/subscriptions/s/resourceGroups/rg` of a resource id, or `/subscriptions/s` for subscription-level ones."""
    parts = resource_id.split("/")
    if len(parts) >= 5 and parts[3].lower() == "resourcegroups":
        return "/".join(parts[:5])
    return "/".join(parts[:3])


def narrowest_scope(resource_ids: Iterable[str], assignment_id: str) -> str:
    """The narrowest remediation scope covering every resource: a resource group, a subscription, or
    (resources in several subscriptions) the assignment's own scope. Never narrower than a resource
    group: one task per resource group remediates them all in one go."""
    groups: dict[str, str] = {}
    for r in sorted(resource_ids, key=str.lower):  # the first spelling wins: same input, same scope text
        groups.setdefault(resource_group_of(r).lower(), resource_group_of(r))
    if not groups:
        raise ValueError("no resources to cover")
    if len(groups) == 1:
        scope = next(iter(groups.values()))
    else:
        subs: dict[str, str] = {}
        for g in groups.values():
            subs.setdefault("/".join(g.split("/")[:3]).lower(), "/".join(g.split("/")[:3]))
        scope = next(iter(subs.values())) if len(subs) == 1 else assignment_scope(assignment_id)
    # never wider than where the assignment applies, nor outside it
    own = assignment_scope(assignment_id)
    if own and not scope.lower().startswith(own.lower()) and "/managementgroups/" not in own.lower():
        return own
    return scope


def task_name(key: RemediationKey, window: int) -> str:
    """Deterministic ARM name: `vf-` + 32 hex of sha256(key, window). ARM names allow this charset."""
    digest = hashlib.sha256(f"{key.id}|{window}".encode()).hexdigest()
    return f"vf-{digest[:32]}"


def plan_remediations(
    pending: Iterable[PendingViolation],
    guardrails: Guardrails,
    *,
    running_keys: Iterable[str] = (),
    running_count: int = 0,
) -> RemediationPlan:
    """Coalesce pending violations into tasks and decide each one.

    In: pending violations (any order, duplicates allowed), the guard rails, the key ids of
    tasks running now and how many tasks run in the tenant. Out: one PlannedTask per (assignment,
    definition reference, scope, window), sorted oldest window first, each with its decision.
    """
    groups: dict[tuple[str, str, int], dict[str, str]] = {}
    originals: dict[tuple[str, str, int], tuple[str, str]] = {}
    for v in pending:
        gk = (v.assignment_id.lower(), v.definition_reference_id.lower(), v.window)
        groups.setdefault(gk, {})[v.resource_id.lower()] = v.resource_id
        originals.setdefault(gk, (v.assignment_id, v.definition_reference_id))
    running = {k.lower() for k in running_keys}
    slots = max(0, guardrails.max_concurrent - running_count)
    planned: list[PlannedTask] = []
    claimed: set[str] = set()
    for gk in sorted(groups, key=lambda g: (g[2], g[0], g[1])):
        assignment_id, reference = originals[gk]
        resources = tuple(sorted(groups[gk].values(), key=str.lower))
        key = RemediationKey(assignment_id, reference, narrowest_scope(resources, assignment_id))
        name = task_name(key, gk[2])
        refusal = guardrails.refusal(assignment_id)
        if refusal:
            decision, reason = refusal
        elif key.id in running or key.id in claimed:
            # one task per key at a time; a later window waits for the running one
            decision, reason = RUNNING, "a remediation task for this key is running"
        elif guardrails.mode != "enforce":
            decision, reason = DRY_RUN, "REMEDIATION_MODE=dry-run"
            claimed.add(key.id)
        elif slots <= 0:
            decision, reason = OVER_CAP, f"{guardrails.max_concurrent} remediation tasks already run in the tenant"
        else:
            decision, reason = CREATE, ""
            slots -= 1
            claimed.add(key.id)
        planned.append(PlannedTask(key, gk[2], name, resources, decision, reason))
    return RemediationPlan(guardrails.mode, tuple(planned))
