"""Cost export ingestion and daily-scan partition memory, side by side with the previous code in the same run.

Ingestion: generated FOCUS exports (the Azure FOCUS sample's 13 columns, ~350 bytes a row, 30 days) of 1M and
5M rows are loaded into a fresh embedded warehouse twice: by the streaming loader (`costs ingest`:
`shared.costs.loader.ingest_paths`) and by the previous loader (`bench/legacy_ingest.py`, the code this project
shipped before: whole files in memory, every column as Python strings, de-duplication over all columns, then one
bulk load). Each runs in its own process; its peak RSS is that process's `ru_maxrss` (`os.wait4`).

Scan partition: a warehouse of 10,000 resource series x 104 days is read for one partition and scored, once the
previous way (rows as Python dicts) and once columnar (Arrow batches, categorical ids); peak RSS per 10k series.

    python -m bench.bench_ingest            # 1M and 5M rows (the 5M previous loader needs ~10 GB: run it rarely)
    python -m bench.bench_ingest --quick    # 200k rows, for routine runs
    python -m bench.bench_ingest --sizes 14000000 --streaming-only   # the 5 GB case, new loader only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HEADER = [
    "BilledCost", "BillingCurrency", "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart", "EffectiveCost",
    "ResourceId", "ResourceName", "ServiceName", "SubAccountId", "SubAccountName", "Tags", "x_ResourceGroupName",
]  # fmt: skip
DAYS = 30
FIRST_DAY = date(2026, 10, 1)
SUBSCRIPTIONS = [f"5e0c1f2a-0000-4000-8000-{i:012d}" for i in range(8)]
SERVICES = ["Virtual Machines", "Storage", "Azure Kubernetes Service", "SQL Database", "Bandwidth"]
SCAN_SERIES = 10_000
SCAN_DAYS = 104


def generate_focus(path: Path, rows: int, seed: int = 7) -> int:
    """Write a FOCUS CSV of `rows` rows (one row per resource and day over 30 days); returns its size in bytes."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    per_day = max(1, rows // DAYS)
    chunk = 250_000
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(",".join(HEADER) + "\n")
        for lo in range(0, rows, chunk):
            idx = np.arange(lo, min(rows, lo + chunk))
            day = np.minimum(idx // per_day, DAYS - 1)
            r = idx % per_day
            sub = np.asarray(SUBSCRIPTIONS, dtype=object)[r % len(SUBSCRIPTIONS)]
            rg = np.char.add("rg-app-", (r % 300).astype(str)).astype(object)
            name = np.char.add("vm-", np.char.zfill(r.astype(str), 7)).astype(object)
            start = np.datetime64(FIRST_DAY) + day.astype("timedelta64[D]")
            cost = np.round(rng.gamma(2.0, 6.0, len(idx)), 4)
            frame = pd.DataFrame(
                {
                    "BilledCost": cost,
                    "BillingCurrency": "USD",
                    "ChargeCategory": "Usage",
                    "ChargePeriodEnd": np.datetime_as_string(start + 1) + "T00:00:00Z",
                    "ChargePeriodStart": np.datetime_as_string(start) + "T00:00:00Z",
                    "EffectiveCost": cost,
                    "ResourceId": "/subscriptions/"
                    + sub
                    + "/resourcegroups/"
                    + rg
                    + "/providers/microsoft.compute/virtualmachines/"
                    + name,
                    "ResourceName": name,
                    "ServiceName": np.asarray(SERVICES, dtype=object)[r % len(SERVICES)],
                    "SubAccountId": sub,
                    "SubAccountName": "app-" + (r % len(SUBSCRIPTIONS)).astype(str).astype(object),
                    "Tags": '{"owner":"squad-'
                    + (r % 40).astype(str).astype(object)
                    + '","env":"prod","cost-center":"CC-'
                    + (r % 97).astype(str).astype(object)
                    + '"}',
                    "x_ResourceGroupName": rg,
                }
            )
            frame.to_csv(out, header=False, index=False)
    return path.stat().st_size


# -- children: one process per measurement, so that ru_maxrss is its own ---------------------------------------


def _settings(warehouse: str) -> Any:
    from shared.settings import load_settings

    return load_settings({"WAREHOUSE_PATH": warehouse, "VALUEFLOW_LOG_FORMAT": "text"}, local_settings=Path("/none"))


def child_streaming(csv_path: str, warehouse: str) -> dict[str, Any]:
    from shared.costs.loader import ingest_paths
    from shared.runtime import Runtime

    runtime = Runtime(_settings(warehouse))
    runtime.warehouse  # noqa: B018 - migrations before the clock starts
    started = time.perf_counter()
    [result] = ingest_paths(runtime, [csv_path])
    seconds = time.perf_counter() - started
    doc = result.as_dict()
    return {"seconds": seconds, "rows_read": doc["rows_read"], "rows": doc["rows"], "usage": doc["cost_by_currency"]}


def child_previous(csv_path: str, warehouse: str) -> dict[str, Any]:
    from bench import legacy_ingest
    from shared.runtime import Runtime

    runtime = Runtime(_settings(warehouse))
    runtime.warehouse  # noqa: B018
    started = time.perf_counter()
    # what the previous loader did: every file read whole into memory, parsed, grouped, bulk-loaded in one go
    data = Path(csv_path).read_bytes()
    run = legacy_ingest.ExportRun("bench", "local:bench", None, None, (legacy_ingest.ExportFile(csv_path, data),))
    parsed = legacy_ingest.parse_run(run)
    frame = parsed.frame.copy()
    frame.insert(0, "RUN_ID", "bench")
    frame.insert(0, "SOURCE_KEY", "local:bench")
    with runtime.warehouse.session() as wh, wh.transaction():
        rows = wh.write_frame(frame, "COST_DAILY")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows_read": parsed.rows_read,
        "rows": rows,
        "usage": {"USD": round(parsed.usage_cost, 6)},
    }


def child_idle(warehouse: str) -> dict[str, Any]:
    """The same imports and an open warehouse, nothing read: the floor every process pays."""
    import pandas  # noqa: F401
    import pyarrow.csv  # noqa: F401

    from bench import legacy_ingest  # noqa: F401
    from shared.costs import loader, scan  # noqa: F401
    from shared.runtime import Runtime

    runtime = Runtime(_settings(warehouse))
    with runtime.warehouse.session() as wh:
        wh.query("SELECT 1 AS OK")
    return {}


def child_scan(warehouse: str, mode: str) -> dict[str, Any]:
    import pandas as pd

    from shared.costs import store
    from shared.costs.partition import densify
    from shared.costs.scoring import ScoringConfig, score_day
    from shared.runtime import Runtime

    runtime = Runtime(_settings(warehouse))
    end = FIRST_DAY + timedelta(days=SCAN_DAYS - 1)
    started = time.perf_counter()
    with runtime.warehouse.session() as wh:
        if mode == "columnar":
            frame = store.daily_series(wh, "resource", FIRST_DAY, end)
        else:
            # the previous fetch: one dict per row (Decimal costs, date objects, a string per row)
            rows = wh.query(
                "SELECT RESOURCE_ID AS SERIES_ID, USAGE_DATE, SUM(COST) AS COST FROM COST_DAILY "
                "WHERE IS_USAGE AND USAGE_DATE BETWEEN %s AND %s GROUP BY RESOURCE_ID, USAGE_DATE",
                (FIRST_DAY, end),
            )
            frame = pd.DataFrame(rows, columns=["SERIES_ID", "USAGE_DATE", "COST"])
            frame["COST"] = frame["COST"].astype(float)
    ids, dates, costs = densify(frame, FIRST_DAY, end)
    result = score_day(costs, dates, len(dates) - 1, ScoringConfig())
    return {"seconds": time.perf_counter() - started, "series": len(ids), "anomalies": int(result.anomaly.sum())}


def build_scan_warehouse(warehouse: str) -> None:
    import numpy as np
    import pandas as pd

    from shared.costs.ingest import series_bucket
    from shared.runtime import Runtime

    runtime = Runtime(_settings(warehouse))
    rng = np.random.default_rng(3)
    ids = [
        f"/subscriptions/{SUBSCRIPTIONS[i % 8]}/resourcegroups/rg-app-{i % 300}/providers/microsoft.compute/"
        f"virtualmachines/vm-{i:07d}"
        for i in range(SCAN_SERIES)
    ]
    days = [FIRST_DAY + timedelta(days=d) for d in range(SCAN_DAYS)]
    with runtime.warehouse.session() as wh:
        for lo in range(0, SCAN_SERIES, 2000):
            chunk = ids[lo : lo + 2000]
            n = len(chunk) * len(days)
            frame = pd.DataFrame(
                {
                    "SOURCE_KEY": "bench",
                    "RUN_ID": "bench",
                    "USAGE_DATE": np.repeat(np.asarray(days, dtype=object), len(chunk)),
                    "RESOURCE_ID": np.tile(np.asarray(chunk, dtype=object), len(days)),
                    "SERIES_BUCKET": np.tile([series_bucket(i) for i in chunk], len(days)),
                    "SUBSCRIPTION_ID": "s",
                    "RESOURCE_GROUP": "rg",
                    "SERVICE_NAME": "Virtual Machines",
                    "METER": "D4s v5",
                    "OWNER": "squad-a",
                    "COST_CENTER": "",
                    "ENVIRONMENT": "prod",
                    "CHARGE_CATEGORY": "Usage",
                    "IS_USAGE": True,
                    "COST": np.round(rng.gamma(2.0, 6.0, n), 4),
                    "BILLED_COST": 0.0,
                    "CURRENCY": "USD",
                    "PROVIDER": "azure",
                }
            )
            wh.write_frame(frame, "COST_DAILY")


def _child(argv: list[str]) -> int:
    kind, *rest = argv
    out = {
        "streaming": lambda: child_streaming(*rest),
        "previous": lambda: child_previous(*rest),
        "idle": lambda: child_idle(*rest),
        "scan": lambda: child_scan(*rest),
    }[kind]()
    print("RESULT " + json.dumps(out, default=str), flush=True)
    return 0


def measure(args: list[str], timeout: float = 7200) -> dict[str, Any]:
    """Run one child; its figures plus its own peak RSS (MB) and whether it finished."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_ingest", "--child", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    _pid, status, usage = os.wait4(proc.pid, 0)
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    figures: dict[str, Any] = {"wall": time.monotonic() - started, "peak_mb": usage.ru_maxrss / 1024, "ok": status == 0}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            figures.update(json.loads(line[7:]))
    if status != 0:
        figures["error"] = (stderr.strip().splitlines() or ["killed (out of memory?)"])[-1][:200]
    return figures


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200k rows only (routine runs)")
    parser.add_argument("--sizes", help="comma-separated row counts (default 1000000,5000000)")
    parser.add_argument("--streaming-only", action="store_true", help="skip the previous loader (big sizes)")
    parser.add_argument("--no-scan", action="store_true", help="skip the scan partition measurement")
    args = parser.parse_args(argv)
    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else ([200_000] if args.quick else [1_000_000, 5_000_000])
    )
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        idle = measure(["idle", str(root / "wh-idle")])
        print(f"process floor (imports + an open embedded warehouse): {idle['peak_mb']:.0f} MB", flush=True)
        print(f"{'rows':>10} {'file MB':>8} | {'loader':<10} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}  usage")
        for rows in sizes:
            path = root / f"focus-{rows}.csv"
            size = generate_focus(path, rows)
            loaders = ["streaming"] if args.streaming_only else ["streaming", "previous"]
            for loader in loaders:
                wh = root / f"wh-{loader}-{rows}"
                figures = measure([loader, str(path), str(wh)])
                shutil.rmtree(wh, ignore_errors=True)
                rate = rows / figures["seconds"] if figures.get("seconds") else 0
                tail = json.dumps(figures.get("usage", {})) if figures["ok"] else f"FAILED: {figures.get('error')}"
                print(
                    f"{rows:>10,} {size / 1e6:>8.0f} | {loader:<10} {figures.get('seconds', 0):>8.1f} {rate:>10,.0f} "
                    f"{figures['peak_mb']:>12,.0f}  {tail}",
                    flush=True,
                )
            path.unlink()
        if not args.no_scan:
            wh = root / "wh-scan"
            build_scan_warehouse(str(wh))
            print(f"\ndaily-scan partition: {SCAN_SERIES:,} series x {SCAN_DAYS} days, fetch + densify + score")
            for mode in ("dicts", "columnar"):
                figures = measure(["scan", str(wh), mode])
                above = figures["peak_mb"] - idle["peak_mb"]
                print(
                    f"  {mode:<9} peak RSS {figures['peak_mb']:,.0f} MB ({above:,.0f} MB above the floor, "
                    f"{above * 1024 / SCAN_SERIES:,.1f} KB per series) in {figures.get('seconds', 0):.1f}s",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
