"""The independent generator families, the episode-based evaluation and the gated baselines."""

from __future__ import annotations

import numpy as np
import pytest

from bench.evaluation import episodes, evaluate
from shared.costs import baselines
from shared.costs.generators import FAMILIES, HELD_OUT_FAMILIES, TUNING_FAMILIES, generate
from shared.costs.synthetic import AnomalyEvent, SyntheticCosts


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_seeded_labelled_and_non_negative(family: str) -> None:
    a = generate(family, n_series=300, n_days=120, seed=5)
    b = generate(family, n_series=300, n_days=120, seed=5)
    np.testing.assert_array_equal(a.costs, b.costs)
    assert a.events == b.events and {e.kind for e in a.events} == {"spike", "level_shift", "drift"}
    assert np.nanmin(a.costs) >= 0.0 and a.costs.shape == (300, 120)
    for e in a.events:  # every labelled event has three weeks of life before it
        assert not np.isnan(a.costs[e.series, e.onset - 21])
        assert family == "seed" or a.costs[e.series, e.onset] > 0  # the new families: not on an outage day


def test_families_differ_in_their_assumptions() -> None:
    heavy, sparse, billing = (generate(f, n_series=600, n_days=120, seed=1) for f in ("heavy", "sparse", "billing"))
    zero_share = {name: np.nanmean(d.costs == 0) for name, d in (("heavy", heavy), ("sparse", sparse))}
    assert zero_share["sparse"] > 3 * zero_share["heavy"]
    # heavy tails: far more days beyond 4 robust sigmas of the day-to-day log change than a Gaussian gives
    steps = np.diff(np.log(np.where(heavy.costs > 0, heavy.costs, np.nan)), axis=1)
    steps = steps[np.sum(~np.isnan(steps), axis=1) > 30]
    scale = np.nanmedian(np.abs(steps - np.nanmedian(steps, axis=1, keepdims=True)), axis=1, keepdims=True) * 1.4826
    assert np.nanmean(np.abs(steps) > 4 * scale) > 0.005
    assert billing.traits["weekly_regime_change"].mean() > 0.15
    assert set(TUNING_FAMILIES) | set(HELD_OUT_FAMILIES) == set(FAMILIES)
    assert not set(TUNING_FAMILIES) & set(HELD_OUT_FAMILIES)
    with pytest.raises(ValueError, match="unknown generator family"):
        generate("nope")


def _data(events: list[AnomalyEvent]) -> SyntheticCosts:
    costs = np.full((3, 40), 100.0)
    dates = np.arange(np.datetime64("2025-01-01"), np.datetime64("2025-01-01") + 40)
    return SyntheticCosts(costs, dates, ["a", "b", "c"], events, np.full(3, 0.05), {})


def test_flags_are_read_as_episodes_and_only_episodes_outside_every_event_are_false() -> None:
    flags = np.zeros((3, 40), dtype=bool)
    flags[0, 30:33] = True  # one episode over a spike: caught, not false
    flags[0, 36] = True  # the spike's recovery alerting again 3 days after it ended: false
    flags[1, 25] = flags[1, 27] = True  # two separate episodes on a quiet series: two false
    series, starts, ends = episodes(flags)
    assert list(zip(series, starts, ends, strict=True)) == [(0, 30, 32), (0, 36, 36), (1, 25, 25), (1, 27, 27)]
    spike = AnomalyEvent(0, 30, "spike", 300.0, 300.0, 2)
    shift = AnomalyEvent(2, 28, "level_shift", 50.0, 50.0, 12)  # missed
    q = evaluate("m", "f", flags, _data([spike, shift]), 20, 0.0)
    assert (q.caught, q.events, q.false_episodes) == (1, 2, 3)
    assert q.recall == 0.5 and q.precision == 0.25 and q.recall_by_kind["level_shift"] == (0, 1)
    assert q.false_per_1000 == pytest.approx(1000 * 3 / 60)


def test_baselines_are_held_to_the_engines_materiality_gate() -> None:
    # GIVEN cent-level series that double today: every baseline's rule fires, but $0.05 pages nobody
    rng = np.random.default_rng(0)
    cheap = 0.05 * np.exp(rng.normal(0, 0.02, (20, 60)))
    cheap[:, -1] *= 3.0
    big = cheap * 1000.0
    for detector in (baselines.naive_rule, baselines.kusto_decompose_anomalies):
        assert not detector(cheap, 59).any()
        assert detector(big, 59).all()
        assert detector(cheap, 59, min_impact_usd_per_day=0.0, min_excess_pct=0.0).all()
    assert not baselines.stl_robust(cheap[:3], 59).any() and baselines.stl_robust(big[:3], 59).all()


def test_the_described_family_follows_the_issue_description() -> None:
    # all labelled increases in the last 60 days, about one series in seven, drifts of +4-8 %/day for ~20 days
    data = generate("described", n_series=1000, n_days=180, seed=2)
    assert min(e.onset for e in data.events) >= 120
    assert 0.08 < len(data.events) / 1000 < 0.16
    drifts = [e for e in data.events if e.kind == "drift"]
    assert drifts and all(16 <= e.duration_days <= 24 for e in drifts)
    for e in (e for e in drifts if e.onset + e.duration_days <= 180):  # ramps compound at 4-8 %/day
        assert e.developed_excess_usd > e.first_day_excess_usd * 10
    assert "described" in HELD_OUT_FAMILIES


def test_an_increase_the_generator_left_unlabelled_is_neither_false_nor_required() -> None:
    # GIVEN generated data where some injected increases fell too early in a young series's life to be labelled
    data = generate("gaussian", n_series=2000, n_days=150, seed=7)
    marked = data.traits["unlabelled_increase"]
    assert 0 < marked.sum() < 40 and not any(marked[e.series] for e in data.events)
    # WHEN a method flags every day of the marked series THEN none of those flags is a false episode
    flags = np.zeros(data.costs.shape, dtype=bool)
    flags[marked, -30:] = True
    assert evaluate("m", "f", flags, data, 30, 0.0).false_episodes == 0
    # while the same flags on unmarked quiet series all count
    quiet = np.flatnonzero(~marked & ~np.isin(np.arange(2000), [e.series for e in data.events]))[: marked.sum()]
    flags[:] = False
    flags[quiet, -30:] = True
    assert evaluate("m", "f", flags, data, 30, 0.0).false_episodes == len(quiet)
