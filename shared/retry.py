"""Retry timing shared by every adapter: one Retry-After parser and one backoff rule.

- `parse_retry_after("120")` -> 120.0; `parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT")` -> seconds
  from now (0 when already past); None when absent or unreadable (RFC 9110 section 10.2.3).
- `retry_after_from(headers)` also reads Azure's `x-ms-retry-after-ms` (milliseconds) and
  `retry-after-ms`, taking the longest of what the peer said.
- `backoff_delay(attempt, base=, cap=)` is exponential with jitter: "full" (0..ceiling, spreads a
  herd of retries best) or "equal" (ceiling/2..ceiling, never zero).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

MS_HEADERS = ("x-ms-retry-after-ms", "retry-after-ms")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After value (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_from(headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """The longest wait a response's headers ask for (Retry-After, x-ms-retry-after-ms), or None."""
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    waits: list[float] = []
    seconds = parse_retry_after(lowered.get("retry-after"), now)
    if seconds is not None:
        waits.append(seconds)
    for name in MS_HEADERS:
        ms = parse_retry_after(lowered.get(name))
        if ms is not None and str(lowered.get(name)).strip().replace(".", "", 1).isdigit():
            waits.append(ms / 1000)
    return max(waits) if waits else None


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: Literal["full", "equal"] = "full",
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """The wait before retry number `attempt` (1 = the first retry): min(cap, base * 2**(attempt-1))
    with jitter, never shorter than `retry_after` (the peer's word wins over our cap)."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = ceiling * rng() if jitter == "full" else ceiling / 2 + rng() * ceiling / 2
    return max(delay, retry_after or 0.0)
