"""Daily cost-anomaly scoring: one vectorised pass over a dense (series x days) cost matrix.

Pure: numpy in, numpy out; no I/O. Costs are modelled on the log scale (cloud cost noise is multiplicative:
a 20 %-noise series moves +50 % far more often than -50 %). Per series and scored day ``t`` (history = the
days before ``t``; zero days are treated apart, never as "cheap days"):

* weekly profile: median over the last ``season_weeks`` weeks of each weekday's log deviation from its
  centred 7-day median, kept only where it stands out from the noise (shrunk to 0 otherwise); a weekday
  that is mostly zero (dev environments off at the weekend) is expected at zero;
* noise: robust, heavy-tail aware scale of the de-seasonalised residuals over ``noise_days`` days (the larger
  of the MAD and an upper-quantile estimate), per weekday with shrinkage towards the series's scale, and
  towards a prior scale when the history is short;
* level: median of the last ``level_days`` de-seasonalised days; a trailing run of ``shift_confirm_days`` or
  more days all above (or below) the band of that median is a new level (a one-day spike or charge does not
  move it; a shift alerts on its first days and is the new normal once confirmed);
* charges are not noise: a high residual whose day of month was high a month before as well is left out of
  the noise and of the tail evidence below;
* lone days: a day above the band whose day before was inside it must clear a wider band - by how far out
  the series's own worst days lie (the mean of its ``tail_days`` largest weekly worst residuals over its
  upper-quartile scale), at most ``single_day_factor`` times the band and at most ``single_day_cap`` above it
  on the log scale; a persisting increase is judged as anywhere else; and a lone day that a lone day of the
  series's own last ``exceedance_days`` already reached ``exceedance_fraction`` of (in noise units) is ordinary
  for it: it alerts only if the next day confirms it (a first-ever excursion alerts at once);
* second day: two days in a row past ``confirm_z`` noise units over the level are a new level, alerted on
  the second day even where neither cleared the one-day band (not when the first stands more than
  ``z_threshold`` units over the second: that is a spike's or a charge's recovery); three days in a row each past ``run_floor_z``
  and on average past ``run_mean_z`` units, on the third; a run's third day is judged too, and a day this
  confirms is measured over the level before the run (not over the level the post-event guard moved up to);
* zero inflation: a series with zero on at least ``intermittent_zero_share`` of its days is intermittent: it
  is judged on the size of its days with usage, with no weekly profile;
* recurring charges: the excess seen on this day of month in each of the previous ``recurring_months``
  months (a zero day there says nothing; a charge day stands above its neighbours once de-seasonalised) is
  expected again;
* on a series younger than a month, a month-start charge or a lone high day (the day before inside the
  band) is taken for a new monthly charge (reason ``new_recurring``, not alerted): from the next month on it is
  an expected recurring charge, and an increase that persists alerts on its second day; so is a lone
  month-start day where the previous months' first days had no usage (absent or zero: a charge could not
  show there);
* guards: an increase back to the level of the last 4 weeks (after an outage or a dip) or to what the same
  weekday cost last week (a weekly pattern that changed) is a return to normal, not an anomaly;
* drift: compounding growth on the log scale - the trailing weekly median grew by a set percentage over a span
  of days (``drift_spans``: +30 % in 10 days, +45 % in 21), in each third of the span and with no
  ``drift_step_days`` stretch holding more than ``drift_max_step_share`` of it (a step is a level shift, not a
  drift), by ``drift_z`` noise units; reported on the first day it holds after ``drift_quiet_days`` without,
  each of those days judged as it was on that day (its own week's noise, the day itself above where the
  growth started).

The stages are functions named after them (``_day``, ``_zero_inflation``, ``_level`` and
``_post_event_guard``, ``_intermittent``, ``_band``, ``_recurring``, ``_drift``, ``_two_days_up``,
``_ordinary_excursion`` and ``_decide``, ``_result``), called top-down by ``_score_prepared``.

Only increases alert, and only past the dollar and percent gates of :class:`ScoringConfig`. A backtest
(:func:`score_days`) computes the rolling medians once for the whole matrix and reuses them for every
replayed day; the result is identical to scoring each day alone (:func:`score_day`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Generator, Iterator, Sequence
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
REASON_NEW_RECURRING = "new_recurring"
REASON_DECREASE = "decrease"
REASON_BELOW_GATE = "below_gate"
REASON_NEW_RESOURCE = "new_resource"
REASON_SHORT_HISTORY = "short_history"

SEASONALITY_WEEKLY = "weekly"
SEASONALITY_NONE = "none"

# the label columns' vocabularies (``labels=False`` returns codes into these)
REASONS = (
    REASON_NONE, REASON_SPIKE, REASON_LEVEL_SHIFT, REASON_DRIFT, REASON_RECURRING, REASON_NEW_RECURRING,
    REASON_DECREASE, REASON_BELOW_GATE, REASON_NEW_RESOURCE, REASON_SHORT_HISTORY,
)  # fmt: skip
STATUSES = (STATUS_ABSENT, STATUS_SCORED, STATUS_WARMING_UP)
DIRECTIONS = ("none", "increase", "decrease")
SEVERITIES = ("none", "warning", "critical")
SEASONALITIES = (SEASONALITY_NONE, SEASONALITY_WEEKLY)
LABELS = {
    "direction": DIRECTIONS,
    "severity": SEVERITIES,
    "status": STATUSES,
    "reason": REASONS,
    "seasonality": SEASONALITIES,
}

_MAD_TO_SIGMA = 1.4826
_Z_QUARTILE = 1.1503  # the 75th percentile of |N(0, 1)|


@dataclass(frozen=True)
class ScoringConfig:
    """Tunables of the engine; the gates come from the app settings. Noise figures are on the log scale
    (0.05 ~ 5 % day-to-day)."""

    min_impact_usd_per_day: float = 10.0
    min_excess_pct: float = 20.0
    critical_usd_per_hour: float = 1000.0
    z_threshold: float = 4.0
    min_history_days: int = 14
    season_weeks: int = 5
    noise_days: int = 56
    level_days: int = 7
    shift_confirm_days: int = 2
    post_event_guard: bool = True
    long_level_days: int = 28
    noise_floor: float = 0.03
    noise_prior: float = 0.08
    noise_prior_days: float = 4.0
    weekday_prior_days: float = 48.0
    tail_quantile: float = 0.9
    max_tail_ratio: float = 2.0
    tail_exponent: float = 1.0
    recent_noise_days: int = 14
    recent_noise_prior_days: float = 14.0
    prediction_inflation: float = 1.15
    small_sample_factor: float = 3.0
    profile_min_effect: float = 0.1
    intermittent_zero_share: float = 0.5
    recurring_months: int = 2
    recurring_tolerance: float = 0.3
    # (span in days, growth over it in %): fast compounding growth, or slower growth held longer
    drift_spans: tuple[tuple[int, float], ...] = ((10, 30.0), (21, 45.0))
    drift_z: float = 4.0
    drift_min_part_share: float = 0.12
    # no ``drift_step_days`` stretch of the span may hold more than this share of its growth (a step)
    drift_step_days: int = 3
    drift_max_step_share: float = 0.55
    # each of the quiet days is judged as it was on that day: against its own week's noise, and with the day
    # itself well above where the growth started (today's noise re-judging the past silenced drifts)
    drift_quiet_days: int = 14
    # charges: a residual past ``charge_z`` upper-quartile sigmas on a day of month that was past it a month
    # before as well is a monthly charge, left out of the noise and of the tail evidence;
    # 0 turns it off
    charge_z: float = 2.5
    # heavy tails: the tail ratio of a series is the mean of its ``tail_days`` largest weekly worst residuals
    # (the worst day of each week of its noise window: a cluster of large residuals in one week is one piece
    # of evidence) over its upper-quartile scale (medians measured on 2,000-series families: ~2.5 for Gaussian
    # noise, ~3.4 for a Student-t(3) - residuals around a centred median are peaked, so both lie above what
    # i.i.d. draws give). A lone day above the band (the day before inside it) must clear the band times
    # 1 + ``single_day_slope`` per unit of tail ratio past ``single_day_knee``, at most ``single_day_factor``,
    # and at most ``single_day_cap`` over the band on the log scale (a noisy series's band times 1.9 would ask
    # a lone day for 5-10x its expected cost). In practice nearly every series gets the cap, or 1.9x on a quiet
    # series: per-series tail evidence from 8 weeks barely tells Gaussian from heavy-tailed noise (measured:
    # the rule without it scores within noise of the rule with it). A persisting increase alerts on its second
    # day, inside the ordinary band. ``single_day_factor`` 1 turns the rule off, ``single_day_cap`` 0 the cap.
    tail_days: int = 3
    single_day_knee: float = 1.5
    single_day_slope: float = 1.0
    single_day_factor: float = 1.9
    single_day_cap: float = 0.25
    # two days in a row past ``confirm_z`` noise units over both the last week's and the last weeks' level
    # (each day as unlikely as one day past ~4 units on its own) is a new level, alerted on its second day
    # even where neither day clears the one-day band; 0 turns it off
    confirm_z: float = 2.75
    # three days in a row each past ``run_floor_z`` units and on average past ``run_mean_z`` units over the
    # same level (a new level on a noisy series, its days each inside the band): alerted on the third day;
    # 0 turns it off
    run_mean_z: float = 2.5
    run_floor_z: float = 1.5
    # the confirmation also runs while a run of up to ``confirm_max_run`` days stands (a shift whose first
    # days were absorbed gets its third day judged), and the excess of a day it confirms is measured over
    # the level before the run (``confirm_reference``), not over the level the post-event guard moved up to
    confirm_max_run: int = 2
    confirm_reference: bool = True
    # a lone day the series's own history has matched is ordinary for it: when ``exceedance_count`` or more
    # lone days of its last ``exceedance_days`` (log residuals around the centred weekly median, de-seasonalised,
    # monthly charges left out) reached ``exceedance_fraction`` of today's excess, in noise units (each day its
    # weekday's), a lone day alerts only if the next day confirms it; a first-ever excursion alerts at once (on
    # 2,000-series families: a tenth fewer false episodes on heavy-tailed noise, none fewer caught on Gaussian).
    # 0 turns it off
    exceedance_count: int = 1
    exceedance_fraction: float = 0.6
    exceedance_days: int = 64


# columns of history one scored day reads: the noise window (+ centring) of the week of the first day of the
# drift test's quiet days (up to 20 days back), or two months back + a week around
_REACH_DAYS = 82


@dataclass(frozen=True)
class ScoreResult:
    """Scores per series (and per scored day for a backtest: arrays of shape (n_series, n_days)).

    ``noise`` is the day's noise scale (log, ~relative); ``history_days`` the days with data among the
    ``noise_days`` before the scored day; ``seasonality`` the pattern used ("weekly" or "none")."""

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
    history_days: npt.NDArray[np.int64]
    seasonality: npt.NDArray[np.str_]
    noise: FloatArray


def nanmedian(values: FloatArray, axis: int = -1) -> FloatArray:
    """Median ignoring NaN along ``axis`` (all-NaN gives NaN); a sort, much faster than ``np.nanmedian``."""
    return nanquantile_sorted(np.sort(values, axis=axis), 0.5, axis=axis)


def nanmedian_count(values: FloatArray) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """(median ignoring NaN, number of non-NaN values) along the last axis. Up to 8 values a row, a sorting
    network over the columns (:func:`_nanmedian_planes`: a sort of many short rows costs more)."""
    if values.ndim > 1 and 2 <= values.shape[-1] <= 8 and values.size >= _NETWORK_FROM_CELLS:
        return _nanmedian_planes([values[..., k] for k in range(values.shape[-1])])
    srt = np.sort(values, axis=-1)
    count = values.shape[-1] - np.count_nonzero(np.isnan(srt), axis=-1)
    return _quantile_of_sorted(srt, count, 0.5), count


def nanquantile_sorted(sorted_values: FloatArray, q: float, axis: int = -1) -> FloatArray:
    """Quantile (linear interpolation) of values already sorted along ``axis`` with NaN last."""
    arr = np.moveaxis(sorted_values, axis, -1)
    count = arr.shape[-1] - np.count_nonzero(np.isnan(arr), axis=-1)
    return _quantile_of_sorted(arr, count, q)


_NETWORK_FROM_CELLS = 4_096  # below this, the network's fixed cost of ~50 numpy calls exceeds the sort


def _quantile_of_sorted(arr: FloatArray, count: npt.NDArray[np.intp], q: float) -> FloatArray:
    pos = (np.maximum(count, 1) - 1) * q
    lo = np.floor(pos).astype(np.intp)
    # the two neighbours by flat index (take_along_axis builds index grids)
    width = arr.shape[-1]
    flat = np.ascontiguousarray(arr).reshape(-1)
    first = np.arange(0, flat.size, width).reshape(lo.shape)
    low = flat[first + lo]
    high = flat[first + np.minimum(lo + 1, width - 1)]
    frac = pos - lo
    out = low + np.where(frac > 0, (high - low) * frac, 0.0)
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


# sorting networks of 2..8 values as (i, j) min/max pairs (each checked on all 0/1 inputs in the tests)
_SORT7 = (
    (0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5),
    (3, 4), (1, 2), (4, 6), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6),
)  # fmt: skip
_SORT8 = (
    (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7), (0, 1), (2, 3),
    (4, 5), (6, 7), (2, 4), (3, 5), (1, 4), (3, 6), (1, 2), (3, 4), (5, 6),
)  # fmt: skip
_SORTING_NETWORKS: dict[int, tuple[tuple[int, int], ...]] = {
    2: ((0, 1),),
    3: ((0, 2), (0, 1), (1, 2)),
    4: ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2)),
    5: ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2)),
    6: ((1, 2), (4, 5), (0, 2), (3, 5), (0, 1), (3, 4), (2, 5), (0, 3), (1, 4), (2, 4), (1, 3), (2, 3)),
    7: _SORT7,
    8: _SORT8,
}


def _pruned(network: Sequence[tuple[int, int]], outputs: Sequence[int]) -> tuple[tuple[int, int, bool, bool], ...]:
    """``network`` as (i, j, min needed, max needed), for the ``outputs`` positions only: a comparator whose
    min (or max) no later comparator and no output reads is left out (or computes one side)."""
    needed, ops = set(outputs), []
    for i, j in reversed(network):
        if i in needed or j in needed:
            ops.append((i, j, i in needed, j in needed))
            needed |= {i, j}
    return tuple(reversed(ops))


@functools.cache
def _median_network(width: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """The sorting network of ``width`` values cut to what a median of 1..width of them reads: sorted
    positions 0..width // 2 (for 7 values, 27 array operations instead of 32)."""
    return _pruned(_SORTING_NETWORKS[width], range(width // 2 + 1))


def nanmedian7(planes: Sequence[FloatArray]) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """(median ignoring NaN, count of values) of 7 same-shaped arrays, element-wise (see :func:`_nanmedian_planes`)."""
    if len(planes) != 7:
        raise ValueError(f"nanmedian7 takes 7 arrays, not {len(planes)}")
    return _nanmedian_planes(planes)


def _nanmedian_planes(planes: Sequence[FloatArray]) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """(median ignoring NaN, count of values) of 2..8 same-shaped arrays, element-wise: a sorting network of
    min/max over whole arrays - no per-element sort, which is what makes rolling weekly medians cheap. Bit
    for bit the values of :func:`nanmedian_count`'s sort and :func:`_quantile_of_sorted`."""
    width = len(planes)
    count = np.full(planes[0].shape, width, dtype=np.intp)
    v = []
    for plane in planes:
        count -= np.isnan(plane)
        v.append(np.fmin(plane, np.inf))  # NaN sorts last
    spare = np.empty_like(v[0])
    for i, j, low, high in _median_network(width):
        if low and high:
            np.minimum(v[i], v[j], out=spare)
            np.maximum(v[i], v[j], out=v[j])
            v[i], spare = spare, v[i]
        elif low:
            np.minimum(v[i], v[j], out=v[i])
        else:
            np.maximum(v[i], v[j], out=v[j])
    # every value present: the middle one, or the mean of the two middle ones (as _quantile_of_sorted adds)
    mid = width // 2
    with np.errstate(invalid="ignore"):  # inf - inf where values are missing: those are redone below
        med = v[mid] + 0.0 if width % 2 else v[mid - 1] + (v[mid] - v[mid - 1]) * 0.5
    med = np.ascontiguousarray(med)  # planes of a moved axis give other layouts: flat indexes below are C order
    part = np.flatnonzero(count != width)
    if part.size:  # fewer values, element by element
        n = count.reshape(-1)[part]
        w = [v[k].reshape(-1)[part] for k in range(mid + 1)]
        # positions 0..mid for 1..width values (np.choose is slow: a chain of wheres)
        low_at, high_at = np.maximum(n - 1, 0) // 2, n // 2
        lower, upper = w[mid], w[mid]
        for k in range(mid - 1, -1, -1):
            lower = np.where(low_at == k, w[k], lower)
            upper = np.where(high_at == k, w[k], upper)
        with np.errstate(invalid="ignore"):  # inf - inf where there is no value at all
            middle = np.where(n % 2 == 1, lower + 0.0, lower + (upper - lower) * 0.5)
        med.reshape(-1)[part] = np.where(n > 0, middle, np.nan)
    return med, count


def _median_of_week(values: FloatArray) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """(median ignoring NaN, count) of each row of an (n, 7) array."""
    return nanmedian_count(values)


def _rolling_median(values: FloatArray, before: int, after: int, min_count: int, first: int = 0) -> FloatArray:
    """Median of columns [j - before, j + after] (7 of them) for every column j >= ``first`` (NaN-padded,
    NaN ignored; NaN where fewer than ``min_count`` values, and before ``first``: columns nobody reads
    cost nothing)."""
    if before + after + 1 != 7:
        raise ValueError("rolling medians here are weekly: 7 columns")
    n, t = values.shape
    out = np.full((n, t), np.nan)
    # a few rows at a time, each NaN-padded on its own: the network's dozens of passes then run over arrays
    # that stay in the cache (and no padded copy of the whole matrix is made)
    step = max(1, _TILE_CELLS // max(t - first, 1))
    padded = np.full((min(step, n), t + 6), np.nan)
    for lo in range(0, n, step):
        rows = min(step, n - lo)
        padded[:rows, before : before + t] = values[lo : lo + rows]
        med, count = nanmedian7([padded[:rows, first + k : t + k] for k in range(7)])
        out[lo : lo + rows, first:] = np.where(count >= min_count, med, np.nan)
    return out


_TILE_CELLS = 32_768  # cells of one plane per pass of the rolling network (7 planes + temporaries ~ 2.5 MB)


@dataclass(frozen=True)
class _Prepared:
    """Per-column quantities every scored day reuses; column k is column ``offset + k`` of the matrix."""

    offset: int
    log_cost: FloatArray  # log of cost, NaN on zero or absent days
    zero: BoolArray  # cost == 0
    present: BoolArray  # the series existed that day
    present_count: npt.NDArray[np.int64]  # days present before the column (cumulative)
    zero_count: npt.NDArray[np.int64]  # zero days before the column (cumulative)
    centred: FloatArray  # median of log cost over the 7 days centred on the column
    trailing7: FloatArray  # median of log cost over the 7 days ending on the column (a whole week)
    # a backtest's level of the last weeks (:func:`_long_levels`) for absolute columns from ``long_first`` on
    long_levels: FloatArray | None = None
    long_first: int = 0


# the first local column (with the prepared window starting _REACH_DAYS before the first scored day) that
# each rolling median is read at: the scored day's weekly state down to Monday - 3 - noise_days - 3; drift
# down to the quiet days plus the longest span. The weekly states of the drift's quiet days, earlier still,
# are computed for a few rows, whose centred medians are then computed from column 0 (:func:`_rows_of`)
_CENTRED_FROM = 14
_TRAILING_FROM = 40


def _prepare(costs: FloatArray, offset: int) -> _Prepared:
    present = ~np.isnan(costs)
    zero = present & (costs <= 0)
    log_cost = np.where(costs > 0, costs, 1.0)
    np.log(log_cost, out=log_cost)  # in place: these are the largest arrays of a block
    np.copyto(log_cost, np.nan, where=~present | zero)
    return _Prepared(
        offset=offset,
        log_cost=log_cost,
        zero=zero,
        present=present,
        present_count=_cumulative(present),
        zero_count=_cumulative(zero),
        centred=_rolling_median(log_cost, 3, 3, 3, _CENTRED_FROM),
        trailing7=_rolling_median(log_cost, 6, 0, 4, _TRAILING_FROM),
    )


def _cumulative(mask: BoolArray) -> npt.NDArray[np.int64]:
    out = np.zeros((mask.shape[0], mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(mask, axis=1, out=out[:, 1:])
    return out


def _robust_scale(
    abs_residuals: FloatArray, q: float, max_tail_ratio: float = 2.0, tail_exponent: float = 1.0
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp]]:
    """(MAD-based sigma, tail-aware sigma, count) per row. The tail-aware sigma is the MAD-based one times
    (upper-quantile-based / MAD-based) ** ``tail_exponent``, at least 1 and at most ``max_tail_ratio``: a
    heavy tail needs a band wider than its quantile alone says, as the rare days lie further out still."""
    return _robust_scale_sorted(np.sort(abs_residuals, axis=-1), q, max_tail_ratio, tail_exponent)[:3]


def _robust_scale_sorted(
    srt: FloatArray, q: float, max_tail_ratio: float = 2.0, tail_exponent: float = 1.0
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp], FloatArray]:
    """:func:`_robust_scale` of rows already sorted (NaN last), and their upper-quartile sigma."""
    count = srt.shape[-1] - np.count_nonzero(np.isnan(srt), axis=-1)
    mad = _quantile_of_sorted(srt, count, 0.5) * _MAD_TO_SIGMA
    z_q = float(np.sqrt(2.0) * _erfinv(q))
    upper = _quantile_of_sorted(srt, count, q) / z_q
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mad > 0, upper / np.where(mad > 0, mad, 1.0), 1.0)
    # a few wild days (a charge, a pattern change) must not blind it: capped
    factor = np.clip(np.fmax(ratio, 1.0) ** tail_exponent, 1.0, max_tail_ratio)
    quartile = _quantile_of_sorted(srt, count, 0.75) / _Z_QUARTILE
    return mad, np.where(mad > 0, mad * factor, upper), count, quartile


def _erfinv(y: float) -> float:
    # Newton on erf (math.erf) - avoids scipy for one constant
    import math

    x = 0.0
    for _ in range(60):
        x -= (math.erf(x) - y) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def _shrink(sigma: FloatArray, count: npt.NDArray[Any], prior: FloatArray | float, prior_count: float) -> FloatArray:
    """Variance-weighted blend of a per-row scale with a prior scale worth ``prior_count`` observations."""
    s = np.nan_to_num(sigma, nan=0.0)
    c = np.where(np.isnan(sigma), 0.0, count)
    return np.sqrt((c * s**2 + prior_count * np.asarray(prior) ** 2) / (c + prior_count))


def _rows_of(p: _Prepared, rows: npt.NDArray[np.intp]) -> _Prepared:
    """The prepared quantities of ``rows`` only (every stage is row by row)."""
    return _Prepared(
        offset=p.offset, log_cost=p.log_cost[rows], zero=p.zero[rows], present=p.present[rows],
        present_count=p.present_count[rows], zero_count=p.zero_count[rows],
        centred=_rolling_median(p.log_cost[rows], 3, 3, 3),
        trailing7=p.trailing7[rows],
    )  # fmt: skip


def _cols(p: _Prepared, start: int, stop: int) -> slice:
    """Local slice of absolute columns [start, stop) (callers keep them inside the prepared range)."""
    return slice(start - p.offset, stop - p.offset)


def _span(values: npt.NDArray[Any], cols: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
    """``values[:, cols]`` for a run of consecutive columns: a view, not a copy (negative columns, which count
    from the end, keep the copy)."""
    if cols.size and cols[0] >= 0:
        return values[:, cols[0] : cols[-1] + 1]
    return values[:, cols]


@dataclass(frozen=True)
class _WeeklyState:
    """What the scoring of every day of one week shares, from the data before that week's Monday: weekly
    profile, zero weekdays and noise scales, each by weekday (0 = Monday)."""

    profile: FloatArray  # (n, 7) log deviation of each weekday from the weekly median (0 where not kept)
    zero_weekday: BoolArray  # (n, 7) weekday mostly zero
    sigma: FloatArray  # (n,) noise of the series (log scale)
    sigma_weekday: FloatArray  # (n, 7) the band's noise unit on each weekday
    worst: FloatArray  # (n, weeks) each week's worst residual of the noise window (NaN: a week without one)
    tail_scale: FloatArray  # (n,) the upper-quartile scale, floored like the noise (NaN: too few residuals)
    tail_days: int
    seasonal: BoolArray  # (n,) a weekly pattern is used: a weekday profile or a zero weekday

    def tail_ratio(self, rows: npt.NDArray[np.intp]) -> FloatArray:
        """Of ``rows``: the mean of the ``tail_days`` largest weekly worst residuals over the quartile scale (0
        with too few residuals). Asked for the few rows with a lone day above the band only."""
        k, worst = self.tail_days, self.worst[rows]
        width = worst.shape[1]
        largest = np.partition(np.nan_to_num(worst, nan=-np.inf), width - k, axis=1)[:, width - k :]
        tail_residual = np.mean(np.where(np.isfinite(largest), largest, 0.0), axis=1)
        scale = self.tail_scale[rows]
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(scale), 0.0, tail_residual / scale)


def _weekly_state(
    p: _Prepared, anchor: int, first_weekday: int, cfg: ScoringConfig, day0: np.datetime64 | None = None
) -> _WeeklyState:
    """The shared state of the week starting at absolute column ``anchor`` (a Monday)."""
    n = p.log_cost.shape[0]
    la = anchor - p.offset
    log_cost, centred = p.log_cost, p.centred

    def weekday(local_cols: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        return (first_weekday + local_cols + p.offset) % 7

    # -- weekly profile: weekday deviations from the centred weekly median, weeks ending 4 days back
    weeks = cfg.season_weeks
    prof_cols = np.arange(la - 3 - 7 * weeks, la - 3)
    slot_weekday = weekday(prof_cols[:7])
    deviation = (_span(log_cost, prof_cols) - _span(centred, prof_cols)).reshape(n, weeks, 7)
    raw_slot, slot_count = nanmedian_count(np.moveaxis(deviation, 1, -1))
    zero_slot = _count_by_weekday(_span(p.zero, prof_cols), weeks)
    present_slot = _count_by_weekday(_span(p.present, prof_cols), weeks)
    raw_slot = np.where(slot_count >= 2, raw_slot, 0.0)

    # -- noise: residuals of the de-seasonalised log cost around its centred median
    noise_weeks = cfg.noise_days // 7
    noise_cols = np.arange(la - 3 - 7 * noise_weeks, la - 3)
    raw_profile = np.zeros((n, 7))
    raw_profile[:, slot_weekday] = raw_slot
    residual = (
        (_span(log_cost, noise_cols) - _span(centred, noise_cols)).reshape(n, noise_weeks, 7)
        - raw_profile[:, weekday(noise_cols[:7])][:, None, :]
    ).reshape(n, 7 * noise_weeks)
    abs_res = np.abs(residual)
    # charges are not noise: a high day whose day of month was high the month before as well (a monthly charge)
    # is left out of the noise and of the tail evidence (it would widen the band and hide a spike)
    scale = cfg.tail_quantile, cfg.max_tail_ratio, cfg.tail_exponent
    mad, tail_sigma, count, quartile = _robust_scale_sorted(np.sort(abs_res, axis=-1), *scale)
    tail_res = abs_res
    if day0 is not None and cfg.charge_z > 0:
        earlier, later = _month_pairs(day0, int(noise_cols[0]) + p.offset, len(noise_cols))
        if earlier.size:
            with np.errstate(invalid="ignore"):
                high = residual > cfg.charge_z * np.fmax(quartile, cfg.noise_floor)[:, None]
            both = high[:, earlier] & high[:, later]
            charge = np.zeros_like(high)
            charge[:, earlier] |= both
            charge[:, later] |= both
            tail_res = np.where(charge, np.nan, abs_res)
            rows = np.flatnonzero(both.any(axis=1))
            if rows.size:  # only the rows with a charge need their scales again
                abs_res = tail_res
                mad, tail_sigma, count = mad.copy(), tail_sigma.copy(), count.copy()
                mad[rows], tail_sigma[rows], count[rows] = _robust_scale(abs_res[rows], *scale)
    sigma = np.fmax(_shrink(tail_sigma, count, cfg.noise_prior, cfg.noise_prior_days), cfg.noise_floor)
    # noise that grew lately (heteroscedastic series) widens the band soon, not weeks later
    _, recent_sigma, recent_count = _robust_scale(
        abs_res[:, -cfg.recent_noise_days :], cfg.tail_quantile, cfg.max_tail_ratio, cfg.tail_exponent
    )
    sigma = np.fmax(sigma, _shrink(recent_sigma, recent_count, sigma, cfg.recent_noise_prior_days))
    # a weekday profile is kept only where it stands out from the noise of its estimate
    standard_error = 1.25 * sigma[:, None] / np.sqrt(np.maximum(slot_count, 1))
    keep = np.abs(raw_slot) > np.maximum(2.0 * standard_error, np.log1p(cfg.profile_min_effect) / 2)
    profile = np.zeros((n, 7))
    profile[:, slot_weekday] = np.where(keep, raw_slot, 0.0)
    zero_weekday = np.zeros((n, 7), dtype=bool)
    zero_weekday[:, slot_weekday] = (present_slot >= 2) & (zero_slot * 2 > present_slot)

    # per weekday: that weekday's own residual scale, shrunk towards the series's
    by_slot = np.moveaxis(abs_res.reshape(n, noise_weeks, 7), 1, -1)
    slot_med, slot_n = nanmedian_count(by_slot)
    tail_factor = np.where(mad > 0, tail_sigma / np.where(mad > 0, mad, 1.0), 1.0)
    slot_sigma = _shrink(
        slot_med * _MAD_TO_SIGMA * tail_factor[:, None], slot_n, sigma[:, None], cfg.weekday_prior_days
    )
    # few residuals (a young series) understate the noise: widen like a t-interval would
    small_sample = 1.0 + cfg.small_sample_factor / np.maximum(count, 1)
    sigma_weekday = np.zeros((n, 7))
    sigma_weekday[:, weekday(noise_cols[:7])] = (
        np.fmax(slot_sigma, cfg.noise_floor) * (cfg.prediction_inflation * small_sample)[:, None]
    )
    # the series's own worst days: the mean of its ``tail_days`` largest residuals (0 with fewer residuals)
    k = max(cfg.tail_days, 1)
    # the worst day of each week: a cluster of large residuals (a step the centred median straddles, one
    # odd week) is one piece of evidence, not three
    # (NaN ignored, NaN for a week without a residual; day planes: a max over short rows costs more)
    by_day = tail_res.reshape(n, noise_weeks, 7)
    worst = by_day[:, :, 0].copy()
    for j in range(1, 7):
        np.fmax(worst, by_day[:, :, j], out=worst)
    # (the scale floored like the noise: a series quieter than the floor is judged on the floor's band)
    tail_scale = np.where(count >= 4 * k, np.fmax(quartile, cfg.noise_floor), np.nan)
    return _WeeklyState(
        profile=profile, zero_weekday=zero_weekday, sigma=sigma, sigma_weekday=sigma_weekday,
        worst=worst, tail_scale=tail_scale, tail_days=k,
        seasonal=np.any(profile != 0.0, axis=1) | np.any(zero_weekday, axis=1),
    )  # fmt: skip


def _count_by_weekday(mask: BoolArray, weeks: int) -> npt.NDArray[np.intp]:
    """(n, 7) counts of True over the ``weeks`` weeks of an (n, 7 * weeks) mask: week planes added (a sum over
    a middle axis of bools costs several times more)."""
    planes = mask.reshape(mask.shape[0], weeks, 7)
    out = planes[:, 0, :].astype(np.intp)
    for w in range(1, weeks):
        out += planes[:, w, :]
    return out


def _month_pairs(day0: np.datetime64, first: int, width: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(earlier, later) positions in a window of ``width`` columns starting at absolute column ``first`` (day 0
    is ``day0``) of the same day of month one month apart (both inside the window)."""
    return _month_pairs_from((day0.astype("datetime64[D]") + first).astype(dt.date), width)


@functools.lru_cache(maxsize=64)
def _month_pairs_from(start: dt.date, width: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    # every day's same day of the previous month (clamped to that month's last day), as calendar arithmetic on
    # arrays: this runs for a new window every scored day
    day = np.datetime64(start, "D") + np.arange(width)
    month = day.astype("datetime64[M]")
    day_of_month = (day - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    previous = (month - 1).astype("datetime64[D]")
    previous_length = (month.astype("datetime64[D]") - previous).astype(np.int64)
    back = (day - (previous + np.minimum(day_of_month, previous_length - 1))).astype(np.int64)
    later = np.flatnonzero(np.arange(width) - back >= 0)
    pairs = (later - back[later]).astype(np.intp), later.astype(np.intp)
    for array in pairs:
        array.flags.writeable = False  # cached: shared by every call
    return pairs


@dataclass(frozen=True)
class _Growth:
    """The drift test's figures for absolute columns [first, first + m): per span in ``cfg.drift_spans``,
    (log growth of the weekly median over the span ending at the column, whether it has a drift's shape -
    large enough, spread over each third, worth the dollar gate), each (n, m). They depend on the data up
    to their column only, so a backtest computes them once for all its days."""

    first: int
    spans: list[tuple[FloatArray, BoolArray]]


def _rolling_max(values: FloatArray, width: int) -> FloatArray:
    """Max of columns [j - width + 1, j] for every column j (-inf padded): doubling windows, log2(width) array
    maxima instead of ``width``."""
    out = values
    covered = 1
    while covered * 2 <= width:
        shifted = np.full(out.shape, -np.inf)
        shifted[:, covered:] = out[:, :-covered]
        out = np.maximum(out, shifted)
        covered *= 2
    if covered < width:  # two overlapping windows of ``covered`` columns cover ``width``
        shifted = np.full(out.shape, -np.inf)
        shifted[:, width - covered :] = out[:, : out.shape[1] - (width - covered)]
        out = np.maximum(out, shifted)
    return out


def _growth_columns(p: _Prepared, first: int, last: int, cfg: ScoringConfig) -> _Growth:
    ends = np.arange(first, last + 1) - p.offset
    now = p.trailing7[:, ends]
    # the weekly median's move over every ``drift_step_days`` (-inf where unknown)
    gap = cfg.drift_step_days
    steps = np.full(p.trailing7.shape, -np.inf)
    with np.errstate(invalid="ignore"):
        steps[:, gap:] = np.nan_to_num(p.trailing7[:, gap:] - p.trailing7[:, :-gap], nan=-np.inf)
    spans = []
    for span, min_growth_pct in cfg.drift_spans:
        a = p.trailing7[:, ends - span]
        b = p.trailing7[:, ends - (2 * span) // 3]
        c = p.trailing7[:, ends - span // 3]
        growth = now - a
        least = cfg.drift_min_part_share * growth
        # a step (a level shift, alerted or not) moves the weekly median by most of the growth within a few
        # days; a drift spreads it over the span
        step = _rolling_max(steps, span - cfg.drift_step_days + 1)[:, ends]
        with np.errstate(invalid="ignore", over="ignore"):
            shaped = (
                (growth >= np.log1p(min_growth_pct / 100.0))
                & (b - a >= least)
                & (c - b >= least)
                & (now - c >= least)
                & (step <= cfg.drift_max_step_share * growth)
                & (np.exp(now) - np.exp(a) >= cfg.min_impact_usd_per_day)
            )
        spans.append((growth, shaped))
    return _Growth(first=first, spans=spans)


@dataclass
class _Day:
    """One scored day: where it sits, and the week's shared state rolled so that column k of ``profile``
    and ``zero_weekday`` is the weekday k days after today (mod 7). Stages below refine its fields."""

    n: int
    t: int  # absolute column of the scored day
    lt: int  # its local column in the prepared window
    today: int  # weekday, 0 = Monday
    state: _WeeklyState
    profile: FloatArray
    zero_weekday: BoolArray
    sigma: FloatArray  # the series's noise (log scale)
    sigma_today: FloatArray  # the band's noise unit today
    seasonal: BoolArray  # a weekly pattern is used today


def _state_of(
    p: _Prepared, days: npt.NDArray[np.datetime64], t: int, cfg: ScoringConfig, states: dict[int, _WeeklyState]
) -> tuple[_WeeklyState, int]:
    """(the shared state of the week of column ``t``, computed once per week; ``t``'s weekday, 0 = Monday)."""
    first_weekday = int((days[0].astype("datetime64[D]").astype(np.int64) + 3) % 7)  # 0 = Monday
    today = (first_weekday + t) % 7
    anchor = t - today  # this week's Monday
    if anchor not in states:
        states[anchor] = _weekly_state(p, anchor, first_weekday, cfg, days[0])
    return states[anchor], today


def _day(
    p: _Prepared, days: npt.NDArray[np.datetime64], t: int, cfg: ScoringConfig, states: dict[int, _WeeklyState]
) -> _Day:
    """Stage 1 - seasonal profile and noise: this week's shared state (computed once per week)."""
    state, today = _state_of(p, days, t, cfg, states)
    roll = (today + np.arange(7)) % 7
    return _Day(
        n=p.log_cost.shape[0], t=t, lt=t - p.offset, today=today, state=state,
        profile=state.profile[:, roll], zero_weekday=state.zero_weekday[:, roll],
        sigma=state.sigma.copy(), sigma_today=state.sigma_weekday[:, today].copy(), seasonal=state.seasonal.copy(),
    )  # fmt: skip


def _zero_inflation(p: _Prepared, d: _Day, cfg: ScoringConfig) -> tuple[npt.NDArray[np.int64], BoolArray]:
    """Stage 2 - (days present in the noise window, intermittent): a series with zero on at least
    ``intermittent_zero_share`` of its days is judged on the size of its days with usage."""
    lo = d.lt - cfg.noise_days
    days_present = p.present_count[:, d.lt] - p.present_count[:, lo]
    zero_share = (p.zero_count[:, d.lt] - p.zero_count[:, lo]) / np.maximum(days_present, 1)
    return days_present, zero_share >= cfg.intermittent_zero_share


@dataclass
class _Level:
    """Where the series stands before today (log scale, de-seasonalised)."""

    base: FloatArray  # median of the last ``level_days``
    level: FloatArray  # the level today is judged against
    long_level: FloatArray  # median of the last weeks' weekly medians
    shifted: BoolArray  # a confirmed run above the band: a new level
    above: BoolArray  # (n, level_days) the recent days above the band of ``base``
    yesterday: FloatArray  # yesterday's de-seasonalised log cost
    day_before: FloatArray  # the day before yesterday's
    run: npt.NDArray[np.intp]  # length of the trailing run outside the band (0 below ``shift_confirm_days``)


def _level(p: _Prepared, d: _Day, cfg: ScoringConfig) -> _Level:
    """Stage 3 - level: median of the last week, de-seasonalised; a trailing run of ``shift_confirm_days``
    or more outside its band is a new level (one day above is a spike or a charge)."""
    lt = d.lt
    recent_cols = np.arange(lt - cfg.level_days, lt)
    # (a week back: the profile rolled to today is in the days' order already)
    shape = d.profile if cfg.level_days == 7 else d.profile[:, (recent_cols - lt) % 7]
    recent = _span(p.log_cost, recent_cols) - shape
    base, base_count = _median_of_week(recent)
    if p.long_levels is not None and p.long_first <= d.t < p.long_first + p.long_levels.shape[1]:
        long_level = p.long_levels[:, d.t - p.long_first].copy()  # (stages below change it in place)
    else:
        long_level = _long_levels(p, d.t, d.t, cfg)[:, 0]
    base = np.where(base_count >= 3, base, long_level)
    band = cfg.z_threshold * d.sigma
    with np.errstate(invalid="ignore"):
        above = recent > (base + band)[:, None]
        below = recent < (base - band)[:, None]
    # a run confirmed by the second-day rule (days past ``confirm_z`` units) is a new level as well
    run_up = above
    if cfg.confirm_z > 0:
        with np.errstate(invalid="ignore"):
            # in each day's own weekday unit, as the confirmation reads them (a run the confirmation would
            # not alert on is no new level yet)
            unit = d.state.sigma_weekday[:, (d.today + recent_cols - lt) % 7]
            run_up = recent > base[:, None] + cfg.confirm_z * unit
    trailing_up, trailing_down = _trailing_run(run_up), _trailing_run(below)
    run = np.where(trailing_up >= cfg.shift_confirm_days, trailing_up, 0)
    run = np.where(trailing_down >= cfg.shift_confirm_days, trailing_down, run)
    level = base.copy()
    runs = np.flatnonzero(run)  # a run's level: the median of its days (a few rows a day)
    if runs.size:
        in_run = np.arange(cfg.level_days)[None, :] >= (cfg.level_days - run[runs])[:, None]
        level[runs] = _median_of_week(np.where(in_run, recent[runs], np.nan))[0]
    out = _Level(
        base=base, level=level, long_level=long_level, shifted=trailing_up >= cfg.shift_confirm_days, above=above,
        yesterday=recent[:, -1], day_before=recent[:, -2], run=run,
    )  # fmt: skip
    _post_event_guard(out, recent, run, cfg)
    return out


def _trailing_run(mask: BoolArray) -> npt.NDArray[np.intp]:
    """Length of the run of True ending at the last column of each row (a column at a time: a cumulative
    product over short rows costs more)."""
    alive = mask[:, -1].copy()
    run = alive.astype(np.intp)
    for j in range(mask.shape[1] - 2, -1, -1):
        alive &= mask[:, j]
        run += alive
    return run


def _long_levels(p: _Prepared, first: int, last: int, cfg: ScoringConfig) -> FloatArray:
    """The level of the last weeks of each series on absolute columns [first, last]: the median of the weekly
    medians ending the days before, a week apart (whole weeks need no de-seasonalising); NaN with fewer than
    two. (n, last - first + 1): a backtest computes them for all its days at once."""
    lo, hi = first - p.offset, last - p.offset + 1
    planes = [p.trailing7[:, lo - 1 - 7 * j : hi - 1 - 7 * j] for j in range(cfg.long_level_days // 7)]
    if not planes:
        return np.full((p.trailing7.shape[0], hi - lo), np.nan)
    if 2 <= len(planes) <= 8:
        level, count = _nanmedian_planes(planes)
    else:  # no sorting network: a sort (bit for bit the same figures)
        level, count = nanmedian_count(np.stack(planes, axis=-1))
    return np.where(count >= 2, level, np.nan)


def _post_event_guard(lv: _Level, recent: FloatArray, run: npt.NDArray[np.intp], cfg: ScoringConfig) -> None:
    """Stage 3b - after a day above the band, the days since it (normal or not) say where the level is now:
    a noisy new level does not alert again on its next high day, a spike's recovery is normal."""
    if not cfg.post_event_guard:
        return
    # a first day above at least ``shift_confirm_days`` back (column by column: reductions over rows of 7 run
    # one short numpy loop a row)
    last = min(cfg.level_days - cfg.shift_confirm_days, cfg.level_days - 1)
    if last < 0:
        return
    early = lv.above[:, 0].copy()
    for j in range(1, last + 1):
        early |= lv.above[:, j]
    post = (run == 0) & early
    if post.any():
        rows = np.flatnonzero(post)
        first_above = np.argmax(lv.above[rows], axis=1)
        since = np.arange(cfg.level_days)[None, :] >= first_above[:, None]
        lv.level[rows] = np.fmax(lv.base[rows], _median_of_week(np.where(since, recent[rows], np.nan))[0])


def _intermittent(p: _Prepared, d: _Day, lv: _Level, intermittent: BoolArray, cfg: ScoringConfig) -> None:
    """Stage 4 - zero inflation: an intermittent series's level and noise are those of its days with usage,
    with no weekly profile and no level shifts."""
    if not intermittent.any():
        return
    used = p.log_cost[intermittent, _cols(p, d.t - cfg.noise_days, d.t)]
    used_level, used_count = nanmedian_count(used)
    _, i_sigma, i_count = _robust_scale(np.abs(used - used_level[:, None]), cfg.tail_quantile, cfg.max_tail_ratio)
    i_sigma = np.fmax(_shrink(i_sigma, i_count, cfg.noise_prior, cfg.noise_prior_days), cfg.noise_floor)
    lv.level[intermittent] = np.where(used_count >= 3, used_level, np.nan)
    lv.long_level[intermittent] = lv.level[intermittent]
    d.sigma[intermittent] = i_sigma
    d.sigma_today[intermittent] = i_sigma * cfg.prediction_inflation
    d.profile[intermittent] = 0.0
    d.zero_weekday[intermittent] = False
    d.seasonal[intermittent] = False
    lv.shifted[intermittent] = False


@dataclass
class _Band:
    """Today's expectation and the bounds an increase must clear (dollars)."""

    expected: FloatArray
    upper: FloatArray
    lower: FloatArray
    long_upper: FloatArray  # the band of the level of the last weeks: a return to it is normal
    pattern_upper: FloatArray  # the band of what the same weekday cost last week: a pattern that changed
    recurring: FloatArray  # the recurring charge expected today (0 where none)
    charge_seen: BoolArray  # a previous month's same day had usage: a charge there would have shown


def _band(p: _Prepared, d: _Day, lv: _Level, intermittent: BoolArray, cfg: ScoringConfig) -> _Band:
    """Stage 5 - expectation and band from level, weekday profile and weekday noise."""
    p_today = d.profile[:, 0]
    zero_today = d.zero_weekday[:, 0]
    band_today = cfg.z_threshold * d.sigma_today
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.where(zero_today, 0.0, np.exp(lv.level + p_today))
        upper = np.exp(lv.level + np.where(zero_today, 0.0, p_today) + band_today)
        lower = np.where(zero_today | intermittent, 0.0, np.exp(lv.level + p_today - band_today))
        long_upper = np.exp(lv.long_level + np.where(zero_today, 0.0, p_today) + band_today)
        last_week = p.log_cost[:, d.lt - 7] - p.centred[:, d.lt - 7]
        pattern_upper = np.exp(
            lv.level + np.fmax(np.where(zero_today, 0.0, p_today), np.nan_to_num(last_week, nan=-9.0)) + band_today
        )
    return _Band(
        np.nan_to_num(expected, nan=0.0), upper, lower, long_upper, pattern_upper, np.zeros(d.n), np.zeros(d.n, bool)
    )


def _recurring(
    p: _Prepared, costs: FloatArray, days: npt.NDArray[np.datetime64], d: _Day, b: _Band, cfg: ScoringConfig
) -> None:
    """Stage 6 - recurring charge: the excess seen on this day of month in the previous months (billing day,
    purchase anniversary); the smaller of the months seen is expected again, and widens the band."""
    n, t, lt = d.n, d.t, d.lt
    least = np.full(n, np.inf)
    seen = np.zeros(n, dtype=bool)
    for back in _same_day_previous_months(days[t], cfg.recurring_months):
        idx = t - back
        li = idx - p.offset
        if idx < 1 or li - 7 < 0:  # a charge day is judged against the day before it
            continue
        day_cost = costs[:, idx]
        ok = day_cost > 0  # a zero day (or no data) says nothing about a charge
        # only a day standing above both neighbours, de-seasonalised, can hold a charge (a charge on a weekend
        # dip can stand below Monday's cost): the median is taken for those
        with np.errstate(invalid="ignore", over="ignore"):
            shape = np.exp(d.profile[:, [(li - 1 - lt) % 7, (li - lt) % 7, (li + 1 - lt) % 7]])
            before = costs[:, idx - 1] * shape[:, 1] / shape[:, 0]
            after = costs[:, idx + 1] * shape[:, 1] / shape[:, 2]
            rows = np.flatnonzero(ok & (day_cost > 1.1 * np.fmax(before, after)))
        prev_excess = np.zeros(n)
        if rows.size:
            around = np.concatenate([p.log_cost[rows, li - 7 : li], p.log_cost[rows, li + 1 : li + 8]], axis=1)
            with np.errstate(over="ignore", invalid="ignore"):
                ref = np.exp(nanmedian(around) + d.profile[rows, (li - lt) % 7])
            prev_excess[rows] = np.nan_to_num(day_cost[rows] - ref, nan=0.0)
        least = np.where(ok, np.fmin(least, prev_excess), least)
        seen |= ok
    recurring = np.where(seen & np.isfinite(least), np.maximum(least, 0.0), 0.0)
    # a charge must stand out of the noise to be a charge
    band_today = cfg.z_threshold * d.sigma_today
    recurring = np.where(recurring > b.expected * (np.exp(band_today) - 1.0), recurring, 0.0)
    slack = recurring * (1.0 + cfg.recurring_tolerance)
    b.recurring = recurring
    b.charge_seen = seen
    b.expected = b.expected + recurring
    b.upper = np.nan_to_num(b.upper, nan=0.0) + slack
    b.lower = np.nan_to_num(b.lower, nan=0.0)
    b.long_upper = np.where(np.isnan(b.long_upper), 0.0, b.long_upper) + slack
    b.pattern_upper = np.where(np.isnan(b.pattern_upper), 0.0, b.pattern_upper) + slack


@dataclass(frozen=True)
class _Drift:
    holds: BoolArray  # a drift is reported today
    expected: FloatArray  # the baseline it drifted from (dollars, today's weekday)
    excess: FloatArray
    pct: FloatArray
    growth: FloatArray  # log growth over the span


def _drift(
    p: _Prepared, d: _Day, b: _Band, intermittent: BoolArray, growth: _Growth | None, cfg: ScoringConfig,
    past_sigma: Callable[[npt.NDArray[np.intp]], FloatArray],
) -> _Drift:  # fmt: skip
    """Stage 7 - drift: the weekly (trailing 7-day) median grew by a factor over a span, in each third, past
    the noise; reported on the first day it holds after ``drift_quiet_days`` without. Each of those days is
    judged as it was on that day: the day itself well above where the growth started, past the noise of its
    own week (``past_sigma(rows)``: (rows, quiet + 1), today first; asked only for the rows holding today)."""
    n, t, lt = d.n, d.t, d.lt
    p_today = d.profile[:, 0]
    quiet = cfg.drift_quiet_days
    if growth is None or growth.first > t - quiet:
        growth = _growth_columns(p, t - quiet, t, cfg)
    # columns today, yesterday, ... back to ``quiet`` days ago
    window_cols = slice(t - growth.first, t - quiet - growth.first - 1 if t - quiet - growth.first > 0 else None, -1)
    threshold = cfg.drift_z * 0.8
    parts = [
        (span, span_growth_all[:, window_cols], shaped_all[:, window_cols])
        for (span, _), (span_growth_all, shaped_all) in zip(cfg.drift_spans, growth.spans, strict=True)
    ]
    # today: the first span that holds gives the growth and where it started
    holds_today = np.zeros(n, dtype=bool)
    drift_growth = np.full(n, np.nan)
    drift_base = np.full(n, np.nan)
    for span, span_growth, shaped in parts:
        # the rows with a drift's shape today only (a few)
        shaped_rows = np.flatnonzero(shaped[:, 0])
        start = p.trailing7[shaped_rows, lt - span]
        today_growth = span_growth[shaped_rows, 0]
        with np.errstate(invalid="ignore"):
            ok = today_growth >= threshold * d.sigma[shaped_rows]
            ok &= p.log_cost[shaped_rows, lt] - p_today[shaped_rows] >= start + today_growth / 2
        first = ok & np.isnan(drift_growth[shaped_rows])
        drift_growth[shaped_rows[first]] = today_growth[first]
        drift_base[shaped_rows[first]] = start[first]
        holds_today[shaped_rows[ok]] = True
    # the quiet days before, for the rows holding today only: each day as it was judged on that day - past
    # the noise of its own week (today's noise would re-judge the past: a day that did not hold then could
    # silence today) and, itself, well above where the growth started (a day that failed it reported nothing)
    rows = np.flatnonzero(holds_today & ~intermittent)
    is_drift = np.zeros(n, dtype=bool)
    width = parts[0][1].shape[1]
    if rows.size:
        unit = past_sigma(rows)[:, 1:width]
        back = np.arange(1, width)
        cols = lt - back
        held = np.zeros((rows.size, width - 1), dtype=bool)
        for span, span_growth, shaped in parts:
            past_growth = span_growth[rows, 1:]
            with np.errstate(invalid="ignore"):
                ok = shaped[rows, 1:] & (past_growth >= threshold * unit)
                day_dev = p.log_cost[rows][:, cols] - d.profile[rows][:, (-back) % 7]
                ok &= day_dev >= p.trailing7[rows][:, cols - span] + past_growth / 2
            held |= ok
        is_drift[rows] = ~held.any(axis=1)
    # the figures of the rows holding today (elsewhere: no drift, nothing over its baseline)
    drift_expected = b.recurring.copy()
    drift_excess, drift_pct, drift_growth_out = np.zeros(n), np.zeros(n), np.zeros(n)
    held_rows = np.flatnonzero(holds_today)
    if held_rows.size:
        base, growth_rows, p_held = drift_base[held_rows], drift_growth[held_rows], p_today[held_rows]
        with np.errstate(over="ignore", invalid="ignore"):
            # today itself must sit well above where the growth started
            is_drift[held_rows] &= p.log_cost[held_rows, lt] - p_held >= base + growth_rows / 2
            drift_expected[held_rows] = np.nan_to_num(np.exp(base + p_held), nan=0.0) + b.recurring[held_rows]
            drift_excess[held_rows] = np.nan_to_num(
                (np.exp(p.trailing7[held_rows, lt]) - np.exp(base)) * np.exp(p_held), nan=0.0
            )
        drift_pct[held_rows] = np.nan_to_num(100.0 * np.expm1(growth_rows), nan=0.0)
        drift_growth_out[held_rows] = np.nan_to_num(growth_rows, nan=0.0)
    return _Drift(holds=is_drift, expected=drift_expected, excess=drift_excess, pct=drift_pct, growth=drift_growth_out)


@dataclass(frozen=True)
class _Decision:
    scored: BoolArray
    is_up: BoolArray  # above every band
    is_down: BoolArray
    gated: BoolArray  # past the dollar and percent gates
    new_recurring: BoolArray
    spike: BoolArray  # an increase alerted (spike or a shift's first days)
    drift: BoolArray
    excess: FloatArray
    excess_pct: FloatArray
    confirmed_upper: FloatArray  # the bound a second-day confirmation crossed (NaN elsewhere)


def _two_days_up(
    p: _Prepared, cost: FloatArray, d: _Day, lv: _Level, b: _Band, candidates: BoolArray, cfg: ScoringConfig
) -> tuple[BoolArray, FloatArray, FloatArray]:
    """Stage 8a - second-day confirmation: yesterday and today both past ``confirm_z`` noise units (each
    day its own weekday's unit) over the higher of the last week's and the last weeks' level, and today
    past what the same weekday cost last week: a new level on its second day, whether or not its first day
    cleared the one-day band. Three days in a row each past ``run_floor_z`` units and on average past
    ``run_mean_z`` (a new level on a noisy series whose days each stay inside the band) confirm it on the
    third. Returns (confirmed, the dollar bound today crossed, the expectation at the level it was judged
    over)."""
    out = np.zeros(d.n, dtype=bool)
    bound = np.full(d.n, np.nan)
    reference = np.full(d.n, np.nan)
    if cfg.confirm_z <= 0:
        return out, bound, reference
    k = cfg.confirm_z
    candidates = candidates & (lv.run <= cfg.confirm_max_run) & ~d.zero_weekday[:, 0] & ~d.zero_weekday[:, 6]
    if not candidates.any():
        return out, bound, reference
    ref_all = np.fmax(lv.base, np.nan_to_num(lv.long_level, nan=-np.inf))
    sigma_yesterday_all = d.state.sigma_weekday[:, (d.today - 1) % 7]
    # both rules need yesterday high: the rows where it was (a few a day) are judged, the others cannot confirm
    with np.errstate(divide="ignore", invalid="ignore"):
        high = lv.yesterday > ref_all + k * sigma_yesterday_all
        if cfg.run_mean_z > 0:
            high |= np.nan_to_num((lv.yesterday - ref_all) / sigma_yesterday_all, nan=-np.inf) > cfg.run_floor_z
    rows = np.flatnonzero(candidates & high)
    if not rows.size:
        return out, bound, reference
    ref, sigma_yesterday, yesterday = ref_all[rows], sigma_yesterday_all[rows], lv.yesterday[rows]
    zero_today, p_today, sigma_today = d.zero_weekday[rows, 0], d.profile[rows, 0], d.sigma_today[rows]
    recurring, today_cost = b.recurring[rows], cost[rows]
    with np.errstate(over="ignore", invalid="ignore"):
        reference[rows] = np.exp(ref + np.where(zero_today, 0.0, p_today)) + recurring
    last_week = p.log_cost[rows, d.lt - 7] - p.centred[rows, d.lt - 7]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        today_floor = ref + np.fmax(p_today, np.nan_to_num(last_week, nan=-9.0)) + k * sigma_today
        row_bound = np.exp(today_floor) + recurring * (1.0 + cfg.recurring_tolerance)
        row_out = (yesterday > ref + k * sigma_yesterday) & (today_cost > row_bound)
        # a day well under the day before it is that day's recovery (a spike's, a charge's), not a new level:
        # yesterday more than ``z_threshold`` of today's units above today confirms nothing
        today_over = np.log(np.fmax(today_cost - recurring * (1.0 + cfg.recurring_tolerance), 1e-9)) - (
            ref + np.fmax(p_today, np.nan_to_num(last_week, nan=-9.0))
        )
        row_out &= ~(yesterday - ref > today_over + cfg.z_threshold * sigma_today)
    if cfg.run_mean_z > 0:
        # three days: each past the floor, on average past ``run_mean_z`` units
        sigma_before = d.state.sigma_weekday[rows, (d.today - 2) % 7]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            z = np.stack(
                [
                    (lv.day_before[rows] - ref) / sigma_before,
                    (yesterday - ref) / sigma_yesterday,
                    today_over / sigma_today,
                ]
            )
            z = np.nan_to_num(z, nan=-np.inf)
            three = ~row_out & np.all(z > cfg.run_floor_z, axis=0) & (np.mean(z, axis=0) > cfg.run_mean_z)
        if three.any():
            with np.errstate(over="ignore", invalid="ignore"):
                floor = np.exp(
                    ref + np.fmax(p_today, np.nan_to_num(last_week, nan=-9.0)) + cfg.run_floor_z * sigma_today
                )
            row_bound = np.where(three, floor + recurring * (1.0 + cfg.recurring_tolerance), row_bound)
            row_out |= three
    out[rows], bound[rows] = row_out, row_bound
    return out, bound, reference


def _ordinary_excursion(
    p: _Prepared, cost: FloatArray, days: npt.NDArray[np.datetime64], d: _Day, lv: _Level, b: _Band,
    candidates: BoolArray, cfg: ScoringConfig,
) -> BoolArray:  # fmt: skip
    """Stage 8b - empirical exceedance: the ``candidates`` (lone days above their band) whose series reached
    ``exceedance_fraction`` of today's excess in noise units on ``exceedance_count`` or more lone days (a run of high
    days was an event, not noise) of its last ``exceedance_days``: ordinary for that series, not alerted on
    the day."""
    out = np.zeros(d.n, dtype=bool)
    width = cfg.exceedance_days
    if cfg.exceedance_count <= 0 or width <= 0 or not candidates.any():
        return out
    rows = np.flatnonzero(candidates)
    lt = d.lt
    # the centred median needs three days after a column: the window ends three days back
    first = max(lt - 3 - width, 3)
    if first >= lt - 3:
        return out
    back = np.arange(first - lt, -3)  # the window's columns, relative to today
    cols = slice(first, lt - 3)
    slack = b.recurring[rows] * (1.0 + cfg.recurring_tolerance)
    with np.errstate(divide="ignore", invalid="ignore"):
        today = np.log(np.fmax(cost[rows] - slack, 1e-300)) - lv.level[rows] - d.profile[rows, 0]
        past = p.log_cost[rows, cols] - p.centred[rows, cols] - d.profile[rows][:, back % 7]
        # in noise units, each day its own weekday's (a weekday that swings is judged on its own swings)
        unit = d.state.sigma_weekday[rows][:, (d.today + back) % 7]
        high = past / unit >= (cfg.exceedance_fraction * today / d.sigma_today[rows])[:, None]
        # a centred median short of days (the series's first or last days, an outage) is no reference
        high &= p.present_count[rows, first + 4 : lt + 1] - p.present_count[rows, first - 3 : lt - 6] == 7
    # a monthly charge is no excursion: a day past ``charge_z`` noise units whose day of month a month apart
    # was past it as well
    earlier, later = _month_pairs(days[0], first + p.offset, back.size)
    if earlier.size and cfg.charge_z > 0:
        with np.errstate(invalid="ignore"):
            charged = past > cfg.charge_z * d.sigma[rows][:, None]
        both = charged[:, earlier] & charged[:, later]
        high[:, earlier] &= ~both
        high[:, later] &= ~both
    # only lone days are noise's doing: a run of high days was an event (a past anomaly must not make the
    # next one ordinary)
    lone = high.copy()
    lone[:, 1:] &= ~high[:, :-1]
    lone[:, :-1] &= ~high[:, 1:]
    out[rows] = (today > 0) & (np.count_nonzero(lone, axis=1) >= cfg.exceedance_count)
    return out


def _decide(
    p: _Prepared, cost: FloatArray, days: npt.NDArray[np.datetime64], d: _Day, lv: _Level, b: _Band,
    dr: _Drift, intermittent: BoolArray, history_days: npt.NDArray[np.int64], cfg: ScoringConfig,
) -> _Decision:  # fmt: skip
    """Stage 8 - decision: above every band (wider for a lone day on a heavy-tailed series), past the gates,
    not a new monthly charge; or a drift."""
    lt = d.lt
    scored = ~np.isnan(cost) & (history_days >= cfg.min_history_days) & np.isfinite(lv.level)
    is_up = scored & (cost > b.upper) & (cost > b.long_upper) & (cost > b.pattern_upper)
    # heavy tails: a lone day above the band (yesterday inside it) must clear a wider band
    single_day = is_up & ~lv.above[:, -1] & (cfg.single_day_factor > 1.0)
    if single_day.any():
        # the lone days only (a few rows a day)
        rows = np.flatnonzero(single_day)
        zero_today, p_today = d.zero_weekday[rows, 0], d.profile[rows, 0]
        band_today = cfg.z_threshold * d.sigma_today[rows]
        factor = np.clip(
            1.0 + cfg.single_day_slope * (d.state.tail_ratio(rows) - cfg.single_day_knee), 1.0, cfg.single_day_factor
        )
        single_band = band_today * factor
        if cfg.single_day_cap > 0:
            single_band = np.fmin(single_band, band_today + cfg.single_day_cap)
        with np.errstate(over="ignore", invalid="ignore"):
            single_upper = np.exp(lv.level[rows] + np.where(zero_today, 0.0, p_today) + single_band)
        slack = b.recurring[rows] * (1.0 + cfg.recurring_tolerance)
        is_up[rows] &= cost[rows] > np.nan_to_num(single_upper, nan=0.0) + slack
        is_up &= ~_ordinary_excursion(p, cost, days, d, lv, b, single_day & is_up, cfg)
    is_down = scored & (cost < b.lower)
    confirmed, bound, reference = _two_days_up(p, cost, d, lv, b, scored & ~intermittent, cfg)
    confirmed_upper = np.where(confirmed & ~is_up, bound, np.nan)
    if cfg.confirm_reference:
        # a new level confirmed over the level before it is measured against that level (after two high days
        # the post-event guard already expects the new level: the excess over it says nothing)
        by_confirmation = confirmed & ~is_up & np.isfinite(reference)
        b.expected = np.where(by_confirmation, np.fmin(b.expected, reference), b.expected)
    is_up |= confirmed
    excess = cost - b.expected
    with np.errstate(divide="ignore", invalid="ignore"):
        excess_pct = np.where(b.expected > 0, 100.0 * excess / b.expected, np.where(excess > 0, np.inf, 0.0))
    gated = (excess >= cfg.min_impact_usd_per_day) & (excess_pct >= cfg.min_excess_pct)
    # on a series younger than a month, a month-start charge or a lone high day (the day before inside the
    # band) where no charge was seen before: most likely a new monthly charge (licence, reservation, support
    # plan, a billing-cycle day), recorded as such; from next month on it is expected, and an increase that
    # persists alerts on its second day
    t = d.t
    month_start = days[t].astype("datetime64[D]") == days[t].astype("datetime64[M]").astype("datetime64[D]")
    young = ~p.present[:, lt - 30]
    # so is a lone month-start day where the previous months' first days had no usage (absent or zero: a
    # charge could not show there; on other days of month a zero-day series's spike would pass for one)
    unseen = ~b.charge_seen & ~lv.above[:, -1] & month_start
    new_recurring = is_up & (b.recurring == 0) & ((young & (month_start | ~lv.above[:, -1])) | unseen)
    spike = is_up & gated & ~new_recurring
    drift = scored & dr.holds & ~spike
    return _Decision(scored, is_up, is_down, gated, new_recurring, spike, drift, excess, excess_pct, confirmed_upper)


def _score_prepared(
    p: _Prepared,
    costs: FloatArray,
    days: npt.NDArray[np.datetime64],
    t: int,
    cfg: ScoringConfig,
    states: dict[int, _WeeklyState],
    growth: _Growth | None,
    labels: bool = True,
) -> ScoreResult:
    """Score column ``t``: the stages above, top-down, then the labels."""
    cost = costs[:, t].copy()
    d = _day(p, days, t, cfg, states)
    days_present, intermittent = _zero_inflation(p, d, cfg)
    lv = _level(p, d, cfg)
    _intermittent(p, d, lv, intermittent, cfg)
    b = _band(p, d, lv, intermittent, cfg)
    _recurring(p, costs, days, d, b, cfg)

    def past_sigma(rows: npt.NDArray[np.intp]) -> FloatArray:
        """The series noise of each of the quiet days' weeks, for ``rows`` (a week not scored yet is
        computed for these rows only)."""
        out = np.empty((rows.size, cfg.drift_quiet_days + 1))
        out[:, 0] = d.sigma[rows]
        sub: _Prepared | None = None
        for back in range(1, cfg.drift_quiet_days + 1):
            anchor = (t - back) - (d.today - back) % 7
            if anchor == t - d.today:
                out[:, back] = d.state.sigma[rows]
            elif anchor in states:
                out[:, back] = states[anchor].sigma[rows]
            else:
                sub = sub or _rows_of(p, rows)
                first_weekday = int((days[0].astype("datetime64[D]").astype(np.int64) + 3) % 7)
                states_sub[anchor] = states_sub.get(anchor) or _weekly_state(sub, anchor, first_weekday, cfg, days[0])
                out[:, back] = states_sub[anchor].sigma
        return out

    states_sub: dict[int, _WeeklyState] = {}
    dr = _drift(p, d, b, intermittent, growth, cfg, past_sigma)
    history_days = days_present.astype(np.int64)
    dec = _decide(p, cost, days, d, lv, b, dr, intermittent, history_days, cfg)
    return _result(costs, cost, days, d, lv, b, dr, dec, history_days, cfg, labels)


def _result(
    costs: FloatArray, cost: FloatArray, days: npt.NDArray[np.datetime64], d: _Day, lv: _Level, b: _Band,
    dr: _Drift, dec: _Decision, history_days: npt.NDArray[np.int64], cfg: ScoringConfig, labels: bool,
) -> ScoreResult:  # fmt: skip
    """Stage 9 - what is reported: drift rows report the baseline they drifted from; reasons, status,
    direction, severity and seasonality as codes (or labels)."""
    n, t = d.n, d.t
    drift, spike, scored = dec.drift, dec.spike, dec.scored
    anomaly = spike | drift
    expected = np.where(drift, dr.expected, b.expected)
    # a second-day confirmation reports the bound it crossed (the one-day band can lie above the day)
    upper = np.where(np.isnan(dec.confirmed_upper), b.upper, dec.confirmed_upper)
    upper = np.where(drift, dr.expected * (1.0 + cfg.drift_spans[0][1] / 100.0), upper)
    lower = np.where(drift, np.minimum(b.lower, dr.expected), b.lower)
    excess = np.where(drift, dr.excess, dec.excess)
    excess_pct = np.where(drift, dr.pct, dec.excess_pct)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.fmax(b.expected - b.recurring, 1e-9) * d.sigma_today
        score = np.where(b.expected > 0, dec.excess / unit, np.where(dec.excess > 0, np.inf, 0.0))
        score = np.where(drift, dr.growth / d.sigma, score)

    is_up, is_down = dec.is_up, dec.is_down
    recurring_today = scored & (b.recurring > 0) & (cost > expected - b.recurring + (upper - expected) / 2) & ~is_up
    reason = np.zeros(n, dtype=np.int8)  # codes into REASONS; the label arrays are made at the end
    code = {name: np.int8(k) for k, name in enumerate(REASONS)}
    reason[scored & lv.shifted & ~is_up & ~is_down] = code[REASON_LEVEL_SHIFT]
    reason[recurring_today] = code[REASON_RECURRING]
    reason[is_down] = code[REASON_DECREASE]
    reason[is_up & ~dec.gated] = code[REASON_BELOW_GATE]
    reason[dec.new_recurring & dec.gated] = code[REASON_NEW_RECURRING]
    reason[spike] = code[REASON_SPIKE]
    reason[spike & lv.above[:, -1]] = code[REASON_LEVEL_SHIFT]
    reason[spike & ~np.isnan(dec.confirmed_upper)] = code[REASON_LEVEL_SHIFT]  # confirmed as a new level
    reason[drift] = code[REASON_DRIFT]
    present = ~np.isnan(cost)
    warming = present & ~scored
    # a series that was not there on the first day of the data was created inside it
    born_inside = np.isnan(costs[warming, 0])
    reason[warming] = np.where(born_inside, code[REASON_NEW_RESOURCE], code[REASON_SHORT_HISTORY])

    status = np.zeros(n, dtype=np.int8)  # STATUSES
    status[scored] = 1
    status[warming] = 2

    direction = np.zeros(n, dtype=np.int8)  # DIRECTIONS
    direction[is_up | drift] = 1
    direction[is_down] = 2

    excess_hour = excess / 24.0
    severity = anomaly.astype(np.int8)  # SEVERITIES
    severity[anomaly & (excess_hour > cfg.critical_usd_per_hour)] = 2

    seasonality = d.seasonal.astype(np.int8)

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
        direction=_label(direction, DIRECTIONS, labels),
        severity=_label(severity, SEVERITIES, labels),
        status=_label(status, STATUSES, labels),
        reason=_label(reason, REASONS, labels),
        history_days=history_days,
        seasonality=_label(seasonality, SEASONALITIES, labels),
        noise=unscored(d.sigma_today),
    )


def _label(codes: npt.NDArray[np.int8], vocabulary: tuple[str, ...], labels: bool) -> npt.NDArray[Any]:
    return np.asarray(vocabulary)[codes] if labels else codes


def _check(costs: Any, dates: Any) -> tuple[FloatArray, npt.NDArray[np.datetime64]]:
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 2:
        raise ValueError("costs must be a 2-D (series x days) matrix")
    return costs, _as_dates(dates, costs.shape[1])


def score_day(costs: FloatArray, dates: Any, t: int, config: ScoringConfig | None = None) -> ScoreResult:
    """Score column ``t`` of ``costs`` for every series, using only columns ``<= t``.

    ``costs`` is (n_series, n_days) float64, NaN where a series did not exist; ``dates`` the matching
    consecutive days. Returns a :class:`ScoreResult` of shape (n_series,).
    """
    cfg = config or ScoringConfig()
    costs, days = _check(costs, dates)
    n_days = costs.shape[1]
    if not 0 <= t < n_days:
        raise ValueError(f"day index {t} outside 0..{n_days - 1}")
    offset = t - _REACH_DAYS
    prepared = _prepare(window(costs, offset, t + 1), offset)
    return _score_prepared(prepared, costs, days, t, cfg, {}, None)


Progress = Callable[[int, int], None]

# rows a block: scoring threads hand the GIL to each other around every numpy call, so a block's calls must be
# long enough for that to be rare - two threads on blocks of 3,300 rows spent ~1.7 s more CPU on a 20,000 x 180
# backtest than one thread, on blocks of 10,000 rows they spend less (7.5 s against 7.8 s) and overlap
_CHUNK_ROWS = 10_000


def score_days(
    costs: FloatArray, dates: Any, days: Sequence[int], config: ScoringConfig | None = None,
    progress: Progress | None = None, labels: bool = True,
) -> list[ScoreResult]:  # fmt: skip
    """:func:`score_day` for each day index in ``days``, sharing the rolling medians between days (the
    backtest): same results, a fraction of the work. ``progress(done, total)`` is called after each day.
    ``labels=False`` leaves the label columns (reason, status...) as int8 codes into :data:`LABELS`."""
    out = []
    for k, result in enumerate(_iter_days(costs, dates, days, config, labels)):
        out.append(result)
        if progress is not None:
            progress(k + 1, len(days))
    return out


def _iter_days(
    costs: FloatArray, dates: Any, days: Sequence[int], config: ScoringConfig | None, labels: bool
) -> Iterator[ScoreResult]:
    """:func:`score_days` one day at a time (the state shared between days lives as long as the iterator)."""
    cfg = config or ScoringConfig()
    costs, stamp = _check(costs, dates)
    n_days = costs.shape[1]
    if not days:
        return
    if min(days) < 0 or max(days) >= n_days:
        raise ValueError(f"day indexes outside 0..{n_days - 1}")
    offset = min(days) - _REACH_DAYS
    prepared = _prepare(window(costs, offset, max(days) + 1), offset)
    states: dict[int, _WeeklyState] = {}  # by week: each week's profile and noise serve its seven days
    # the drift test's growth figures, for every replayed day and the quiet days before the first
    growth = _growth_in_tiles(prepared, min(days) - cfg.drift_quiet_days, max(days), cfg)
    # the last weeks' levels too, a tile of rows at a time (a pass over all rows at once held ~100 MB of
    # temporaries a block)
    n = prepared.log_cost.shape[0]
    long_levels = np.empty((n, max(days) - min(days) + 1))
    for lo in range(0, n, _GROWTH_TILE_ROWS):
        tile = _row_range(prepared, lo, lo + _GROWTH_TILE_ROWS)
        long_levels[lo : lo + _GROWTH_TILE_ROWS] = _long_levels(tile, min(days), max(days), cfg)
    prepared = dataclasses.replace(prepared, long_levels=long_levels, long_first=min(days))
    for t in days:
        yield _score_prepared(prepared, costs, stamp, t, cfg, states, growth, labels)
        # weeks the next days do not read (their quiet days reach back ``drift_quiet_days`` and a week) go: the
        # memory of a long backtest stays that of a few weeks (a week asked for again is computed again)
        for anchor in [a for a in states if a < t - cfg.drift_quiet_days - 7]:
            del states[anchor]


_GROWTH_TILE_ROWS = 1_000  # the growth figures' full-width temporaries of 1,000 rows (2 MB) stay in the cache


def _growth_in_tiles(p: _Prepared, first: int, last: int, cfg: ScoringConfig) -> _Growth:
    """:func:`_growth_columns` a tile of rows at a time, stacked (every figure is row by row)."""
    n = p.log_cost.shape[0]
    if n <= _GROWTH_TILE_ROWS:
        return _growth_columns(p, first, last, cfg)
    tiles = [
        _growth_columns(_row_range(p, lo, lo + _GROWTH_TILE_ROWS), first, last, cfg)
        for lo in range(0, n, _GROWTH_TILE_ROWS)
    ]
    spans = [
        (np.concatenate([tile.spans[k][0] for tile in tiles]), np.concatenate([tile.spans[k][1] for tile in tiles]))
        for k in range(len(tiles[0].spans))
    ]
    return _Growth(first=first, spans=spans)


def _row_range(p: _Prepared, start: int, stop: int) -> _Prepared:
    """Rows [start, stop) of the prepared quantities, as views."""
    return _Prepared(
        offset=p.offset, log_cost=p.log_cost[start:stop], zero=p.zero[start:stop], present=p.present[start:stop],
        present_count=p.present_count[start:stop], zero_count=p.zero_count[start:stop],
        centred=p.centred[start:stop], trailing7=p.trailing7[start:stop],
        long_levels=None if p.long_levels is None else p.long_levels[start:stop], long_first=p.long_first,
    )  # fmt: skip


def _merge_rows(parts: list[ScoreResult]) -> ScoreResult:
    if len(parts) == 1:
        return parts[0]
    merged = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ScoreResult) if f.name != "dates"
    }
    return ScoreResult(dates=parts[0].dates, **merged)


def score_days_stream(
    costs: FloatArray,
    dates: Any,
    days: Sequence[int],
    config: ScoringConfig | None = None,
    chunk_rows: int = _CHUNK_ROWS,
    workers: int | None = None,
    progress: Progress | None = None,
    labels: bool = True,
    lead: int = 8,
) -> Generator[list[ScoreResult], None, None]:
    """:func:`score_days` over blocks of rows on a thread pool, yielding day by day (in the order of ``days``)
    the results of every block, top rows first, as soon as all blocks have scored that day - a consumer
    (the backtest's CSV writer) works on one day while the next ones are scored. Blocks of at most
    ``chunk_rows`` rows; numpy releases the GIL in its sorts and ufuncs, so the blocks run on every core. Each
    thread takes the same number of equal blocks and scores them day by day, at most ``lead`` days ahead of
    the consumer.
    ``progress(done, total)`` counts scored (block, day) pairs."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    costs = np.asarray(costs, dtype=np.float64)
    n = costs.shape[0]
    threads = max(1, min(workers or os.cpu_count() or 1, -(-n // max(chunk_rows, 1))))
    n_blocks = threads * -(-n // (threads * max(chunk_rows, 1))) if n else 1
    bounds = np.linspace(0, n, n_blocks + 1).round().astype(int)
    blocks = [costs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if len(blocks) == 1:
        for k, result in enumerate(_iter_days(costs, dates, days, config, labels)):
            if progress is not None:
                progress(k + 1, len(days))
            yield [result]
        return
    results: list[list[ScoreResult | None]] = [[None] * len(blocks) for _ in days]
    scored = [0] * threads  # days each thread has finished (all its blocks)
    taken = [0]  # days handed to the consumer
    stop = [False]
    total, ticks = len(blocks) * len(days), [0]
    ready = threading.Condition()

    def run(w: int) -> None:
        mine = range(w, len(blocks), threads)
        streams: list[Iterator[ScoreResult] | None] = [_iter_days(blocks[b], dates, days, config, labels) for b in mine]
        for k in range(len(days)):
            with ready:
                while k >= taken[0] + lead and not stop[0]:
                    ready.wait()
                if stop[0]:
                    return
            for i, b in enumerate(mine):
                stream = streams[i]
                assert stream is not None
                results[k][b] = next(stream)
                if k == len(days) - 1:
                    streams[i] = stream = None  # its block's prepared state goes now, not with the last block's
                if progress is not None:
                    with ready:
                        ticks[0] += 1
                        progress(ticks[0], total)
            with ready:
                scored[w] = k + 1
                ready.notify_all()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(run, w) for w in range(threads)]

        def wake(_: Any) -> None:
            with ready:
                ready.notify_all()

        for future in futures:
            future.add_done_callback(wake)
        try:
            for k in range(len(days)):
                with ready:
                    while min(scored) <= k:
                        for w, future in enumerate(futures):
                            if scored[w] <= k and future.done():
                                future.result()  # raises what the thread raised
                                raise RuntimeError("a scoring thread stopped early")  # pragma: no cover
                        ready.wait()
                    parts, results[k] = results[k], []
                    taken[0] = k + 1
                    ready.notify_all()
                yield [part for part in parts if part is not None]
        finally:
            with ready:
                stop[0] = True
                ready.notify_all()


def score_days_chunked(
    costs: FloatArray,
    dates: Any,
    days: Sequence[int],
    config: ScoringConfig | None = None,
    chunk_rows: int = _CHUNK_ROWS,
    workers: int | None = None,
    progress: Progress | None = None,
    labels: bool = True,
) -> list[ScoreResult]:
    """:func:`score_days` over blocks of rows on a thread pool (:func:`score_days_stream`): same results,
    cache-sized arrays, every core. ``progress(done, total)`` counts scored (block, day) pairs."""
    stream = score_days_stream(costs, dates, days, config, chunk_rows, workers, progress, labels, lead=len(days) or 1)
    return [_merge_rows(parts) for parts in stream]


def score_day_chunked(
    costs: FloatArray,
    dates: Any,
    t: int,
    config: ScoringConfig | None = None,
    chunk_rows: int = _CHUNK_ROWS,
    workers: int | None = None,
    labels: bool = True,
) -> ScoreResult:
    """:func:`score_day` over blocks of rows on a thread pool (see :func:`score_days_chunked`)."""
    return score_days_chunked(costs, dates, [t], config, chunk_rows, workers, labels=labels)[0]


def score_last_day(costs: FloatArray, dates: Any, config: ScoringConfig | None = None) -> ScoreResult:
    """The daily job: score the last column of ``costs`` for every series against its own history."""
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 2:
        raise ValueError("costs must be a 2-D (series x days) matrix")
    return score_day(costs, dates, costs.shape[1] - 1, config)


def score_backtest(
    costs: FloatArray, dates: Any, days: int, config: ScoringConfig | None = None, progress: Progress | None = None
) -> ScoreResult:
    """Replay the daily job for each of the last ``days`` columns, each with only the data up to it.

    Returns a :class:`ScoreResult` whose arrays are (n_series, days) and whose ``dates`` are the replayed days.
    """
    costs = np.asarray(costs, dtype=np.float64)
    n_days = costs.shape[1]
    days = max(1, min(days, n_days))
    per_day = score_days_chunked(costs, dates, list(range(n_days - days, n_days)), config, progress=progress)
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
