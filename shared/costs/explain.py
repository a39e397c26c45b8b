"""Why a cost was flagged: the `explanation` every anomaly episode carries (pure, plain dicts).

The explanation is a JSON-ready dict with camelCase keys, the same in `costs score` output (as columns),
the episode record (`COST_ANOMALIES.EXPLANATION`, the episode mirror's `Doc`), `GET /api/anomalies/{id}`,
Teams cards and ServiceNow incidents:

``reason`` (spike | shift | drift | recurring | new-resource ...), ``expected``, ``lower``, ``upper``,
``actual``, ``excessPerDay``, ``excessPerHour``, ``excessPct``, ``currency`` (only when known),
``contributors`` (``[{name, cost, share}]``: the members/meters behind the increase, ``cost`` their dollar
increase on the day over their own expected cost, ``share`` their part of the summed increases),
``historyDays`` (days of history the decision used), ``seasonality`` ("weekly" | "none"), ``noisePct``
(the series's typical day-to-day noise the band was built from), ``day`` (ISO date of the decision).
:func:`explain_episode` adds the episode's own figures (``episodeId``, ``startDate``, ``peakExcessPerDay``,
``totalExcess``, ``severity``, ``status``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

# engine reasons (ScoreResult.reason) -> the explanation's vocabulary
REASONS = {
    "spike": "spike",
    "level_shift": "shift",
    "drift": "drift",
    "recurring": "recurring",
    "new_recurring": "new-recurring",
    "decrease": "decrease",
    "below_gate": "below-gate",
    "new_resource": "new-resource",
    "short_history": "short-history",
    "none": "none",
    "absent": "absent",
}


def _money(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 2) if math.isfinite(number) else None


def explanation(
    *,
    reason: str,
    actual: float,
    expected: float,
    lower: float,
    upper: float,
    excess_per_day: float,
    excess_pct: float | None = None,
    history_days: int | None = None,
    seasonality: str = "none",
    noise_pct: float | None = None,
    day: str | None = None,
    currency: str | None = None,
    contributors: Iterable[Sequence[Any]] = (),
) -> dict[str, Any]:
    """The explanation dict of one scored day. ``contributors`` are (name, dollar increase, share) triples."""
    doc: dict[str, Any] = {
        "reason": REASONS.get(reason, reason.replace("_", "-")),
        "expected": _money(expected),
        "lower": _money(lower),
        "upper": _money(upper),
        "actual": _money(actual),
        "excessPerDay": _money(excess_per_day),
        "excessPerHour": _money(float(excess_per_day) / 24.0),
    }
    if excess_pct is not None and math.isfinite(float(excess_pct)):
        doc["excessPct"] = round(float(excess_pct), 1)
    if currency:
        doc["currency"] = currency
    doc["contributors"] = [
        {"name": str(c[0]), "cost": _money(c[1]), "share": round(float(c[2]), 4)} for c in contributors
    ]
    if history_days is not None:
        doc["historyDays"] = int(history_days)
    doc["seasonality"] = seasonality
    if noise_pct is not None and math.isfinite(float(noise_pct)):
        doc["noisePct"] = round(float(noise_pct), 1)
    if day:
        doc["day"] = day
    return doc


def explain_scores(
    result: Any, i: int, *, currency: str | None = None, contributors: Iterable[Sequence[Any]] = ()
) -> dict[str, Any]:
    """The explanation of row ``i`` of a :class:`shared.costs.scoring.ScoreResult` (a one-day result)."""
    return explanation(
        reason=str(result.reason[i]),
        actual=result.cost[i],
        expected=result.expected[i],
        lower=result.lower[i],
        upper=result.upper[i],
        excess_per_day=result.excess_usd_per_day[i],
        excess_pct=result.excess_pct[i],
        history_days=int(result.history_days[i]),
        seasonality=str(result.seasonality[i]),
        noise_pct=100.0 * float(result.noise[i]),
        day=str(result.dates[-1]),
        currency=currency,
        contributors=contributors,
    )


def explain_episode(episode: Any) -> dict[str, Any]:
    """The explanation of a :class:`shared.costs.episodes.CostEpisode`: the one stored with its latest flagged
    day (or, for an episode recorded before explanations existed, one rebuilt from its figures), plus the
    episode's own figures."""
    stored = getattr(episode, "explanation", None)
    doc = (
        dict(stored)
        if stored
        else explanation(
            reason=episode.reason,
            actual=episode.cost,
            expected=episode.expected,
            lower=episode.lower,
            upper=episode.upper,
            excess_per_day=episode.excess_usd_per_day,
            excess_pct=episode.excess_pct,
            day=episode.last_flagged_date.isoformat(),
            contributors=episode.contributors,
        )
    )
    if not doc.get("contributors") and episode.contributors:
        doc["contributors"] = explanation(
            reason="none", actual=0, expected=0, lower=0, upper=0, excess_per_day=0, contributors=episode.contributors
        )["contributors"]
    doc.update(
        episodeId=episode.episode_id,
        seriesId=episode.series_id,
        seriesKind=episode.series_kind,
        startDate=episode.start_date.isoformat(),
        severity=episode.severity,
        status=episode.status,
        peakExcessPerDay=_money(episode.peak_excess_usd_per_day),
        totalExcess=_money(episode.total_excess_usd),
    )
    return doc


def explanation_facts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Card/incident facts saying why: reason and band, the data the decision was made on."""
    cur = doc.get("currency") or "USD"
    sym = "$" if cur == "USD" else f"{cur} "

    def m(key: str) -> str:
        value = doc.get(key)
        return f"{sym}{value:,.2f}" if isinstance(value, (int, float)) else "n/a"

    facts = [
        (
            "Why flagged",
            f"{doc.get('reason', 'n/a')}: actual {m('actual')} above the expected band {m('lower')}..{m('upper')} "
            f"(expected {m('expected')})",
        )
    ]
    data = []
    if "historyDays" in doc:
        data.append(f"{doc['historyDays']} days of history")
    data.append(f"seasonality {doc.get('seasonality', 'none')}")
    if "noisePct" in doc:
        data.append(f"typical noise ±{doc['noisePct']:.0f}%")
    facts.append(("Decided on", ", ".join(data)))
    return facts


def to_json(doc: dict[str, Any] | None) -> str | None:
    return None if doc is None else json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)


# -- warehouse: COST_ANOMALIES.EXPLANATION (migration 0040) ----------------------------------------------------


def save_explanations(wh: Any, episodes: Iterable[Any]) -> int:
    """Write each episode's explanation to its COST_ANOMALIES row (after the episode MERGE). Episodes
    without one (loaded from before, closed without a new flagged day) keep what is stored."""
    rows = [(to_json(e.explanation), e.episode_id) for e in episodes if getattr(e, "explanation", None)]
    if rows:
        wh.executemany("UPDATE COST_ANOMALIES SET EXPLANATION = %s WHERE EPISODE_ID = %s", rows)
    return len(rows)


def load_explanation(wh: Any, episode_id: str) -> dict[str, Any] | None:
    """The stored explanation of an episode (None when it has none)."""
    rows = wh.query("SELECT EXPLANATION FROM COST_ANOMALIES WHERE EPISODE_ID = %s", (episode_id,))
    if not rows or not rows[0].get("EXPLANATION"):
        return None
    value = rows[0]["EXPLANATION"]
    return value if isinstance(value, dict) else json.loads(value)


def load_explanations(wh: Any, episode_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Stored explanations of the given episodes, by episode id (those without one are left out)."""
    ids = list(episode_ids)
    out: dict[str, dict[str, Any]] = {}
    for lo in range(0, len(ids), 500):
        batch = ids[lo : lo + 500]
        rows = wh.query(
            f"SELECT EPISODE_ID, EXPLANATION FROM COST_ANOMALIES WHERE EPISODE_ID IN ({', '.join(['%s'] * len(batch))})",
            tuple(batch),
        )
        for row in rows:
            value = row.get("EXPLANATION")
            if value:
                out[row["EPISODE_ID"]] = value if isinstance(value, dict) else json.loads(value)
    return out


def with_explanations(wh: Any, episodes: dict[str, Any]) -> dict[str, Any]:
    """``episodes`` (any key -> CostEpisode) with their stored explanations attached."""
    from dataclasses import replace

    if not episodes:
        return episodes
    stored = load_explanations(wh, [e.episode_id for e in episodes.values()])
    return {k: replace(e, explanation=stored.get(e.episode_id, e.explanation)) for k, e in episodes.items()}
