"""What the approval HTTP functions and the approval queue worker do, over storage, warehouse and peers.

- `subscribe()`: the Logic App's HTTP Webhook action registers its callbackUrl for an episode's
  approval (creating the pending approval if the cost job did not already); answers at once.
- `record_decision()`: approve / reject / escalate, exactly once (optimistic concurrency on the
  approval entity), then a message on the `approval-actions` queue: the slow part (ARM, audit,
  alerts, calling the Logic App back) never runs inside the HTTP request.
- `finish()`: the queue worker. Each step is claimed in the idempotency table, so redeliveries
  never run an action twice, never audit twice and never call the Logic App back twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.approvals import notify
from shared.approvals.actions import (
    ActionTarget,
    ArmClient,
    GuardRails,
    action_names,
    known_action,
    resolve_action,
    run_action,
)
from shared.approvals.anomalies import EpisodeView, get_episode
from shared.approvals.audit import audit_record, write_audit
from shared.approvals.callbacks import LogicAppCallback, callback_problem
from shared.approvals.models import ID_PATTERN, ApprovalCreateIn, DecisionIn, UnsubscribeIn
from shared.approvals.workflow import (
    CANCELLED,
    PENDING,
    ActionOutcome,
    AlreadyDecidedError,
    Approval,
    attach_callback,
    callback_body,
    cancel_wait,
    decide,
    with_outcome,
)
from shared.errors import BadInputError, ConflictError, NotFoundError, UpstreamError
from shared.idempotency import Idempotency, Scope

log = logging.getLogger(__name__)

TABLE = "approvals"
PARTITION = "approval"
# one record per approval and step; the lease covers an ARM action with its retries (or a warehouse write)
ACTION_SCOPE = Scope("approval-action", lease=timedelta(minutes=10), spread=1)
AUDIT_SCOPE = Scope("approval-audit", lease=timedelta(minutes=5), spread=1)
CALLBACK_SCOPE = Scope("approval-callback", lease=timedelta(minutes=2), spread=1)
QUEUE = "approval-actions"


def _now() -> datetime:
    return datetime.now(UTC)


# -- the approvals table --


def load(store: Any, approval_id: str) -> tuple[Approval, dict[str, Any]]:
    """The approval and its entity (with `_etag`); NotFoundError for an unknown id."""
    import re

    if not re.match(ID_PATTERN, approval_id or ""):
        raise NotFoundError(f"no approval {approval_id!r} (ids are letters, digits and ._:@-)")
    entity = store.get(TABLE, PARTITION, approval_id)
    if entity is None:
        raise NotFoundError(f"no approval {approval_id}")
    return Approval.from_json(entity["Doc"]), entity


def _fields(approval: Approval) -> dict[str, Any]:
    return {"Doc": approval.to_json(), "Status": approval.status, "EpisodeId": approval.episode_id}


def save(store: Any, approval: Approval, entity: dict[str, Any]) -> None:
    """Replace the approval if nobody changed it since `entity` was read (ConflictError otherwise)."""
    store.replace_if_unchanged(TABLE, {**entity, **_fields(approval)})


def insert_pending(store: Any, approval: Approval) -> bool:
    """Create the approval unless it exists; True if created."""
    return bool(store.insert(TABLE, PARTITION, approval.approval_id, _fields(approval)))


def pending_approval(episode: EpisodeView, action: str, now: datetime) -> Approval:
    """A new pending approval for an episode (approval id = episode id, as the Logic App addresses it)."""
    return Approval(
        approval_id=episode.episode_id,
        episode_id=episode.episode_id,
        action=action,
        resource_id=episode.resource_id,
        owner=episode.owner,
        severity=episode.severity,
        impact_usd_per_hour=episode.impact_usd_per_hour,
        expected_usd_per_day=episode.expected_usd_per_day,
        summary=f"{episode.series_id}: +{episode.impact_usd_per_hour:,.2f} $/h over expected",
        requested_at=now.isoformat(),
    )


# -- HTTP: subscribe, decide, read --


def subscribe(runtime: Any, body: ApprovalCreateIn, now: datetime | None = None) -> dict[str, Any]:
    """Store the Logic App's callback for the episode's approval; the approval as ApprovalOut."""
    now = now or _now()
    problem = callback_problem(body.callbackUrl, runtime.settings.callback_allowed_hosts)
    if problem:
        raise BadInputError(f"callbackUrl refused: {problem}", errors=[{"field": "callbackUrl", "problem": problem}])
    if not known_action(body.action):
        problem = f"unknown action {body.action!r}; expected one of {', '.join(action_names())}"
        raise BadInputError(problem, errors=[{"field": "action", "problem": problem}])
    store = runtime.storage
    for _ in range(5):  # optimistic concurrency: re-read and retry when another request wrote meanwhile
        try:
            approval, entity = load(store, body.episodeId)
        except NotFoundError:
            episode = get_episode(runtime, body.episodeId)
            _check_action_fits(body.action, episode.resource_id)
            fresh = attach_callback(pending_approval(episode, body.action, now), body.callbackUrl, body.runId)
            if insert_pending(store, fresh):
                return fresh.as_wire()
            continue
        if approval.status == PENDING and approval.action != body.action:
            raise ConflictError(
                f"approval {approval.approval_id} is pending for action {approval.action}, not {body.action}",
                errors=[{"field": "action", "problem": f"pending approval is for {approval.action}"}],
            )
        if approval.status not in (PENDING, CANCELLED) and not _same_run(approval, body):
            # decided, and another run already waits for it: a late subscriber must not redirect the callback
            raise AlreadyDecidedError(approval)
        updated = attach_callback(approval, body.callbackUrl, body.runId)
        try:
            save(store, updated, entity)
        except ConflictError:
            continue
        if updated.status != PENDING:
            # decided before this run subscribed: let the worker call it back at once
            store.send(QUEUE, {"approvalId": updated.approval_id})
        return updated.as_wire()
    raise ConflictError(f"approval {body.episodeId} is being changed by other requests; retry")


def _same_run(approval: Approval, body: ApprovalCreateIn) -> bool:
    """May this subscriber (re)attach to a decided approval? Only the run that subscribed before it was
    decided (same run id, or the very same callback when no run id is known), or the first one if none did."""
    if not approval.callback_url:
        return True
    if approval.run_id or body.runId:
        return bool(body.runId) and body.runId == approval.run_id
    return body.callbackUrl == approval.callback_url


def _check_action_fits(action: str, resource_id: str) -> None:
    try:
        chosen = resolve_action(action, resource_id)
        if chosen.name != "escalate" and chosen.name != "apply_budget":
            chosen.validate(ActionTarget(resource_id))
    except BadInputError as err:
        raise BadInputError(err.detail, errors=[{"field": "action", "problem": err.detail}]) from None


def record_decision(runtime: Any, approval_id: str, body: DecisionIn, now: datetime | None = None) -> dict[str, Any]:
    """Decide once and queue the rest; AlreadyDecidedError (409) with the earlier decision after that."""
    now = now or _now()
    store = runtime.storage
    for _ in range(5):
        approval, entity = load(store, approval_id)
        decided = decide(approval, body.decision, body.approver, body.reason, now)
        queued = ActionOutcome(decided.action, "queued", runtime.settings.remediation_mode, "queued for the worker")
        decided = with_outcome(decided, queued)
        try:
            save(store, decided, entity)
        except ConflictError:
            continue  # someone wrote meanwhile: the re-read shows their decision (409) or a new callback
        store.send(QUEUE, {"approvalId": approval_id})
        log.info(
            "approval decided", extra={"approval_id": approval_id, "decision": body.decision, "action": decided.action}
        )
        return decided.as_wire()
    approval, _ = load(store, approval_id)
    if approval.decision is not None:
        raise AlreadyDecidedError(approval)
    raise ConflictError(f"approval {approval_id} is being changed by other requests; retry")


def unsubscribe(runtime: Any, approval_id: str, body: UnsubscribeIn, now: datetime | None = None) -> dict[str, Any]:
    """The Logic App's HTTP Webhook action stopped waiting (run cancelled, timed out, or finished):
    cancel the approval if that run was the one waiting; `unsubscribed` says whether anything changed."""
    now = now or _now()
    store = runtime.storage
    for _ in range(5):
        approval, entity = load(store, approval_id)
        cancelled = cancel_wait(approval, body.runId, now)
        if cancelled is None:
            return {**approval.as_wire(), "unsubscribed": False}
        try:
            save(store, cancelled, entity)
        except ConflictError:
            continue
        log.info("approval wait cancelled", extra={"approval_id": approval_id, "run_id": body.runId})
        return {**cancelled.as_wire(), "unsubscribed": True}
    raise ConflictError(f"approval {approval_id} is being changed by other requests; retry")


def read_approval(runtime: Any, approval_id: str) -> dict[str, Any]:
    approval, _ = load(runtime.storage, approval_id)
    return approval.as_wire()


# -- the queue worker --


def finish(
    runtime: Any,
    approval_id: str,
    *,
    arm_factory: Callable[[], ArmClient],
    callback: LogicAppCallback | None = None,
    correlation_id: str = "",
) -> Approval:
    """Run the decided approval's action (once), audit it (once), call the Logic App back (once per run)."""
    store = runtime.storage
    approval, _ = load(store, approval_id)
    if approval.decision is None:
        log.warning("approval %s is not decided; nothing to finish", approval_id)
        return approval
    outcome = _action_step(runtime, approval, arm_factory)
    approval = _store_outcome(store, approval_id, outcome)
    _audit_step(runtime, approval, outcome, correlation_id)
    if approval.callback_url:
        _callback_step(runtime, approval, callback or LogicAppCallback(runtime.settings.callback_allowed_hosts))
    return approval


def _action_step(runtime: Any, approval: Approval, arm_factory: Callable[[], ArmClient]) -> ActionOutcome:
    assert approval.decision is not None
    decision = approval.decision.decision

    def act() -> ActionOutcome:
        mode = runtime.settings.remediation_mode
        if decision == "approve":
            target = ActionTarget(approval.resource_id, approval.expected_usd_per_day, approval.impact_usd_per_hour)
            return run_action(approval.action, target, GuardRails.from_settings(runtime.settings), arm_factory)
        if decision == "escalate":
            return ActionOutcome(approval.action, "skipped", mode, "escalated: nothing done, handed to a human")
        return ActionOutcome(approval.action, "skipped", mode, "rejected: nothing done")

    done = (
        _idempotency(runtime)
        .once(ACTION_SCOPE, approval.approval_id, act, encode=_outcome_doc, decode=_outcome_from)
        .raise_if_busy(f"the action of approval {approval.approval_id}")
    )
    assert done.result is not None
    return done.result


def _store_outcome(store: Any, approval_id: str, outcome: ActionOutcome) -> Approval:
    for _ in range(5):
        approval, entity = load(store, approval_id)
        updated = with_outcome(approval, outcome)
        try:
            save(store, updated, entity)
            return updated
        except ConflictError:
            continue
    raise ConflictError(f"approval {approval_id} kept changing while its outcome was stored")


def _audit_step(runtime: Any, approval: Approval, outcome: ActionOutcome, correlation_id: str) -> None:
    def audit() -> dict[str, Any]:
        record = audit_record(approval, outcome, _now())
        write_audit(runtime.storage, runtime.warehouse, record)
        notify.enqueue(runtime.storage, notify.audit_alert(approval, outcome, correlation_id))
        if outcome.state == "refused" or approval.status == "escalated":
            why = (
                outcome.detail
                if outcome.state == "refused"
                else (approval.decision.reason if approval.decision else "")
            )
            notify.enqueue(runtime.storage, notify.escalation_alert(approval, why or "escalated", correlation_id))
        return {"auditId": record.audit_id}

    # a holder that crashed mid-audit is picked up after its lease: BUSY retries, never acknowledges
    _idempotency(runtime).once(AUDIT_SCOPE, approval.approval_id, audit).raise_if_busy(
        f"the audit of approval {approval.approval_id}"
    )


def _callback_step(runtime: Any, approval: Approval, callback: LogicAppCallback) -> None:
    run = hashlib.sha256(approval.callback_url.encode()).hexdigest()[:32]

    def call_back() -> dict[str, Any]:
        try:
            status = callback.post(
                approval.callback_url, callback_body(approval), what=f"approval {approval.approval_id}"
            )
        except UpstreamError as err:
            if err.status >= 503:  # transient: the claim is released and the queue retries
                raise
            # 4xx: the run is gone (timed out, cancelled); a retry cannot help
            log.warning("Logic App callback for %s refused: %s", approval.approval_id, err.detail)
            return {"status": err.status, "detail": err.detail}
        return {"status": status}

    _idempotency(runtime).once(CALLBACK_SCOPE, f"{approval.approval_id}:{run}", call_back).raise_if_busy(
        f"the callback of approval {approval.approval_id}"
    )


def _idempotency(runtime: Any) -> Idempotency:
    found = getattr(runtime, "idempotency", None)
    return found if isinstance(found, Idempotency) else Idempotency(runtime.storage)


def _outcome_doc(outcome: ActionOutcome) -> dict[str, Any]:
    return {
        "action": outcome.action,
        "state": outcome.state,
        "mode": outcome.mode,
        "detail": outcome.detail,
        "arm_status": outcome.arm_status,
        "arm_response": outcome.arm_response,
        "calls": list(outcome.calls),
    }


def _outcome_from(doc: dict[str, Any]) -> ActionOutcome:
    return ActionOutcome(**{**doc, "calls": tuple(doc.get("calls") or ())})
