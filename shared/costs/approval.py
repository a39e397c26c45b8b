"""Ask the approval Logic App about a critical cost episode (once per episode, kept by the approvals side)."""

from __future__ import annotations

import logging

from shared.costs.episodes import CostEpisode
from shared.errors import ValueFlowError
from shared.runtime import Runtime

log = logging.getLogger(__name__)


def request_approval(runtime: Runtime, episode: CostEpisode) -> bool:
    """Ask the approval Logic App about a critical episode (once per episode). True when it was asked.

    A Logic App outage must not stop the scan: the squad already has the critical alert (and incident),
    so a failure is logged and the approval can still be decided directly at /api/approvals/{id}/decision."""
    from shared.approvals.requests import request_approval as ask_logic_app

    try:
        return ask_logic_app(runtime, episode).state == "requested"
    except ValueFlowError as err:
        log.error("approval request failed: %s", err.detail, extra={"episode_id": episode.episode_id})
        return False
