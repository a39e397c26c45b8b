"""The cost-anomaly feedback and listing API: what `/api/anomalies`, the review pages, the approval
workflow and the CLI call. Reads and writes operational state through `episode_state`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from shared.costs import store
from shared.costs.episode_state import EPISODE_PARTITION, EPISODES_TABLE, mirror, save_suppression
from shared.costs.episodes import VERDICTS, apply_feedback
from shared.costs.explain import with_explanations
from shared.errors import BadInputError, NotFoundError
from shared.runtime import Runtime

log = logging.getLogger(__name__)


def record_feedback(
    runtime: Runtime, episode_id: str, verdict: str, by: str, why: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Record `planned|not_anomaly|confirmed` on an episode; planned/not_anomaly silence its series for
    COST_FEEDBACK_SUPPRESS_DAYS. Returns the episode (as_dict) with `suppressed_until`. NotFoundError,
    BadInputError on an unknown episode or a bad verdict."""
    if verdict not in VERDICTS:
        raise BadInputError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    today = (now or datetime.now(UTC)).date()
    with runtime.warehouse.session() as wh:
        episode = store.get_episode(wh, episode_id)
        if episode is None:
            raise NotFoundError(f"no cost anomaly episode {episode_id!r}")
        episode = with_explanations(wh, {episode_id: episode})[episode_id]
        try:
            updated, until = apply_feedback(
                episode, verdict, by, why, today, runtime.settings.cost_feedback_suppress_days
            )
        except ValueError as exc:
            raise BadInputError(str(exc)) from exc
        store.set_verdict(wh, episode_id, verdict, updated.verdict_by, updated.verdict_why, updated.suppressed)
    mirror(runtime, updated)
    if until is not None:
        save_suppression(runtime, updated.series_id, until, verdict, episode_id)
    log.info("cost anomaly feedback", extra={"episode_id": episode_id, "verdict": verdict})
    return {**updated.as_dict(), "suppressed_until": until.isoformat() if until else None}


def list_episodes(runtime: Runtime, status: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
    """Episodes from operational state, newest first; `status` open|closed, `owner` a squad (case-insensitive)."""
    if status not in (None, "", "open", "closed"):
        raise BadInputError(f"status must be open or closed, got {status!r}")
    filters, params = ["PartitionKey eq @pk"], {"pk": EPISODE_PARTITION}
    if status:
        filters.append("Status eq @status")
        params["status"] = status
    if owner:
        filters.append("Owner eq @owner")
        params["owner"] = owner.strip().lower()
    rows = runtime.storage.query(EPISODES_TABLE, " and ".join(filters), **params)
    docs = [json.loads(row["Doc"]) for row in rows]
    return sorted(docs, key=lambda d: (d["start_date"], d["series_id"]), reverse=True)
