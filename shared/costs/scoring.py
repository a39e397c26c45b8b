"""Daily cost-anomaly scoring: one vectorised pass over a dense (series x days) cost matrix.

Pure: numpy in, numpy out; no I/O. The model, per series and scored day ``t`` (history = days before ``t``):

* day-of-week profile: median over the last ``season_weeks`` weeks of (cost / that week's median);
* level: median of the last ``level_days`` de-seasonalised costs; when the most recent days all sit above
  the band of that median (a level shift up), the level is taken from those days instead, so a shift
  alerts on its first day and is the new normal the next day;
* noise: robust scale (MAD and an upper quantile, whichever is larger) of the week-local relative residuals,
  with relative and absolute floors so flat series do not alert on cents;
* recurring charges: the excess seen on the same day of month in the previous months is expected again;
* drift: the weekly median has grown by ``drift_min_growth_pct`` over ``drift_weeks`` weeks with the growth
  spread over several weeks (a step is a level shift, not a drift); reported on the first day it holds.

Only increases alert, and only past the dollar and percent gates of :class:`ScoringConfig`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

STATUS_SCORED = "scored"
STATUS_WARMING_UP = "warming_up"
STATUS_ABSENT = "absent"

REASON_NONE = "none"
REASON_SPIKE = "spike"
REASON_LEVEL_SHIFT = "level_shift"
REASON_DRIFT = "drift"
REASON_RECURRING = "recurring"
REASON_DECREASE = "decrease"
REASON_BELOW_GATE = "below_gate"
REASON_NEW_RESOURCE = "new_resource"
REASON_SHORT_HISTORY = "short_history"

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class ScoringConfig:
    """Tunables of the engine; the gates come from the app settings."""

    min_impact_usd_per_day: float = 10.0
    min_excess_pct: float = 20.0
    critical_usd_per_hour: float = 1000.0
    z_threshold: float = 4.0
    min_history_days: int = 14
    season_weeks: int = 6
    level_days: int = 7
    relative_noise_floor: float = 0.04
    absolute_noise_floor_usd: float = 0.5
    noise_quantile: float = 0.85
    long_level_days: int = 28
    recurring_months: int = 3
    recurring_tolerance: float = 0.25
    drift_weeks: int = 4
    drift_min_growth_pct: float = 30.0
    drift_max_week_share: float = 0.75
    drift_quiet_days: int = 14


@dataclass(frozen=True)
class ScoreResult:
    """Scores per series (and per scored day for a backtest: arrays of shape (n_series, n_days))."""

    dates: npt.NDArray[np.datetime64]
    cost: FloatArray
    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    excess_usd_per_day: FloatArray
    excess_usd_per_hour: FloatArray
    excess_pct: FloatArray
    anomaly: BoolArray
    direction: npt.NDArray[np.str_]
    severity: npt.NDArray[np.str_]
    status: npt.NDArray[np.str_]
    reason: npt.NDArray[np.str_]

    def to_frame(self, series_ids: Any = None) -> Any:
        """Long pandas DataFrame, one row per series and scored day (series absent that day included)."""
        import pandas as pd

        columns = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dates"}
        shape = self.cost.shape
        n_series = shape[0]
        ids = np.arange(n_series) if series_ids is None else np.asarray(series_ids)
        if len(shape) == 1:
            data = {"series_id": ids, "date": np.repeat(self.dates[-1:], n_series)}
            data.update(columns)
        else:
            data = {"series_id": np.repeat(ids, shape[1]), "date": np.tile(self.dates, n_series)}
            data.update({k: v.reshape(-1) for k, v in columns.items()})
        return pd.DataFrame(data)


def nanmedian(values: FloatArray, axis: int = -1) -> FloatArray:
    """Median ignoring NaN along ``axis`` (all-NaN gives NaN); a sort, much faster than ``np.nanmedian``."""
    return nanquantile_sorted(np.sort(values, axis=axis), 0.5, axis=axis)


def nanmedian_count(values: FloatArray) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """(median ignoring NaN, number of non-NaN values) along the last axis."""
    srt = np.sort(values, axis=-1)
    count = values.shape[-1] - np.count_nonzero(np.isnan(srt), axis=-1)
    return _quantile_of_sorted(srt, count, 0.5), count


def nanquantile_sorted(sorted_values: FloatArray, q: float, axis: int = -1) -> FloatArray:
    """Quantile (linear interpolation) of values already sorted along ``axis`` with NaN last."""
    arr = np.moveaxis(sorted_values, axis, -1)
    count = arr.shape[-1] - np.count_nonzero(np.isnan(arr), axis=-1)
    return _quantile_of_sorted(arr, count, q)


def _quantile_of_sorted(arr: FloatArray, count: npt.NDArray[np.intp], q: float) -> FloatArray:
    pos = (np.maximum(count, 1) - 1) * q
    lo = np.floor(pos).astype(np.intp)
    both = np.take_along_axis(arr, np.stack([lo, np.minimum(lo + 1, arr.shape[-1] - 1)], axis=-1), axis=-1)
    frac = pos - lo
    out = both[..., 0] + np.where(frac > 0, (both[..., 1] - both[..., 0]) * frac, 0.0)
    return np.where(count > 0, out, np.nan)


def window(costs: FloatArray, start: int, stop: int) -> FloatArray:
    """Columns [start, stop) of ``costs``, NaN-padded where the range leaves the matrix."""
    n, t = costs.shape
    if start >= 0 and stop <= t:
        return costs[:, start:stop]
    out = np.full((n, stop - start), np.nan)
    a, b = max(start, 0), min(stop, t)
    if b > a:
        out[:, a - start : b - start] = costs[:, a:b]
    return out


def _as_dates(dates: Any, n_days: int) -> npt.NDArray[np.datetime64]:
    days = np.asarray(dates).astype("datetime64[D]")
    if days.shape != (n_days,):
        raise ValueError(f"dates has shape {days.shape}, expected ({n_days},)")
    if n_days > 1 and np.any(np.diff(days).astype(np.int64) != 1):
        raise ValueError("dates must be consecutive days")
    return days


def _same_day_previous_months(day: np.datetime64, months: int) -> list[int]:
    """Offsets (days back) of the same day of month in each of the previous ``months`` months."""
    current = day.astype(dt.date)
    offsets = []
    for m in range(1, months + 1):
        year, month = divmod(current.year * 12 + current.month - 1 - m, 12)
        month += 1
        next_first = dt.date(year + month // 12, month % 12 + 1, 1)
        last_dom = (next_first - dt.timedelta(days=1)).day
        previous = dt.date(year, month, min(current.day, last_dom))
        offsets.append((current - previous).days)
    return offsets


def _robust_scale(residuals: FloatArray, q: float) -> FloatArray:
    """Per-row sigma from |residuals|: max of MAD-based and upper-quantile-based estimates."""
    srt = np.sort(np.abs(residuals), axis=-1)
    mad = nanquantile_sorted(srt, 0.5) * _MAD_TO_SIGMA
    # |N(0,1)| quantile q -> sigma; tolerates (1-q) of history being anomalies but sees heavy tails
    z_q = float(np.sqrt(2.0) * _erfinv(q))
    upper = nanquantile_sorted(srt, q) / z_q
    return np.fmax(mad, upper)


def _erfinv(y: float) -> float:
    # Newton on erf (math.erf) - avoids scipy for one constant
    import math

    x = 0.0
    for _ in range(60):
        x -= (math.erf(x) - y) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def _deseasonalise(values: FloatArray, profile_cols: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(profile_cols > 0.05, values / profile_cols, np.nan)


def _weekly_drift(
    weekly: FloatArray, level_scale: FloatArray, cfg: ScoringConfig
) -> tuple[BoolArray, FloatArray, FloatArray, FloatArray]:
    """Gradual growth across ``weekly`` medians ((n, k, drift_weeks + 1): k cut-offs, oldest week first).

    True where the last week's median is ``drift_min_growth_pct`` and ``min_impact_usd_per_day`` (times
    ``level_scale``, the day's profile) above the first week's, and no single week carries more than
    ``drift_max_week_share`` of the (log) growth. Levels only, so the flag does not flicker with daily
    noise. Returns (flag, first-week level, last-week level, log growth), each (n, k).
    """
    base, now = weekly[..., 0], weekly[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_growth = np.log(now / base)
        steps = np.log(weekly[..., 1:] / weekly[..., :-1])
        share = np.max(steps, axis=-1) / log_growth
    flag = (
        (base > 0)
        & np.all(np.isfinite(weekly), axis=-1)
        & (log_growth >= np.log1p(cfg.drift_min_growth_pct / 100.0))
        & ((now - base) * level_scale[:, None] >= cfg.min_impact_usd_per_day)
        & (share <= cfg.drift_max_week_share)
    )
    return flag, base, now, log_growth


def score_day(costs: FloatArray, dates: Any, t: int, config: ScoringConfig | None = None) -> ScoreResult:
    """Score column ``t`` of ``costs`` for every series, using only columns ``<= t``.

    ``costs`` is (n_series, n_days) float64, NaN where a series did not exist; ``dates`` the matching
    consecutive days. Returns a :class:`ScoreResult` of shape (n_series,).
    """
    cfg = config or ScoringConfig()
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 2:
        raise ValueError("costs must be a 2-D (series x days) matrix")
    n, n_days = costs.shape
    days = _as_dates(dates, n_days)
    if not 0 <= t < n_days:
        raise ValueError(f"day index {t} outside 0..{n_days - 1}")

    cost = costs[:, t].copy()
    season_len = 7 * cfg.season_weeks
    span = season_len + 7
    # columns are whole weeks ending the day before t: column j has the weekday of t when j % 7 == 0
    raw = window(costs, t - span, t)
    phase = np.arange(span) % 7

    # day-of-week profile: median over weeks of cost / that week's median
    weeks = raw[:, -season_len:].reshape(n, cfg.season_weeks, 7)
    week_median, week_present = nanmedian_count(weeks)
    week_median = np.where(week_present >= 5, week_median, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(week_median[..., None] > 0, weeks / week_median[..., None], np.nan)
    # zero days (outages) do not make a weekday cheap unless that weekday is zero in most weeks
    zero_weeks = np.sum(ratio == 0, axis=1)
    used_weeks = np.sum(ratio > 0, axis=1)
    used_profile = nanmedian(np.where(ratio > 0, ratio, np.nan), axis=1)
    profile = np.where(zero_weeks > used_weeks, 0.0, used_profile)
    profile = np.where(zero_weeks + used_weeks >= 2, profile, 1.0)
    p_today = profile[:, 0]
    deseason = _deseasonalise(raw, profile[:, phase])

    # one-step-ahead errors of the level model (median of the 7 previous days) calibrate the noise
    rolling, rolling_count = nanmedian_count(np.lib.stride_tricks.sliding_window_view(deseason, 7, axis=1))
    rolling = np.where(rolling_count >= 3, rolling, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.where(rolling[:, :-1] > 0, deseason[:, 7:] / rolling[:, :-1] - 1.0, np.nan)
    sigma_rel = np.fmax(np.nan_to_num(_robust_scale(errors, cfg.noise_quantile), nan=0.0), cfg.relative_noise_floor)
    base_level = rolling[:, -1]

    # a level shift up: the trailing run of days above the band of the 7-day median sets the level
    recent = deseason[:, -cfg.level_days :]
    base_band = cfg.z_threshold * (sigma_rel * base_level + cfg.absolute_noise_floor_usd)
    above = recent > (base_level + base_band)[:, None]
    trailing_up = np.sum(np.cumprod(above[:, ::-1], axis=1), axis=1)
    run_mask = np.arange(cfg.level_days)[None, :] >= (cfg.level_days - trailing_up)[:, None]
    shifted = trailing_up >= 1
    level = np.where(shifted, nanmedian(np.where(run_mask, recent, np.nan)), base_level)

    # intermittent usage (often zero on working days): expect the usual size of a day with usage
    history = deseason[:, -season_len:]
    working = ~np.isnan(history)
    zero_share = np.sum(history == 0, axis=1) / np.maximum(np.sum(working, axis=1), 1)
    intermittent = zero_share >= 0.3
    if intermittent.any():
        # no weekday pattern to speak of: the profile of a mostly-zero series is noise
        profile[intermittent] = 1.0
        p_today = profile[:, 0]
        raw_history = raw[intermittent, -season_len:]
        used = np.where(raw_history > 0, raw_history, np.nan)
        used_level = nanmedian(used)
        with np.errstate(divide="ignore", invalid="ignore"):
            used_sigma = _robust_scale(used / used_level[:, None] - 1.0, cfg.noise_quantile)
        level[intermittent] = used_level
        sigma_rel[intermittent] = np.fmax(np.nan_to_num(used_sigma, nan=0.0), cfg.relative_noise_floor)
        shifted[intermittent] = False
    long_level = nanmedian(deseason[:, -cfg.long_level_days :])

    expected = np.nan_to_num(level * p_today, nan=0.0)

    # recurring charge: the excess seen on this day of month before is expected again
    recurring = np.full(n, np.inf)
    seen_months = np.zeros(n, dtype=np.int64)
    for back in _same_day_previous_months(days[t], cfg.recurring_months):
        idx = t - back
        if idx < 0:
            continue
        around = window(costs, idx - 7, idx + 8)
        around = _deseasonalise(around, profile[:, np.arange(idx - 7 - t, idx + 8 - t) % 7])
        around[:, 7] = np.nan
        prev_excess = costs[:, idx] - nanmedian(around) * profile[:, (idx - t) % 7]
        ok = np.isfinite(prev_excess)
        recurring = np.where(ok, np.fmin(recurring, prev_excess), recurring)
        seen_months += ok
    recurring = np.where((seen_months > 0) & np.isfinite(recurring), np.maximum(recurring, 0.0), 0.0)
    expected = expected + recurring

    sigma = np.fmax(sigma_rel * (expected - recurring), cfg.absolute_noise_floor_usd)
    sigma = sigma + cfg.recurring_tolerance * recurring / cfg.z_threshold
    band = cfg.z_threshold * sigma
    lower = np.maximum(expected - band, 0.0)
    upper = expected + band
    # an increase back to the level of the last weeks (after an outage, say) is a return to normal
    long_expected = np.nan_to_num(long_level * p_today, nan=0.0)
    long_upper = (
        long_expected + recurring + cfg.z_threshold * np.fmax(sigma_rel * long_expected, cfg.absolute_noise_floor_usd)
    )
    long_upper = np.where(intermittent, 0.0, long_upper)

    with np.errstate(divide="ignore", invalid="ignore"):
        score = (cost - expected) / sigma
    excess = cost - expected

    # drift: gradual growth over weeks, reported on the first day it holds; growth that came mostly in
    # one day's jump was a spike or level shift, alerted (or gated) on that day
    drift_span = 7 * (cfg.drift_weeks + 1)
    scale = np.where(p_today > 0, p_today, 1.0)
    # weekly medians for today's cut-off and the previous ones, read off the 7-day rolling medians:
    # rolling[:, k] is the median of deseason[:, k : k + 7]
    quiet = min(cfg.drift_quiet_days, span - drift_span)
    week_starts = (span - drift_span - np.arange(quiet + 1))[:, None] + 7 * np.arange(cfg.drift_weeks + 1)
    weekly = np.where(rolling_count[:, week_starts] >= 4, rolling[:, week_starts], np.nan)
    drift_flags, drift_bases, drift_levels, growths = _weekly_drift(weekly, scale, cfg)
    drift_base, drift_level, log_growth = drift_bases[:, 0], drift_levels[:, 0], growths[:, 0]
    # reported once: on the first day it holds after ``drift_quiet_days`` without
    drift_now = drift_flags[:, 0] & ~np.any(drift_flags[:, 1:], axis=1)
    # step test: median of 3 days against the median of the 3 days before, anywhere in the drift window
    triples = nanmedian(np.lib.stride_tricks.sliding_window_view(deseason[:, -drift_span:], 3, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.log(triples[:, 3:] / triples[:, :-3])
    largest_step = np.max(np.where(np.isfinite(steps), steps, 0.0), axis=1, initial=0.0)
    jumped = largest_step > cfg.drift_max_week_share * log_growth
    drift_expected = np.nan_to_num(drift_base * scale, nan=0.0) + recurring
    drift_excess = np.nan_to_num((drift_level - drift_base) * scale, nan=0.0)
    drift_pct = np.nan_to_num(100.0 * np.expm1(log_growth), nan=0.0)
    is_drift = drift_now & ~jumped & ~intermittent

    history_days = np.sum(~np.isnan(window(costs, t - season_len, t)), axis=1)
    present = ~np.isnan(cost)
    scored = present & (history_days >= cfg.min_history_days)

    is_up = scored & (cost > upper) & (cost > long_upper)
    is_down = scored & (cost < lower)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess_pct = np.where(expected > 0, 100.0 * excess / expected, np.where(excess > 0, np.inf, 0.0))
    gated = (excess >= cfg.min_impact_usd_per_day) & (excess_pct >= cfg.min_excess_pct)
    spike = is_up & gated
    drift = scored & is_drift & ~spike
    anomaly = spike | drift

    # drift rows report the baseline they drifted from
    expected = np.where(drift, drift_expected, expected)
    upper = np.where(drift, drift_expected * (1.0 + cfg.drift_min_growth_pct / 100.0), upper)
    lower = np.where(drift, np.minimum(lower, drift_expected), lower)
    excess = np.where(drift, drift_excess, excess)
    excess_pct = np.where(drift, drift_pct, excess_pct)
    score = np.where(drift, drift_excess / sigma, score)

    recurring_today = scored & (recurring > 0) & (cost > expected - recurring + band) & ~is_up
    reason = np.full(n, REASON_NONE, dtype="<U16")
    reason[scored & shifted & ~is_up & ~is_down] = REASON_LEVEL_SHIFT
    reason[recurring_today] = REASON_RECURRING
    reason[is_down] = REASON_DECREASE
    reason[is_up & ~gated] = REASON_BELOW_GATE
    reason[spike] = REASON_SPIKE
    reason[spike & above[:, -1]] = REASON_LEVEL_SHIFT
    reason[drift] = REASON_DRIFT
    first_day = np.argmax(~np.isnan(costs[:, : t + 1]), axis=1)
    warming = present & ~scored
    reason[warming] = np.where(first_day[warming] > 0, REASON_NEW_RESOURCE, REASON_SHORT_HISTORY)

    status = np.full(n, STATUS_ABSENT, dtype="<U10")
    status[scored] = STATUS_SCORED
    status[warming] = STATUS_WARMING_UP

    direction = np.full(n, "none", dtype="<U8")
    direction[is_up | drift] = "increase"
    direction[is_down] = "decrease"

    excess_hour = excess / 24.0
    severity = np.full(n, "none", dtype="<U8")
    severity[anomaly] = "warning"
    severity[anomaly & (excess_hour > cfg.critical_usd_per_hour)] = "critical"

    def unscored(values: FloatArray) -> FloatArray:
        return np.where(scored, values, np.nan)

    return ScoreResult(
        dates=days[t : t + 1],
        cost=cost,
        expected=unscored(expected),
        lower=unscored(lower),
        upper=unscored(upper),
        score=unscored(score),
        excess_usd_per_day=unscored(excess),
        excess_usd_per_hour=unscored(excess_hour),
        excess_pct=unscored(excess_pct),
        anomaly=anomaly,
        direction=direction,
        severity=severity,
        status=status,
        reason=reason,
    )


def score_day_chunked(
    costs: FloatArray,
    dates: Any,
    t: int,
    config: ScoringConfig | None = None,
    chunk_rows: int = 5000,
    workers: int | None = None,
) -> ScoreResult:
    """:func:`score_day` over blocks of rows on a thread pool: same result, cache-sized arrays, and numpy
    releases the GIL in its sorts and ufuncs, so the blocks run on every core."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    costs = np.asarray(costs, dtype=np.float64)
    n = costs.shape[0]
    if n <= chunk_rows:
        return score_day(costs, dates, t, config)
    blocks = [costs[i : i + chunk_rows] for i in range(0, n, chunk_rows)]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        parts = list(pool.map(lambda block: score_day(block, dates, t, config), blocks))
    merged = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ScoreResult) if f.name != "dates"
    }
    return ScoreResult(dates=parts[0].dates, **merged)


def score_last_day(costs: FloatArray, dates: Any, config: ScoringConfig | None = None) -> ScoreResult:
    """The daily job: score the last column of ``costs`` for every series against its own history."""
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 2:
        raise ValueError("costs must be a 2-D (series x days) matrix")
    return score_day(costs, dates, costs.shape[1] - 1, config)


def score_backtest(costs: FloatArray, dates: Any, days: int, config: ScoringConfig | None = None) -> ScoreResult:
    """Replay the daily job for each of the last ``days`` columns, each with only the data up to it.

    Returns a :class:`ScoreResult` whose arrays are (n_series, days) and whose ``dates`` are the replayed days.
    """
    costs = np.asarray(costs, dtype=np.float64)
    n_days = costs.shape[1]
    days = max(1, min(days, n_days))
    per_day = [score_day(costs, dates, t, config) for t in range(n_days - days, n_days)]
    stacked = {
        f.name: np.stack([getattr(r, f.name) for r in per_day], axis=1)
        for f in fields(ScoreResult)
        if f.name != "dates"
    }
    return ScoreResult(dates=np.concatenate([r.dates for r in per_day]), **stacked)


@dataclass(frozen=True)
class Contributor:
    """One member's share of an aggregate's increase on the scored day."""

    member_id: Any
    cost: float
    expected: float
    increase_usd: float
    share: float
    status: str


def top_contributors(
    member_costs: FloatArray,
    member_ids: Any,
    dates: Any,
    limit: int = 5,
    config: ScoringConfig | None = None,
) -> list[Contributor]:
    """Members of an aggregate with the largest dollar increase over their own expected cost, last day.

    ``member_costs`` is (n_members, n_days) as for :func:`score_last_day`. A member without a usable
    history (new resource) is expected at 0, so all of its cost is increase. ``share`` is the member's
    part of the summed positive increases.
    """
    result = score_last_day(member_costs, dates, config)
    cost = np.nan_to_num(result.cost, nan=0.0)
    expected = np.where(result.status == STATUS_SCORED, np.nan_to_num(result.expected), 0.0)
    increase = cost - expected
    positive = np.maximum(increase, 0.0)
    total = float(positive.sum())
    ids = np.asarray(member_ids)
    order = np.argsort(-increase, kind="stable")[:limit]
    return [
        Contributor(
            member_id=ids[i].item() if hasattr(ids[i], "item") else ids[i],
            cost=float(cost[i]),
            expected=float(expected[i]),
            increase_usd=float(increase[i]),
            share=float(positive[i] / total) if total > 0 else 0.0,
            status=str(result.status[i]),
        )
        for i in order
        if increase[i] > 0
    ]


def aggregate_series(costs: FloatArray, group_keys: Any) -> tuple[npt.NDArray[Any], FloatArray]:
    """Sum member series into one series per group key (owner squad, subscription, service...).

    Returns (group keys sorted, (n_groups, n_days) sums). A group-day where no member existed is NaN,
    so aggregates are scored by the same engine with the same warm-up rules.
    """
    costs = np.asarray(costs, dtype=np.float64)
    keys, inverse = np.unique(np.asarray(group_keys), return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    sorted_costs = costs[order]
    sums = np.add.reduceat(np.nan_to_num(sorted_costs, nan=0.0), starts, axis=0)
    present = np.add.reduceat((~np.isnan(sorted_costs)).astype(np.int32), starts, axis=0)
    return keys, np.where(present > 0, sums, np.nan)
