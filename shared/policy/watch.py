"""Follow-up: watch created remediation tasks to a final state and report the outcome.

`assess` and `outcome_alert_fields` are pure (ARM's remediation document in, a verdict and an
alert out). `watch_remediations` does the I/O: for each open task record, GET the remediation;
when it is final, record it and tell the owner squad — Teams for success and cancellation, an
incident on failure carrying the failed deployments' errors (`listDeployments`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.alerts.delivery import enqueue_alert
from shared.alerts.model import Alert
from shared.errors import NotFoundError, TransientUpstreamError, UpstreamAuthError, ValueFlowError
from shared.policy.remediation import TASK_PARTITION, open_tasks
from shared.policy.worker import REMEDIATIONS_TABLE

log = logging.getLogger(__name__)

FINAL_STATES = {"succeeded": "Succeeded", "complete": "Succeeded", "failed": "Failed", "canceled": "Canceled"}


@dataclass(frozen=True)
class TaskOutcome:
    final: bool
    state: str  # ARM's provisioningState as sent; for final ones Succeeded, Failed or Canceled
    total: int = 0
    succeeded: int = 0
    failed: int = 0


def assess(remediation: dict[str, Any]) -> TaskOutcome:
    """ARM's remediation document -> TaskOutcome (final or not, with the deployment counts)."""
    props = remediation.get("properties") or {}
    raw = str(props.get("provisioningState") or "")
    status = props.get("deploymentStatus") or {}
    counts = (
        int(status.get("totalDeployments") or 0),
        int(status.get("successfulDeployments") or 0),
        int(status.get("failedDeployments") or 0),
    )
    final = FINAL_STATES.get(raw.lower())
    return TaskOutcome(final is not None, final or raw, *counts)


def deployment_errors(deployments: list[dict[str, Any]], limit: int = 10) -> list[tuple[str, str]]:
    """(resource, "code: message") of failed deployments from listDeployments, at most `limit`."""
    out = []
    for d in deployments:
        if str(d.get("status", "")).lower() != "failed":
            continue
        err = d.get("error") or {}
        out.append((str(d.get("remediatedResourceId", "?")), f"{err.get('code', 'unknown')}: {err.get('message', '')}"))
    return out[:limit]


def outcome_alert_fields(
    name: str, task: dict[str, Any], outcome: TaskOutcome, errors: list[tuple[str, str]]
) -> dict[str, Any]:
    """The `remediation_result` Alert for the task `name` (its record `task`) in a final state."""
    assignment = str(task.get("AssignmentId", ""))
    failed = outcome.state == "Failed"
    facts: list[tuple[str, str]] = [
        ("Task", name),
        ("Assignment", assignment),
        ("Scope", str(task.get("Scope", ""))),
        ("State", outcome.state),
        ("Deployments", f"{outcome.succeeded} succeeded, {outcome.failed} failed of {outcome.total}"),
    ]
    if task.get("DefinitionReferenceId"):
        facts.insert(2, ("Definition reference", str(task["DefinitionReferenceId"])))
    facts.extend((f"Failed: {resource}", error) for resource, error in errors)
    return {
        "kind": "remediation_result",
        "severity": "critical" if failed else ("warning" if outcome.state == "Canceled" else "info"),
        "title": f"Remediation {outcome.state.lower()}: {assignment.rsplit('/', 1)[-1]} at {task.get('Scope', '')}",
        "resource_id": str(task.get("Scope", "")),
        "owner": str(task.get("Owner", "")),
        "facts": tuple(facts),
        "links": (),
        "dedupe_key": f"remediation-result:{name}",
        "correlation_id": name,
        "action": "open",
        "incident": failed,
        "summary": "The remediation task failed; the failed deployments are listed."
        if failed
        else f"The remediation task ended {outcome.state}.",
    }


def watch_remediations(store: Any, arm: Any, *, owner_of: Any = None) -> dict[str, str]:
    """Check every open task once. Returns task name -> state seen (final ones are recorded and reported)."""
    seen: dict[str, str] = {}
    for task in open_tasks(store):
        name = str(task["RowKey"])
        scope = str(task.get("Scope", ""))
        try:
            outcome = assess(arm.get_remediation(scope, name))
        except NotFoundError:
            outcome = TaskOutcome(True, "Canceled")  # deleted behind our back: nothing more to watch
        except TransientUpstreamError as exc:
            log.warning("remediation %s not checked this time: %s", name, exc.detail)
            continue
        seen[name] = outcome.state
        if not outcome.final:
            if outcome.state and outcome.state != task.get("State"):
                store.upsert(REMEDIATIONS_TABLE, TASK_PARTITION, name, {**_plain(task), "State": outcome.state})
            continue
        errors: list[tuple[str, str]] = []
        if outcome.state == "Failed":
            try:
                errors = deployment_errors(arm.remediation_deployments(scope, name))
            except ValueFlowError as exc:
                errors = [("(deployments)", f"could not list: {exc.detail}")]
        record = {**_plain(task), "State": outcome.state, "Final": True, "FinishedAt": datetime.now(UTC).isoformat()}
        if owner_of is not None and not record.get("Owner") and record.get("FirstResource"):
            record["Owner"] = owner_of(record["FirstResource"])
        enqueue_alert(store, Alert(**outcome_alert_fields(name, record, outcome, errors)))
        store.upsert(REMEDIATIONS_TABLE, TASK_PARTITION, name, record)
        log.info("remediation task finished", extra={"task": name, "state": outcome.state})
    return seen


def _plain(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey", "_etag", "Timestamp")}


def remediation_cycle(store: Any, settings: Any, arm: Any, *, owner_of: Any = None) -> dict[str, Any]:
    """What the watch timer runs: plan closed windows (create or report tasks), then follow open tasks.

    A missing or refused ARM credential is configuration, not a blip: the run stops with one line (no
    traceback, nothing lost: the pending violations wait for the next run) and reports `skipped`; the
    policy worker raises the one alert a day about it."""
    from shared.policy.remediation import run_plan

    try:
        run = run_plan(store, settings, arm)
        seen = watch_remediations(store, arm, owner_of=owner_of)
    except UpstreamAuthError as err:
        log.error("remediation watch skipped: %s", err.detail, extra={"error_kind": err.kind})
        return {"skipped": err.detail}
    return {
        "planned": run.plan.summary(),
        "created": run.created,
        "errors": run.errors,
        "pending_left": run.pending_left,
        "watched": seen,
    }
