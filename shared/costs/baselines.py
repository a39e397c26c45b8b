"""Reference detectors the scoring engine is benchmarked against (pure numpy; STL from statsmodels).

Every detector takes the dense (series x days) cost matrix and a day index ``t`` and flags increases on
column ``t`` using only columns ``<= t``; series with fewer than ``min_history_days`` days before ``t`` are
not flagged (same warm-up as the engine). Each one is held to the engine's materiality gate: a flag
needs an excess over the detector's own expected cost of at least ``min_impact_usd_per_day`` dollars and
``min_excess_pct`` percent (the engine's defaults), so that no baseline is charged with cent-level noise
the engine would never page anyone about. Episodes are built from the flags the same way for all.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.costs.scoring import nanmedian, nanquantile_sorted, window

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MIN_IMPACT_USD_PER_DAY = 10.0
MIN_EXCESS_PCT = 20.0


def _nanmean(values: FloatArray) -> FloatArray:
    count = np.sum(~np.isnan(values), axis=1)
    total = np.nansum(values, axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _warm(costs: FloatArray, t: int, min_history_days: int, lookback: int) -> BoolArray:
    history = np.sum(~np.isnan(window(costs, t - lookback, t)), axis=1)
    return (history >= min_history_days) & ~np.isnan(costs[:, t])


def material(
    cost: FloatArray,
    expected: FloatArray,
    min_impact_usd_per_day: float = MIN_IMPACT_USD_PER_DAY,
    min_excess_pct: float = MIN_EXCESS_PCT,
) -> BoolArray:
    """The engine's gate: excess over ``expected`` of at least the dollar and the percent thresholds."""
    excess = cost - np.nan_to_num(expected, nan=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(expected > 0, 100.0 * excess / expected, np.where(excess > 0, np.inf, 0.0))
    return (excess >= min_impact_usd_per_day) & (pct >= min_excess_pct)


def naive_rule(
    costs: FloatArray,
    t: int,
    factor: float = 1.5,
    min_history_days: int = 14,
    min_impact_usd_per_day: float = MIN_IMPACT_USD_PER_DAY,
    min_excess_pct: float = MIN_EXCESS_PCT,
) -> BoolArray:
    """Flag ``cost > factor x mean of the trailing 28 days`` (the rule most teams start with)."""
    mean = _nanmean(window(costs, t - 28, t))
    cost = costs[:, t]
    with np.errstate(invalid="ignore"):
        flags = _warm(costs, t, min_history_days, 28) & (cost > factor * mean)
    return flags & material(cost, mean, min_impact_usd_per_day, min_excess_pct)


def kusto_decompose_anomalies(
    costs: FloatArray,
    t: int,
    history_days: int = 56,
    period: int = 7,
    k: float = 1.5,
    min_history_days: int = 14,
    min_impact_usd_per_day: float = MIN_IMPACT_USD_PER_DAY,
    min_excess_pct: float = MIN_EXCESS_PCT,
) -> BoolArray:
    """Re-implementation of KQL ``series_decompose_anomalies(y, k, period, 'avg')`` on the last point.

    The FinOps toolkit default: over the last ``history_days`` days up to ``t``, seasonal = median of the
    points in the same phase (period 7), trend = average of the series, residual = y - seasonal - trend;
    anomaly where the residual leaves the Tukey fence on the 10th-90th percentile range,
    [P10 - k (P90 - P10), P90 + k (P90 - P10)]. Only the upper side is an alert here; expected = the
    baseline (seasonal + trend) of the last point.
    """
    y = window(costs, t - history_days + 1, t + 1)
    n, length = y.shape
    # phase aligned so the scored day (last column) is phase 0
    pad = (-length) % period
    padded = np.concatenate([np.full((n, pad), np.nan), y], axis=1).reshape(n, -1, period)
    seasonal = nanmedian(padded, axis=1)
    trend = _nanmean(y)
    residual = (padded - seasonal[:, None, :]).reshape(n, -1)[:, pad:] - trend[:, None]
    srt = np.sort(residual, axis=1)
    p10 = nanquantile_sorted(srt, 0.10)
    p90 = nanquantile_sorted(srt, 0.90)
    upper = p90 + k * (p90 - p10)
    expected = y[:, -1] - residual[:, -1]
    with np.errstate(invalid="ignore"):
        flags = _warm(costs, t, min_history_days, history_days - 1) & (residual[:, -1] > upper)
    return flags & material(costs[:, t], expected, min_impact_usd_per_day, min_excess_pct)


def stl_robust(
    costs: FloatArray,
    t: int,
    history_days: int = 56,
    threshold: float = 3.5,
    min_history_days: int = 14,
    min_impact_usd_per_day: float = MIN_IMPACT_USD_PER_DAY,
    min_excess_pct: float = MIN_EXCESS_PCT,
) -> BoolArray:
    """Per-series robust STL (period 7) on the last ``history_days`` days; flag the last point when its
    residual is more than ``threshold`` scaled MADs above the median residual, and the excess over the
    fitted trend + season passes the gate. A Python loop: slow."""
    from statsmodels.tsa.seasonal import STL

    y = window(costs, t - history_days + 1, t + 1)
    flags = _warm(costs, t, min_history_days, history_days - 1)
    for i in np.flatnonzero(flags):
        series = y[i][~np.isnan(y[i])]
        if series.size < 15:
            flags[i] = False
            continue
        fit = STL(series, period=7, robust=True).fit()
        resid = fit.resid
        med = np.median(resid)
        mad = np.median(np.abs(resid - med)) * 1.4826
        expected = np.array([fit.trend[-1] + fit.seasonal[-1]])
        flags[i] = bool(resid[-1] - med > threshold * max(mad, 1e-9)) and bool(
            material(series[-1:], expected, min_impact_usd_per_day, min_excess_pct)[0]
        )
    return flags
