"""What the delivery and policy benchmarks share: the baseline tree, child runs, storage round trips.

- `baseline_tree(commit)`: `git archive` of an older commit into a temp folder, so today's code and
  the baseline run side by side in the same `make bench`, on the same Azurite, from the same driver.
- `run_child(module, impl_root, args)`: run `python -m <module> --child ...` with `impl_root` first on
  `sys.path` (its `shared` package is the one measured); the child prints one JSON line.
- `count_round_trips()`: a counting hook on the transports' `send` (azure-core's `RequestsTransport`,
  and today's `StdlibTransport` for tables and queues), the call every storage client makes once per
  HTTP request: every storage operation, retries
  included, classified as table insert/get/query/upsert/replace/merge/delete/batch and queue
  put/get/delete/update, with empty queue polls apart.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "c9e90f0"  # the implementation before issue 17
AZURE_LATENCY_MS = 10.0  # stated per-operation latency of Azure Storage from a Functions instance in-region
PARTITION_ENTITIES_PER_S = 2000  # Azure Tables: target per partition (1 KiB entities)
ACCOUNT_TRANSACTIONS_PER_S = 20000  # Azure Storage: target per account
QUEUE_MESSAGES_PER_S = 2000  # Azure Queues: target per queue (1 KiB messages)


def baseline_tree(commit: str = BASELINE_COMMIT) -> Path | None:
    """The files of `commit` in a temp folder (None when git or the commit is not available)."""
    try:
        raw = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "shared", "devhost"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"baseline {commit} not available ({exc}); measuring today's code only", file=sys.stderr)
        return None
    target = Path(tempfile.mkdtemp(prefix=f"bench-baseline-{commit}-"))
    with tarfile.open(fileobj=BytesIO(raw)) as tar:
        tar.extractall(target, filter="data")
    return target


def run_child(
    module: str, impl_root: Path, args: list[str], timeout: float, extra_env: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """Run one measured child; its last stdout line is JSON. None (and the stderr tail) on failure."""
    env = {**os.environ, **(extra_env or {}), "PYTHONPATH": os.pathsep.join([str(impl_root), str(ROOT)])}
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, "--child", "--impl-root", str(impl_root), *args],
            cwd=str(ROOT),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"{module} child ({impl_root.name}) timed out after {timeout:.0f}s", file=sys.stderr)
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"{module} child ({impl_root.name}) failed:\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    return result


AZURITE_PGID_ENV = "BENCH_AZURITE_PGID"  # tells a measured child which process group is Azurite


def run_measured(module: str, azurite: Any, impl_root: Path, args: list[str], timeout: float) -> dict[str, Any] | None:
    """`run_child`, telling the child Azurite's process group: the child reads Azurite's CPU over its
    measured window alone (`AzuriteMeter`), as the set-up before it and the checks after it (listing
    whole tables, the watch's plan) are not operations of the run and would inflate Azurite's CPU
    per operation."""
    pgid = azurite.process.pid if azurite.process is not None else None
    return run_child(module, impl_root, args, timeout, {AZURITE_PGID_ENV: str(pgid or "")})


class AzuriteMeter:
    """In a measured child: the CPU seconds Azurite (all its threads, and its main thread, which runs
    every request's JavaScript) spends between `start()` and `stop()` (Linux; nothing elsewhere)."""

    def __init__(self) -> None:
        self.pgid = int(os.environ.get(AZURITE_PGID_ENV) or 0) or None
        self.started: tuple[float | None, float | None] = (None, None)

    def _read(self) -> tuple[float | None, float | None]:
        return group_cpu_seconds(self.pgid), group_cpu_seconds(self.pgid, main_threads=True)

    def start(self) -> None:
        self.started = self._read()

    def stop(self) -> dict[str, float]:
        """{"azurite_cpu_seconds": ..., "azurite_main_thread_cpu_seconds": ...}, or {} when not measured."""
        (total0, main0), (total1, main1) = self.started, self._read()
        if total0 is None or main0 is None or total1 is None or main1 is None:
            return {}
        return {"azurite_cpu_seconds": total1 - total0, "azurite_main_thread_cpu_seconds": main1 - main0}


def use_implementation(argv: list[str]) -> None:
    """In a child: put `--impl-root` first on sys.path before anything imports `shared`."""
    if "--impl-root" in argv:
        root = argv[argv.index("--impl-root") + 1]
        sys.path.insert(0, root)
        for name in [m for m in sys.modules if m == "shared" or m.startswith("shared.")]:
            del sys.modules[name]


def host_dispatch(
    *,
    workers: int,
    receive: Callable[[int], list[Any] | None],
    run_one: Callable[[Any], None],
    drained: Callable[[], bool],
    deadline: float,
) -> None:
    """Run queue messages on `workers` threads as the Functions host hands them out: one poller keeps
    up to 2 x W messages in flight (it receives again once W or fewer are left: batchSize W +
    newBatchThreshold W) and every message goes to the next free thread, so no thread waits idle
    while another holds unstarted messages. `receive(n)` returns up to n messages ([] when none are
    visible, None after an error: poll again); it stops once nothing is in flight, receives have
    come back empty for 3 s and `drained()` says the queue is empty, or at `deadline` (monotonic)."""
    ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
    flight = threading.Condition()
    in_flight = [0]

    def poller() -> None:
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            with flight:
                flight.wait_for(lambda: in_flight[0] <= workers, timeout=1.0)
                room = 2 * workers - in_flight[0]
            batch = receive(min(32, room)) if room > 0 else []
            if batch is None:
                continue
            if not batch:
                if in_flight[0] == 0 and time.monotonic() - idle_since > 3 and drained():
                    break
                time.sleep(0.2)
                continue
            idle_since = time.monotonic()
            with flight:
                in_flight[0] += len(batch)
            for msg in batch:
                ready.put(msg)
        for _ in range(workers):
            ready.put(None)

    def pooled_worker() -> None:
        while (msg := ready.get()) is not None:
            try:
                run_one(msg)
            finally:
                with flight:
                    in_flight[0] -= 1
                    flight.notify()

    run_threads([pooled_worker] * workers + [poller])


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Start a thread per target and wait for them all."""
    threads = [threading.Thread(target=target) for target in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class RoundTrips:
    """Counts storage HTTP requests by kind while `active`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)  # wall time spent waiting for each kind of request
        self.slowest: defaultdict[str, float] = defaultdict(float)  # the longest single request of each kind
        self.active = False
        self._lock = threading.Lock()

    def add(self, kind: str, seconds: float = 0.0) -> None:
        if self.active:
            with self._lock:
                self.counts[kind] += 1
                self.seconds[kind] += seconds
                self.slowest[kind] = max(self.slowest[kind], seconds)

    def total(self, *, without: tuple[str, ...] = ("queue.get-empty", "queue.properties", "other")) -> int:
        """Requests of the work itself: not the idle polls and queue-length checks of the bench driver."""
        return sum(n for k, n in self.counts.items() if k not in without)


def count_round_trips(latency_ms: float = 0.0) -> RoundTrips:
    """Install the counting hook (once per process) and return its counter.

    `latency_ms` > 0: every storage request also waits that long once answered, off the GIL and off
    the CPU, as a request to Azure Storage waits on the network (Azurite on loopback answers in about
    a millisecond). The wait counts as part of the request's time."""
    from azure.core.pipeline.transport import RequestsTransport

    trips = RoundTrips()
    wait = max(0.0, latency_ms) / 1000.0
    depth = threading.local()  # a transport handing a request to its fallback counts it once

    def counted(original: Callable[..., Any]) -> Callable[..., Any]:
        def send(self: Any, request: Any, **kwargs: Any) -> Any:
            if getattr(depth, "inside", False):
                return original(self, request, **kwargs)
            depth.inside = True
            started = time.perf_counter()
            try:
                response = original(self, request, **kwargs)
            finally:
                depth.inside = False
            if wait:
                time.sleep(wait)
            took = time.perf_counter() - started
            try:
                trips.add(_classify(request, response), took)
            except Exception:  # never let the measure break the run
                trips.add("unknown", took)
            return response

        return send

    transports: list[Any] = [RequestsTransport]
    try:  # the measured tree's own transport, where it has one (the baseline's has not)
        from shared.adapters.transport import StdlibTransport

        transports.append(StdlibTransport)
    except ImportError:
        pass
    for cls in transports:
        cls.send = counted(cls.send)
    return trips


def _classify(request: Any, response: Any) -> str:
    url = urlsplit(request.url)
    path = url.path.rstrip("/")
    method = request.method.upper()
    status = response.status_code
    headers = {str(k).lower(): str(v) for k, v in request.headers.items()}
    is_table = "dataserviceversion" in headers or "odata" in headers.get("accept", "") or path.endswith("$batch")
    if is_table or ".table." in url.netloc:
        if path.endswith("$batch"):
            return "table.batch" if status < 300 else "table.batch-refused"
        if path.endswith("/Tables") or "Tables(" in path:
            return "table.setup"
        has_key = path.endswith(")") and "PartitionKey=" in path
        if method == "POST":
            return "table.insert" if status < 300 else "table.insert-conflict"
        if method == "GET":
            if has_key:
                return "table.get" if status < 300 else "table.get-missing"
            return "table.query"
        if method == "PUT":
            conditional = headers.get("if-match") not in (None, "*")
            return "table.replace-if-match" if conditional else "table.upsert"
        if method in ("MERGE", "PATCH"):
            return "table.merge"
        if method == "DELETE":
            return "table.delete"
        return f"table.{method.lower()}"
    if "/messages" in path or ".queue." in url.netloc or url.query.startswith("comp=metadata"):
        if "/messages" not in path:
            return "queue.setup" if method == "PUT" else "queue.properties"
        if method == "POST":
            return "queue.put"
        if method == "GET":
            body = response.body() if hasattr(response, "body") else b""
            return "queue.get" if b"<QueueMessage>" in (body or b"") else "queue.get-empty"
        if method == "DELETE":
            return "queue.delete"
        if method == "PUT":
            return "queue.update"
    return "other"


STALL_SECONDS = 2.0  # a storage request slower than this: Azurite or the machine stalled (reported with the run)


def stalled(result: dict[str, Any]) -> str:
    """The slowest kinds of storage request of a run that took over STALL_SECONDS ("" if none)."""
    slow = {k: v for k, v in result.get("ops_slowest", {}).items() if v > STALL_SECONDS}
    return ", ".join(f"{k} {v:.1f} s" for k, v in sorted(slow.items(), key=lambda kv: -kv[1])[:3])


def stall_note(name: str, result: dict[str, Any], units: str) -> str:
    """The line a report prints for a run that stalled ("" if it did not)."""
    worst = stalled(result)
    if not worst:
        return ""
    return (
        f"{name}, {result['workers']} workers: storage requests stalled ({worst}): Azurite or the machine "
        f"stopped answering for a while, whatever the code; that run's {units}/s says little"
    )


def paired_runs(done: list[tuple[str, dict[str, Any]]]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(workers, before's run, today's run) for every worker count both were measured at; today's
    is the per-message run named "today" (not a variant such as "today, batched")."""
    pairs = []
    for workers in sorted({r["workers"] for _, r in done}):
        before = next((r for name, r in done if name.startswith("before") and r["workers"] == workers), None)
        today = next((r for name, r in done if name == "today" and r["workers"] == workers), None)
        if before is not None and today is not None:
            pairs.append((workers, before, today))
    return pairs


def azurite_costs(
    done: list[tuple[str, dict[str, Any]]], units: str, ops_per_unit: str
) -> list[tuple[int, dict[str, Any], dict[str, Any], tuple[float, float] | None]]:
    """`paired_runs` with Azurite's CPU ms per counted storage operation in today's run: (all its
    threads, its main thread), or None when either run stalled (Azurite's CPU during a stall says
    nothing of its cost per operation). Pairs without a main-thread figure are left out."""
    out = []
    for workers, before, today in paired_runs(done):
        main = today.get("azurite_main_thread_cpu_seconds")
        operations = today[ops_per_unit] * today[units]
        if main is None or not operations:
            continue
        cost = None
        if not (stalled(before) or stalled(today)):
            cost = (today["azurite_cpu_seconds"] * 1000 / operations, main * 1000 / operations)
        out.append((workers, before, today, cost))
    return out


def group_cpu_seconds(pgid: int | None, *, main_threads: bool = False) -> float | None:
    """CPU seconds (user + system) used so far by the processes of a process group (Linux /proc; None
    elsewhere): what Azurite spent on a run, read before and after it. `main_threads`: only each
    process's main thread (Node.js runs its JavaScript there; V8's garbage collector and libuv's pool
    use the others: 7-27% of Azurite's CPU in the benches' runs)."""
    if not pgid or not os.path.isdir("/proc"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state, ppid, pgrp, ..., utime (12), stime (13)
                continue
            if main_threads:
                with open(f"/proc/{entry}/task/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def projection(
    ops_per_unit: float, hot_partition_share: float, latency_ms: float = AZURE_LATENCY_MS
) -> dict[str, float]:
    """Units/s a worker thread, and the account and the hottest partition, allow on Azure Storage.

    `hot_partition_share`: the share of a unit's table entity writes/reads that land in the one
    partition everything shares (1.0 = every unit touches it; 1/16 when spread over 16)."""
    per_thread = 1000.0 / (ops_per_unit * latency_ms) if ops_per_unit else 0.0
    account = ACCOUNT_TRANSACTIONS_PER_S / ops_per_unit if ops_per_unit else 0.0
    partition = PARTITION_ENTITIES_PER_S / hot_partition_share if hot_partition_share else float("inf")
    return {"per_thread": per_thread, "account_ceiling": account, "partition_ceiling": partition}


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    """A Markdown table (what docs/benchmarks.md takes as is)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def add_side_by_side_args(parser: Any, budget: float) -> None:
    """The options every side-by-side bench takes: worker counts, a time budget, the baseline commit,
    and the hidden ones of a measured child run."""
    import argparse

    parser.add_argument("--workers", default="8,32", help="comma-separated worker counts")
    parser.add_argument("--budget", type=float, default=budget, help="give up a run after this many seconds")
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="commit measured as the baseline")
    parser.add_argument(
        "--storage-latency-ms",
        type=float,
        default=0.0,
        help="wait this long after every storage request, in both implementations alike: the network latency of "
        f"Azure Storage (e.g. {AZURE_LATENCY_MS:g}), which Azurite on loopback does not have (default 0)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl-root", help=argparse.SUPPRESS)
    parser.add_argument("--conn", help=argparse.SUPPRESS)


def latency_args(args: Any) -> list[str]:
    """The child-run arguments that carry `--storage-latency-ms` (none at its default)."""
    return ["--storage-latency-ms", f"{args.storage_latency_ms:g}"] if args.storage_latency_ms else []


def ops_by_kind_table(done: list[tuple[str, dict[str, Any]]], units: str) -> str:
    """Storage operations per unit by kind, one column per run (`units`: the result key counting units)."""
    kinds = sorted({k for _, r in done for k in r["ops"]})
    rows = [(k, *[f"{r['ops'].get(k, 0) / r[units]:.2f}" for _, r in done]) for k in kinds]
    return table(rows, ("operation", *[f"{name}, {r['workers']} workers" for name, r in done]))


def projection_table(
    rows: list[tuple[str, float, float, float | None]], unit: str, units: str, hot_partition: str
) -> str:
    """The projection to Azure Storage of (implementation, ops per `unit`, hot-partition share, CPU ms
    per `unit` of the measured process or None) rows. An instance of 32 threads is bound by waiting
    (32 x the per-thread rate) or, on one vCPU, by its CPU (1000 / CPU ms per unit; the measured
    CPU includes the driver's queue requests, which the Functions host makes in production, so the
    CPU bound is on the low side), whichever is lower."""
    out = []
    for name, ops, hot_share, cpu_ms in rows:
        p = projection(ops, hot_share)
        per_thread = p["per_thread"]
        waiting = per_thread * 32
        cpu_bound = 1000 / cpu_ms if cpu_ms else None
        instance = min(waiting, cpu_bound) if cpu_bound is not None else waiting
        ceilings = (p["account_ceiling"], p["partition_ceiling"])
        out.append(
            (
                name,
                f"{ops:.2f}",
                f"{per_thread:.1f}",
                f"{waiting:,.0f}",
                f"{cpu_bound:,.0f}" if cpu_bound is not None else "-",
                f"{instance:,.0f}",
                *[f"{c:,.0f}" for c in ceilings],
            )
        )
    header = (
        "implementation",
        f"ops/{unit}",
        f"{units}/s per thread",
        "32 threads, waiting only",
        "1 vCPU, CPU only (1000 / CPU ms measured)",
        "per 1-vCPU instance, 32 threads (the lower)",
        "account ceiling (20,000 tx/s)",
        f"{hot_partition} ceiling (2,000/s)",
    )
    return table(out, header)
