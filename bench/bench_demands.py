"""Benchmark of the demand sync: N approved demands, each approval delivered twice (a Flow that retries
its REST step), against local fake Azure DevOps and ServiceNow peers that fail 30% of first attempts;
side by side with a naive baseline.

Run: ``python -m bench.bench_demands [--demands N] [--quick]`` (default 200; ``--quick`` = 60).

Failures injected on the first attempt, the same for both methods:
- Azure DevOps: 429 with Retry-After on the first call for 1 demand in 10; 503 for 1 in 10;
- 1 create in 10 IS made but its answer is lost (the client times out): the case where a blind
  re-POST duplicates.
Ours: `DemandSync.handle()` per message (link and idempotency records in Azurite tables; a retry is
handled again at once instead of after its visibility delay, which only changes the wall time).
Baseline: POST the work item, then PATCH the demand; a failure redelivers the whole message (up to
maxDequeueCount=5, then poison = lost), with no look-up before create.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAT = "bench-pat"


def _demand(i: int) -> dict[str, Any]:
    return {"sysId": f"{i:032x}", "number": f"DMND{i:07d}", "title": f"Demand {i}", "costCenter": f"CC-{i % 7}"}


def _inject(ado: Any, n: int) -> None:
    """30% of demands fail their first Azure DevOps call, deterministically."""
    for i in range(n):
        plan = i % 10
        if plan == 0:
            ado.fail_for[f"DMND{i:07d}"] = ("429", 1)
        elif plan == 1:
            ado.fail_for[f"DMND{i:07d}"] = ("503", 1)
        elif plan == 2:
            ado.fail_for[f"DMND{i:07d}"] = ("lost", 1)


def _peers() -> tuple[Any, Any, str, str]:
    from devhost.fake_demand_peers import FakeAzureDevOps, FakeServiceNow

    class FlakyAzureDevOps(FakeAzureDevOps):
        """Fails the first create (or WIQL look-up) of chosen demands, keyed by their SN: tag."""

        def __init__(self) -> None:
            super().__init__(pat=PAT)
            self.fail_for: dict[str, tuple[str, int]] = {}

        def route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], doc: Any) -> Any:
            text = json.dumps(doc) if doc is not None else ""
            for number, (kind, left) in list(self.fail_for.items()):
                if left and number in text and method == "POST":
                    self.fail_for[number] = (kind, left - 1)
                    if kind == "429":
                        return 429, {"Retry-After": "1", "Content-Type": "application/json"}, b"{}"
                    if kind == "503":
                        return 503, {"Content-Type": "application/json"}, b"{}"
                    if kind == "lost" and "/wit/workitems/$" in path:
                        answer = super().route(method, path, query, headers, doc)
                        time.sleep(0.4)  # made, but the client gave up at 0.2 s
                        return answer
                    self.fail_for[number] = (kind, left)  # "lost" waits for the create itself
            return super().route(method, path, query, headers, doc)

    ado, sn = FlakyAzureDevOps(), FakeServiceNow(username="bench", password="bench-password")
    return ado, sn, ado.serve(), sn.serve()


class CapturedQueue:
    """Azurite tables, but the demands queue kept in memory so retries run at once."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.pending: list[Any] = []
        self.poison: list[Any] = []

    def send(self, queue: str, message: Any, *, visibility_timeout: int | None = None) -> str:
        if queue == "demands":
            self.pending.append(message)
        elif queue == "demands-poison":
            self.poison.append(message)
        return "m"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def run_ours(n: int, conn: str) -> dict[str, Any]:
    from dataclasses import replace

    from shared.adapters.azure_devops import AzureDevOpsClient
    from shared.adapters.storage import StateStore
    from shared.demands.boards import AzureBoards
    from shared.demands.model import Demand
    from shared.demands.sync import DemandSync, demand_message
    from shared.settings import load_settings

    ado, sn, ado_url, sn_url = _peers()
    _inject(ado, n)
    for i in range(n):
        d = _demand(i)
        sn.add_demand(d["sysId"], d["number"], d["title"])
    settings = load_settings(
        {
            "AzureWebJobsStorage": conn,
            "SERVICENOW_INSTANCE_URL": sn_url,
            "SERVICENOW_USERNAME": "bench",
            "SERVICENOW_PASSWORD": "bench-password",
            "AZURE_DEVOPS_ORG_URL": f"{ado_url}/example-org",
            "AZURE_DEVOPS_PROJECT": "Platform Team",
            "AZURE_DEVOPS_PAT": PAT,
        },
        local_settings=Path("/nonexistent/local.settings.json"),
    )
    queue = CapturedQueue(StateStore.from_connection_string(conn))
    boards = AzureBoards(AzureDevOpsClient(settings.azure_devops_org_url, "Platform Team", pat=PAT, timeout=0.2))
    sync = DemandSync(replace(settings, demands_max_attempts=5), queue, boards=boards)
    queue.pending = [demand_message(Demand.from_payload(_demand(i))) for i in range(n) for _ in range(2)]
    durations = []
    started = time.monotonic()
    while queue.pending:
        message = queue.pending.pop(0)
        t0 = time.perf_counter()
        sync.handle(message)
        durations.append(time.perf_counter() - t0)
    wall = time.monotonic() - started
    ado.stop()
    sn.stop()
    return _figures("ours", n, ado, sn, len(queue.poison), wall, durations)


def run_baseline(n: int) -> dict[str, Any]:
    import requests

    ado, sn, ado_url, sn_url = _peers()
    _inject(ado, n)
    for i in range(n):
        d = _demand(i)
        sn.add_demand(d["sysId"], d["number"], d["title"])
    session = requests.Session()
    lost = 0
    durations = []
    started = time.monotonic()
    for d in [_demand(i) for i in range(n) for _ in range(2)]:
        t0 = time.perf_counter()
        for _attempt in range(5):
            try:
                patch = [
                    {"op": "add", "path": "/fields/System.Title", "value": d["title"]},
                    {"op": "add", "path": "/fields/System.Tags", "value": f"SN:{d['number']}"},
                ]
                resp = session.post(
                    f"{ado_url}/example-org/Platform Team/_apis/wit/workitems/$Feature",
                    params={"api-version": "7.1"},
                    json=patch,
                    headers={"Content-Type": "application/json-patch+json"},
                    auth=("", PAT),
                    timeout=0.2,
                )
                resp.raise_for_status()
                item = resp.json()
                session.patch(
                    f"{sn_url}/api/now/table/dmn_demand/{d['sysId']}",
                    json={"u_azure_devops_work_item": str(item["id"]), "work_notes": f"created {item['id']}"},
                    auth=("bench", "bench-password"),
                    timeout=2,
                ).raise_for_status()
                break
            except (requests.RequestException, ValueError):
                continue
        else:
            lost += 1
        durations.append(time.perf_counter() - t0)
    wall = time.monotonic() - started
    time.sleep(0.5)
    ado.stop()
    sn.stop()
    return _figures("baseline", n, ado, sn, lost, wall, durations)


def _figures(
    name: str, n: int, ado: Any, sn: Any, poisoned: int, wall: float, durations: list[float]
) -> dict[str, Any]:
    per_demand = Counter(
        tag.strip()
        for item in ado.work_items.values()
        for tag in str(item["fields"].get("System.Tags", "")).split(";")
        if tag.strip().startswith("SN:")
    )
    notes = sum(len(v) for v in sn.journal.values())
    return {
        "method": name,
        "demands": n,
        "messages": 2 * n,
        "work_items": len(ado.work_items),
        "duplicate_work_items": sum(c - 1 for c in per_demand.values() if c > 1),
        "demands_without_work_item": n - len(per_demand),
        "work_notes": notes,
        "duplicate_notes": max(0, notes - len(per_demand)),
        "poisoned_or_lost": poisoned,
        "wall_seconds": round(wall, 1),
        "median_ms_per_message": round(statistics.median(durations) * 1000, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demands", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = 60 if args.quick else args.demands
    from devhost.azurite import start_azurite

    with tempfile.TemporaryDirectory() as tmp:
        azurite = start_azurite(Path(tmp), free_ports=True, in_memory=True)
        try:
            rows = [run_ours(n, azurite.connection_string), run_baseline(n)]
        finally:
            azurite.stop()
    keys = list(rows[0])
    width = max(len(k) for k in keys)
    for key in keys:
        print(f"{key:<{width}}  {rows[0][key]!s:>10}  {rows[1][key]!s:>10}")
    ours = rows[0]
    ok = ours["duplicate_work_items"] == 0 and ours["demands_without_work_item"] == 0 and ours["duplicate_notes"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
