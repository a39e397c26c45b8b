"""Cost episodes in operational state (table `episodes`): the mirror the listing API reads and the
suppressions feedback writes. The warehouse stays the source of truth; this is what HTTP reads fast."""

from __future__ import annotations

import hashlib
import json
from datetime import date

from shared.costs import store
from shared.costs.episodes import CostEpisode
from shared.costs.explain import save_explanations
from shared.costs.ingest import provider_of_series
from shared.runtime import Runtime

EPISODES_TABLE = "episodes"
EPISODE_PARTITION = "cost"
SUPPRESSION_PARTITION = "cost-suppression"


def save_episodes(runtime: Runtime, changed: list[CostEpisode]) -> None:
    """One MERGE for a day's changed episodes, then the operational-state mirror."""
    if not changed:
        return
    with runtime.warehouse.session() as wh:
        store.merge_episodes(wh, changed)
        save_explanations(wh, changed)
    for episode in changed:
        mirror(runtime, episode)


def mirror(runtime: Runtime, episode: CostEpisode) -> None:
    """Write one episode to the `episodes` table (what `list_episodes` reads)."""
    doc = episode.as_dict()
    base_id, currency = store.split_currency(episode.series_id, runtime.settings.cost_threshold_currency)
    doc.setdefault("currency", currency)
    doc.setdefault("provider", provider_of_series(base_id))
    runtime.storage.upsert(
        EPISODES_TABLE,
        EPISODE_PARTITION,
        episode.episode_id,
        {
            "Status": episode.status,
            "Owner": episode.owner,
            "SeriesKind": episode.series_kind,
            "Severity": episode.severity,
            "StartDate": episode.start_date.isoformat(),
            "Doc": json.dumps(doc, default=str),
        },
    )


def series_key(series_id: str) -> str:
    return hashlib.sha256(series_id.encode()).hexdigest()[:40]


def save_suppression(runtime: Runtime, series_id: str, until: date, verdict: str, episode_id: str) -> None:
    """Silence a series' alerts until `until` (inclusive)."""
    runtime.storage.upsert(
        EPISODES_TABLE,
        SUPPRESSION_PARTITION,
        series_key(series_id),
        {"SeriesId": series_id, "Until": until.isoformat(), "Verdict": verdict, "EpisodeId": episode_id},
    )


def load_suppressions(runtime: Runtime) -> dict[str, date]:
    """Series id -> last day its alerts are suppressed (from feedback)."""
    out: dict[str, date] = {}
    for row in runtime.storage.query(EPISODES_TABLE, "PartitionKey eq @pk", pk=SUPPRESSION_PARTITION):
        until = date.fromisoformat(str(row["Until"]))
        series = str(row["SeriesId"])
        out[series] = max(until, out.get(series, until))
    return out
