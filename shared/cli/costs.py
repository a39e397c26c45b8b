"""`costs ingest|pull|score|backtest|scan|episodes|feedback`: cost data in, anomalies out, by hand."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from typing import Any

from shared.cli.common import cli_runtime as _runtime
from shared.errors import BadInputError


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("costs", help="cost anomalies: ingest exports, score CSVs, run the daily scan")
    commands = group.add_subparsers(dest="command", metavar="<command>", required=True)

    ingest = commands.add_parser(
        "ingest",
        help="load local Cost Management export files or folders into the warehouse",
        description="Each manifest.json found is one run (idempotent per runId); data files (csv, csv.gz, parquet) "
        "without a manifest are one run per folder. A run replaces the rows of its period; a broken run loads nothing. "
        "Files are streamed (memory does not grow with their size). --json prints per run at least status, schema, "
        "rows_read, rows, period and cost_by_currency (usage cost per currency, to reconcile with the export).",
    )
    ingest.add_argument("paths", nargs="+", help="files or folders")
    ingest.add_argument("--json", action="store_true", help="machine-readable output")
    ingest.set_defaults(handler=cmd_ingest)

    pull = commands.add_parser("pull", help="load daily amortized cost of a scope from the Cost Management Query API")
    pull.add_argument("--scope", required=True, help="/subscriptions/<id> (or a resource group scope)")
    pull.add_argument("--from", dest="start", required=True, type=_date, help="first day (YYYY-MM-DD)")
    pull.add_argument("--to", dest="end", required=True, type=_date, help="last day (YYYY-MM-DD)")
    pull.set_defaults(handler=cmd_pull)

    score = commands.add_parser(
        "score",
        help="score the latest date of each series of a series_id,date,cost CSV",
        description="Input columns series_id,date,cost (ISO dates, daily; other columns ignored). Output at least "
        "series_id,date,cost,expected,anomaly,severity (anomaly 0/1), then why: lower,upper,score,excess_usd_per_day,"
        "excess_usd_per_hour,excess_pct,direction,status,reason,history_days,seasonality,noise.",
    )
    score.add_argument("--input", required=True, help="input CSV")
    score.add_argument("--output", required=True, help="output CSV (written atomically)")
    score.set_defaults(handler=cmd_score)

    backtest = commands.add_parser(
        "backtest",
        help="replay the daily job for each of the last N dates of a CSV, each with only the data up to it",
        description="Same columns as score, one row per series per replayed date; progress on stderr every 2 s.",
    )
    backtest.add_argument("--input", required=True, help="input CSV (series_id,date,cost)")
    backtest.add_argument("--days", required=True, type=int, help="how many of the last dates to replay")
    backtest.add_argument("--output", required=True, help="output CSV, one row per series per replayed date")
    backtest.set_defaults(handler=cmd_backtest)

    scan = commands.add_parser("scan", help="run the daily cost scan now (idempotent per date)")
    scan.add_argument("--date", type=_date, help="score up to this date (default: yesterday UTC)")
    scan.set_defaults(handler=cmd_scan)

    episodes = commands.add_parser("episodes", help="list cost anomaly episodes")
    episodes.add_argument("--status", choices=["open", "closed"], help="only open or closed ones")
    episodes.add_argument("--owner", help="only this owner squad")
    episodes.add_argument("--json", action="store_true", help="machine-readable output")
    episodes.set_defaults(handler=cmd_episodes)

    feedback = commands.add_parser(
        "feedback",
        help="mark an episode planned, not_anomaly or confirmed",
        description="planned and not_anomaly silence alerts for the series for COST_FEEDBACK_SUPPRESS_DAYS days.",
    )
    feedback.add_argument("episode_id")
    feedback.add_argument("verdict", choices=["planned", "not_anomaly", "confirmed"])
    feedback.add_argument("--by", required=True, help="who says so")
    feedback.add_argument("--why", required=True, help="why")
    feedback.set_defaults(handler=cmd_feedback)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _config() -> Any:
    from shared.costs.scoring import ScoringConfig
    from shared.settings import load_settings

    s = load_settings()
    return ScoringConfig(
        min_impact_usd_per_day=s.cost_min_impact_usd_per_day, critical_usd_per_hour=s.cost_critical_usd_per_hour
    )


SIMPLE_COLUMNS = ("series_id", "date", "cost")


def is_simple_csv(path: str) -> bool:
    """A `series_id,date,cost` file (the `costs score` input), not an export."""
    if not path.lower().endswith(".csv") or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = [c.strip().lower() for c in f.readline().split(",")]
    return set(SIMPLE_COLUMNS) <= set(header) and "chargeperiodstart" not in header


def simple_csv_as_focus(path: str, state_dir: str) -> str:
    """Write a `series_id,date,cost` CSV as a minimal FOCUS 1.0 usage file (series id = ResourceId, USD)
    in a folder of its own under the state dir (stable per input file, so a reload replaces, never adds);
    returns that folder. Owner, subscription and service come from the id when it is an Azure resource id."""
    import hashlib

    import pandas as pd

    frame = pd.read_csv(path, usecols=list(SIMPLE_COLUMNS), dtype={"series_id": str, "date": str})
    days = pd.to_datetime(frame["date"].str.strip().str[:10], format="%Y-%m-%d", errors="coerce")
    if days.isna().any():
        line = int(days.isna().to_numpy().argmax()) + 2
        raise BadInputError(f"{path}, line {line}: date {frame['date'].iloc[line - 2]!r} is not YYYY-MM-DD")
    cost = pd.to_numeric(frame["cost"], errors="coerce")
    if cost.isna().any():
        line = int(cost.isna().to_numpy().argmax()) + 2
        raise BadInputError(f"{path}, line {line}: cost {frame['cost'].iloc[line - 2]!r} is not a number")
    ids = frame["series_id"].fillna("").str.strip()
    parts = ids.str.split("/")
    focus = pd.DataFrame(
        {
            "BilledCost": cost,
            "BillingCurrency": "USD",
            "ChargeCategory": "Usage",
            "ChargePeriodStart": days.dt.strftime("%Y-%m-%dT00:00:00Z"),
            "ChargePeriodEnd": (days + pd.Timedelta(days=1)).dt.strftime("%Y-%m-%dT00:00:00Z"),
            "EffectiveCost": cost,
            "ResourceId": ids,
            "ResourceName": parts.str[-1],
            "ServiceName": "",
            "SubAccountId": parts.str[2].where(ids.str.lower().str.startswith("/subscriptions/"), ""),
            "Tags": "",
        }
    )
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    folder = os.path.join(state_dir, "simple-csv", digest)
    os.makedirs(folder, exist_ok=True)
    focus.to_csv(os.path.join(folder, "costs.csv"), index=False)
    return folder


def cmd_ingest(args: argparse.Namespace) -> int:
    from shared.costs.loader import ingest_paths

    runtime = _runtime()
    paths = []
    for path in args.paths:
        if is_simple_csv(path):
            converted = simple_csv_as_focus(path, runtime.settings.state_dir)
            print(f"note: {path} is a series_id,date,cost file: loaded as USD usage (series id = resource id)",
                  file=sys.stderr)  # fmt: skip
            paths.append(converted)
        else:
            paths.append(path)
    results = ingest_paths(runtime, paths)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], default=str, indent=2))
        return 0
    for r in results:
        doc = r.as_dict()
        money = ", ".join(f"{cur} {total:,.2f}" for cur, total in doc.get("cost_by_currency", {}).items()) or "-"
        print(
            f"{doc['status']:<15} {doc['schema']:<24} rows read {doc['rows_read']:>9}  loaded {doc.get('rows', 0):>8}  "
            f"{doc.get('period', '-')}  usage {money}  {r.source}"
        )
        if doc.get("excluded"):
            print("    not usage: " + ", ".join(f"{reason} {n}" for reason, n in doc["excluded"].items()))
        for warning in r.warnings:
            print(f"    warning: {warning}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from shared.costs.loader import pull_query_api

    result = pull_query_api(_runtime(), args.scope, args.start, args.end)
    print(json.dumps(result.as_dict(), default=str))
    return 0


def _input_file(path: str) -> str:
    """--input must be an existing file (not a folder)."""
    if os.path.isdir(path):
        raise BadInputError(f"--input {path} is a folder: give the CSV file (series_id,date,cost)")
    if not os.path.isfile(path):
        raise BadInputError(f"--input {path}: no such file")
    return path


def _output_file(path: str) -> str:
    """--output must name a file in an existing, writable folder (checked before any work is done)."""
    if os.path.isdir(path) or path.endswith(os.sep):
        raise BadInputError(f"--output {path} is a folder: give a file name, e.g. {os.path.join(path, 'scores.csv')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInputError(f"--output {path}: the folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise BadInputError(f"--output {path}: the folder {folder} is not writable")
    return path


def _readable_permissions(path: str) -> None:
    # the atomic write goes through a private temp file (0600): give the result the usual umask permissions
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _run_scoring(args: argparse.Namespace, score: Any) -> int:
    """Check the paths, run `score(notes)`, print what the scorer noted about the input (rows of several
    meters added into one series-day), keep the output readable. Input problems become BadInputError."""
    from shared.costs.scoring_io import CostInputError

    _input_file(args.input)
    _output_file(args.output)
    notes: list[str] = []
    try:
        rows = int(score(notes))
    except (CostInputError, FileNotFoundError) as exc:
        raise BadInputError(str(exc)) from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    _readable_permissions(args.output)
    return rows


def cmd_score(args: argparse.Namespace) -> int:
    from shared.costs.scoring_io import score_csv

    started = time.perf_counter()
    rows = _run_scoring(args, lambda notes: score_csv(args.input, args.output, _config(), notes=notes))
    print(f"scored {rows} series in {time.perf_counter() - started:.2f}s -> {args.output}", file=sys.stderr)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from shared.costs.scoring_io import backtest_csv

    if args.days < 1:
        raise BadInputError("--days must be at least 1")
    started = time.perf_counter()
    rows = _run_scoring(
        args,
        lambda notes: backtest_csv(
            args.input, args.days, args.output, _config(), progress=_progress_printer(started), notes=notes
        ),
    )
    print(f"wrote {rows} rows in {time.perf_counter() - started:.2f}s -> {args.output}", file=sys.stderr)
    return 0


def _progress_printer(started: float, every_seconds: float = 2.0) -> Any:
    """A progress callback printing to stderr at most every ``every_seconds`` (long backtests show life)."""
    last = [started]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] < every_seconds:
            return
        last[0] = now
        print(
            f"backtest: {100.0 * done / max(total, 1):5.1f}% scored, {now - started:6.1f}s", file=sys.stderr, flush=True
        )

    return show


def cmd_scan(args: argparse.Namespace) -> int:
    from shared.costs.scan import run_daily_scan

    report = run_daily_scan(_runtime(), args.date)
    print(json.dumps(report.as_dict(), default=str, indent=2))
    return 0


def cmd_episodes(args: argparse.Namespace) -> int:
    from shared.costs.feedback import list_episodes

    episodes = list_episodes(_runtime(), args.status, args.owner)
    if args.json:
        print(json.dumps(episodes, default=str, indent=2))
        return 0
    if not episodes:
        print("no episodes")
        return 0
    print(format_episode_table(episodes))
    return 0


def format_episode_table(episodes: list[dict[str, Any]]) -> str:
    """Plain-text table: resource, owner, expected vs actual, $/hour excess, severity, top cause."""
    header = f"{'episode':<24} {'series':<44} {'owner':<16} {'expected':>10} {'actual':>10} {'$/h':>8} {'severity':<8} top cause"
    lines = [header, "-" * len(header)]
    for e in episodes:
        series = e["series_id"] if e["series_kind"] != "resource" else e["series_id"].rsplit("/", 1)[-1]
        if e["series_kind"] != "resource":
            series = f"{e['series_kind']}:{series}"
        lines.append(
            f"{e['episode_id']:<24} {series[:44]:<44} {(e['owner'] or '-')[:16]:<16} {e['expected']:>10,.2f} "
            f"{e['cost']:>10,.2f} {e['excess_usd_per_hour']:>8,.2f} {e['severity']:<8} {_short_cause(e.get('top_cause', ''))[:60]}"
        )
    return "\n".join(lines)


def _short_cause(cause: str) -> str:
    # a resource id as cause reads better by its name
    return cause.split(" ", 1)[0].rsplit("/", 1)[-1] + (" " + cause.split(" ", 1)[1] if " " in cause else "")


def cmd_feedback(args: argparse.Namespace) -> int:
    from shared.review.feedback import record_feedback

    result = record_feedback(_runtime(), args.episode_id, args.verdict, args.by, args.why, source="cli")
    print(json.dumps(result, default=str, indent=2))
    return 0
