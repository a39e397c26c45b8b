"""Currencies in the daily scan: a series is per currency, thresholds are converted with explicit rates only.

Costs are never converted. `COST_CRITICAL_USD_PER_HOUR` and `COST_MIN_IMPACT_USD_PER_DAY` are stated in
`COST_THRESHOLD_CURRENCY`; a series in another currency is scored in its own currency with those thresholds
divided by its rate from `COST_CURRENCY_RATES`, and without a rate it is not scored (the scan reports it).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pandas as pd

from shared.costs import store
from shared.costs.episodes import CostEpisode
from shared.costs.ingest import provider_label, provider_of_series
from shared.costs.scoring import ScoringConfig
from shared.settings import Settings


def currency_rates(settings: Settings) -> dict[str, float]:
    """Currency -> units of COST_THRESHOLD_CURRENCY per unit (explicit, from COST_CURRENCY_RATES; never looked up).

    The threshold currency is 1; rows without a currency (old Query API pulls) are taken as the threshold currency."""
    s = settings
    return {**dict(s.cost_currency_rates), s.cost_threshold_currency: 1.0, "": 1.0}


_MONEY_FIELDS = ("min_impact_usd_per_day", "critical_usd_per_hour", "absolute_noise_floor_usd")


def currency_config(config: ScoringConfig, rate: float) -> ScoringConfig:
    """The scoring config for series in a currency worth `rate` threshold-currency units: money gates divided."""
    if rate == 1.0:
        return config
    changes = {f: getattr(config, f) / rate for f in _MONEY_FIELDS if hasattr(config, f)}
    return dataclasses.replace(config, **changes)


def by_currency(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if frame.empty:
        return []
    if "CURRENCY" not in frame:
        return [("", frame)]
    currencies = frame["CURRENCY"].astype(str)
    return [(str(c), frame[currencies == c]) for c in sorted(set(currencies))]


def with_currency_and_provider(fields: dict[str, Any], episode: CostEpisode, base_currency: str) -> dict[str, Any]:
    """An anomaly alert that says its currency (amounts are in the series' own currency) and its provider."""
    _base, currency = store.split_currency(episode.series_id, base_currency)
    provider = provider_label(provider_of_series(_base))
    extra: list[tuple[str, str]] = [("Currency", currency)]
    if provider:
        extra.append(("Provider", provider))
    out = dict(fields)
    if currency != "USD":
        # the alert texts write amounts with "$": say the real currency instead of pretending dollars
        def money(text: str) -> str:
            return re.sub(r"\$(?=[\d-])", f"{currency} ", text)

        for key in ("title", "summary"):
            if isinstance(out.get(key), str):
                out[key] = money(out[key])
        out["facts"] = tuple((k, money(v)) for k, v in out.get("facts", ()))
    out["facts"] = tuple(out.get("facts", ())) + tuple(extra)
    return out
