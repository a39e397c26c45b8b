"""The numeric primitives and the day-by-day plumbing of the scoring engine: the fast paths give bit for bit
what the plain ones give."""

from __future__ import annotations

import itertools
from dataclasses import fields

import numpy as np
import pytest

from shared.costs import scoring
from shared.costs.generators import generate
from shared.costs.scoring import (
    ScoringConfig,
    nanmedian7,
    nanmedian_count,
    score_days,
    score_days_chunked,
    score_days_stream,
)

# every value a median network meets: missing, both zeros, ties, negatives
VALUES = [np.nan, 0.0, -0.0, 1.0, 2.0, -1.0]


def sorted_median(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: a sort along the last axis (NaN last) and the quantile of the sorted rows."""
    srt = np.sort(values, axis=-1)
    count = values.shape[-1] - np.count_nonzero(np.isnan(srt), axis=-1)
    return scoring._quantile_of_sorted(srt, count, 0.5), count


def assert_bitwise_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(actual, expected)
    # assert_array_equal takes -0.0 for 0.0: the sign of a zero must match too (it prints as "-0")
    np.testing.assert_array_equal(np.signbit(actual), np.signbit(expected))


@pytest.mark.parametrize("width", sorted(scoring._SORTING_NETWORKS))
def test_each_sorting_network_sorts_every_zero_one_input(width: int) -> None:
    # the 0/1 principle: a comparator network that sorts every 0/1 sequence sorts every sequence
    for bits in itertools.product((0, 1), repeat=width):
        v = list(bits)
        for i, j in scoring._SORTING_NETWORKS[width]:
            v[i], v[j] = min(v[i], v[j]), max(v[i], v[j])
        assert v == sorted(bits), (width, bits)


@pytest.mark.parametrize("width", sorted(scoring._SORTING_NETWORKS))
def test_network_median_equals_the_sorted_median_on_every_small_input(width: int) -> None:
    rng = np.random.default_rng(width)
    head = np.array(list(itertools.product(VALUES, repeat=min(width, 5))))
    tail = rng.choice(VALUES, size=(len(head), width - head.shape[1]))
    rows = np.concatenate([head, tail], axis=1)
    median, count = scoring._nanmedian_planes([rows[:, k] for k in range(width)])
    expected, expected_count = sorted_median(rows)
    assert_bitwise_equal(median, expected)
    np.testing.assert_array_equal(count, expected_count)


@pytest.mark.parametrize("shape", [(500, 7), (3000, 4), (400, 7, 5), (300, 7, 8), (50, 3), (200, 56)])
def test_nanmedian_count_fast_path_equals_the_sort_whatever_the_layout(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    values = rng.normal(size=shape)
    values[rng.random(shape) < 0.2] = np.nan
    values[:7] = np.nan  # rows with no value at all
    values[7:9] = np.round(values[7:9])  # ties
    # a moved axis (the weekly state reads weeks along the last axis of a (n, weeks, 7) block)
    moved = np.moveaxis(np.ascontiguousarray(np.moveaxis(values, -1, 0)), 0, -1)
    for layout in (values, moved):
        median, count = nanmedian_count(layout)
        expected, expected_count = sorted_median(layout)
        assert_bitwise_equal(median, expected)
        np.testing.assert_array_equal(count, expected_count)


def test_nanmedian7_needs_seven_planes_and_gives_their_median() -> None:
    rng = np.random.default_rng(7)
    planes = [np.where(rng.random(1000) < 0.3, np.nan, rng.normal(size=1000)) for _ in range(7)]
    median, count = nanmedian7(planes)
    expected, expected_count = sorted_median(np.stack(planes, axis=-1))
    assert_bitwise_equal(median, expected)
    np.testing.assert_array_equal(count, expected_count)
    with pytest.raises(ValueError, match="7 arrays"):
        nanmedian7(planes[:6])


@pytest.mark.parametrize(("before", "after", "min_count"), [(3, 3, 3), (6, 0, 4)])
def test_rolling_median_tiles_equal_one_pass_over_the_window(before: int, after: int, min_count: int) -> None:
    rng = np.random.default_rng(before)
    values = rng.normal(size=(700, 90))  # 700 rows: several tiles
    values[rng.random(values.shape) < 0.15] = np.nan
    out = scoring._rolling_median(values, before, after, min_count, first=10)
    padded = np.pad(values, ((0, 0), (before, after)), constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 7, axis=1)
    expected, count = sorted_median(windows)
    expected = np.where(count >= min_count, expected, np.nan)
    expected[:, :10] = np.nan
    assert_bitwise_equal(out, expected)


def test_quantile_of_sorted_interpolates_between_neighbours_and_ignores_missing() -> None:
    srt = np.array([[1.0, 2.0, 4.0, np.nan], [3.0, np.nan, np.nan, np.nan], [np.nan] * 4, [1.0, 2.0, 3.0, 5.0]])
    count = np.array([3, 1, 0, 4])
    np.testing.assert_array_equal(scoring._quantile_of_sorted(srt, count, 0.5), [2.0, 3.0, np.nan, 2.5])
    np.testing.assert_allclose(scoring._quantile_of_sorted(srt, count, 0.9)[[0, 3]], [3.6, 4.4])


def _assert_same_results(actual: list[scoring.ScoreResult], expected: list[scoring.ScoreResult]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        for f in fields(e):
            np.testing.assert_array_equal(getattr(a, f.name), getattr(e, f.name), err_msg=f.name)


def test_scoring_in_row_blocks_on_threads_equals_scoring_all_rows_at_once() -> None:
    data = generate("mixed", n_series=300, n_days=120, seed=5)
    days = list(range(95, 120))
    whole = score_days(data.costs, data.dates, days, labels=False)
    chunked = score_days_chunked(data.costs, data.dates, days, chunk_rows=64, workers=3, labels=False)
    _assert_same_results(chunked, whole)


def test_the_stream_yields_each_day_once_all_blocks_scored_it_with_the_blocks_in_row_order() -> None:
    data = generate("sparse", n_series=200, n_days=110, seed=6)
    days = list(range(100, 110))
    seen: list[tuple[int, int]] = []
    stream = score_days_stream(
        data.costs, data.dates, days, chunk_rows=50, workers=2, progress=lambda d, t: seen.append((d, t)), lead=2
    )
    streamed = [scoring._merge_rows(parts) for parts in stream]
    _assert_same_results(streamed, score_days(data.costs, data.dates, days))
    # 4 blocks of 50 rows x 10 days, every pair counted once
    assert [d for d, _ in seen] == list(range(1, 41)) and {t for _, t in seen} == {40}


def test_a_failure_in_a_scoring_thread_reaches_the_consumer() -> None:
    data = generate("mixed", n_series=100, n_days=60, seed=1)
    with pytest.raises(ValueError, match="day indexes outside"):
        list(score_days_stream(data.costs, data.dates, [10, 60], chunk_rows=20, workers=2))


def test_a_consumer_that_stops_early_ends_the_scoring_threads() -> None:
    data = generate("mixed", n_series=120, n_days=90, seed=2)
    stream = score_days_stream(data.costs, data.dates, list(range(60, 90)), ScoringConfig(), chunk_rows=30, lead=1)
    first = next(stream)
    stream.close()  # returns only once the threads have stopped (the pool is joined)
    assert sum(part.cost.shape[0] for part in first) == 120


def test_growth_figures_in_row_tiles_equal_one_pass_over_all_rows() -> None:
    data = generate("billing", n_series=2_300, n_days=140, seed=4)  # three tiles, the last one short
    prepared = scoring._prepare(data.costs[:, 20:], 20)
    cfg = ScoringConfig()
    tiled = scoring._growth_in_tiles(prepared, 110, 139, cfg)
    whole = scoring._growth_columns(prepared, 110, 139, cfg)
    assert tiled.first == whole.first and len(tiled.spans) == len(whole.spans)
    for (growth, shaped), (expected_growth, expected_shaped) in zip(tiled.spans, whole.spans, strict=True):
        np.testing.assert_array_equal(growth, expected_growth)
        np.testing.assert_array_equal(shaped, expected_shaped)
    assert any(shaped.any() for _, shaped in whole.spans)  # the comparison covers drifts, not only empty figures


def test_month_pairs_on_arrays_equal_the_same_day_of_the_previous_month_day_by_day() -> None:
    # eight years of windows: month ends (31st -> 30th, 29th of March -> 28th/29th of February), leap years
    first = np.datetime64("2019-01-01")
    for shift, width in itertools.product(range(0, 2_922, 5), (1, 31, 56, 64)):
        start = first + shift
        earlier, later = [], []
        for k in range(width):
            back = scoring._same_day_previous_months(start + k, 1)[0]
            if k - back >= 0:
                earlier.append(k - back)
                later.append(k)
        pairs = scoring._month_pairs_from(start.astype(object), width)
        np.testing.assert_array_equal(pairs[0], earlier)
        np.testing.assert_array_equal(pairs[1], later)
