"""Is a day's cost data complete enough to score? (pure)

Cost Management data for a day keeps arriving for a while. Scoring a partial day would report every
resource as a drop (or miss every spike), so the daily job checks the day against its trailing 28 days:
the day is late when it has no usage at all, fewer resources than `min_series_ratio` of the trailing median
count, or a total under `min_total_ratio` of the median total of the same weekday (weekends are cheaper).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, timedelta

MIN_SERIES_RATIO = 0.8
MIN_TOTAL_RATIO = 0.5
TRAILING_DAYS = 28
MIN_REFERENCE_DAYS = 7


@dataclass(frozen=True)
class Freshness:
    """`complete` (score it), `late` (raise one data-late alert, score later) or `no_data` (nothing ever loaded)."""

    status: str
    detail: str

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def check_freshness(
    day: date,
    stats: dict[date, tuple[int, float]],
    min_series_ratio: float = MIN_SERIES_RATIO,
    min_total_ratio: float = MIN_TOTAL_RATIO,
) -> Freshness:
    """Judge `day` from per-day (resources with usage, total usage cost) of it and the days before."""
    count, total = stats.get(day, (0, 0.0))
    reference = [stats[d] for d in (day - timedelta(days=i) for i in range(1, TRAILING_DAYS + 1)) if d in stats]
    if not reference and count == 0:
        return Freshness("no_data", f"no cost data for {day} nor the {TRAILING_DAYS} days before")
    if count == 0:
        return Freshness("late", f"no usage rows for {day} yet")
    if len(reference) < MIN_REFERENCE_DAYS:
        return Freshness("complete", f"{count} resources; too little history to judge completeness")
    median_count = statistics.median(c for c, _ in reference)
    if count < min_series_ratio * median_count:
        return Freshness(
            "late", f"{count} resources with usage on {day}, usually {median_count:.0f} (below {min_series_ratio:.0%})"
        )
    same_weekday = [stats[d][1] for d in (day - timedelta(days=7 * w) for w in range(1, 5)) if d in stats]
    usual_total = statistics.median(same_weekday) if same_weekday else statistics.median(t for _, t in reference)
    if usual_total > 0 and total < min_total_ratio * usual_total:
        return Freshness(
            "late", f"total ${total:,.2f} on {day}, usually ${usual_total:,.2f} (below {min_total_ratio:.0%})"
        )
    return Freshness("complete", f"{count} resources, total ${total:,.2f}")
