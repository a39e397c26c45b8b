"""Seeded, labelled synthetic daily costs for tests and the scoring benchmark.

Each series is ``level x trend x weekday factor x noise`` (+ a monthly recurring charge for some), with
magnitudes log-normal from cents to tens of thousands of dollars a day, resources created and deleted
inside the window, outage (zero) days and a few intermittent usage series. On top, labelled increases:

* ``spike``: 1-3 days multiplied by m;
* ``level_shift``: every day from the onset multiplied by m;
* ``drift``: a linear ramp over 10-24 days up to m, then held.

An injected anomaly is at least ``min_sigmas`` noise sigmas (log scale) and +40 %: smaller moves are
indistinguishable from the series's own noise, and nobody would label them. Unlabelled decreases (a
resource scaled down) are injected as well; they must not alert.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

KINDS = ("spike", "level_shift", "drift")


@dataclass(frozen=True)
class AnomalyEvent:
    """One injected increase: ``first_day_excess_usd`` is the clean (noise-free) excess on the onset day;
    ``developed_excess_usd`` the daily excess once fully developed (equal, except for a drift's ramp)."""

    series: int
    onset: int
    kind: str
    first_day_excess_usd: float
    developed_excess_usd: float
    duration_days: int


@dataclass(frozen=True)
class SyntheticCosts:
    costs: npt.NDArray[np.float64]
    dates: npt.NDArray[np.datetime64]
    series_ids: list[str]
    events: list[AnomalyEvent]
    noise_sigma: npt.NDArray[np.float64]
    traits: dict[str, npt.NDArray[np.bool_]]


def _days_in_month(day: np.datetime64) -> int:
    month = day.astype("datetime64[M]")
    return int(((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64))


def generate_costs(
    n_series: int = 2000,
    n_days: int = 120,
    seed: int = 0,
    start: str = "2025-01-01",
    event_probability: float = 0.2,
    first_event_day: int = 35,
    min_sigmas: float = 6.0,
) -> SyntheticCosts:
    """Generate ``n_series`` x ``n_days`` costs (NaN outside a resource's life) and the injected events.

    Each series gets at most one labelled event, with onset uniform in [first_event_day, n_days - 1].
    """
    rng = np.random.default_rng(seed)
    n, t = n_series, n_days
    dates = np.arange(np.datetime64(start, "D"), np.datetime64(start, "D") + t)
    day = np.arange(t)
    weekday = (dates.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 0 = Monday
    dom = np.array([d.astype(object).day for d in dates])

    level = np.clip(rng.lognormal(np.log(15.0), 2.0, n), 0.02, 60_000.0)
    sigma = np.clip(rng.lognormal(np.log(0.05), 0.6, n), 0.01, 0.3)
    growth = rng.normal(0.0, 0.001, n)
    weekend_factor = np.where(rng.random(n) < 0.35, rng.uniform(0.15, 0.85, n), 1.0)
    weekend_factor[rng.random(n) < 0.03] = 0.0  # dev environments switched off at the weekend

    season = np.where(weekday[None, :] >= 5, weekend_factor[:, None], 1.0)
    base = level[:, None] * np.exp(growth[:, None] * day[None, :]) * season
    clean = base.copy()

    events: list[AnomalyEvent] = []
    has_event = rng.random(n) < event_probability
    kinds = rng.choice(len(KINDS), n, p=[0.5, 0.3, 0.2])
    onsets = rng.integers(first_event_day, t, n)
    min_mult = np.maximum(1.4, np.exp(min_sigmas * sigma))
    for i in np.flatnonzero(has_event):
        kind, onset = KINDS[kinds[i]], int(onsets[i])
        if kind == "spike":
            mult = min_mult[i] * np.exp(rng.uniform(0.0, np.log(5.0)))
            duration = int(rng.integers(1, 4))
            factor = np.ones(t)
            factor[onset : onset + duration] = mult
        elif kind == "level_shift":
            mult = min_mult[i] * np.exp(rng.uniform(0.0, np.log(2.5)))
            duration = t - onset
            factor = np.where(day >= onset, mult, 1.0)
        else:
            mult = min_mult[i] * rng.uniform(1.1, 2.0)
            duration = int(rng.integers(10, 25))
            ramp = np.clip((day - onset + 1) / duration, 0.0, 1.0)
            factor = 1.0 + (mult - 1.0) * ramp
        base[i] *= factor
        first = float(base[i, onset] - clean[i, onset])
        developed_day = min(onset + duration - 1, t - 1) if kind == "drift" else onset
        developed = float(base[i, developed_day] - clean[i, developed_day])
        events.append(AnomalyEvent(int(i), onset, kind, first, developed, duration))

    # unlabelled decreases: a resource scaled down for good
    down = ~has_event & (rng.random(n) < 0.05)
    for i in np.flatnonzero(down):
        base[i, rng.integers(first_event_day, t) :] *= rng.uniform(0.2, 0.7)

    noise = rng.normal(0.0, 1.0, (n, t)) * sigma[:, None]
    costs = base * np.exp(noise - sigma[:, None] ** 2 / 2)

    created = rng.random(n) < 0.12
    first_day = np.where(created, rng.integers(1, t, n), 0)
    deleted = rng.random(n) < 0.05
    last_day = np.where(deleted, rng.integers(1, t, n), t - 1)
    last_day = np.maximum(last_day, first_day)

    # monthly charges (licences, reservations) fall on the purchase anniversary: creation day if created here
    recurring = rng.random(n) < 0.1
    charge_day = np.where(created, dom[first_day], rng.integers(1, 29, n))
    charge = level * rng.uniform(2.0, 20.0, n)
    month_days = np.array([_days_in_month(d) for d in dates])
    on_charge_day = dom[None, :] == np.minimum(charge_day[:, None], month_days[None, :])
    costs += np.where(recurring[:, None] & on_charge_day, charge[:, None], 0.0)

    outages = rng.random(n) < 0.05
    costs[outages[:, None] & (rng.random((n, t)) < 0.03)] = 0.0
    intermittent = ~has_event & (rng.random(n) < 0.02)
    costs[intermittent[:, None] & (rng.random((n, t)) < 0.7)] = 0.0

    costs = np.round(costs, 2)
    costs[(day[None, :] < first_day[:, None]) | (day[None, :] > last_day[:, None])] = np.nan

    # an increase needs some life before it to be an anomaly at all
    kept = [e for e in events if first_day[e.series] + 21 <= e.onset <= last_day[e.series]]
    ids = [f"/subscriptions/sub-{i % 37:02d}/resourceGroups/rg-{i % 211}/providers/r/{i:07d}" for i in range(n)]
    traits = {
        "weekend_dip": weekend_factor < 1.0,
        "recurring": recurring,
        "outages": outages,
        "intermittent": intermittent,
        "scaled_down": down,
        "created": created,
        "deleted": deleted,
    }
    return SyntheticCosts(costs=costs, dates=dates, series_ids=ids, events=kept, noise_sigma=sigma, traits=traits)
