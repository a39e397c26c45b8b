"""Feedback on cost anomaly episodes, with history: every verdict is a new COST_FEEDBACK row.

`record_feedback` applies the verdict through the cost capability (`shared.costs.feedback.record_feedback`:
latest verdict on the episode, suppression of the series) and appends the history row. `who` is the
signed-in user (App Service Authentication's `X-MS-CLIENT-PRINCIPAL-NAME`) when there is one.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.errors import BadInputError

if TYPE_CHECKING:
    from shared.adapters.warehouse import WarehouseSession

log = logging.getLogger(__name__)

SOURCES = ("review-page", "api", "cli")
MAX_BY, MAX_WHY = 200, 1000


@dataclass(frozen=True)
class FeedbackEntry:
    episode_id: str
    verdict: str
    by: str
    why: str
    source: str
    authenticated: bool
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "by": self.by,
            "why": self.why,
            "source": self.source,
            "authenticated": self.authenticated,
            "at": self.at.strftime("%Y-%m-%d %H:%M:%S"),
        }


def append(wh: WarehouseSession, entry: FeedbackEntry) -> None:
    wh.execute(
        "INSERT INTO COST_FEEDBACK (FEEDBACK_ID, EPISODE_ID, VERDICT, GIVEN_BY, AUTHENTICATED, REASON, SOURCE, GIVEN_AT) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            uuid.uuid4().hex,
            entry.episode_id,
            entry.verdict,
            entry.by,
            entry.authenticated,
            entry.why,
            entry.source,
            entry.at.astimezone(UTC).replace(tzinfo=None),
        ),
    )


def history(wh: WarehouseSession, episode_id: str) -> list[FeedbackEntry]:
    """Every verdict given on the episode, oldest first."""
    rows = wh.query(
        "SELECT VERDICT, GIVEN_BY, AUTHENTICATED, REASON, SOURCE, GIVEN_AT FROM COST_FEEDBACK "
        "WHERE EPISODE_ID = %s ORDER BY GIVEN_AT, FEEDBACK_ID",
        (episode_id,),
    )
    out = []
    for r in rows:
        at = r["GIVEN_AT"]
        at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        out.append(
            FeedbackEntry(
                episode_id,
                str(r["VERDICT"]),
                str(r["GIVEN_BY"]),
                str(r["REASON"] or ""),
                str(r["SOURCE"]),
                bool(r["AUTHENTICATED"]),
                at.replace(tzinfo=UTC),
            )
        )
    return out


def record_feedback(
    runtime: Any,
    episode_id: str,
    verdict: str,
    by: str,
    why: str,
    *,
    source: str = "api",
    authenticated: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Give a verdict on an episode and keep it in the history. Returns the cost capability's answer (the
    episode as a dict with `suppressed_until`) plus `feedback` (the history, oldest first).

    BadInputError on a bad verdict or over-long text, NotFoundError on an unknown episode."""
    from shared.costs.feedback import record_feedback as apply_verdict

    by, why = " ".join(by.split()), why.strip()
    if len(by) > MAX_BY or len(why) > MAX_WHY:
        raise BadInputError(f"feedback: `by` takes at most {MAX_BY} characters and `why` at most {MAX_WHY}")
    if source not in SOURCES:
        raise BadInputError(f"feedback source must be one of {', '.join(SOURCES)}")
    result = apply_verdict(runtime, episode_id, verdict, by, why, now=now)
    entry = FeedbackEntry(episode_id, verdict, by, why, source, authenticated, now or datetime.now(UTC))
    with runtime.warehouse.session() as wh:
        append(wh, entry)
        entries = history(wh, episode_id)
    log.info(
        "cost anomaly feedback recorded",
        extra={"episode_id": episode_id, "verdict": verdict, "source": source, "authenticated": authenticated},
    )
    return {**result, "feedback": [e.as_dict() for e in entries]}
