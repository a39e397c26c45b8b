"""Benchmark: the change failure rate of 1,000,000 deployments and 100,000 problems
(`python -m bench.bench_dora`, `--quick` for a tenth).

Generated data (seeded): 60 services over 90 days, 85% of deployments succeeded, 3 environments;
problems 40% P1, 1-2 services each, a third of them placed at the rule's edges (exactly 60 minutes
after a deployment, 60 minutes + 1 ms, 1 ms before it, the same instant). The data is bulk-loaded
into the embedded warehouse (fakesnow over DuckDB), then timed side by side in the same run:

- warehouse: the DORA_DEPLOY_OUTCOMES view (CFR per service) and DORA_FAILED_DEPLOYS (the pairs);
- baseline: a straightforward Python reference (P1 starts per service sorted once, one bisect per
  deployment) over the same rows.

The two must be identical: deployments, failed deployments and CFR per service, and the set of
(deployment, problem) pairs. Exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import bisect
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

START = datetime(2026, 1, 5)
HOUR = timedelta(hours=1)
PROD = ("production", "prod")


def generate(deploys: int, problems: int, seed: int = 14) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    services = np.array([f"svc-{i:02d}" for i in range(60)])
    ms = rng.integers(0, 90 * 86_400_000, deploys)
    finished = pd.to_datetime(START) + pd.to_timedelta(ms, unit="ms")
    d = pd.DataFrame(
        {
            "DEPLOY_ID": [f"d{i}" for i in range(deploys)],
            "SERVICE": services[rng.integers(0, len(services), deploys)],
            "ENVIRONMENT": rng.choice(np.array(["production", "Prod", "staging"]), deploys, p=[0.6, 0.1, 0.3]),
            "RESULT": rng.choice(np.array(["succeeded", "failed", "canceled"]), deploys, p=[0.85, 0.1, 0.05]),
            "FINISHED_AT": finished,
            "COMMIT_TIME": finished - pd.to_timedelta(rng.integers(60_000, 5 * 86_400_000, deploys), unit="ms"),
            "SOURCE": "bench",
            "UPDATED_AT": pd.Timestamp(START),
        }
    )
    anchors = rng.integers(0, deploys, problems)
    edge = rng.random(problems) < 1 / 3
    offsets_ms = np.where(
        edge,
        rng.choice(np.array([3_600_000, 3_600_001, -1, 0]), problems),
        rng.integers(-86_400_000, 86_400_000, problems),
    )
    started = d["FINISHED_AT"].to_numpy()[anchors] + offsets_ms.astype("timedelta64[ms]")
    resolved = rng.random(problems) < 0.8
    restore_ms = rng.integers(60_000, 48 * 3_600_000, problems)
    p = pd.DataFrame(
        {
            "PROBLEM_ID": [f"p{i}" for i in range(problems)],
            "PRIORITY": rng.choice(np.array(["P1", "P2", "P3"]), problems, p=[0.4, 0.3, 0.3]),
            "STATE": np.where(resolved, "resolved", "open"),
            "STARTED_AT": pd.to_datetime(started),
            "RESOLVED_AT": pd.to_datetime(
                np.where(resolved, started + restore_ms.astype("timedelta64[ms]"), np.datetime64("NaT"))
            ),
            "SOURCE": "bench",
            "UPDATED_AT": pd.Timestamp(START),
        }
    )
    own = d["SERVICE"].to_numpy()[anchors]
    extra = services[rng.integers(0, len(services), problems)]
    second = rng.random(problems) < 0.3
    ps = pd.concat(
        [
            pd.DataFrame({"PROBLEM_ID": p["PROBLEM_ID"], "SERVICE": own}),
            pd.DataFrame({"PROBLEM_ID": p["PROBLEM_ID"][second], "SERVICE": extra[second]}),
        ]
    ).drop_duplicates()
    return d, p, ps


def reference(
    d: pd.DataFrame, p: pd.DataFrame, ps: pd.DataFrame
) -> tuple[dict[str, tuple[int, int]], set[tuple[str, str]]]:
    """Straightforward Python: P1 starts per service sorted once, one bisect per counted deployment."""
    started = dict(zip(p["PROBLEM_ID"], p["STARTED_AT"].dt.to_pydatetime(), strict=True))
    p1 = set(p["PROBLEM_ID"][p["PRIORITY"] == "P1"])
    by_service: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for problem_id, service in zip(ps["PROBLEM_ID"], ps["SERVICE"], strict=True):
        if problem_id in p1:
            by_service[service].append((started[problem_id], problem_id))
    for starts in by_service.values():
        starts.sort()
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    pairs: set[tuple[str, str]] = set()
    prod = set(PROD)
    for deploy_id, service, env, result, finished in zip(
        d["DEPLOY_ID"], d["SERVICE"], d["ENVIRONMENT"], d["RESULT"], d["FINISHED_AT"].dt.to_pydatetime(), strict=True
    ):
        if result != "succeeded" or env.lower() not in prod:
            continue
        entry = counts[service]
        entry[0] += 1
        starts = by_service.get(service, [])
        i = bisect.bisect_left(starts, (finished, ""))
        hit = False
        end = finished + HOUR
        while i < len(starts) and starts[i][0] <= end:
            pairs.add((deploy_id, starts[i][1]))
            hit = True
            i += 1
        entry[1] += hit
    return {s: (n, f) for s, (n, f) in counts.items()}, pairs


def warehouse_run(runtime: Any) -> tuple[dict[str, tuple[int, int]], set[tuple[str, str]], float, float]:
    with runtime.warehouse.session() as wh:
        t0 = time.perf_counter()
        rows = wh.query(
            "SELECT SERVICE, COUNT(*) AS N, COUNT_IF(FAILED) AS F, COUNT_IF(FAILED) / COUNT(*) AS CFR "
            "FROM DORA_DEPLOY_OUTCOMES GROUP BY SERVICE"
        )
        t1 = time.perf_counter()
        pairs = wh.query("SELECT DEPLOY_ID, PROBLEM_ID FROM DORA_FAILED_DEPLOYS")
        t2 = time.perf_counter()
    return (
        {r["SERVICE"]: (int(r["N"]), int(r["F"])) for r in rows},
        {(r["DEPLOY_ID"], r["PROBLEM_ID"]) for r in pairs},
        t1 - t0,
        t2 - t1,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k deployments, 10k problems")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side (median reported)")
    args = parser.parse_args(argv)
    n_deploys, n_problems = (100_000, 10_000) if args.quick else (1_000_000, 100_000)

    from shared.runtime import Runtime
    from shared.settings import load_settings

    folder = Path(tempfile.mkdtemp(prefix="bench-dora-"))
    try:
        runtime = Runtime(load_settings({"WAREHOUSE_PATH": str(folder / "wh")}, local_settings=folder / "absent.json"))
        t = time.perf_counter()
        d, p, ps = generate(n_deploys, n_problems)
        print(f"generated {len(d):,} deployments, {len(p):,} problems ({len(ps):,} problem-service pairs) "
              f"in {time.perf_counter() - t:.1f}s")  # fmt: skip
        t = time.perf_counter()
        with runtime.warehouse.session() as wh:
            wh.write_frame(d, "DEPLOYS")
            wh.write_frame(p, "PROBLEMS")
            wh.write_frame(ps, "PROBLEM_SERVICES")
        print(f"bulk-loaded into the embedded warehouse in {time.perf_counter() - t:.1f}s (not timed below)")

        view_times, pair_times, ref_times = [], [], []
        wh_counts: dict[str, tuple[int, int]] = {}
        wh_pairs: set[tuple[str, str]] = set()
        ref_counts: dict[str, tuple[int, int]] = {}
        ref_pairs: set[tuple[str, str]] = set()
        for _ in range(args.repeat):
            wh_counts, wh_pairs, t_view, t_pairs = warehouse_run(runtime)
            view_times.append(t_view)
            pair_times.append(t_pairs)
            t = time.perf_counter()
            ref_counts, ref_pairs = reference(d, p, ps)
            ref_times.append(time.perf_counter() - t)

        same = wh_counts == ref_counts and wh_pairs == ref_pairs
        counted = sum(n for n, _ in ref_counts.values())
        failed = sum(f for _, f in ref_counts.values())
        print(
            f"\ncounted deployments {counted:,}, failed {failed:,} (CFR {failed / counted:.4f}), pairs {len(ref_pairs):,}"
        )
        print(f"{'':<44} {'median s':>9}  runs")
        print(f"{'warehouse: CFR per service (view)':<44} {statistics.median(view_times):>9.2f}  {len(view_times)}")
        print(
            f"{'warehouse: failed (deploy, problem) pairs':<44} {statistics.median(pair_times):>9.2f}  {len(pair_times)}"
        )
        print(
            f"{'baseline: Python reference (both results)':<44} {statistics.median(ref_times):>9.2f}  {len(ref_times)}"
        )
        ratio = statistics.median(ref_times) / max(statistics.median(view_times) + statistics.median(pair_times), 1e-9)
        print(f"reference / warehouse time ratio: {ratio:.1f}x")
        print(f"results identical (per-service counts and CFR, failed pairs): {'yes' if same else 'NO'}")
        if not same:
            diff = {s for s in set(wh_counts) | set(ref_counts) if wh_counts.get(s) != ref_counts.get(s)}
            print(f"  services differing: {sorted(diff)[:10]}; pairs only in warehouse "
                  f"{len(wh_pairs - ref_pairs)}, only in reference {len(ref_pairs - wh_pairs)}")  # fmt: skip
        return 0 if same else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
