"""The approval state machine, pure: pending -> approved | rejected | escalated, decided exactly once.

An `Approval` exists once per cost episode (its id is the episode id, which is what the Logic App and
its Teams card address). It is created pending, either by the cost job asking the Logic App
(`requests.request_approval`) or by the Logic App subscribing with its callback (`attach_callback`).
`decide()` moves it out of pending once; a second decision raises `AlreadyDecidedError`, which the
HTTP layer answers with 409 and the earlier decision.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.errors import ConflictError

PENDING = "pending"
# the Logic App run that waited for the decision ended (timed out or cancelled) and unsubscribed;
# a new run's subscription reopens it, a decision before that is refused
CANCELLED = "cancelled"
DECISION_TO_STATUS = {"approve": "approved", "reject": "rejected", "escalate": "escalated"}


@dataclass(frozen=True)
class Decision:
    decision: str  # approve | reject | escalate
    approver: str
    reason: str
    decided_at: str

    def as_wire(self) -> dict[str, str]:
        return {
            "decision": self.decision,
            "approver": self.approver,
            "reason": self.reason,
            "decidedAt": self.decided_at,
        }


@dataclass(frozen=True)
class ActionOutcome:
    """What happened (or would have) when the approved action ran."""

    action: str
    state: str  # queued | dry_run | executed | refused | failed | skipped
    mode: str
    detail: str
    arm_status: int | None = None
    arm_response: dict[str, Any] = field(default_factory=dict)
    calls: tuple[dict[str, Any], ...] = ()

    def as_wire(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "state": self.state,
            "mode": self.mode,
            "detail": self.detail,
            "armStatus": self.arm_status,
        }


@dataclass(frozen=True)
class Approval:
    approval_id: str
    episode_id: str
    action: str
    resource_id: str
    owner: str
    severity: str
    impact_usd_per_hour: float
    expected_usd_per_day: float
    summary: str
    requested_at: str
    status: str = PENDING
    callback_url: str = ""  # a Logic App SAS URL: a secret, never logged nor returned
    run_id: str = ""
    decision: Decision | None = None
    outcome: ActionOutcome | None = None
    cancelled_at: str = ""

    @property
    def subscription_id(self) -> str:
        parts = self.resource_id.split("/")
        return parts[2] if len(parts) > 2 and parts[1].lower() == "subscriptions" else ""

    def as_wire(self) -> dict[str, Any]:
        """The public view (ApprovalOut): never the callback URL."""
        return {
            "approvalId": self.approval_id,
            "episodeId": self.episode_id,
            "status": self.status,
            "action": self.action,
            "resourceId": self.resource_id,
            "owner": self.owner,
            "severity": self.severity,
            "impactUsdPerHour": self.impact_usd_per_hour,
            "requestedAt": self.requested_at,
            "callbackRegistered": bool(self.callback_url),
            "cancelledAt": self.cancelled_at or None,
            "decision": self.decision.as_wire() if self.decision else None,
            "outcome": self.outcome.as_wire() if self.outcome else None,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> Approval:
        doc = json.loads(text)
        decision = Decision(**doc["decision"]) if doc.get("decision") else None
        outcome_doc = doc.get("outcome")
        outcome = None
        if outcome_doc:
            outcome_doc["calls"] = tuple(outcome_doc.get("calls") or ())
            outcome = ActionOutcome(**outcome_doc)
        return cls(**{**doc, "decision": decision, "outcome": outcome})


class AlreadyDecidedError(ConflictError):
    """A second decision for an approval: 409 with the earlier one."""

    title = "Already decided"

    def __init__(self, approval: Approval) -> None:
        assert approval.decision is not None
        d = approval.decision
        super().__init__(
            f"approval {approval.approval_id} was already decided: {d.decision} by {d.approver} at {d.decided_at}"
        )
        self.earlier = d.as_wire()


def decide(approval: Approval, decision: str, approver: str, reason: str, now: datetime) -> Approval:
    """Move a pending approval to approved/rejected/escalated; AlreadyDecidedError when it is not pending."""
    if decision not in DECISION_TO_STATUS:
        raise ValueError(f"unknown decision {decision!r}")
    if approval.status == CANCELLED:
        raise ConflictError(
            f"approval {approval.approval_id} was cancelled at {approval.cancelled_at}: the Logic App run that "
            "waited for it ended; a new run must subscribe before a decision is taken"
        )
    if approval.status != PENDING or approval.decision is not None:
        raise AlreadyDecidedError(approval)
    made = Decision(decision, approver, reason, now.isoformat())
    return replace(approval, status=DECISION_TO_STATUS[decision], decision=made)


def attach_callback(approval: Approval, callback_url: str, run_id: str) -> Approval:
    """Remember which Logic App run waits for the decision (the latest subscriber wins); a cancelled
    approval is pending again."""
    status = PENDING if approval.status == CANCELLED else approval.status
    return replace(approval, callback_url=callback_url, run_id=run_id, status=status, cancelled_at="")


def cancel_wait(approval: Approval, run_id: str, now: datetime) -> Approval | None:
    """The Logic App run `run_id` stopped waiting (its webhook action unsubscribed): a pending approval
    that this run waits for is cancelled and forgets the callback. None when there is nothing to do —
    Logic Apps also unsubscribes after a successful callback, and another run's wait is not this run's
    to cancel."""
    if approval.status != PENDING or not approval.callback_url:
        return None
    if approval.run_id != run_id:
        return None
    return replace(approval, status=CANCELLED, callback_url="", cancelled_at=now.isoformat())


def with_outcome(approval: Approval, outcome: ActionOutcome) -> Approval:
    return replace(approval, outcome=outcome)


def callback_body(approval: Approval) -> dict[str, Any]:
    """What the waiting Logic App run receives: `decision`, `approver`, `detail` are what its workflow reads."""
    d = approval.decision
    outcome = approval.outcome
    detail = outcome.detail if outcome else ""
    return {
        "approvalId": approval.approval_id,
        "episodeId": approval.episode_id,
        "status": approval.status,
        "decision": d.decision if d else "",
        "approver": d.approver if d else "",
        "reason": d.reason if d else "",
        "detail": detail,
        "outcome": outcome.as_wire() if outcome else None,
    }
