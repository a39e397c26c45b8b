"""Turning pending violations into remediation tasks (the watch timer calls `run_plan`).

Pending violations of closed coalescing windows are planned (pure `plan_remediations`) and the
plan is carried out: in `enforce` mode each task is recorded, then PUT to ARM under its
deterministic name; in `dry-run` it is recorded and reported only. Refused tasks (deny-list,
allow-list, kill switch) are recorded with the reason; deferred ones (a task for the key runs,
the tenant cap) stay pending for the next watch. Kill switches live in the `killswitches` table,
so switching an assignment off takes effect at the next plan, without a redeploy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import TransientUpstreamError, ValueFlowError
from shared.policy.planning import (
    CREATE,
    DRY_RUN,
    Guardrails,
    PendingViolation,
    PlannedTask,
    RemediationPlan,
    plan_remediations,
)
from shared.policy.worker import REMEDIATIONS_TABLE, _hash, pending_rows
from shared.settings import Settings

CREDENTIAL_ERROR_KIND = "arm-credential"  # shared.adapters.arm.ArmCredentialError.kind

log = logging.getLogger(__name__)

KILL_TABLE = "killswitches"
KILL_PARTITION = "assignment"
TASK_PARTITION = "task"
REPORT_PARTITION = "decision"


# -- kill switches --


def set_kill_switch(store: Any, assignment_id: str, *, reason: str, by: str = "") -> None:
    """Stop remediation of one assignment from the next plan on (no redeploy)."""
    store.upsert(
        KILL_TABLE,
        KILL_PARTITION,
        _hash(assignment_id.lower()),
        {"AssignmentId": assignment_id, "Reason": reason, "SetBy": by, "SetAt": datetime.now(UTC).isoformat()},
    )


def clear_kill_switch(store: Any, assignment_id: str) -> None:
    store.delete(KILL_TABLE, KILL_PARTITION, _hash(assignment_id.lower()))


def kill_switches(store: Any) -> list[dict[str, Any]]:
    """Every assignment whose kill switch is on, with reason, who and when."""
    rows = store.query(KILL_TABLE, "PartitionKey eq @pk", pk=KILL_PARTITION)
    return sorted(
        (
            {
                "assignment_id": r["AssignmentId"],
                "reason": r.get("Reason", ""),
                "set_by": r.get("SetBy", ""),
                "set_at": r.get("SetAt", ""),
            }
            for r in rows
        ),
        key=lambda r: r["assignment_id"].lower(),
    )


def guardrails_from(settings: Settings, store: Any) -> Guardrails:
    """The guard rails in force now: settings plus the kill switches read from the table."""
    return Guardrails(
        mode=settings.remediation_mode,
        allowed=settings.remediation_allowed_assignments,
        denied=settings.remediation_denied_assignments,
        killed=frozenset(k["assignment_id"].lower() for k in kill_switches(store)),
        max_concurrent=settings.remediation_max_concurrent_tasks,
    )


# -- running tasks --


def open_tasks(store: Any) -> list[dict[str, Any]]:
    """Task records not yet in a final state (created in enforce mode, being watched)."""
    return list(store.query(REMEDIATIONS_TABLE, "PartitionKey eq @pk and Final eq false", pk=TASK_PARTITION))


@dataclass
class PlanRun:
    """What `run_plan` did: the plan, the tasks created (name -> ARM state), errors by task name."""

    plan: RemediationPlan
    created: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    pending_left: int = 0


def run_plan(store: Any, settings: Settings, arm: Any, *, now: datetime | None = None) -> PlanRun:
    """Plan the pending violations of closed windows and carry the plan out. Returns PlanRun."""
    now = now or datetime.now(UTC)
    current_window = int(now.timestamp()) // settings.remediation_window_seconds
    rows = pending_rows(store)
    ready = [r for r in rows if int(r.get("Window", 0)) < current_window]
    pending = [
        PendingViolation(r["AssignmentId"], r.get("DefinitionReferenceId", ""), r["ResourceId"], int(r["Window"]))
        for r in ready
    ]
    running = open_tasks(store)
    plan = plan_remediations(
        pending,
        guardrails_from(settings, store),
        running_keys=[str(t.get("KeyId", "")) for t in running],
        running_count=len(running),
    )
    by_group: dict[tuple[str, str, int], list[tuple[str, str]]] = {}
    for r in ready:
        group = (r["AssignmentId"].lower(), str(r.get("DefinitionReferenceId", "")).lower(), int(r["Window"]))
        by_group.setdefault(group, []).append((r["PartitionKey"], r["RowKey"]))
    outcome = PlanRun(plan, pending_left=len(rows) - len(ready))
    throttled = False
    for task in plan.tasks:
        group = (task.key.assignment_id.lower(), task.key.definition_reference_id.lower(), task.window)
        if task.decision == CREATE:
            if throttled:
                outcome.pending_left += len(by_group[group])
                continue
            try:
                outcome.created[task.name] = _create(store, settings, arm, task, now)
            except TransientUpstreamError as exc:
                # ARM asks us to slow down: the rest waits for the next watch
                throttled = True
                outcome.errors[task.name] = exc.detail
                outcome.pending_left += len(by_group[group])
                continue
            except ValueFlowError as exc:
                if exc.kind == CREDENTIAL_ERROR_KIND:
                    # no credential: nothing reached ARM and it is not this task's fault; forget the task
                    # record, keep every violation pending, and stop the run (the caller reports it once)
                    store.delete(REMEDIATIONS_TABLE, TASK_PARTITION, task.name)
                    raise
                outcome.errors[task.name] = exc.detail
                _record_decision(store, task, now, error=exc.detail)
                log.error("remediation task %s refused by ARM: %s", task.name, exc.detail)
        elif task in plan.deferred:
            outcome.pending_left += len(by_group[group])
            continue
        else:
            _record_decision(store, task, now)
            log.info(
                "remediation %s: %s",
                task.decision,
                task.name,
                extra={"assignment": task.key.assignment_id, "scope": task.key.scope, "reason": task.reason},
            )
        for partition, row in by_group[group]:
            store.delete(REMEDIATIONS_TABLE, partition, row)
    return outcome


def _create(store: Any, settings: Settings, arm: Any, task: PlannedTask, now: datetime) -> str:
    # the record first: a crash after the PUT re-plans the same name, and the watch finds the task
    store.upsert(
        REMEDIATIONS_TABLE,
        TASK_PARTITION,
        task.name,
        {
            **_task_fields(task, now),
            "State": "Creating",
            "Final": False,
        },
    )
    doc = arm.put_remediation(
        task.key.scope,
        task.name,
        task.key.assignment_id,
        task.key.definition_reference_id,
        resource_count=settings.remediation_resource_count,
        parallel_deployments=settings.remediation_parallel_deployments,
        failure_threshold=settings.remediation_failure_threshold,
    )
    state = str((doc.get("properties") or {}).get("provisioningState") or "Accepted")
    store.upsert(
        REMEDIATIONS_TABLE, TASK_PARTITION, task.name, {**_task_fields(task, now), "State": state, "Final": False}
    )
    log.info("remediation task created", extra={"task": task.name, "scope": task.key.scope, "state": state})
    return state


def _task_fields(task: PlannedTask, now: datetime) -> dict[str, Any]:
    return {
        "KeyId": task.key.id,
        "AssignmentId": task.key.assignment_id,
        "DefinitionReferenceId": task.key.definition_reference_id,
        "Scope": task.key.scope,
        "Window": task.window,
        "ResourceCount": len(task.resources),
        "FirstResource": task.resources[0] if task.resources else "",
        "PlannedAt": now.isoformat(),
    }


def _record_decision(store: Any, task: PlannedTask, now: datetime, *, error: str = "") -> None:
    store.upsert(
        REMEDIATIONS_TABLE,
        REPORT_PARTITION,
        task.name,
        {
            **_task_fields(task, now),
            "Decision": "error" if error else task.decision,
            "Reason": error or task.reason,
            "Resources": "\n".join(task.resources)[:30000],
        },
    )


def decisions(store: Any) -> list[dict[str, Any]]:
    """Recorded dry-run and refused decisions (what would have been remediated, and why not)."""
    return list(store.query(REMEDIATIONS_TABLE, "PartitionKey eq @pk", pk=REPORT_PARTITION))


def describe_task(task: PlannedTask) -> str:
    """One line for people: decision, scope, assignment, how many resources."""
    ref = f" [{task.key.definition_reference_id}]" if task.key.definition_reference_id else ""
    verb = {CREATE: "create", DRY_RUN: "would remediate"}.get(task.decision, task.decision)
    why = f" ({task.reason})" if task.reason and task.decision not in (CREATE, DRY_RUN) else ""
    return (
        f"{verb}: {task.key.assignment_id.rsplit('/', 1)[-1]}{ref} at {task.key.scope} "
        f"-> {len(task.resources)} resource(s), task {task.name}{why}"
    )
