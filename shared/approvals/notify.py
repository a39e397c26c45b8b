"""Alerts the approval workflow sends: audit messages to the squad, escalations, Logic App incidents.

Every alert goes through the alert pipeline (`shared.alerts`): built as an `Alert` (validated there)
and put on the `alerts` queue by `enqueue_alert`, so Teams/ServiceNow delivery, routing, retries and
the local outbox are the alert capability's business, not ours.
"""

from __future__ import annotations

import hashlib
from typing import Any

from shared.alerts.model import Alert
from shared.approvals.workflow import ActionOutcome, Approval

ALERTS_QUEUE = "alerts"
CALLER_NAMESPACE = "logicapp:"


def caller_dedupe_key(dedupe_key: str, title: str, resource_id: str) -> str:
    """The dedupe key of a caller's incident, always inside the `logicapp:` namespace.

    `foo` becomes `logicapp:foo` (and `logicapp:foo` stays itself, so the key an answer returned can be
    sent back); empty derives one from title and resource. The app's own keys (`approval-escalation:`,
    `approval-audit:`, `cost-...`, `policy-...`) are outside the namespace, so no caller can address them."""
    key = (dedupe_key or "").strip()
    if not key:
        return CALLER_NAMESPACE + hashlib.sha256(f"{title}|{resource_id}".encode()).hexdigest()[:32]
    return key if key.startswith(CALLER_NAMESPACE) else CALLER_NAMESPACE + key


def enqueue(store: Any, alert: Alert) -> str:
    """Put one alert on the alerts queue through the alert capability; returns the message id."""
    from shared.alerts.delivery import enqueue_alert

    return str(enqueue_alert(store, alert))


def _facts(approval: Approval, outcome: ActionOutcome | None) -> tuple[tuple[str, str], ...]:
    d = approval.decision
    facts = [
        ("Episode", approval.episode_id),
        ("Action", approval.action),
        ("Excess $/h", f"{approval.impact_usd_per_hour:,.2f}"),
    ]
    if d is not None:
        facts += [("Decision", d.decision), ("By", d.approver), ("At", d.decided_at)]
        if d.reason:
            facts.append(("Reason", d.reason[:500]))
    if outcome is not None:
        facts += [("Mode", outcome.mode), ("Result", outcome.state)]
        if outcome.arm_status is not None:
            facts.append(("ARM status", str(outcome.arm_status)))
    return tuple(facts)


def audit_alert(approval: Approval, outcome: ActionOutcome | None, correlation_id: str = "") -> Alert:
    """The Teams message to the squad for one decided approval (kind `action_audit`)."""
    d = approval.decision
    verb = d.decision if d else "decided"
    result = f": {outcome.state}" if outcome else ""
    return Alert(
        kind="action_audit",
        severity="warning" if outcome is not None and outcome.state in ("refused", "failed") else "info",
        title=f"Cost action {approval.action} {verb}{result}",
        resource_id=approval.resource_id or approval.episode_id,
        owner=approval.owner,
        facts=_facts(approval, outcome),
        links=(),
        dedupe_key=f"approval-audit:{approval.approval_id}",
        correlation_id=correlation_id,
        incident=False,
        summary=outcome.detail if outcome else "",
    )


def escalation_alert(approval: Approval, why: str, correlation_id: str = "") -> Alert:
    """A critical alert (with an incident) when a human must take over: refused by a guard rail, or escalated."""
    return Alert(
        kind="approval",
        severity="critical",
        title=f"Cost anomaly needs a human: {approval.action} not done automatically",
        resource_id=approval.resource_id or approval.episode_id,
        owner=approval.owner,
        facts=_facts(approval, approval.outcome),
        links=(),
        dedupe_key=f"approval-escalation:{approval.approval_id}",
        correlation_id=correlation_id,
        incident=True,
        summary=why[:2000],
    )


def incident_alert(
    *,
    title: str,
    severity: str,
    resource_id: str,
    owner: str,
    summary: str,
    dedupe_key: str,
    action: str,
    facts: dict[str, str],
    correlation_id: str = "",
) -> Alert:
    """An alert that must become a ServiceNow incident (POST /api/incidents from a Logic App).

    The caller's `dedupe_key` is namespaced (`caller_dedupe_key`): a caller can update and resolve
    the incidents it opened, never the ones the app opened itself (`approval-escalation:<id>`, ...)."""
    key = caller_dedupe_key(dedupe_key, title, resource_id)
    return Alert(
        kind="approval",
        severity=severity,
        title=title,
        resource_id=resource_id,
        owner=owner,
        facts=tuple(facts.items()),
        links=(),
        dedupe_key=key,
        correlation_id=correlation_id,
        action=action,
        incident=True,
        summary=summary,
    )
