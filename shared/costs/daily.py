"""The daily cost-anomaly job: score yesterday for every resource and aggregate, track episodes, raise alerts.

`run_daily_scan` (timer `cost_daily_scan`) decides which dates to score (yesterday, plus any missed since the
last completed scan, at most a week), checks each is complete (else one "data late" alert and it stops),
then scores resource series — in-process, or fanned out on queue `cost-partitions` by `SERIES_BUCKET % parts`
above `COST_PARTITION_SIZE` series — and the owner/subscription/service aggregates. Every step is idempotent:
a date is claimed once (idempotency store + JOB_RUNS), an alert is sent once per episode/action/severity,
and episode transitions ignore a day an episode has already seen, so reruns and catch-ups never re-alert.

`record_feedback` and `list_episodes` are what the HTTP functions (`/api/anomalies`) and the CLI call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from shared.alerts.delivery import enqueue_alert
from shared.alerts.model import Alert
from shared.costs import store
from shared.costs.currency import by_currency, currency_config, currency_rates, with_currency_and_provider
from shared.costs.episodes import (
    VERDICTS,
    CostEpisode,
    EpisodeEvent,
    SeriesDay,
    advance,
    anomaly_alert_fields,
    apply_feedback,
    data_late_alert_fields,
    is_explained,
)
from shared.costs.explain import explain_scores, save_explanations, with_explanations
from shared.costs.freshness import TRAILING_DAYS, check_freshness
from shared.costs.ingest import provider_of_series, series_bucket
from shared.costs.scoring import ScoringConfig, score_day, top_contributors
from shared.errors import BadInputError, NotFoundError, ValueFlowError
from shared.idempotency import TABLE as IDEMPOTENCY_TABLE
from shared.idempotency import IdempotencyStore
from shared.observability import correlation_id
from shared.runtime import Runtime

log = logging.getLogger(__name__)

JOB = "cost_daily_scan"
PARTITION_QUEUE = "cost-partitions"
EPISODES_TABLE = "episodes"
EPISODE_PARTITION = "cost"
SUPPRESSION_PARTITION = "cost-suppression"
HISTORY_DAYS = 104  # 6 weeks of season + 3 months back for recurring charges + a week of margin
MAX_CATCH_UP_DAYS = 7
TOP_CONTRIBUTORS = 3


@dataclass
class ScanReport:
    """What one run of the daily job did."""

    dates_scored: list[str] = field(default_factory=list)
    dates_already_done: list[str] = field(default_factory=list)
    late: str = ""
    partitions: int = 1
    series_scored: int = 0
    anomalies: int = 0
    events: dict[str, int] = field(default_factory=dict)
    alerts_sent: int = 0
    alerts_muted: int = 0
    unscored_currencies: dict[str, int] = field(default_factory=dict)  # currency -> series without a rate

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def add(self, other: ScanReport) -> None:
        self.series_scored += other.series_scored
        self.anomalies += other.anomalies
        self.alerts_sent += other.alerts_sent
        self.alerts_muted += other.alerts_muted
        for k, v in other.events.items():
            self.events[k] = self.events.get(k, 0) + v
        for k, v in other.unscored_currencies.items():
            self.unscored_currencies[k] = self.unscored_currencies.get(k, 0) + v


def scoring_config(runtime: Runtime) -> ScoringConfig:
    s = runtime.settings
    return ScoringConfig(
        min_impact_usd_per_day=s.cost_min_impact_usd_per_day, critical_usd_per_hour=s.cost_critical_usd_per_hour
    )


# -- the timer ------------------------------------------------------------------------------------------------


def run_daily_scan(runtime: Runtime, day: date | None = None, *, now: datetime | None = None) -> ScanReport:
    """Score every pending date up to `day` (default: yesterday, UTC). Returns what was done."""
    now = now or datetime.now(UTC)
    target = day or (now.date() - timedelta(days=1))
    report = ScanReport()
    if runtime.settings.cost_query_scopes:
        from shared.costs.loader import pull_configured_scopes

        pull_configured_scopes(runtime, target)
    scans = IdempotencyStore(
        runtime.storage, "cost-scan", expires_after=timedelta(days=400), lease=timedelta(minutes=15)
    )
    with runtime.warehouse.session() as wh:
        last = store.last_completed_scan(wh, JOB)
        stats = store.day_stats(wh, target - timedelta(days=TRAILING_DAYS + MAX_CATCH_UP_DAYS), target)
    first = (
        target
        if last is None or last >= target
        else max(last + timedelta(days=1), target - timedelta(days=MAX_CATCH_UP_DAYS - 1))
    )
    candidates = [first + timedelta(days=i) for i in range((target - first).days + 1)]

    pending: list[date] = []
    for d in candidates:
        claim = scans.claim(d.isoformat(), now=now)
        if claim.status == "completed":
            report.dates_already_done.append(d.isoformat())
            continue
        if claim.status == "in_progress":
            log.info("cost scan of %s is running elsewhere; stopping here", d)
            break
        freshness = check_freshness(d, stats)
        if not freshness.complete:
            scans.release(d.isoformat())
            report.late = f"{d}: {freshness.detail}"
            if freshness.status == "late":
                report.alerts_sent += _send_alert(
                    runtime, f"data-late:{d}", data_late_alert_fields(d, freshness.detail, correlation_id())
                )
            with runtime.warehouse.session() as wh:
                store.record_job_run(wh, JOB, d.isoformat(), now, freshness.status, {"detail": freshness.detail})
            break  # later days wait: episodes move one day at a time
        pending.append(d)
    if not pending:
        return report

    try:
        with runtime.warehouse.session() as wh:
            n_series = store.series_count(wh, pending[-1] - timedelta(days=6), pending[-1])
        parts = max(1, math.ceil(n_series / runtime.settings.cost_partition_size))
        report.partitions = parts
        if parts > 1:
            for part in range(parts):
                runtime.storage.send(
                    PARTITION_QUEUE,
                    {"dates": [d.isoformat() for d in pending], "part": part, "parts": parts, "cid": correlation_id()},
                )
        else:
            report.add(score_partition(runtime, pending, 0, 1))
            report.add(score_aggregates(runtime, pending))
        # partitioned: the worker that completes the last partition scores the aggregates (fan-in)
    except BaseException:
        for d in pending:
            scans.release(d.isoformat())
        raise
    status = "partitioned" if parts > 1 else "completed"
    with runtime.warehouse.session() as wh:
        for d in pending:
            store.record_job_run(wh, JOB, d.isoformat(), now, status, {**report.as_dict(), "date": d.isoformat()})
    for d in pending:
        scans.complete(d.isoformat(), {"status": status, "parts": parts})
        report.dates_scored.append(d.isoformat())
    log.info("cost scan done", extra={k: v for k, v in report.as_dict().items() if v})
    return report


# -- a partition (in-process or the queue worker) -------------------------------------------------------------


def handle_partition_message(runtime: Runtime, body: dict[str, Any]) -> ScanReport:
    """Queue `cost-partitions`: score resource series of one partition for the listed dates, once."""
    try:
        dates = [date.fromisoformat(str(d)) for d in body["dates"]]
        part, parts = int(body["part"]), int(body["parts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"cost partition message needs dates, part and parts: {exc}") from exc
    if not dates or not 0 <= part < parts:
        raise BadInputError(f"cost partition message has no dates or part {part} outside 0..{parts - 1}")
    idem = IdempotencyStore(runtime.storage, "cost-partition", lease=timedelta(minutes=15))
    key = f"{dates[0]}..{dates[-1]}:{part}-of-{parts}"  # no "/" in a table RowKey
    claim = idem.claim(key)
    if claim.status != "new":
        log.info("cost partition %s already %s", key, claim.status)
        return ScanReport()
    try:
        report = score_partition(runtime, dates, part, parts)
    except BaseException:
        idem.release(key)
        raise
    idem.complete(key, {"series": report.series_scored, "anomalies": report.anomalies})
    if _all_partitions_done(runtime, dates, parts):
        report.add(_aggregates_once(runtime, dates, parts))
    return report


def _partition_prefix(dates: list[date]) -> str:
    return f"{dates[0]}..{dates[-1]}:"


def _all_partitions_done(runtime: Runtime, dates: list[date], parts: int) -> bool:
    prefix = _partition_prefix(dates)
    rows = runtime.storage.query(
        IDEMPOTENCY_TABLE,
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        pk="cost-partition",
        lo=prefix,
        hi=prefix + "~",
    )
    done = {r["RowKey"] for r in rows if r.get("Status") == "COMPLETED" and r["RowKey"].endswith(f"-of-{parts}")}
    return len(done) >= parts


def _aggregates_once(runtime: Runtime, dates: list[date], parts: int) -> ScanReport:
    """Score the aggregates of a partitioned scan once, whichever worker finished last (or both at once)."""
    idem = IdempotencyStore(runtime.storage, "cost-aggregates", lease=timedelta(minutes=15))
    key = f"{_partition_prefix(dates)}{parts}"
    if idem.claim(key).status != "new":
        return ScanReport()
    try:
        report = score_aggregates(runtime, dates)
    except BaseException:
        idem.release(key)
        raise
    idem.complete(key, {"anomalies": report.anomalies})
    now = datetime.now(UTC)
    with runtime.warehouse.session() as wh:
        for d in dates:
            store.record_job_run(wh, JOB, d.isoformat(), now, "completed", {**report.as_dict(), "date": d.isoformat()})
    return report


def score_aggregates(runtime: Runtime, dates: Iterable[date]) -> ScanReport:
    """Score the squad, subscription and service totals of each date, after all its resources were scored.

    Kind by kind, so that each sees the episodes saved before it (one cause, one alert)."""
    report = ScanReport()
    for d in dates:
        for kind in store.AGGREGATE_KINDS:
            scored, changed = _score_kind(runtime, kind, d, 0, 1)
            report.add(scored)
            _save_episodes(runtime, changed)
    return report


def score_partition(runtime: Runtime, dates: Iterable[date], part: int, parts: int) -> ScanReport:
    """Score the resource series of partition `part` of `parts` for each date, in order."""
    report = ScanReport(partitions=parts)
    for d in dates:
        scored, changed = _score_kind(runtime, "resource", d, part, parts)
        _save_episodes(runtime, changed)
        report.add(scored)
    return report


def _score_kind(runtime: Runtime, kind: str, day: date, part: int, parts: int) -> tuple[ScanReport, list[CostEpisode]]:
    """Score one series kind on one day, raise its alerts; returns (report, episodes changed, to be merged)."""
    report = ScanReport()
    config = scoring_config(runtime)
    start = store.window_start(day, HISTORY_DAYS)
    with runtime.warehouse.session() as wh:
        frame = store.daily_series(wh, kind, start, day, part=part, parts=parts)
        attributes = store.resource_attributes(wh, start, day, part=part, parts=parts) if kind == "resource" else {}
        open_now = with_explanations(wh, store.open_episodes(wh, kind, part=part, parts=parts))
    # a series is per currency: each currency is scored on its own, with the thresholds in that currency
    base_currency = runtime.settings.cost_threshold_currency
    rates = currency_rates(runtime.settings)
    index: dict[str, tuple[Any, int]] = {}
    flagged: list[str] = []
    flagged_by_currency: dict[str, list[str]] = {}
    for currency, rows in by_currency(frame):
        rate = rates.get(currency)
        if rate is None:
            report.unscored_currencies[currency] = int(rows["SERIES_ID"].nunique())
            log.warning("cost series in %s not scored: no rate to %s in COST_CURRENCY_RATES", currency, base_currency)
            continue
        ids, dates, costs = densify(rows, start, day)
        if not len(ids):
            continue
        report.series_scored += len(ids)
        result = score_day(costs, dates, len(dates) - 1, currency_config(config, rate))
        for i, base_id in enumerate(ids):
            index[store.currency_series_id(str(base_id), currency, base_currency)] = (result, i)
        for hit in np.flatnonzero(result.anomaly):
            flagged.append(store.currency_series_id(str(ids[hit]), currency, base_currency))
            flagged_by_currency.setdefault(currency, []).append(str(ids[hit]))
    report.anomalies = len(flagged)
    contributors: dict[str, tuple[tuple[str, float, float], ...]] = {}
    for currency, base_ids in flagged_by_currency.items():
        found = _contributors(runtime, kind, base_ids, start, day, currency_config(config, rates[currency]), currency)
        contributors.update({store.currency_series_id(k, currency, base_currency): v for k, v in found.items()})

    touched = set(flagged) | set(open_now)
    suppressions = load_suppressions(runtime) if touched else {}
    events: list[EpisodeEvent] = []
    changed: list[CostEpisode] = []
    for series_id in sorted(touched):
        result, i = index.get(series_id, (None, -1))
        base_id, _currency = store.split_currency(series_id, base_currency)
        attrs = attributes.get(base_id, {})
        owner = attrs.get("owner", "") if kind == "resource" else (base_id if kind == "owner" else "")
        if result is None:
            series_day = _absent_day(series_id, kind, day, owner)
        else:
            series_day = SeriesDay(
                series_id=series_id,
                series_kind=kind,
                series_bucket=series_bucket(base_id),  # the partition of the resource, whatever its currency
                day=day,
                status=str(result.status[i]),
                anomaly=bool(result.anomaly[i]),
                severity=str(result.severity[i]),
                reason=str(result.reason[i]),
                cost=_num(result.cost[i]),
                expected=_num(result.expected[i]),
                lower=_num(result.lower[i]),
                upper=_num(result.upper[i]),
                excess_usd_per_day=_num(result.excess_usd_per_day[i]),
                excess_usd_per_hour=_num(result.excess_usd_per_hour[i]),
                excess_pct=_num(result.excess_pct[i]),
                owner=owner,
                subscription_id=attrs.get("subscription_id", "") if kind == "resource" else "",
                contributors=contributors.get(series_id, ()),
                explanation=explain_scores(result, i, contributors=contributors.get(series_id, ()))
                if result.anomaly[i]
                else None,
            )
        episode, event = advance(open_now.get(series_id), series_day, suppressions.get(series_id))
        if episode is not None and episode != open_now.get(series_id):
            changed.append(episode)
        if event is not None:
            events.append(event)

    explained = _explained_members(runtime, kind, start, day) if kind != "resource" and events else set()
    # alerts first (each once), then the MERGE: a crash between them replays the same events, already sent
    for event in events:
        report.events[event.action] = report.events.get(event.action, 0) + 1
        if _mute(runtime, event, explained):
            report.alerts_muted += 1
            continue
        fields = with_currency_and_provider(anomaly_alert_fields(event, correlation_id()), event.episode, base_currency)
        report.alerts_sent += _send_alert(runtime, event.key, fields)
        if event.episode.severity == "critical" and event.action in ("open", "update"):
            request_approval(runtime, event.episode)
    return report, changed


def _save_episodes(runtime: Runtime, changed: list[CostEpisode]) -> None:
    """One MERGE for a day's changed episodes, then the operational-state mirror."""
    if not changed:
        return
    with runtime.warehouse.session() as wh:
        store.merge_episodes(wh, changed)
        save_explanations(wh, changed)
    for episode in changed:
        _mirror(runtime, episode)


def _explained_members(runtime: Runtime, kind: str, start: date, day: date) -> set[str]:
    """Resources whose growth already reached their squad: their own open episode, or (for subscription
    and service totals) an open episode of their squad's total."""
    with runtime.warehouse.session() as wh:
        members = set(store.open_episodes(wh, "resource"))
        if kind in ("subscription", "service"):
            squads = set(store.open_episodes(wh, "owner"))
            if squads:
                attributes = store.resource_attributes(wh, start, day)
                members |= {r for r, a in attributes.items() if (a.get("owner") or store.UNOWNED) in squads}
    return members


def _mute(runtime: Runtime, event: EpisodeEvent, explained: set[str]) -> bool:
    """Hold back an aggregate's alert that would repeat alerts its members already raised (one cause, one alert).

    Its resolve is held back too when its open alert never went out."""
    episode = event.episode
    if episode.series_kind == "resource":
        return False
    if event.action in ("open", "update"):
        return is_explained(episode, explained)
    sent = any(
        runtime.storage.get(IDEMPOTENCY_TABLE, "cost-alerts", f"{episode.episode_id}:open:{severity}")
        for severity in ("warning", "critical")
    )
    return not sent


def _absent_day(series_id: str, kind: str, day: date, owner: str) -> SeriesDay:
    base_id = series_id.rsplit(" [", 1)[0] if series_id.endswith("]") else series_id
    return SeriesDay(series_id, kind, series_bucket(base_id), day, "absent", False, "none", "absent",
                     0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, owner)  # fmt: skip


def _contributors(
    runtime: Runtime,
    kind: str,
    flagged: list[str],
    start: date,
    day: date,
    config: ScoringConfig,
    currency: str | None = None,
) -> dict[str, tuple[tuple[str, float, float], ...]]:
    with runtime.warehouse.session() as wh:
        members = store.member_series(wh, kind, flagged, start, day, currency=currency)
    out: dict[str, tuple[tuple[str, float, float], ...]] = {}
    for series_id, rows in members.groupby("SERIES_ID"):
        member_rows = rows[["MEMBER_ID", "USAGE_DATE", "COST"]].rename(columns={"MEMBER_ID": "SERIES_ID"})
        ids, dates, costs = densify(member_rows, start, day)
        if not len(ids):
            continue
        top = top_contributors(costs, ids, dates, limit=TOP_CONTRIBUTORS, config=config)
        out[str(series_id)] = tuple((str(c.member_id), round(c.increase_usd, 2), round(c.share, 4)) for c in top)
    return out


def densify(
    frame: pd.DataFrame, start: date, end: date
) -> tuple[npt.NDArray[Any], npt.NDArray[np.datetime64], npt.NDArray[np.float64]]:
    """(series ids, days start..end, costs (n_series, n_days)) from long SERIES_ID/USAGE_DATE/COST rows.

    NaN before a series' first row and after its last (it did not exist); 0 on missing days in between."""
    n_days = (end - start).days + 1
    dates = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    if frame.empty:
        return np.asarray([], dtype=object), dates, np.zeros((0, n_days))
    series = frame["SERIES_ID"]
    if isinstance(series.dtype, pd.CategoricalDtype):
        # columnar fetch: one string per series, an integer code per row (no string per row)
        series = series.cat.remove_unused_categories()
        names = series.cat.categories.astype(str).to_numpy(dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        ids, inverse = names[order], rank[series.cat.codes.to_numpy()]
    else:
        ids, inverse = np.unique(series.astype(str).to_numpy(), return_inverse=True)
    day_index = (pd.to_datetime(frame["USAGE_DATE"]).to_numpy().astype("datetime64[D]") - dates[0]).astype(np.int64)
    costs = np.full((len(ids), n_days), np.nan)
    costs[inverse, day_index] = frame["COST"].astype(float).to_numpy()
    present = ~np.isnan(costs)
    inside = np.maximum.accumulate(present, axis=1) & np.maximum.accumulate(present[:, ::-1], axis=1)[:, ::-1]
    costs[inside & ~present] = 0.0
    return ids.astype(object), dates, costs


def _num(value: Any) -> float:
    number = float(value)
    return 0.0 if math.isnan(number) else number


# -- alerts ---------------------------------------------------------------------------------------------------


def _send_alert(runtime: Runtime, key: str, fields: dict[str, Any]) -> int:
    """Enqueue an alert once per key (1 if sent now, 0 if it was sent before)."""
    idem = IdempotencyStore(runtime.storage, "cost-alerts", expires_after=timedelta(days=120))
    claim = idem.claim(key)
    if claim.status != "new":
        return 0
    try:
        enqueue(runtime, fields)
    except BaseException:
        idem.release(key)
        raise
    idem.complete(key, {"dedupe_key": fields["dedupe_key"]})
    return 1


def enqueue(runtime: Runtime, fields: dict[str, Any]) -> None:
    """Hand an alert to the alert-delivery pipeline (queue `alerts`); BadInputError if the contract rejects it."""
    enqueue_alert(runtime.storage, Alert(**fields))


def request_approval(runtime: Runtime, episode: CostEpisode) -> bool:
    """Ask the approval Logic App about a critical episode (once per episode). True when it was asked.

    A Logic App outage must not stop the scan: the squad already has the critical alert (and incident),
    so a failure is logged and the approval can still be decided directly at /api/approvals/{id}/decision."""
    from shared.approvals.requests import request_approval as ask_logic_app

    try:
        return ask_logic_app(runtime, episode).state == "requested"
    except ValueFlowError as err:
        log.error("approval request failed: %s", err.detail, extra={"episode_id": episode.episode_id})
        return False


# -- operational state: episode mirror, feedback, suppressions ------------------------------------------------


def _mirror(runtime: Runtime, episode: CostEpisode) -> None:
    doc = episode.as_dict()
    base_id, currency = store.split_currency(episode.series_id, runtime.settings.cost_threshold_currency)
    doc.setdefault("currency", currency)
    doc.setdefault("provider", provider_of_series(base_id))
    runtime.storage.upsert(
        EPISODES_TABLE,
        EPISODE_PARTITION,
        episode.episode_id,
        {
            "Status": episode.status,
            "Owner": episode.owner,
            "SeriesKind": episode.series_kind,
            "Severity": episode.severity,
            "StartDate": episode.start_date.isoformat(),
            "Doc": json.dumps(doc, default=str),
        },
    )


def _series_key(series_id: str) -> str:
    return hashlib.sha256(series_id.encode()).hexdigest()[:40]


def load_suppressions(runtime: Runtime) -> dict[str, date]:
    """Series id -> last day its alerts are suppressed (from feedback)."""
    out: dict[str, date] = {}
    for row in runtime.storage.query(EPISODES_TABLE, "PartitionKey eq @pk", pk=SUPPRESSION_PARTITION):
        until = date.fromisoformat(str(row["Until"]))
        series = str(row["SeriesId"])
        out[series] = max(until, out.get(series, until))
    return out


def record_feedback(
    runtime: Runtime, episode_id: str, verdict: str, by: str, why: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Record `planned|not_anomaly|confirmed` on an episode; planned/not_anomaly silence its series for
    COST_FEEDBACK_SUPPRESS_DAYS. Returns the episode (as_dict) with `suppressed_until`. NotFoundError,
    BadInputError on an unknown episode or a bad verdict."""
    if verdict not in VERDICTS:
        raise BadInputError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    today = (now or datetime.now(UTC)).date()
    with runtime.warehouse.session() as wh:
        episode = store.get_episode(wh, episode_id)
        if episode is None:
            raise NotFoundError(f"no cost anomaly episode {episode_id!r}")
        episode = with_explanations(wh, {episode_id: episode})[episode_id]
        try:
            updated, until = apply_feedback(
                episode, verdict, by, why, today, runtime.settings.cost_feedback_suppress_days
            )
        except ValueError as exc:
            raise BadInputError(str(exc)) from exc
        store.set_verdict(wh, episode_id, verdict, updated.verdict_by, updated.verdict_why, updated.suppressed)
    _mirror(runtime, updated)
    if until is not None:
        runtime.storage.upsert(
            EPISODES_TABLE,
            SUPPRESSION_PARTITION,
            _series_key(updated.series_id),
            {"SeriesId": updated.series_id, "Until": until.isoformat(), "Verdict": verdict, "EpisodeId": episode_id},
        )
    log.info("cost anomaly feedback", extra={"episode_id": episode_id, "verdict": verdict})
    return {**updated.as_dict(), "suppressed_until": until.isoformat() if until else None}


def list_episodes(runtime: Runtime, status: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
    """Episodes from operational state, newest first; `status` open|closed, `owner` a squad (case-insensitive)."""
    if status not in (None, "", "open", "closed"):
        raise BadInputError(f"status must be open or closed, got {status!r}")
    filters, params = ["PartitionKey eq @pk"], {"pk": EPISODE_PARTITION}
    if status:
        filters.append("Status eq @status")
        params["status"] = status
    if owner:
        filters.append("Owner eq @owner")
        params["owner"] = owner.strip().lower()
    rows = runtime.storage.query(EPISODES_TABLE, " and ".join(filters), **params)
    docs = [json.loads(row["Doc"]) for row in rows]
    return sorted(docs, key=lambda d: (d["start_date"], d["series_id"]), reverse=True)
