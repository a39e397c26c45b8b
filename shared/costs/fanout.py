"""Fan-out and fan-in of a partitioned daily scan (queue `cost-partitions`).

The scan sends one message per partition (`SERIES_BUCKET % parts`) carrying every pending date; each
partition is scored once (`Idempotency.once`, scope `cost-partition`); the worker that completes the
last partition scores the owner/subscription/service aggregates, once (scope `cost-aggregates`).
A partition or aggregate held by another worker is BUSY: the message fails with TransientUpstreamError
and the host redelivers it, so a crashed holder's work is done once its lease has run out.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.costs import store
from shared.costs.partition import ScanReport, score_aggregates, score_partition
from shared.errors import BadInputError
from shared.idempotency import Scope, records
from shared.observability import correlation_id
from shared.runtime import Runtime

log = logging.getLogger(__name__)

JOB = "cost_daily_scan"  # its JOB_RUNS rows: one per date
PARTITION_QUEUE = "cost-partitions"
# one partition per scope, named after it: the fan-in lists `cost-partition` by RowKey prefix
PARTITION_SCOPE = Scope("cost-partition", lease=timedelta(minutes=15), spread=1)
AGGREGATES_SCOPE = Scope("cost-aggregates", lease=timedelta(minutes=15), spread=1)


def fan_out(runtime: Runtime, dates: list[date], parts: int) -> None:
    """One message per partition, each with every date (a partition scores its dates in order)."""
    for part in range(parts):
        runtime.storage.send(
            PARTITION_QUEUE,
            {"dates": [d.isoformat() for d in dates], "part": part, "parts": parts, "cid": correlation_id()},
        )


def handle_partition_message(runtime: Runtime, body: dict[str, Any]) -> ScanReport:
    """Queue `cost-partitions`: score resource series of one partition for the listed dates, once.

    TransientUpstreamError (the message is retried) while another worker holds the partition or the aggregates."""
    try:
        dates = [date.fromisoformat(str(d)) for d in body["dates"]]
        part, parts = int(body["part"]), int(body["parts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"cost partition message needs dates, part and parts: {exc}") from exc
    if not dates or not 0 <= part < parts:
        raise BadInputError(f"cost partition message has no dates or part {part} outside 0..{parts - 1}")
    key = f"{_partition_prefix(dates)}{part}-of-{parts}"  # no "/" in a table RowKey

    outcome = runtime.idempotency.once(
        PARTITION_SCOPE, key, lambda: score_partition(runtime, dates, part, parts), encode=_summary
    ).raise_if_busy(f"cost partition {key}")
    if outcome.ran and outcome.result is not None:
        report = outcome.result
    else:  # scored before; its worker may have stopped before the fan-in, so check that again
        log.info("cost partition %s already scored", key)
        report = ScanReport(partitions=parts)
    if _all_partitions_done(runtime, dates, parts):
        report.add(_aggregates_once(runtime, dates, parts))
    return report


def _summary(report: ScanReport) -> dict[str, Any]:
    """What the idempotency record keeps of a scored slice."""
    return {"series": report.series_scored, "anomalies": report.anomalies}


def _partition_prefix(dates: list[date]) -> str:
    return f"{dates[0]}..{dates[-1]}:"


def _all_partitions_done(runtime: Runtime, dates: list[date], parts: int) -> bool:
    prefix = _partition_prefix(dates)
    rows = records(runtime.storage, PARTITION_SCOPE, prefix, prefix + "~")
    done = {r["RowKey"] for r in rows if r.get("Status") == "COMPLETED" and r["RowKey"].endswith(f"-of-{parts}")}
    return len(done) >= parts


def _aggregates_once(runtime: Runtime, dates: list[date], parts: int) -> ScanReport:
    """Score the aggregates of a partitioned scan once, whichever worker finished last (or both at once)."""
    key = f"{_partition_prefix(dates)}{parts}"

    def score() -> ScanReport:
        scored = score_aggregates(runtime, dates)
        now = datetime.now(UTC)
        with runtime.warehouse.session() as wh:
            for d in dates:
                store.record_job_run(
                    wh, JOB, d.isoformat(), now, "completed", {**scored.as_dict(), "date": d.isoformat()}
                )
        return scored

    outcome = runtime.idempotency.once(AGGREGATES_SCOPE, key, score, encode=_summary)
    outcome.raise_if_busy(f"cost aggregates {key}")
    return outcome.result if outcome.ran and outcome.result is not None else ScanReport()
