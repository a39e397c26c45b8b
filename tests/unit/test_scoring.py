"""Behaviour of the pure cost-anomaly engine (shared.costs.scoring) on small hand-built series."""

from __future__ import annotations

import numpy as np
import pytest

from shared.costs.scoring import (
    ScoringConfig,
    aggregate_series,
    score_backtest,
    score_day,
    score_last_day,
    top_contributors,
)
from shared.costs.synthetic import generate_costs

START = np.datetime64("2025-01-01", "D")  # a Wednesday
N_DAYS = 90
DATES = np.arange(START, START + N_DAYS)
WEEKDAY = (DATES.astype(np.int64) + 3) % 7  # 0 = Monday


def series(level: float, noise: float = 0.03, seed: int = 0, weekend: float = 1.0, days: int = N_DAYS) -> np.ndarray:
    """One daily cost series: ``level`` on weekdays, ``level * weekend`` on Saturday and Sunday, noisy."""
    rng = np.random.default_rng(seed)
    season = np.where(WEEKDAY[:days] >= 5, weekend, 1.0)
    return np.round(level * season * np.exp(rng.normal(0.0, noise, days)), 2)


def matrix(*rows: np.ndarray) -> np.ndarray:
    return np.vstack(rows).astype(np.float64)


def alert_days(costs: np.ndarray, first: int = 30) -> list[int]:
    result = score_backtest(costs, DATES, N_DAYS - first)
    return [first + int(d) for d in np.flatnonzero(result.anomaly[0])]


def test_weekend_dip_is_not_an_anomaly() -> None:
    # GIVEN a VM-heavy series at $400 on weekdays and $120 at the weekend
    costs = matrix(series(400.0, weekend=0.3, seed=1))
    # WHEN the daily job is replayed for two months THEN neither weekends nor Mondays alert
    assert alert_days(costs) == []
    result = score_backtest(costs, DATES, 60)
    weekends = WEEKDAY[30:] >= 5
    assert np.all(result.expected[0, weekends] < 0.5 * result.expected[0, ~weekends].mean())


def test_spike_is_alerted_with_its_dollar_impact() -> None:
    costs = matrix(series(200.0, seed=2))
    costs[0, -1] = 700.0
    result = score_last_day(costs, DATES)
    assert result.anomaly[0]
    assert result.reason[0] == "spike"
    assert result.direction[0] == "increase"
    assert result.severity[0] == "warning"
    assert result.expected[0] == pytest.approx(200.0, rel=0.1)
    assert result.excess_usd_per_day[0] == pytest.approx(700.0 - result.expected[0])
    assert result.excess_usd_per_hour[0] == pytest.approx(result.excess_usd_per_day[0] / 24)
    assert result.lower[0] < result.expected[0] < result.upper[0] < 700.0


def test_monthly_recurring_charge_on_same_day_is_not_an_anomaly() -> None:
    # GIVEN $100/day and a $2,000 licence billed on the 1st of every month
    costs = matrix(series(100.0, seed=3))
    firsts = np.array([d.astype(object).day == 1 for d in DATES])
    costs[0, firsts] += 2000.0
    march_1 = int((np.datetime64("2025-03-01") - START).astype(np.int64))
    # WHEN March 1st is scored THEN the charge is expected
    result = score_day(costs, DATES, march_1)
    assert not result.anomaly[0]
    assert result.reason[0] == "recurring"
    assert result.expected[0] == pytest.approx(2100.0, rel=0.1)
    # ... while the same charge on a day of month never seen before alerts
    costs[0, march_1 + 9] += 2000.0
    assert score_day(costs, DATES, march_1 + 9).anomaly[0]


def test_level_shift_alerts_as_one_episode_then_becomes_normal() -> None:
    costs = matrix(series(100.0, seed=4))
    costs[0, 60:] *= 3.0
    # flagged on its first days, up to the third (one episode), then the new normal
    assert alert_days(costs) == [60, 61, 62]
    result = score_last_day(costs, DATES)
    assert result.expected[0] == pytest.approx(300.0, rel=0.1)


def test_slow_drift_is_caught() -> None:
    # GIVEN $200/day growing steadily by 65 % over four weeks, under 2 % a day: no day stands out
    costs = matrix(series(200.0, noise=0.02, seed=5))
    ramp = np.clip((np.arange(N_DAYS) - 45) / 28.0, 0.0, 1.0)
    costs[0] *= 1.0 + 0.65 * ramp
    days = alert_days(costs)
    # THEN it is reported during the ramp, as a drift, and not day after day
    assert days and 45 <= days[0] <= 75
    assert len(days) <= 2
    result = score_day(costs, DATES, days[0])
    assert result.reason[0] == "drift"
    assert result.direction[0] == "increase"
    assert result.excess_usd_per_day[0] > 40.0
    assert result.expected[0] == pytest.approx(200.0, rel=0.1)


def test_short_history_is_warming_up() -> None:
    costs = matrix(series(500.0, seed=6))
    costs[0, :80] = np.nan
    costs[0, -1] = 5000.0
    result = score_last_day(costs, DATES)
    assert result.status[0] == "warming_up"
    assert result.reason[0] == "new_resource"
    assert not result.anomaly[0]
    assert np.isnan(result.expected[0])


def test_series_absent_on_the_day_is_not_scored() -> None:
    costs = matrix(series(50.0, seed=7))
    costs[0, 70:] = np.nan
    result = score_last_day(costs, DATES)
    assert result.status[0] == "absent" and not result.anomaly[0]


def test_decrease_is_recorded_not_alerted() -> None:
    costs = matrix(series(1000.0, seed=8))
    costs[0, -1] = 300.0
    result = score_last_day(costs, DATES)
    assert result.direction[0] == "decrease"
    assert result.reason[0] == "decrease"
    assert not result.anomaly[0]
    assert result.severity[0] == "none"
    assert result.excess_usd_per_day[0] < -600


def test_small_dollar_excess_is_not_alerted() -> None:
    costs = matrix(series(2.0, seed=9))
    costs[0, -1] = 8.0  # 4x, but only $6 a day
    result = score_last_day(costs, DATES)
    assert not result.anomaly[0]
    assert result.reason[0] == "below_gate"


def test_small_percent_excess_is_not_alerted() -> None:
    costs = matrix(series(20_000.0, noise=0.005, seed=10))
    costs[0, -1] = 23_600.0  # $3,600 but +18 %
    config = ScoringConfig(min_excess_pct=20.0)
    assert not score_last_day(costs, DATES, config).anomaly[0]
    assert score_last_day(costs, DATES, ScoringConfig(min_excess_pct=10.0)).anomaly[0]


def test_critical_when_excess_per_hour_exceeds_threshold() -> None:
    costs = matrix(series(10_000.0, seed=11), series(1_000.0, seed=12))
    costs[0, -1] = 50_000.0  # ~$1,670 an hour over
    costs[1, -1] = 3_000.0  # ~$83 an hour over
    result = score_last_day(costs, DATES, ScoringConfig(critical_usd_per_hour=1000.0))
    assert list(result.severity) == ["critical", "warning"]
    assert result.anomaly.all()


def test_past_anomalies_do_not_raise_the_baseline() -> None:
    costs = matrix(series(300.0, seed=13))
    costs[0, 70:72] = 3000.0
    costs[0, 80] = 10.0
    result = score_last_day(costs, DATES)
    assert result.expected[0] == pytest.approx(300.0, rel=0.1)
    costs[0, -1] = 600.0
    assert score_last_day(costs, DATES).anomaly[0]


def test_outage_days_and_return_to_normal_are_not_alerted() -> None:
    costs = matrix(series(250.0, seed=14))
    costs[0, [40, 41, 55, 77, 78, 79, 80, 81]] = 0.0
    assert alert_days(costs) == []


def test_intermittent_usage_is_not_an_anomaly() -> None:
    rng = np.random.default_rng(15)
    costs = matrix(np.where(rng.random(N_DAYS) < 0.3, np.round(80.0 * np.exp(rng.normal(0, 0.05, N_DAYS)), 2), 0.0))
    assert alert_days(costs) == []


def test_series_are_scored_independently_in_one_pass() -> None:
    data = generate_costs(n_series=200, n_days=N_DAYS, seed=3)
    together = score_last_day(data.costs, data.dates)
    for i in (0, 17, 101, 199):
        alone = score_last_day(data.costs[i : i + 1], data.dates)
        assert alone.anomaly[0] == together.anomaly[i]
        assert alone.reason[0] == together.reason[i]
        np.testing.assert_allclose(alone.expected[0], together.expected[i])


def test_backtest_scores_each_day_with_only_its_past() -> None:
    data = generate_costs(n_series=100, n_days=N_DAYS, seed=4)
    replay = score_backtest(data.costs, data.dates, 10)
    assert replay.anomaly.shape == (100, 10)
    assert list(replay.dates) == list(data.dates[-10:])
    changed_future = data.costs.copy()
    changed_future[:, -3:] *= 5.0
    earlier = score_day(changed_future, data.dates, N_DAYS - 4)
    np.testing.assert_array_equal(earlier.anomaly, replay.anomaly[:, 6])
    np.testing.assert_allclose(earlier.expected, replay.expected[:, 6])


def test_synthetic_generator_is_seeded_and_labelled() -> None:
    a = generate_costs(n_series=50, n_days=60, seed=9)
    b = generate_costs(n_series=50, n_days=60, seed=9)
    np.testing.assert_array_equal(a.costs, b.costs)
    assert a.events == b.events and a.events
    assert {e.kind for e in generate_costs(n_series=300, n_days=90, seed=1).events} == {
        "spike",
        "level_shift",
        "drift",
    }
    assert np.nanmin(a.costs) >= 0.0


def test_top_contributors_names_the_members_behind_an_increase() -> None:
    # GIVEN a squad of three: a steady VM, one that tripled, and a resource created yesterday
    members = matrix(series(100.0, seed=16), series(200.0, seed=17), series(50.0, seed=18))
    members[1, -1] = 600.0
    members[2, :-2] = np.nan
    members[2, -2:] = 150.0
    top = top_contributors(members, ["vm-a", "vm-b", "new-db"], DATES, limit=5)
    assert [c.member_id for c in top][:2] == ["vm-b", "new-db"]
    assert top[0].increase_usd == pytest.approx(600.0 - top[0].expected)
    assert top[1].status == "warming_up" and top[1].expected == 0.0
    assert sum(c.share for c in top) == pytest.approx(1.0)
    assert top[0].share > top[1].share


def test_aggregate_series_sums_members_by_group() -> None:
    costs = np.array([[1.0, 2.0, np.nan], [10.0, np.nan, np.nan], [5.0, 5.0, 5.0]])
    keys, sums = aggregate_series(costs, ["squad-b", "squad-b", "squad-a"])
    assert list(keys) == ["squad-a", "squad-b"]
    np.testing.assert_array_equal(sums, np.array([[5.0, 5.0, 5.0], [11.0, 2.0, np.nan]]))


def test_aggregates_are_scored_by_the_same_engine() -> None:
    costs = matrix(*(series(100.0, seed=s) for s in range(20, 26)))
    costs[2, -1] = 900.0
    keys, sums = aggregate_series(costs, ["a", "a", "a", "b", "b", "b"])
    result = score_last_day(sums, DATES)
    assert list(result.anomaly) == [True, False]


def test_costs_must_be_a_dense_daily_matrix() -> None:
    with pytest.raises(ValueError):
        score_last_day(np.ones(10), DATES[:10])
    with pytest.raises(ValueError):
        score_last_day(np.ones((1, 3)), np.array(["2025-01-01", "2025-01-02", "2025-01-05"], dtype="datetime64[D]"))


def test_a_noisy_series_does_not_alert_on_its_own_noise() -> None:
    # GIVEN 40 series with 20-25 % day-to-day noise (multiplicative: +50 % days happen, -50 % hardly)
    costs = matrix(*(series(300.0, noise=0.2 + 0.00125 * s, seed=100 + s) for s in range(40)))
    # WHEN two months are replayed THEN the band is wide enough: no alert
    assert not score_backtest(costs, DATES, 60).anomaly.any()


def test_occasional_zero_days_neither_alert_nor_lower_the_expected_cost() -> None:
    costs = matrix(series(150.0, noise=0.05, seed=31))
    rng = np.random.default_rng(31)
    costs[0, rng.random(N_DAYS) < 0.1] = 0.0
    result = score_backtest(costs, DATES, 60)
    assert not result.anomaly.any()
    working = costs[0, 30:] > 0
    assert np.all(np.abs(result.expected[0, working] / 150.0 - 1.0) < 0.15)


def test_a_monthly_charge_on_any_day_of_month_is_learned() -> None:
    # GIVEN a $1,500 charge on the 15th of every month on top of $100/day
    costs = matrix(series(100.0, seed=32))
    dom = np.array([d.astype(object).day for d in DATES])
    costs[0, dom == 15] += 1500.0
    result = score_backtest(costs, DATES, 60)
    # THEN February's and March's charges are expected, explained as recurring
    on_charge = dom[30:] == 15
    assert not result.anomaly[0].any()
    assert set(result.reason[0, on_charge]) == {"recurring"}
    assert np.all(result.expected[0, on_charge] > 1400.0)


def test_a_month_start_charge_of_a_young_resource_is_a_new_recurring_charge_not_an_alert() -> None:
    # GIVEN a resource created on 10 February with a $900 licence on the 1st of each month
    costs = matrix(series(60.0, seed=33))
    dom = np.array([d.astype(object).day for d in DATES])
    costs[0, :40] = np.nan
    costs[0, (dom == 1) & ~np.isnan(costs[0])] += 900.0
    result = score_backtest(costs, DATES, 60)
    first_of_march = int(np.flatnonzero((dom == 1) & (np.arange(N_DAYS) >= 40))[0]) - 30
    assert result.reason[0, first_of_march] == "new_recurring" and not result.anomaly[0, first_of_march]
    assert not result.anomaly[0].any()


def test_compounding_growth_is_caught_within_ten_days_and_an_ordinary_trend_is_not() -> None:
    # GIVEN one series growing 5 % a day from day 60, and one growing 0.4 % a day all along
    drifting = series(200.0, noise=0.05, seed=34)
    drifting[60:] *= 1.05 ** np.arange(1, N_DAYS - 59)
    trending = series(200.0, noise=0.05, seed=35) * 1.004 ** np.arange(N_DAYS)
    flagged = score_backtest(matrix(drifting, trending), DATES, 60).anomaly
    first = 30 + int(np.flatnonzero(flagged[0])[0])
    assert 60 <= first <= 70
    assert not flagged[1].any()


def test_the_day_after_a_one_day_spike_is_judged_against_the_normal_level() -> None:
    costs = matrix(series(100.0, seed=36))
    costs[0, 70] = 800.0
    result = score_backtest(costs, DATES, 60)
    assert result.anomaly[0, 40]  # day 70
    assert result.expected[0, 41] == pytest.approx(100.0, rel=0.1)
    # and a real jump the next day is still seen
    costs[0, 71] = 500.0
    assert score_day(costs, DATES, 71).anomaly[0]


def test_a_weekly_pattern_that_changes_alerts_on_its_first_weekend_at_most() -> None:
    # GIVEN weekends at 30 % of weekdays until day 50, then as busy as weekdays
    costs = matrix(series(400.0, weekend=0.3, seed=37))
    weekend = WEEKDAY >= 5
    costs[0, 50:][weekend[50:]] /= 0.3
    days = alert_days(costs)
    assert len(days) <= 2 and all(d < 60 for d in days)


def test_backtest_reusing_state_between_days_equals_scoring_each_day_alone() -> None:
    from dataclasses import fields

    from shared.costs.generators import generate

    data = generate("mixed", n_series=150, n_days=120, seed=3)
    replay = score_backtest(data.costs, data.dates, 20)
    for k, t in enumerate(range(100, 120)):
        alone = score_day(data.costs, data.dates, t)
        for f in fields(alone):
            if f.name != "dates":
                np.testing.assert_array_equal(getattr(replay, f.name)[:, k], getattr(alone, f.name), err_msg=f.name)


def test_a_backtest_reports_progress() -> None:
    seen: list[tuple[int, int]] = []
    score_backtest(
        generate_costs(n_series=30, n_days=60, seed=2).costs, DATES[:60], 10, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == list(range(1, 11))


def test_a_lone_day_on_a_heavy_tailed_series_must_clear_a_wider_band() -> None:
    # GIVEN two series alike but for their past: one had lone +60 % days now and then (heavy-tailed noise)
    ordinary = series(200.0, noise=0.05, seed=11)
    heavy = ordinary.copy()
    for day in (40, 52, 61, 70, 79):
        heavy[day] = round(heavy[day] * 1.6, 2)
    costs = matrix(ordinary, heavy)
    plain = score_last_day(costs, DATES, ScoringConfig(single_day_factor=1.0))
    # WHEN the last day is a lone increase just past the ordinary band, but inside 1.4 times it
    bump = 1.1 * float(max(plain.upper))
    wider = plain.expected[1] * (plain.upper[1] / plain.expected[1]) ** 1.4
    assert bump < wider
    costs[:, -1] = bump
    tailed = score_last_day(costs, DATES)
    # THEN the ordinary series alerts and the heavy-tailed one, whose own history has such days, does not
    assert tailed.anomaly[0]
    assert not tailed.anomaly[1]
    assert tailed.reason[1] != "spike"
    # and without the rule (single_day_factor 1) it would have alerted
    assert score_last_day(costs, DATES, ScoringConfig(single_day_factor=1.0)).anomaly[1]
    # AND a lone day far past the wider band still alerts on the heavy-tailed series
    costs[:, -1] = 3.0 * plain.upper[1]
    assert score_last_day(costs, DATES).anomaly[1]


def test_a_new_level_inside_the_one_day_band_alerts_on_its_second_day() -> None:
    # GIVEN a quiet series whose cost moves up for good by less than the one-day band
    costs = matrix(series(300.0, noise=0.05, seed=41))
    plain = score_day(costs, DATES, 70)
    unit = float(plain.noise[0])
    step = float(np.exp(3.4 * unit))  # past the 2.75-unit confirmation, inside the 4-unit band
    assert plain.expected[0] * step < plain.upper[0]
    costs[0, 70:] = round(float(plain.expected[0]) * step, 2)  # a flat new level, no luck either way
    # WHEN the daily job is replayed THEN its first day is inside the band, the second alerts as a level shift
    first, second = score_day(costs, DATES, 70), score_day(costs, DATES, 71)
    assert not first.anomaly[0]
    assert second.anomaly[0] and second.reason[0] == "level_shift"
    assert second.excess_usd_per_day[0] > 10.0
    # AND its band is the bound it crossed: the explanation shows the day above its upper bound
    assert second.expected[0] < second.upper[0] < second.cost[0] < plain.upper[0]
    # AND the confirmation is what caught it: without it the second day is not flagged
    assert not score_day(costs, DATES, 71, ScoringConfig(confirm_z=0.0)).anomaly[0]
    # AND it is one episode: the new level is the new normal a few days later
    assert alert_days(costs, 60) == [71, 72]  # one run of days, then normal


def test_two_ordinary_days_in_a_row_do_not_confirm_anything() -> None:
    # GIVEN 40 quiet series WHEN replayed for two months THEN none alerts (no pair of days passes by chance)
    costs = matrix(*(series(200.0, noise=0.08, seed=100 + k) for k in range(40)))
    assert not score_backtest(costs, DATES, 60).anomaly.any()


def test_a_level_shift_does_not_alert_again_as_a_drift() -> None:
    # GIVEN a 10 %-noise series that doubles on day 50: alerted as a shift on its first days
    costs = matrix(series(400.0, noise=0.1, seed=5))
    costs[0, 50:] *= 2.0
    flagged = alert_days(costs, 40)
    assert flagged and flagged[0] == 50
    # THEN the weekly median catching up with the step over the next weeks is not reported as a drift
    assert flagged == [50, 51, 52]  # its first days, one episode
    # (a drift test without the step check reports one ten days later)
    loose = score_backtest(costs, DATES, 50, ScoringConfig(drift_max_step_share=10.0))
    assert (loose.reason[0] == "drift").any()


def test_noise_is_estimated_per_weekday() -> None:
    # GIVEN a series steady on weekdays (3 %) whose Sundays swing by 30 % (a weekly batch of varying size)
    rng = np.random.default_rng(43)
    noise = np.where(WEEKDAY == 6, 0.3, 0.03)
    costs = matrix(np.round(500.0 * np.exp(rng.normal(0.0, 1.0, N_DAYS) * noise), 2))
    sunday = int(np.flatnonzero(WEEKDAY == 6)[-1])
    monday = sunday - 6
    result_sunday, result_monday = score_day(costs, DATES, sunday), score_day(costs, DATES, monday)
    # THEN the Sunday band is wider than the Monday one
    assert result_sunday.noise[0] > 1.5 * result_monday.noise[0]
    # AND the same +60 % day alerts on a Monday but is inside the Sunday band
    up = costs.copy()
    up[0, monday] = round(1.6 * float(result_monday.expected[0]), 2)
    assert score_day(up, DATES, monday).anomaly[0]
    up = costs.copy()
    up[0, sunday] = round(1.6 * float(result_sunday.expected[0]), 2)
    assert not score_day(up, DATES, sunday).anomaly[0]


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 11, 19])
def test_rolling_max_equals_the_plain_loop(width: int) -> None:
    from shared.costs.scoring import _rolling_max

    values = np.random.default_rng(width).normal(size=(4, 40))
    expected = np.array([[values[r, max(0, j - width + 1) : j + 1].max() for j in range(40)] for r in range(4)])
    np.testing.assert_array_equal(_rolling_max(values, width), expected)


def test_a_billing_day_charge_of_a_young_resource_is_a_new_recurring_charge_and_persisting_increases_still_alert() -> (
    None
):
    # GIVEN two resources created on 10 February: one with a $900 charge on the 5th of each month (its billing
    # day), one whose cost triples for good on the same day in March
    charged, stepped = series(60.0, seed=44), series(60.0, seed=45)
    dom = np.array([d.astype(object).day for d in DATES])
    charged[:40] = stepped[:40] = np.nan
    charged[(dom == 5) & (np.arange(N_DAYS) >= 40)] += 900.0
    fifth_of_march = int(np.flatnonzero((dom == 5) & (np.arange(N_DAYS) >= 40))[0])
    stepped[fifth_of_march:] *= 3.0
    result = score_backtest(matrix(charged, stepped), DATES, 60)
    k = fifth_of_march - 30
    # THEN the first charge is recorded as a new recurring charge, not alerted, and never alerts after
    assert result.reason[0, k] == "new_recurring" and not result.anomaly[0].any()
    # AND the lasting increase of the other young resource alerts on its second day
    assert not result.anomaly[1, k] and result.anomaly[1, k + 1]
    assert result.reason[1, k + 1] == "level_shift"


def test_a_monthly_charge_is_not_taken_for_heavy_tailed_noise() -> None:
    # GIVEN two quiet series alike but for a monthly charge on the 1st (three times the daily cost)
    plain = series(200.0, noise=0.05, seed=51)
    charged = plain.copy()
    firsts = np.flatnonzero((DATES - DATES.astype("datetime64[M]").astype("datetime64[D]")).astype(int) == 0)
    charged[firsts] += 600.0
    costs = matrix(plain, charged)
    t = 80  # a Saturday, nowhere near the 1st
    base = score_day(costs, DATES, t)
    # WHEN day t is a lone increase past the ordinary band (the day before inside it)
    costs[:, t] = np.round(1.4 * base.upper, 2)
    # THEN both alert: the charge days are neither noise nor evidence of heavy tails
    result = score_day(costs, DATES, t)
    assert result.anomaly.all()
    assert list(result.reason) == ["spike", "spike"]
    # AND the charge's own days still are not anomalies
    assert not score_backtest(matrix(charged), DATES, 60).anomaly.any()
    # AND without telling charges apart, the charged series's band is wider, and its lone day is not flagged
    blind = score_day(costs, DATES, t, ScoringConfig(charge_z=0.0))
    assert blind.anomaly[0] and not blind.anomaly[1]


def test_a_new_level_inside_the_band_on_a_noisy_series_alerts_on_its_third_day() -> None:
    # GIVEN a 12 %-noise series whose cost moves up for good: +2.2, +3.6 and +2.7 noise units on its first
    # three days (each day in its weekday's unit), then +2.8
    costs = matrix(series(300.0, noise=0.12, seed=61))
    level = float(score_day(costs, DATES, 70).expected[0])
    for t in range(70, N_DAYS):
        unit = float(score_day(costs, DATES, t).noise[0])  # the unit of day t does not depend on day t
        costs[0, t] = round(level * float(np.exp({70: 2.2, 71: 3.6, 72: 2.7}.get(t, 2.8) * unit)), 2)
    # WHEN the daily job runs: no two days in a row past the 2.75-unit confirmation, all three past 1.5
    days = [score_day(costs, DATES, t) for t in (70, 71, 72)]
    # THEN neither of its first two days alerts, the third does (on average past 2.5 units over three days)
    assert [bool(r.anomaly[0]) for r in days] == [False, False, True]
    assert days[2].reason[0] == "level_shift" and days[2].upper[0] < days[2].cost[0]
    # AND without the three-day rule it would not have
    assert not score_day(costs, DATES, 72, ScoringConfig(run_mean_z=0.0)).anomaly[0]


def test_a_confirmed_new_level_is_measured_over_the_level_before_it() -> None:
    # GIVEN a quiet $100/day series that jumps 80 % for a day (kept from alerting by a wide lone-day band) and
    # then stays 25 % up for good: after two high days the post-event guard already expects the new level
    costs = matrix(series(100.0, noise=0.05, seed=7))
    costs[0, 60] *= 1.8
    costs[0, 61:] *= 1.25
    cfg = ScoringConfig(single_day_knee=0.0, single_day_factor=3.0, single_day_cap=0.0)
    flagged = [t for t in range(55, 70) if score_day(costs, DATES, t, cfg).anomaly[0]]
    # THEN the run's third day confirms it, with its excess over the level before the jump (about $25)
    assert flagged == [62]
    result = score_day(costs, DATES, 62, cfg)
    assert result.reason[0] == "level_shift"
    assert result.expected[0] == pytest.approx(100.0, rel=0.1)
    assert result.excess_usd_per_day[0] > 10.0
    # AND measured over the moved-up level instead, the same day is below the gate and the shift goes silent
    silent = ScoringConfig(single_day_knee=0.0, single_day_factor=3.0, single_day_cap=0.0, confirm_reference=False)
    assert not any(score_day(costs, DATES, t, silent).anomaly[0] for t in range(55, 70))


def test_a_lone_day_on_a_noisy_series_needs_a_bounded_extra_margin() -> None:
    # GIVEN a 20 %-noise series and a lone day 35 % over the top of its band (about 3.5x its expected cost)
    costs = matrix(series(100.0, noise=0.2, seed=71))
    t = 80
    base = score_day(costs, DATES, t)
    costs[0, t] = round(float(base.upper[0]) * 1.35, 2)
    # THEN it alerts: the lone-day margin is at most 0.25 on the log scale (28 %) over the band
    result = score_day(costs, DATES, t)
    assert result.anomaly[0] and result.reason[0] == "spike"
    # AND a lone day only 20 % over the band is held back (one noisy day is not a spike)
    costs[0, t] = round(float(base.upper[0]) * 1.2, 2)
    assert not score_day(costs, DATES, t).anomaly[0]
    # AND without the cap, a band widened 1.9 times would have asked it for ~6x its expected cost
    uncapped = ScoringConfig(single_day_knee=0.0, single_day_cap=0.0)
    costs[0, t] = round(float(base.upper[0]) * 1.35, 2)
    assert not score_day(costs, DATES, t, uncapped).anomaly[0]


def test_a_drift_judges_its_quiet_days_as_they_were_judged_then() -> None:
    # GIVEN drifting series whose noise changes while they drift (a noisy week leaves the noise window)
    rng = np.random.default_rng(81)
    rows = []
    for k in range(12):
        row = series(150.0 + 20 * k, noise=0.04 + 0.01 * k, seed=100 + k)
        row[40:47] *= np.exp(rng.normal(0.0, 0.3, 7))  # a wild week, later out of the noise window
        row *= np.power(1.0 + 0.03 + 0.004 * k, np.clip(np.arange(N_DAYS) - 60, 0, 22))
        rows.append(row)
    costs = matrix(*rows)
    # THEN the backtest (weekly states shared between days) and each day scored alone (the quiet days' weeks
    # computed for the drifting rows only) agree day by day
    replayed = score_backtest(costs, DATES, 30)
    for t in range(N_DAYS - 30, N_DAYS):
        alone = score_day(costs, DATES, t)
        assert np.array_equal(alone.anomaly, replayed.anomaly[:, t - (N_DAYS - 30)])
        assert list(alone.reason) == list(replayed.reason[:, t - (N_DAYS - 30)])
    # AND the drifts are reported
    assert (replayed.reason == "drift").any(axis=1).sum() >= 6


def test_a_lone_day_the_series_has_matched_before_waits_for_the_next_day() -> None:
    # GIVEN two series alike but for one lone +150 % day seven weeks ago on the second (its noise's doing)
    first_time = series(200.0, noise=0.05, seed=21)
    matched = first_time.copy()
    matched[40] = round(matched[40] * 2.5, 2)
    costs = matrix(first_time, matched)
    # WHEN the last day but one is a lone +120 % day on both
    day = N_DAYS - 2
    costs[:, day] = np.round(costs[:, day] * 2.2, 2)
    result = score_day(costs, DATES, day)
    # THEN the first-ever excursion alerts at once, the one the series has matched before does not
    assert result.anomaly[0]
    assert not result.anomaly[1]
    # and without the exceedance test it would have alerted
    assert score_day(costs, DATES, day, ScoringConfig(exceedance_count=0)).anomaly[1]
    # AND when the next day stays as high, it alerts then
    costs[:, day + 1] = np.round(costs[:, day + 1] * 2.2, 2)
    assert score_day(costs, DATES, day + 1).anomaly[1]


def test_a_past_multi_day_event_does_not_make_the_next_increase_ordinary() -> None:
    # GIVEN a series whose only past excursion is a three-day event (a run: an event, not noise)
    costs = matrix(series(200.0, noise=0.05, seed=22))
    costs[0, 40:43] = np.round(costs[0, 40:43] * 2.5, 2)
    # WHEN the last day is a lone +120 % day THEN it alerts at once
    costs[0, -1] = round(costs[0, -1] * 2.2, 2)
    assert score_last_day(costs, DATES).anomaly[0]


def test_a_monthly_charge_that_fell_on_a_weekend_dip_is_still_learned() -> None:
    # GIVEN a series at $100 on weekdays and $25 at the weekend, charged $70 on the 2nd of every month: on a
    # Thursday in January, on a Sunday in February (where it stays under Monday's cost)
    costs = matrix(series(100.0, noise=0.02, seed=23, weekend=0.25))
    charge_days = [1, 32, 60]  # 2 January, 2 February, 2 March
    costs[0, charge_days] += 70.0
    assert costs[0, 32] < costs[0, 33]
    # WHEN the 2nd of March (a Sunday) is scored
    result = score_day(costs, DATES, 60)
    # THEN the charge is expected: no anomaly, reason recurring
    assert not result.anomaly[0]
    assert result.reason[0] == "recurring"
    assert result.expected[0] > 80.0


def test_a_month_start_charge_where_the_previous_months_had_no_usage_is_a_new_charge() -> None:
    # GIVEN two steady series; on the first, the 1st of January and of February were outage days (zero)
    unseen = series(100.0, noise=0.02, seed=24)
    unseen[[0, 31]] = 0.0
    seen = series(100.0, noise=0.02, seed=24)
    costs = matrix(unseen, seen)
    # WHEN the 1st of March costs $300 more on both
    costs[:, 59] += 300.0
    result = score_day(costs, DATES, 59)
    # THEN where no charge could have shown the month before it is taken for a new monthly charge, not alerted
    assert not result.anomaly[0]
    assert result.reason[0] == "new_recurring"
    # AND where the same day had usage and no charge, it alerts
    assert result.anomaly[1]


def test_the_day_after_a_much_higher_day_is_its_recovery_not_a_new_level() -> None:
    # GIVEN two alike series at $100 with 10 % noise
    recovering = series(100.0, noise=0.1, seed=25)
    shifted = recovering.copy()
    costs = matrix(recovering, shifted)
    expected = float(score_last_day(costs, DATES).expected[0])
    # WHEN the first has a $2,000 day and then a day 45 % over its expected cost, and the second two days 45 % over
    costs[0, -2], costs[0, -1] = 2000.0, round(1.45 * expected, 2)
    costs[1, -2:] = round(1.45 * expected, 2)
    result = score_last_day(costs, DATES)
    # THEN the second day after the spike is its recovery; two days alike at the new height are a new level
    assert not result.anomaly[0]
    assert result.anomaly[1] and result.reason[1] == "level_shift"
