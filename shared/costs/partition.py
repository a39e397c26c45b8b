"""Score one slice of a day: the resource series of one partition, or the aggregate totals.

For each day: read the series from the warehouse, score them per currency (`score_day`), advance their
episodes, raise the alerts of the events (`alerting`), then save the changed episodes (`episode_state`).
Alerts go before the MERGE: a crash between them replays the same events, whose alerts were already sent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from shared.costs import store
from shared.costs.alerting import alert_events
from shared.costs.currency import by_currency, currency_config, currency_rates
from shared.costs.episode_state import load_suppressions, save_episodes
from shared.costs.episodes import CostEpisode, EpisodeEvent, SeriesDay, advance
from shared.costs.explain import explain_scores, with_explanations
from shared.costs.ingest import series_bucket
from shared.costs.scoring import ScoringConfig, score_day, top_contributors
from shared.runtime import Runtime

log = logging.getLogger(__name__)

HISTORY_DAYS = 104  # 6 weeks of season + 3 months back for recurring charges + a week of margin
TOP_CONTRIBUTORS = 3


@dataclass
class ScanReport:
    """What one run of the daily job did."""

    dates_scored: list[str] = field(default_factory=list)
    dates_already_done: list[str] = field(default_factory=list)
    late: str = ""
    partitions: int = 1
    series_scored: int = 0
    anomalies: int = 0
    events: dict[str, int] = field(default_factory=dict)
    alerts_sent: int = 0
    alerts_muted: int = 0
    unscored_currencies: dict[str, int] = field(default_factory=dict)  # currency -> series without a rate

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def add(self, other: ScanReport) -> None:
        self.series_scored += other.series_scored
        self.anomalies += other.anomalies
        self.alerts_sent += other.alerts_sent
        self.alerts_muted += other.alerts_muted
        for k, v in other.events.items():
            self.events[k] = self.events.get(k, 0) + v
        for k, v in other.unscored_currencies.items():
            self.unscored_currencies[k] = self.unscored_currencies.get(k, 0) + v


def scoring_config(runtime: Runtime) -> ScoringConfig:
    s = runtime.settings
    return ScoringConfig(
        min_impact_usd_per_day=s.cost_min_impact_usd_per_day, critical_usd_per_hour=s.cost_critical_usd_per_hour
    )


def score_aggregates(runtime: Runtime, dates: Iterable[date]) -> ScanReport:
    """Score the squad, subscription and service totals of each date, after all its resources were scored.

    Kind by kind, so that each sees the episodes saved before it (one cause, one alert)."""
    report = ScanReport()
    for d in dates:
        for kind in store.AGGREGATE_KINDS:
            scored, changed = _score_kind(runtime, kind, d, 0, 1)
            report.add(scored)
            save_episodes(runtime, changed)
    return report


def score_partition(runtime: Runtime, dates: Iterable[date], part: int, parts: int) -> ScanReport:
    """Score the resource series of partition `part` of `parts` for each date, in order."""
    report = ScanReport(partitions=parts)
    for d in dates:
        scored, changed = _score_kind(runtime, "resource", d, part, parts)
        save_episodes(runtime, changed)
        report.add(scored)
    return report


def _score_kind(runtime: Runtime, kind: str, day: date, part: int, parts: int) -> tuple[ScanReport, list[CostEpisode]]:
    """Score one series kind on one day, raise its alerts; returns (report, episodes changed, to be merged)."""
    report = ScanReport()
    config = scoring_config(runtime)
    start = store.window_start(day, HISTORY_DAYS)
    with runtime.warehouse.session() as wh:
        frame = store.daily_series(wh, kind, start, day, part=part, parts=parts)
        attributes = store.resource_attributes(wh, start, day, part=part, parts=parts) if kind == "resource" else {}
        open_now = with_explanations(wh, store.open_episodes(wh, kind, part=part, parts=parts))
    # a series is per currency: each currency is scored on its own, with the thresholds in that currency
    base_currency = runtime.settings.cost_threshold_currency
    rates = currency_rates(runtime.settings)
    index: dict[str, tuple[Any, int]] = {}
    flagged: list[str] = []
    flagged_by_currency: dict[str, list[str]] = {}
    for currency, rows in by_currency(frame):
        rate = rates.get(currency)
        if rate is None:
            report.unscored_currencies[currency] = int(rows["SERIES_ID"].nunique())
            log.warning("cost series in %s not scored: no rate to %s in COST_CURRENCY_RATES", currency, base_currency)
            continue
        ids, dates, costs = densify(rows, start, day)
        if not len(ids):
            continue
        report.series_scored += len(ids)
        result = score_day(costs, dates, len(dates) - 1, currency_config(config, rate))
        for i, base_id in enumerate(ids):
            index[store.currency_series_id(str(base_id), currency, base_currency)] = (result, i)
        for hit in np.flatnonzero(result.anomaly):
            flagged.append(store.currency_series_id(str(ids[hit]), currency, base_currency))
            flagged_by_currency.setdefault(currency, []).append(str(ids[hit]))
    report.anomalies = len(flagged)
    contributors: dict[str, tuple[tuple[str, float, float], ...]] = {}
    for currency, base_ids in flagged_by_currency.items():
        found = _contributors(runtime, kind, base_ids, start, day, currency_config(config, rates[currency]), currency)
        contributors.update({store.currency_series_id(k, currency, base_currency): v for k, v in found.items()})

    touched = set(flagged) | set(open_now)
    suppressions = load_suppressions(runtime) if touched else {}
    events: list[EpisodeEvent] = []
    changed: list[CostEpisode] = []
    for series_id in sorted(touched):
        result, i = index.get(series_id, (None, -1))
        base_id, _currency = store.split_currency(series_id, base_currency)
        attrs = attributes.get(base_id, {})
        owner = attrs.get("owner", "") if kind == "resource" else (base_id if kind == "owner" else "")
        if result is None:
            series_day = _absent_day(series_id, kind, day, owner)
        else:
            series_day = SeriesDay(
                series_id=series_id,
                series_kind=kind,
                series_bucket=series_bucket(base_id),  # the partition of the resource, whatever its currency
                day=day,
                status=str(result.status[i]),
                anomaly=bool(result.anomaly[i]),
                severity=str(result.severity[i]),
                reason=str(result.reason[i]),
                cost=_num(result.cost[i]),
                expected=_num(result.expected[i]),
                lower=_num(result.lower[i]),
                upper=_num(result.upper[i]),
                excess_usd_per_day=_num(result.excess_usd_per_day[i]),
                excess_usd_per_hour=_num(result.excess_usd_per_hour[i]),
                excess_pct=_num(result.excess_pct[i]),
                owner=owner,
                subscription_id=attrs.get("subscription_id", "") if kind == "resource" else "",
                contributors=contributors.get(series_id, ()),
                explanation=explain_scores(result, i, contributors=contributors.get(series_id, ()))
                if result.anomaly[i]
                else None,
            )
        episode, event = advance(open_now.get(series_id), series_day, suppressions.get(series_id))
        if episode is not None and episode != open_now.get(series_id):
            changed.append(episode)
        if event is not None:
            events.append(event)

    # alerts first (each once), then the caller's MERGE: a crash between them replays the same events, already sent
    counts = alert_events(runtime, kind, start, day, events)
    report.alerts_sent += counts.sent
    report.alerts_muted += counts.muted
    for action, n in counts.events.items():
        report.events[action] = report.events.get(action, 0) + n
    return report, changed


def _absent_day(series_id: str, kind: str, day: date, owner: str) -> SeriesDay:
    base_id = series_id.rsplit(" [", 1)[0] if series_id.endswith("]") else series_id
    return SeriesDay(series_id, kind, series_bucket(base_id), day, "absent", False, "none", "absent",
                     0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, owner)  # fmt: skip


def _contributors(
    runtime: Runtime,
    kind: str,
    flagged: list[str],
    start: date,
    day: date,
    config: ScoringConfig,
    currency: str | None = None,
) -> dict[str, tuple[tuple[str, float, float], ...]]:
    with runtime.warehouse.session() as wh:
        members = store.member_series(wh, kind, flagged, start, day, currency=currency)
    out: dict[str, tuple[tuple[str, float, float], ...]] = {}
    for series_id, rows in members.groupby("SERIES_ID"):
        member_rows = rows[["MEMBER_ID", "USAGE_DATE", "COST"]].rename(columns={"MEMBER_ID": "SERIES_ID"})
        ids, dates, costs = densify(member_rows, start, day)
        if not len(ids):
            continue
        top = top_contributors(costs, ids, dates, limit=TOP_CONTRIBUTORS, config=config)
        out[str(series_id)] = tuple((str(c.member_id), round(c.increase_usd, 2), round(c.share, 4)) for c in top)
    return out


def densify(
    frame: pd.DataFrame, start: date, end: date
) -> tuple[npt.NDArray[Any], npt.NDArray[np.datetime64], npt.NDArray[np.float64]]:
    """(series ids, days start..end, costs (n_series, n_days)) from long SERIES_ID/USAGE_DATE/COST rows.

    NaN before a series' first row and after its last (it did not exist); 0 on missing days in between."""
    n_days = (end - start).days + 1
    dates = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    if frame.empty:
        return np.asarray([], dtype=object), dates, np.zeros((0, n_days))
    series = frame["SERIES_ID"]
    if isinstance(series.dtype, pd.CategoricalDtype):
        # columnar fetch: one string per series, an integer code per row (no string per row)
        series = series.cat.remove_unused_categories()
        names = series.cat.categories.astype(str).to_numpy(dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        ids, inverse = names[order], rank[series.cat.codes.to_numpy()]
    else:
        ids, inverse = np.unique(series.astype(str).to_numpy(), return_inverse=True)
    day_index = (pd.to_datetime(frame["USAGE_DATE"]).to_numpy().astype("datetime64[D]") - dates[0]).astype(np.int64)
    costs = np.full((len(ids), n_days), np.nan)
    costs[inverse, day_index] = frame["COST"].astype(float).to_numpy()
    present = ~np.isnan(costs)
    inside = np.maximum.accumulate(present, axis=1) & np.maximum.accumulate(present[:, ::-1], axis=1)[:, ::-1]
    costs[inside & ~present] = 0.0
    return ids.astype(object), dates, costs


def _num(value: Any) -> float:
    number = float(value)
    return 0.0 if math.isnan(number) else number
