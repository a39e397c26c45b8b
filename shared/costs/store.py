"""Cost data in the warehouse: loading export runs (all-or-nothing, replace per period) and the SQL the daily job reads.

Heavy lifting stays in SQL: daily sums per series (resource, owner squad, subscription, service) are computed
with GROUP BY in the warehouse, filtered to one partition (`MOD(SERIES_BUCKET, parts) = part`), so the job
pulls one number per series-day, never raw export rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from shared.adapters.warehouse import WarehouseSession
from shared.costs.episodes import CostEpisode
from shared.costs.ingest import FRAME_COLUMNS, ExportRun, ParsedRun, RunReport

SERIES_COLUMN = {
    "resource": "RESOURCE_ID",
    "owner": "OWNER",
    "subscription": "SUBSCRIPTION_ID",
    "service": "SERVICE_NAME",
}
AGGREGATE_KINDS = ("owner", "subscription", "service")
UNOWNED = "(untagged)"


@dataclass(frozen=True)
class LoadOutcome:
    """What loading a run did: `loaded`, `already_loaded` (same runId before) or `superseded` (a newer run owns it).

    `report` is the run's reconciliation report (RunReport.as_dict: cost_by_currency, excluded rows by reason...)."""

    run_id: str
    status: str
    rows: int
    period_start: date
    period_end: date
    replaced_rows: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "rows": self.rows,
            "period": f"{self.period_start}..{self.period_end}",
            "replaced_rows": self.replaced_rows,
            "cost_by_currency": self.report.get("cost_by_currency", {}),
            **{k: v for k, v in self.report.items() if k not in ("cost_by_currency", "schema", "rows_read")},
        }


_STAGE_COLUMNS = ", ".join(c for c in FRAME_COLUMNS if c not in ("COST", "BILLED_COST"))
_STAGE_KEYS = ", ".join(c for c in FRAME_COLUMNS if c not in ("COST", "BILLED_COST", "SERIES_BUCKET"))


def _done_before(wh: WarehouseSession, run_id: str) -> dict[str, Any] | None:
    rows = wh.query(
        "SELECT STATUS, PERIOD_START, PERIOD_END, REPORT FROM COST_EXPORT_RUNS "
        "WHERE RUN_ID = %s AND STATUS IN ('loaded', 'superseded')",
        (run_id,),
    )
    return rows[0] if rows else None


def _stored_report(row: dict[str, Any]) -> dict[str, Any]:
    try:
        return dict(json.loads(row.get("REPORT") or "{}"))
    except (TypeError, ValueError):
        return {}


def load_export_run(
    wh: WarehouseSession,
    run: ExportRun,
    read: Callable[[Callable[[Any], None]], RunReport],
    *,
    now: datetime | None = None,
) -> tuple[LoadOutcome, RunReport | None]:
    """Stream a run into the warehouse, all-or-nothing: stage, then swap.

    `read(sink)` reads the run block by block, handing rows (Arrow tables or DataFrames) to `sink`, which bulk-loads them into
    COST_DAILY_STAGE under a fresh load id (memory stays bounded by the reader's flush size). When it raises
    (a bad file) the staged rows are deleted and nothing changes. On success one transaction deletes the rows of
    (source, period), merges the staged rows (GROUP BY in the warehouse) into COST_DAILY and records the run;
    then the staged rows are deleted. Idempotent per run id (a run loaded before is not read again)."""
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    earlier = _done_before(wh, run.run_id)
    if earlier:
        start, end = _as_date(earlier["PERIOD_START"]), _as_date(earlier["PERIOD_END"])
        return LoadOutcome(run.run_id, "already_loaded", 0, start, end, report=_stored_report(earlier)), None
    load_id = f"{run.run_id[:80]}:{uuid.uuid4().hex}"

    def sink(rows: Any) -> None:
        if isinstance(rows, pd.DataFrame):
            staged: Any = rows.copy()
            staged.insert(0, "LOAD_ID", load_id)
            staged["USAGE_DATE"] = staged["USAGE_DATE"].astype(object)
        else:  # an Arrow table from the streaming reader
            import pyarrow as pa

            staged = rows.add_column(0, "LOAD_ID", pa.array([load_id] * len(rows), pa.string()))
        wh.write_frame(staged, "COST_DAILY_STAGE")

    try:
        report = read(sink)
    except BaseException:
        wh.execute("DELETE FROM COST_DAILY_STAGE WHERE LOAD_ID = %s", (load_id,))
        raise
    start = run.period_start or report.first_day or now.date()
    end = run.period_end or report.last_day or start
    report_doc = report.as_dict()
    try:
        with wh.transaction():
            if run.submitted_at is not None:
                newer = wh.query(
                    "SELECT COUNT(*) AS N FROM COST_EXPORT_RUNS WHERE SOURCE_KEY = %s AND PERIOD_START = %s "
                    "AND PERIOD_END = %s AND STATUS = 'loaded' AND SUBMITTED_AT > %s",
                    (run.source_key, start, end, run.submitted_at),
                )
                if newer and int(newer[0]["N"]) > 0:
                    _record(wh, run, start, end, report, "superseded", 0, now)
                    return LoadOutcome(run.run_id, "superseded", 0, start, end, report=report_doc), report
            replaced = wh.query(
                "SELECT COUNT(*) AS N FROM COST_DAILY WHERE SOURCE_KEY = %s AND USAGE_DATE BETWEEN %s AND %s",
                (run.source_key, start, end),
            )
            wh.execute(
                "DELETE FROM COST_DAILY WHERE SOURCE_KEY = %s AND USAGE_DATE BETWEEN %s AND %s",
                (run.source_key, start, end),
            )
            wh.execute(
                f"INSERT INTO COST_DAILY (SOURCE_KEY, RUN_ID, {_STAGE_COLUMNS}, COST, BILLED_COST) "
                f"SELECT %s, %s, {_STAGE_COLUMNS}, SUM(COST), SUM(BILLED_COST) FROM COST_DAILY_STAGE "
                f"WHERE LOAD_ID = %s GROUP BY {_STAGE_COLUMNS}",
                (run.source_key, run.run_id, load_id),
            )
            counted = wh.query("SELECT COUNT(*) AS N FROM COST_DAILY WHERE RUN_ID = %s", (run.run_id,))
            rows = int(counted[0]["N"]) if counted else 0
            _record(wh, run, start, end, report, "loaded", rows, now)
    finally:
        wh.execute("DELETE FROM COST_DAILY_STAGE WHERE LOAD_ID = %s", (load_id,))
    return (
        LoadOutcome(run.run_id, "loaded", rows, start, end, int(replaced[0]["N"]) if replaced else 0, report_doc),
        report,
    )


def _record(
    wh: WarehouseSession,
    run: ExportRun,
    start: date,
    end: date,
    report: RunReport,
    status: str,
    rows: int,
    now: datetime,
) -> None:
    wh.execute(
        "INSERT INTO COST_EXPORT_RUNS (RUN_ID, SOURCE_KEY, PERIOD_START, PERIOD_END, SUBMITTED_AT, SCHEMA_NAME, "
        "FILES, ROWS_READ, ROWS_LOADED, USAGE_COST, LOADED_AT, STATUS, REPORT) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run.run_id,
            run.source_key,
            start,
            end,
            run.submitted_at,
            report.schema,
            len(run.files),
            report.rows_read,
            rows,
            # one number only when the run has one currency: never a sum across currencies
            round(next(iter(report.cost_by_currency.values())), 6) if len(report.cost_by_currency) == 1 else None,
            now,
            status,
            json.dumps(report.as_dict(), default=str),
        ),
    )


def load_run(wh: WarehouseSession, parsed: ParsedRun, *, now: datetime | None = None) -> LoadOutcome:
    """Store a run already in memory (a Query API pull, a small parsed run) the same way: stage, then swap."""
    report = parsed.report or RunReport(schema=parsed.schema, rows_read=parsed.rows_read)
    if parsed.report is None and len(parsed.frame):
        usage = parsed.frame[parsed.frame["IS_USAGE"]]
        report.usage_rows = len(usage)
        report.cost_by_currency = {str(k): float(v) for k, v in usage.groupby("CURRENCY")["COST"].sum().items()}
        report.first_day, report.last_day = min(parsed.frame["USAGE_DATE"]), max(parsed.frame["USAGE_DATE"])
    run = parsed.run
    if run.period_start is None or run.period_end is None:
        run = replace(run, period_start=parsed.period_start, period_end=parsed.period_end)

    def read(sink: Callable[[pd.DataFrame], None]) -> RunReport:
        if len(parsed.frame):
            sink(parsed.frame)
        return report

    outcome, _ = load_export_run(wh, run, read, now=now)
    return outcome


def export_runs(wh: WarehouseSession, limit: int = 50) -> list[dict[str, Any]]:
    return wh.query(
        "SELECT RUN_ID, SOURCE_KEY, PERIOD_START, PERIOD_END, STATUS, ROWS_LOADED, USAGE_COST, LOADED_AT "
        "FROM COST_EXPORT_RUNS ORDER BY LOADED_AT DESC LIMIT %s",
        (limit,),
    )


# -- what the daily job reads ---------------------------------------------------------------------------------


def _partition_filter(part: int, parts: int) -> str:
    return "" if parts <= 1 else f" AND MOD(SERIES_BUCKET, {int(parts)}) = {int(part)}"


def _series_expr(kind: str) -> str:
    column = SERIES_COLUMN[kind]
    if kind == "resource":
        return column
    return f"COALESCE(NULLIF({column}, ''), '{UNOWNED}')"


def daily_series(
    wh: WarehouseSession, kind: str, start: date, end: date, *, part: int = 0, parts: int = 1
) -> pd.DataFrame:
    """Daily usage cost per series of `kind` and currency (GROUP BY in the warehouse, fetched columnar):
    columns SERIES_ID (categorical), USAGE_DATE, COST (float), CURRENCY. Currencies are never summed together."""
    expr = _series_expr(kind)
    frame = wh.query_frame(
        f"SELECT {expr} AS SERIES_ID, USAGE_DATE, CAST(SUM(COST) AS DOUBLE) AS COST, "
        f"COALESCE(CURRENCY, '') AS CURRENCY FROM COST_DAILY "
        f"WHERE IS_USAGE AND USAGE_DATE BETWEEN %s AND %s{_partition_filter(part, parts)} "
        f"GROUP BY {expr}, USAGE_DATE, COALESCE(CURRENCY, '')",
        (start, end),
        categorical=("SERIES_ID", "CURRENCY"),
    )
    return _typed(frame, ["SERIES_ID", "USAGE_DATE", "COST", "CURRENCY"])


def member_series(
    wh: WarehouseSession,
    kind: str,
    series_ids: Sequence[str],
    start: date,
    end: date,
    *,
    currency: str | None = None,
) -> pd.DataFrame:
    """Daily cost of the members of flagged series: meters of a resource, resources of an aggregate.

    Columns SERIES_ID, MEMBER_ID, USAGE_DATE, COST; only rows in `currency` when it is given."""
    if not series_ids:
        return _frame([], ["SERIES_ID", "MEMBER_ID", "USAGE_DATE", "COST"])
    expr = _series_expr(kind)
    member = "METER" if kind == "resource" else "RESOURCE_ID"
    placeholders = ", ".join(["%s"] * len(series_ids))
    in_currency = " AND COALESCE(CURRENCY, '') = %s" if currency is not None else ""
    rows = wh.query(
        f"SELECT {expr} AS SERIES_ID, {member} AS MEMBER_ID, USAGE_DATE, SUM(COST) AS COST FROM COST_DAILY "
        f"WHERE IS_USAGE AND USAGE_DATE BETWEEN %s AND %s AND {expr} IN ({placeholders}){in_currency} "
        f"GROUP BY {expr}, {member}, USAGE_DATE",
        (start, end, *series_ids, *((currency,) if currency is not None else ())),
    )
    return _frame(rows, ["SERIES_ID", "MEMBER_ID", "USAGE_DATE", "COST"])


def resource_attributes(
    wh: WarehouseSession, start: date, end: date, *, part: int = 0, parts: int = 1
) -> dict[str, dict[str, str]]:
    """Owner, subscription, service and provider of each resource, from its most recent day in the window."""
    rows = wh.query(
        "SELECT RESOURCE_ID, OWNER, SUBSCRIPTION_ID, SERVICE_NAME, COALESCE(PROVIDER, '') AS PROVIDER, "
        "MAX(USAGE_DATE) AS LAST_SEEN FROM COST_DAILY "
        f"WHERE IS_USAGE AND USAGE_DATE BETWEEN %s AND %s{_partition_filter(part, parts)} "
        "GROUP BY RESOURCE_ID, OWNER, SUBSCRIPTION_ID, SERVICE_NAME, COALESCE(PROVIDER, '')",
        (start, end),
    )
    out: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["LAST_SEEN"], bool(r["OWNER"]))):
        out[row["RESOURCE_ID"]] = {
            "owner": row["OWNER"] or "",
            "subscription_id": row["SUBSCRIPTION_ID"] or "",
            "service": row["SERVICE_NAME"] or "",
            "provider": row["PROVIDER"] or "",
        }
    return out


# -- currencies: a series is per currency -----------------------------------------------------------------------


def currency_series_id(series_id: str, currency: str, threshold_currency: str) -> str:
    """The id of a series in `currency`: unchanged in the threshold currency (or when unknown), else suffixed
    ` [EUR]`, so that a squad billed in two currencies has two series, never one summed across them."""
    if not currency or currency == threshold_currency:
        return series_id
    return f"{series_id} [{currency}]"


def split_currency(series_id: str, threshold_currency: str) -> tuple[str, str]:
    """(base series id, currency) of a series id made by `currency_series_id`."""
    if series_id.endswith("]") and " [" in series_id:
        base, _, currency = series_id.rpartition(" [")
        code = currency[:-1]
        if len(code) == 3 and code.isalpha() and code.isupper():
            return base, code
    return series_id, threshold_currency


def day_stats(wh: WarehouseSession, start: date, end: date) -> dict[date, tuple[int, float]]:
    """Per day: (number of resources with usage, total usage cost), for the freshness check.

    The total is in one currency (the one with the most rows in the window): amounts in different currencies are
    never added, and comparing a day with its weekdays needs like for like."""
    counts = wh.query(
        "SELECT USAGE_DATE, COUNT(DISTINCT RESOURCE_ID) AS N FROM COST_DAILY "
        "WHERE IS_USAGE AND USAGE_DATE BETWEEN %s AND %s GROUP BY USAGE_DATE",
        (start, end),
    )
    totals = wh.query(
        "SELECT USAGE_DATE, COALESCE(CURRENCY, '') AS CURRENCY, COUNT(*) AS ROWS_, SUM(COST) AS TOTAL FROM COST_DAILY "
        "WHERE IS_USAGE AND USAGE_DATE BETWEEN %s AND %s GROUP BY USAGE_DATE, COALESCE(CURRENCY, '')",
        (start, end),
    )
    weight: dict[str, int] = {}
    for r in totals:
        weight[r["CURRENCY"]] = weight.get(r["CURRENCY"], 0) + int(r["ROWS_"])
    main = max(weight, key=lambda c: (weight[c], c)) if weight else ""
    by_day = {_as_date(r["USAGE_DATE"]): float(r["TOTAL"] or 0.0) for r in totals if r["CURRENCY"] == main}
    return {_as_date(r["USAGE_DATE"]): (int(r["N"]), by_day.get(_as_date(r["USAGE_DATE"]), 0.0)) for r in counts}


def series_count(wh: WarehouseSession, start: date, end: date) -> int:
    rows = wh.query(
        "SELECT COUNT(DISTINCT RESOURCE_ID) AS N FROM COST_DAILY WHERE IS_USAGE AND USAGE_DATE BETWEEN %s AND %s",
        (start, end),
    )
    return int(rows[0]["N"]) if rows else 0


def latest_usage_date(wh: WarehouseSession) -> date | None:
    rows = wh.query("SELECT MAX(USAGE_DATE) AS D FROM COST_DAILY WHERE IS_USAGE")
    return _as_date(rows[0]["D"]) if rows and rows[0]["D"] is not None else None


# -- episodes -------------------------------------------------------------------------------------------------

_EPISODE_COLUMNS = (
    "EPISODE_ID", "SERIES_ID", "SERIES_KIND", "SERIES_BUCKET", "START_DATE", "LAST_FLAGGED_DATE",
    "LAST_SCORED_DATE", "END_DATE", "STATUS", "SEVERITY", "ALERTED_SEVERITY", "REASON", "OWNER",
    "SUBSCRIPTION_ID", "COST", "EXPECTED", "LOWER_BOUND", "UPPER_BOUND", "EXCESS_USD_PER_DAY",
    "EXCESS_USD_PER_HOUR", "EXCESS_PCT", "PEAK_EXCESS_USD_PER_DAY", "TOTAL_EXCESS_USD", "CONTRIBUTORS",
    "SUPPRESSED", "VERDICT", "VERDICT_BY", "VERDICT_WHY", "UPDATED_AT",
)  # fmt: skip


def open_episodes(wh: WarehouseSession, kind: str, *, part: int = 0, parts: int = 1) -> dict[str, CostEpisode]:
    """Open episodes of one series kind (and partition), by series id."""
    rows = wh.query(
        f"SELECT {', '.join(_EPISODE_COLUMNS)} FROM COST_ANOMALIES WHERE STATUS = 'open' AND SERIES_KIND = %s"
        f"{_partition_filter(part, parts)}",
        (kind,),
    )
    return {r["SERIES_ID"]: _episode_from_row(r) for r in rows}


def episodes_of_series(wh: WarehouseSession, series_ids: Iterable[str], kind: str) -> list[CostEpisode]:
    ids = list(series_ids)
    if not ids:
        return []
    rows = wh.query(
        f"SELECT {', '.join(_EPISODE_COLUMNS)} FROM COST_ANOMALIES WHERE SERIES_KIND = %s "
        f"AND SERIES_ID IN ({', '.join(['%s'] * len(ids))})",
        (kind, *ids),
    )
    return [_episode_from_row(r) for r in rows]


def query_episodes(wh: WarehouseSession, status: str | None = None) -> list[CostEpisode]:
    where = " WHERE STATUS = %s" if status else ""
    rows = wh.query(
        f"SELECT {', '.join(_EPISODE_COLUMNS)} FROM COST_ANOMALIES{where} ORDER BY START_DATE, SERIES_ID",
        (status,) if status else None,
    )
    return [_episode_from_row(r) for r in rows]


def merge_episodes(wh: WarehouseSession, episodes: Iterable[CostEpisode], *, now: datetime | None = None) -> int:
    """MERGE episodes keyed by (SERIES_ID, START_DATE): whichever instance writes, one row per episode.

    The batch is bulk-loaded into COST_ANOMALIES_STAGE under its own id and merged in one statement."""
    stamp = (now or datetime.now(UTC)).replace(tzinfo=None)
    rows = [_episode_row(e, stamp) for e in episodes]
    if not rows:
        return 0
    # a later row for the same key wins (one MERGE source row per target row, as Snowflake requires)
    by_key = {(r[1], r[4]): r for r in rows}
    batch = uuid.uuid4().hex
    frame = pd.DataFrame(list(by_key.values()), columns=list(_EPISODE_COLUMNS))
    frame.insert(0, "BATCH_ID", batch)
    for column in ("START_DATE", "LAST_FLAGGED_DATE", "LAST_SCORED_DATE", "END_DATE"):
        frame[column] = frame[column].astype(object)
    columns = list(_EPISODE_COLUMNS)
    updates = ", ".join(f"{c} = src.{c}" for c in columns if c not in ("SERIES_ID", "START_DATE", "EPISODE_ID"))
    # no explicit transaction: the MERGE is atomic on its own and the batch id keeps writers apart
    wh.write_frame(frame, "COST_ANOMALIES_STAGE")
    wh.execute(
        f"MERGE INTO COST_ANOMALIES AS t USING (SELECT {', '.join(columns)} FROM COST_ANOMALIES_STAGE "
        "WHERE BATCH_ID = %s) AS src ON t.SERIES_ID = src.SERIES_ID AND t.START_DATE = src.START_DATE "
        f"WHEN MATCHED THEN UPDATE SET {updates} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) VALUES ({', '.join('src.' + c for c in columns)})",
        (batch,),
    )
    wh.execute("DELETE FROM COST_ANOMALIES_STAGE WHERE BATCH_ID = %s", (batch,))
    return len(by_key)


def set_verdict(wh: WarehouseSession, episode_id: str, verdict: str, by: str, why: str, suppressed: bool) -> int:
    return wh.execute(
        "UPDATE COST_ANOMALIES SET VERDICT = %s, VERDICT_BY = %s, VERDICT_WHY = %s, SUPPRESSED = %s "
        "WHERE EPISODE_ID = %s",
        (verdict, by, why, suppressed, episode_id),
    )


def _episode_row(e: CostEpisode, stamp: datetime) -> tuple[Any, ...]:
    return (
        e.episode_id, e.series_id, e.series_kind, e.series_bucket, e.start_date, e.last_flagged_date,
        e.last_scored_date, e.end_date, e.status, e.severity, e.alerted_severity, e.reason, e.owner,
        e.subscription_id, e.cost, e.expected, e.lower, e.upper, e.excess_usd_per_day, e.excess_usd_per_hour,
        e.excess_pct, e.peak_excess_usd_per_day, e.total_excess_usd, json.dumps([list(c) for c in e.contributors]),
        e.suppressed, e.verdict, e.verdict_by, e.verdict_why, stamp,
    )  # fmt: skip


def _episode_from_row(r: dict[str, Any]) -> CostEpisode:
    contributors = tuple(tuple(c) for c in json.loads(r["CONTRIBUTORS"] or "[]"))
    return CostEpisode(
        episode_id=r["EPISODE_ID"],
        series_id=r["SERIES_ID"],
        series_kind=r["SERIES_KIND"],
        series_bucket=int(r["SERIES_BUCKET"]),
        start_date=_as_date(r["START_DATE"]),
        last_flagged_date=_as_date(r["LAST_FLAGGED_DATE"]),
        last_scored_date=_as_date(r["LAST_SCORED_DATE"]),
        end_date=_as_date(r["END_DATE"]) if r["END_DATE"] else None,
        status=r["STATUS"],
        severity=r["SEVERITY"],
        alerted_severity=r["ALERTED_SEVERITY"] or None,
        reason=r["REASON"] or "",
        owner=r["OWNER"] or "",
        subscription_id=r["SUBSCRIPTION_ID"] or "",
        cost=_f(r["COST"]),
        expected=_f(r["EXPECTED"]),
        lower=_f(r["LOWER_BOUND"]),
        upper=_f(r["UPPER_BOUND"]),
        excess_usd_per_day=_f(r["EXCESS_USD_PER_DAY"]),
        excess_usd_per_hour=_f(r["EXCESS_USD_PER_HOUR"]),
        excess_pct=_f(r["EXCESS_PCT"]),
        peak_excess_usd_per_day=_f(r["PEAK_EXCESS_USD_PER_DAY"]),
        total_excess_usd=_f(r["TOTAL_EXCESS_USD"]),
        contributors=contributors,  # type: ignore[arg-type]
        suppressed=bool(r["SUPPRESSED"]),
        verdict=r["VERDICT"] or "",
        verdict_by=r["VERDICT_BY"] or "",
        verdict_why=r["VERDICT_WHY"] or "",
    )


def _f(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if frame.empty and not len(frame.columns):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    if "COST" in frame:
        frame["COST"] = frame["COST"].astype(float)
    return frame[columns]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if "COST" in frame:
        frame["COST"] = frame["COST"].astype(float)
    return frame


def window_start(day: date, days: int) -> date:
    return day - timedelta(days=days - 1)


def get_episode(wh: WarehouseSession, episode_id: str) -> CostEpisode | None:
    rows = wh.query(f"SELECT {', '.join(_EPISODE_COLUMNS)} FROM COST_ANOMALIES WHERE EPISODE_ID = %s", (episode_id,))
    return _episode_from_row(rows[0]) if rows else None


def last_completed_scan(wh: WarehouseSession, job: str) -> date | None:
    rows = wh.query(
        "SELECT MAX(RUN_KEY) AS K FROM JOB_RUNS WHERE JOB = %s AND STATUS IN ('completed', 'partitioned')", (job,)
    )
    return _as_date(rows[0]["K"]) if rows and rows[0]["K"] else None


def record_job_run(
    wh: WarehouseSession, job: str, run_key: str, started: datetime, status: str, summary: dict[str, Any]
) -> None:
    wh.execute(
        "INSERT INTO JOB_RUNS (JOB, RUN_KEY, STARTED_AT, FINISHED_AT, STATUS, SUMMARY) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            job,
            run_key,
            started.replace(tzinfo=None),
            datetime.now(UTC).replace(tzinfo=None),
            status,
            json.dumps(summary, default=str),
        ),
    )
