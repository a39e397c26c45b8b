"""Asking the approval Logic App: the hook the daily cost job calls for a critical episode.

`request_approval(runtime, episode)` creates the pending approval (once per episode) and POSTs the
episode to `APPROVAL_LOGIC_APP_URL` (its HTTP trigger, whose schema is in
infra/logicapp/approval-workflow.json) with the path of the decision endpoint. The Logic App posts
the card to Teams and then subscribes with its callback (`POST /api/approvals`). Without
APPROVAL_LOGIC_APP_URL the approval is still created, and can be decided over HTTP directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from shared.approvals.actions import proposed_intent
from shared.approvals.anomalies import episode_view
from shared.approvals.callbacks import redacted
from shared.approvals.service import insert_pending, pending_approval
from shared.errors import TransientUpstreamError, UpstreamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApprovalRequest:
    approval_id: str
    action: str
    state: str  # requested | already_requested | not_configured | not_critical
    detail: str


def trigger_body(approval: Any) -> dict[str, Any]:
    """The body of the Logic App's `manual` trigger (its schema: episodeId, action, summary, ...)."""
    return {
        "episodeId": approval.episode_id,
        "action": approval.action,
        "summary": approval.summary,
        "owner": approval.owner,
        "severity": approval.severity,
        "impactUsdPerHour": approval.impact_usd_per_hour,
        "resourceId": approval.resource_id,
        "decisionPath": f"/api/approvals/{approval.approval_id}/decision",
    }


def request_approval(runtime: Any, episode: Any, *, session: Any = None, timeout: float = 10.0) -> ApprovalRequest:
    """Create the pending approval for a critical episode and ask the Logic App; once per episode.

    `episode` is a cost episode (dataclass or dict with episode_id, severity, series_id, owner,
    excess_usd_per_hour, expected...). Raises TransientUpstreamError when the Logic App is
    unavailable (the caller's retry asks again: the approval row is kept, the POST is repeated)."""
    view = episode_view(episode)
    if view.severity != "critical":
        return ApprovalRequest(view.episode_id, "", "not_critical", f"severity {view.severity}: no approval needed")
    approval = pending_approval(view, proposed_intent(view.resource_id), datetime.now(UTC))
    created = insert_pending(runtime.storage, approval)
    url = runtime.settings.approval_logic_app_url
    if not url:
        log.warning("APPROVAL_LOGIC_APP_URL is not set: approval %s waits for a direct decision", approval.approval_id)
        return ApprovalRequest(approval.approval_id, approval.action, "not_configured", "APPROVAL_LOGIC_APP_URL empty")
    if not created:
        existing = runtime.storage.get("approvals", "approval", approval.approval_id) or {}
        if existing.get("Status") != "pending" or existing.get("Asked"):
            return ApprovalRequest(approval.approval_id, approval.action, "already_requested", "asked before")
    http = session or requests
    try:
        resp = http.post(url, json=trigger_body(approval), timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise TransientUpstreamError(f"approval Logic App unreachable: {type(exc).__name__}") from None
    if resp.status_code == 429 or resp.status_code >= 500:
        raise TransientUpstreamError(f"approval Logic App {redacted(url)} answered {resp.status_code}")
    if resp.status_code >= 300:
        raise UpstreamError(f"approval Logic App {redacted(url)} answered {resp.status_code}")
    entity = runtime.storage.get("approvals", "approval", approval.approval_id)
    if entity is not None:
        entity["Asked"] = datetime.now(UTC).isoformat()
        try:
            runtime.storage.replace_if_unchanged("approvals", entity)
        except UpstreamError:
            pass
        except Exception:  # a concurrent subscribe wrote first; asking twice is harmless
            log.debug("could not mark approval %s as asked", approval.approval_id)
    return ApprovalRequest(approval.approval_id, approval.action, "requested", f"Logic App answered {resp.status_code}")
