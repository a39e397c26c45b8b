"""The daily cost-anomaly job (timer `cost_daily_scan`): which dates to score, and scoring them.

`run_daily_scan` decides which dates to score (yesterday, plus any missed since the last completed scan,
at most a week), checks each is complete (else one "data late" alert and it stops), then scores resource
series — in-process (`partition`), or fanned out on queue `cost-partitions` above `COST_PARTITION_SIZE`
series (`fanout`) — and the owner/subscription/service aggregates. Every step is idempotent: a date is
claimed once (scope `cost-scan` + JOB_RUNS), an alert is sent once per episode/action/severity
(`alerting`), and episode transitions ignore a day an episode has already seen, so reruns and catch-ups
never re-alert. The path goes down: scan -> fanout -> partition -> episode_state / alerting.
"""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta

from shared.costs import store
from shared.costs.alerting import send_alert
from shared.costs.episodes import data_late_alert_fields
from shared.costs.fanout import JOB, fan_out
from shared.costs.freshness import TRAILING_DAYS, check_freshness
from shared.costs.partition import ScanReport, score_aggregates, score_partition
from shared.idempotency import Held, Idempotency, Scope
from shared.observability import correlation_id
from shared.runtime import Runtime

log = logging.getLogger(__name__)

MAX_CATCH_UP_DAYS = 7
# a date's claim spans several steps (freshness, fan-out, JOB_RUNS) over several dates scored together, so
# the scan holds one `claiming` per date (an ExitStack): completed when the scan ends, released if it fails
SCAN_SCOPE = Scope("cost-scan", lease=timedelta(minutes=15), expires_after=timedelta(days=400), spread=1)


def run_daily_scan(runtime: Runtime, day: date | None = None, *, now: datetime | None = None) -> ScanReport:
    """Score every pending date up to `day` (default: yesterday, UTC). Returns what was done."""
    now = now or datetime.now(UTC)
    target = day or (now.date() - timedelta(days=1))
    report = ScanReport()
    if runtime.settings.cost_query_scopes:
        from shared.costs.loader import pull_configured_scopes

        pull_configured_scopes(runtime, target)
    claims = Idempotency(runtime.storage, clock=lambda: now)  # a replayed `now` decides the leases
    with runtime.warehouse.session() as wh:
        last = store.last_completed_scan(wh, JOB)
        stats = store.day_stats(wh, target - timedelta(days=TRAILING_DAYS + MAX_CATCH_UP_DAYS), target)
    first = (
        target
        if last is None or last >= target
        else max(last + timedelta(days=1), target - timedelta(days=MAX_CATCH_UP_DAYS - 1))
    )
    candidates = [first + timedelta(days=i) for i in range((target - first).days + 1)]

    # each date held until the end: completed on a clean exit, released if anything below fails (e.g. the
    # data-late alert or the fan-out), so the next run takes it at once; a crashed scan's after its lease
    with ExitStack() as held:
        pending: list[tuple[date, Held]] = []
        for d in candidates:
            claim = held.enter_context(claims.claiming(SCAN_SCOPE, d.isoformat()))
            if claim.replayed:
                report.dates_already_done.append(d.isoformat())
                continue
            if claim.busy:
                log.info("cost scan of %s is running elsewhere; stopping here", d)
                break
            freshness = check_freshness(d, stats)
            if not freshness.complete:
                claim.release()  # not scored: the next run checks it again
                report.late = f"{d}: {freshness.detail}"
                if freshness.status == "late":
                    report.alerts_sent += send_alert(
                        runtime, f"data-late:{d}", data_late_alert_fields(d, freshness.detail, correlation_id())
                    )
                with runtime.warehouse.session() as wh:
                    store.record_job_run(wh, JOB, d.isoformat(), now, freshness.status, {"detail": freshness.detail})
                break  # later days wait: episodes move one day at a time
            pending.append((d, claim))
        if not pending:
            return report
        dates = [d for d, _ in pending]
        with runtime.warehouse.session() as wh:
            n_series = store.series_count(wh, dates[-1] - timedelta(days=6), dates[-1])
        parts = max(1, math.ceil(n_series / runtime.settings.cost_partition_size))
        report.partitions = parts
        if parts > 1:
            fan_out(runtime, dates, parts)  # the worker that completes the last partition scores the aggregates
        else:
            report.add(score_partition(runtime, dates, 0, 1))
            report.add(score_aggregates(runtime, dates))
        status = "partitioned" if parts > 1 else "completed"
        with runtime.warehouse.session() as wh:
            for d in dates:
                store.record_job_run(wh, JOB, d.isoformat(), now, status, {**report.as_dict(), "date": d.isoformat()})
        for d, claim in pending:
            claim.result = {"status": status, "parts": parts}
            report.dates_scored.append(d.isoformat())
    log.info("cost scan done", extra={k: v for k, v in report.as_dict().items() if v})
    return report
