"""Benchmark of the cost-anomaly engine against three baselines: detection quality, then throughput.

Run: ``python -m bench.bench_scoring [--series 2000] [--days 120] [--seed 7] [--quick]``.

Quality: labelled synthetic costs (``shared.costs.synthetic``), replayed as the daily job over the last
``--eval-days`` days (each day scored only with the data up to it), for the engine and the baselines.

Definitions (per method):

* event window - the series-days an injected increase explains, where a flag is never a false alert:
  spike ``[onset, onset + duration]`` (the day after included: it is where the episode ends);
  level shift ``[onset, onset + 7]`` (a week for the new level to become normal);
  drift ``[onset, onset + ramp + 7]``.
* caught - a spike or level shift flagged within 2 days of onset (``[onset, onset + 2]``); a drift
  flagged during its ramp or within 2 days after it (the first day of a slow ramp is not detectable).
* false alert - one per flagged series-day outside every event window. Repeated flags inside a window
  earn nothing, so a detector cannot buy precision by alerting every day of an episode.
* actionable event - developed daily excess >= $10 (the engine's ``min_impact_usd_per_day``: below it,
  nobody is paged by design); material event - developed excess >= $25. The developed excess is the
  first-day excess for spikes and shifts and the excess at the end of the ramp for drifts.
* recall = caught actionable events / actionable events (with onset in the evaluated days and a catch
  deadline inside the data: a drift starting a week before the end cannot be judged yet);
  precision = caught actionable events / (caught actionable events + false alerts); F1 from those.
  Flags inside the window of a non-actionable event are neither caught nor false.
* false alerts per 1,000 series-days - false alerts / existing (non-NaN) series-days evaluated x 1000.

The per-series STL baseline is a Python loop (~3 ms per fit): its quality is measured on the first
``--stl-series`` series, and the engine is reported on the same subsample next to it.

Throughput: a CSV of 100,000 series x 90 days is written to a temp dir and ``score_csv`` is timed end
to end (read, pivot, score, write) in a fresh interpreter; peak memory is that process's high-water RSS
(``VmHWM``; ``resource.getrusage`` where /proc is missing). The STL loop is timed on a subsample and scaled to the same number of series.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.costs import baselines
from shared.costs.scoring import ScoringConfig, score_day
from shared.costs.synthetic import AnomalyEvent, SyntheticCosts, generate_costs

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Detector = Callable[[FloatArray, int], BoolArray]


@dataclass(frozen=True)
class Quality:
    method: str
    events: int
    caught: int
    false_alerts: int
    series_days: int
    recall_all: float
    recall_material: float
    precision: float
    recall: float
    f1: float
    seconds: float

    @property
    def false_per_1000(self) -> float:
        return 1000.0 * self.false_alerts / max(self.series_days, 1)


def _windows(event: AnomalyEvent) -> tuple[int, int, int]:
    """(first day, last day of the 'explained' window, last day that still counts as caught)."""
    if event.kind == "spike":
        return event.onset, event.onset + event.duration_days, event.onset + 2
    if event.kind == "level_shift":
        return event.onset, event.onset + 7, event.onset + 2
    return event.onset, event.onset + event.duration_days + 7, event.onset + event.duration_days + 2


def backtest_flags(detector: Detector, costs: FloatArray, eval_days: int) -> tuple[BoolArray, float]:
    """Flags (n_series, n_days) for the last ``eval_days`` days, each day seen with only its past."""
    n, n_days = costs.shape
    flags = np.zeros((n, n_days), dtype=bool)
    started = time.perf_counter()
    for t in range(n_days - eval_days, n_days):
        flags[:, t] = detector(costs, t)
    return flags, time.perf_counter() - started


def evaluate(method: str, flags: BoolArray, data: SyntheticCosts, eval_days: int, seconds: float) -> Quality:
    costs = data.costs
    n, n_days = costs.shape
    first_eval = n_days - eval_days
    explained = np.zeros_like(flags)
    for event in data.events:
        start, end, _ = _windows(event)
        explained[event.series, start : end + 1] = True
    evaluated = np.zeros_like(flags)
    evaluated[:, first_eval:] = True
    false_alerts = int(np.sum(flags & ~explained & evaluated))
    series_days = int(np.sum(~np.isnan(costs[:, first_eval:])))

    in_eval = [e for e in data.events if e.onset >= first_eval and _windows(e)[2] < n_days]
    caught = {id(e): bool(flags[e.series, e.onset : _windows(e)[2] + 1].any()) for e in in_eval}
    actionable = [e for e in in_eval if e.developed_excess_usd >= 10.0]
    material = [e for e in in_eval if e.developed_excess_usd >= 25.0]

    def rate(events: list[AnomalyEvent]) -> float:
        return sum(caught[id(e)] for e in events) / max(len(events), 1)

    tp = sum(caught[id(e)] for e in actionable)
    precision = tp / max(tp + false_alerts, 1)
    recall = tp / max(len(actionable), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return Quality(
        method,
        len(actionable),
        tp,
        false_alerts,
        series_days,
        rate(in_eval),
        rate(material),
        precision,
        recall,
        f1,
        seconds,
    )


def print_quality(rows: list[Quality], title: str) -> None:
    print(f"\n{title}")
    header = (
        f"{'method':<28}{'events':>7}{'caught':>7}{'false':>7}{'precision':>10}{'recall':>8}{'F1':>7}"
        f"{'rec.material':>13}{'rec.all':>8}{'false/1k':>9}{'seconds':>9}"
    )
    print(header)
    print("-" * len(header))
    for q in rows:
        print(
            f"{q.method:<28}{q.events:>7}{q.caught:>7}{q.false_alerts:>7}{q.precision:>10.3f}{q.recall:>8.3f}"
            f"{q.f1:>7.3f}{q.recall_material:>13.3f}{q.recall_all:>8.3f}{q.false_per_1000:>9.2f}{q.seconds:>9.1f}"
        )


def per_kind_recall(flags: BoolArray, data: SyntheticCosts, eval_days: int) -> str:
    n_days = data.costs.shape[1]
    first_eval = n_days - eval_days
    parts = []
    for kind in ("spike", "level_shift", "drift"):
        events = [
            e
            for e in data.events
            if e.kind == kind and e.onset >= first_eval and _windows(e)[2] < n_days and e.developed_excess_usd >= 10
        ]
        hit = sum(bool(flags[e.series, e.onset : _windows(e)[2] + 1].any()) for e in events)
        parts.append(f"{kind} {hit}/{len(events)}")
    return ", ".join(parts)


def quality(args: argparse.Namespace) -> None:
    data = generate_costs(n_series=args.series, n_days=args.days, seed=args.seed)
    config = ScoringConfig()
    eval_days = min(args.eval_days, args.days - 28)
    print(
        f"Quality: {args.series} synthetic series x {args.days} days (seed {args.seed}), daily job replayed over "
        f"the last {eval_days} days; {len(data.events)} injected increases in total."
    )
    detectors: dict[str, Detector] = {
        "engine (shared.costs)": lambda c, t: score_day(c, data.dates, t, config).anomaly,
        "naive 1.5x 28-day mean": baselines.naive_rule,
        "kusto decompose (FinOps)": baselines.kusto_decompose_anomalies,
    }
    rows = []
    all_flags = {}
    for name, detector in detectors.items():
        flags, seconds = backtest_flags(detector, data.costs, eval_days)
        all_flags[name] = flags
        rows.append(evaluate(name, flags, data, eval_days, seconds))
    print_quality(rows, f"All {args.series} series")
    print(
        f"  engine recall by kind (actionable): {per_kind_recall(all_flags['engine (shared.costs)'], data, eval_days)}"
    )

    n_stl = min(args.stl_series, args.series)
    sub = SyntheticCosts(
        costs=data.costs[:n_stl],
        dates=data.dates,
        series_ids=data.series_ids[:n_stl],
        events=[e for e in data.events if e.series < n_stl],
        noise_sigma=data.noise_sigma[:n_stl],
        traits={k: v[:n_stl] for k, v in data.traits.items()},
    )
    stl_flags, stl_seconds = backtest_flags(baselines.stl_robust, sub.costs, eval_days)
    sub_rows = [evaluate(name, all_flags[name][:n_stl], sub, eval_days, float("nan")) for name in detectors] + [
        evaluate("robust STL per series", stl_flags, sub, eval_days, stl_seconds)
    ]
    print_quality(sub_rows, f"First {n_stl} series (STL subsample)")


def write_cost_csv(path: str, n_series: int, n_days: int, seed: int) -> int:
    """Write a long ``series_id,date,cost`` CSV of synthetic costs, in chunks to bound memory."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rows = 0
    chunk = 20_000
    schema = pa.schema([("series_id", pa.string()), ("date", pa.string()), ("cost", pa.float64())])
    options = pacsv.WriteOptions(quoting_style="none")
    with pacsv.CSVWriter(path, schema, write_options=options) as out:
        for lo in range(0, n_series, chunk):
            hi = min(lo + chunk, n_series)
            data = generate_costs(n_series=hi - lo, n_days=n_days, seed=seed + lo)
            ids = pa.array([f"/subscriptions/s{(lo + i) % 97:02d}/r/{lo + i:07d}" for i in range(hi - lo)])
            days = pa.array(data.dates.astype(str).tolist())
            rr, cc = np.nonzero(~np.isnan(data.costs))
            table = pa.table(
                {
                    "series_id": pa.DictionaryArray.from_arrays(pa.array(rr.astype(np.int32)), ids).cast(pa.string()),
                    "date": pa.DictionaryArray.from_arrays(pa.array(cc.astype(np.int32)), days).cast(pa.string()),
                    "cost": pa.array(data.costs[rr, cc]),
                }
            )
            out.write_table(table)
            rows += table.num_rows
    return rows


_CHILD = """
import json, resource, sys, time
from shared.costs.scoring import ScoringConfig, score_day_chunked
from shared.costs.scoring_io import load_cost_matrix, score_csv

def memory_kb(field):
    # VmHWM/VmRSS belong to this process image; ru_maxrss can carry the parent's peak across fork+exec
    try:
        with open('/proc/self/status') as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ':'))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

base = memory_kb('VmRSS')
started = time.perf_counter()
rows = score_csv(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - started
peak = memory_kb('VmHWM')
matrix = load_cost_matrix(sys.argv[1])
started = time.perf_counter()
score_day_chunked(matrix.costs, matrix.dates, matrix.costs.shape[1] - 1, ScoringConfig())
scoring = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rows": rows, "base_kb": base, "peak_kb": peak, "scoring": scoring}))
"""


def _run_score_csv_in_child(source: str, target: str) -> dict[str, float]:
    """``score_csv`` in a fresh interpreter, so its peak RSS is its own (not the data generator's)."""
    import json
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, source, target], check=True, capture_output=True, text=True, env=env
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def throughput(args: argparse.Namespace) -> None:
    n_series = args.csv_series
    cores = os.cpu_count() or 1
    print(f"\nThroughput: score_csv on {n_series:,} series x 90 days, end to end (CSV in -> CSV out), {cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "costs.csv")
        rows = write_cost_csv(source, n_series, 90, args.seed)
        size_mb = os.path.getsize(source) / 1e6
        child = _run_score_csv_in_child(source, os.path.join(tmp, "scores.csv"))
    seconds = child["seconds"]
    rate = n_series / seconds
    peak_mb = child["peak_kb"] / 1024
    base_mb = child["base_kb"] / 1024
    per_series_kb = (child["peak_kb"] - child["base_kb"]) / n_series
    print(f"  input: {rows:,} rows, {size_mb:,.0f} MB; output rows: {int(child['rows']):,}")
    print(f"  score_csv: {seconds:.2f} s  ->  {rate:,.0f} series/s (pure scoring alone: {child['scoring']:.2f} s)")
    print(f"  peak RSS: {peak_mb:,.0f} MB (after imports {base_mb:,.0f} MB; ~{per_series_kb:.1f} KB per series)")

    n_stl = args.stl_timing_series
    data = generate_costs(n_series=n_stl, n_days=90, seed=args.seed)
    started = time.perf_counter()
    baselines.stl_robust(data.costs, 89, history_days=90)
    stl_seconds = time.perf_counter() - started
    stl_projected = stl_seconds / n_stl * n_series
    print(
        f"  robust STL loop: {stl_seconds:.2f} s for {n_stl} series -> {stl_projected:,.0f} s projected for "
        f"{n_series:,} series, scoring only"
    )
    print(
        f"  speedup: x{stl_projected / seconds:,.0f} (engine end to end incl. CSV I/O vs STL scoring only), "
        f"x{stl_projected / child['scoring']:,.0f} (scoring vs scoring)"
    )

    budget_s, budget_mb = 60.0, 2048.0
    by_time = int(rate * budget_s)
    by_memory = int((budget_mb - base_mb) * 1024 / per_series_kb)
    partition = min(by_time, by_memory)
    partition_s = partition / rate
    print(f"\nPartition sizing (measured {rate:,.0f} series/s incl. CSV I/O on {cores} cores):")
    print(
        f"  ~{budget_s:.0f} s of work -> {by_time:,} series; {budget_mb / 1024:.0f} GB of memory -> {by_memory:,} series; "
        f"partition = {partition:,} series (~{partition_s:.0f} s each)"
    )
    total = 1_000_000
    partitions = -(-total // partition)
    for instances in (1, 2, 4, 8, 16):
        waves = -(-partitions // instances)
        print(
            f"  {total:,} series = {partitions} partitions on {instances:>2} instance(s) of {cores} cores: "
            f"~{waves * partition_s:,.0f} s wall"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=2000, help="series in the quality benchmark")
    parser.add_argument("--days", type=int, default=120, help="days of history in the quality benchmark")
    parser.add_argument("--eval-days", type=int, default=60, help="days replayed as the daily job")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stl-series", type=int, default=300, help="series the slow STL baseline is scored on")
    parser.add_argument("--csv-series", type=int, default=100_000, help="series in the throughput CSV")
    parser.add_argument("--stl-timing-series", type=int, default=500, help="series the STL loop is timed on")
    parser.add_argument("--quick", action="store_true", help="small smoke run (< 60 s)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.series, args.stl_series, args.csv_series, args.stl_timing_series = 500, 30, 20_000, 100
    quality(args)
    if not args.skip_throughput:
        throughput(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
