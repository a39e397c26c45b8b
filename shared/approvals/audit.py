"""The audit trail of decisions and cost actions: who decided what, when, and what ARM answered.

One `AuditRecord` per decided approval goes to the `audit` table (operational state, for the
Logic Apps and the CLI) and to the warehouse table APPROVAL_AUDIT (reporting); the squad gets a
Teams message (alert kind `action_audit`) through the alert pipeline. The record id is
deterministic, so a retried worker writes each of them once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from shared.approvals.workflow import ActionOutcome, Approval

TABLE = "audit"


@dataclass(frozen=True)
class AuditRecord:
    audit_id: str
    approval_id: str
    episode_id: str
    resource_id: str
    owner: str
    action: str
    decision: str
    approver: str
    reason: str
    decided_at: str
    executed_at: str
    mode: str
    outcome: str
    detail: str
    arm_status: int | None
    arm_response: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit_record(approval: Approval, outcome: ActionOutcome, now: datetime) -> AuditRecord:
    """The audit record of a decided approval and what its action did (pure)."""
    d = approval.decision
    if d is None:
        raise ValueError(f"approval {approval.approval_id} is not decided")
    return AuditRecord(
        audit_id=f"{approval.approval_id}:{d.decision}",
        approval_id=approval.approval_id,
        episode_id=approval.episode_id,
        resource_id=approval.resource_id,
        owner=approval.owner,
        action=outcome.action,
        decision=d.decision,
        approver=d.approver,
        reason=d.reason,
        decided_at=d.decided_at,
        executed_at=now.isoformat(),
        mode=outcome.mode,
        outcome=outcome.state,
        detail=outcome.detail,
        arm_status=outcome.arm_status,
        arm_response=json.dumps(outcome.arm_response, default=str)[:8000],
    )


def write_audit(store: Any, warehouse: Any, record: AuditRecord) -> bool:
    """Write the record to the `audit` table and APPROVAL_AUDIT; True if the table row is new."""
    fields = {k: v for k, v in record.as_dict().items() if k not in ("audit_id",) and v is not None}
    created = store.insert(TABLE, record.episode_id, record.audit_id, fields)
    with warehouse.session() as wh:
        wh.execute(
            "INSERT INTO APPROVAL_AUDIT (AUDIT_ID, APPROVAL_ID, EPISODE_ID, RESOURCE_ID, OWNER, ACTION, DECISION, "
            "APPROVER, REASON, DECIDED_AT, EXECUTED_AT, MODE, OUTCOME, DETAIL, ARM_STATUS, ARM_RESPONSE) "
            "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s "
            "WHERE NOT EXISTS (SELECT 1 FROM APPROVAL_AUDIT WHERE AUDIT_ID = %s)",
            (
                record.audit_id,
                record.approval_id,
                record.episode_id,
                record.resource_id,
                record.owner,
                record.action,
                record.decision,
                record.approver,
                record.reason,
                _naive(record.decided_at),
                _naive(record.executed_at),
                record.mode,
                record.outcome,
                record.detail,
                record.arm_status,
                record.arm_response,
                record.audit_id,
            ),
        )
    return created


def read_audit(store: Any, episode_id: str) -> list[dict[str, Any]]:
    """Audit rows of one episode from the `audit` table."""
    return list(store.query(TABLE, "PartitionKey eq @pk", pk=episode_id))


def _naive(iso: str) -> str:
    """TIMESTAMP_NTZ wants UTC without an offset."""
    return datetime.fromisoformat(iso).replace(tzinfo=None).isoformat(sep=" ")
