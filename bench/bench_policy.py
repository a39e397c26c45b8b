"""Benchmark of the policy path: a storm of policy events, each delivered twice and shuffled, through
the trigger (`accept_event`) and the queue worker (`PolicyWorker`), today's implementation side by
side with the one before issue 17 (commit c9e90f0, from git history, in the same run).

Run: ``python -m bench.bench_policy [--resources N] [--workers 8,32] [--quick]``.

20 assignments x N resources (default 50; 10 assignments `deployIfNotExists`, 10 `audit`, half of
those marked for incidents), every event delivered twice, shuffled, on Azurite (in memory) and the
local fake ARM (`devhost/fake_arm.py`). 30% of first attempts fail: the pending-remediation write
or the alert enqueue raises a storage error once, and the message comes back (as the host does).
W worker threads (8, then 32) run `PolicyWorker.process` per message (what a queue invocation
does), then delete the message or let it come back, with messages handed out as the Functions host
does: one poller keeps up to 2W in flight and each goes to the next free thread (`--dispatch
per-worker`, the driver of the figures measured before: each thread receives its own batches of 32
and runs them in turn). "today, batched" hands each thread's batch of 32 to `process_batch` (one
ledger transaction per partition). The run ends when the last message is done. Then the watch's
plan runs. Every storage request is counted at the HTTP transport (`bench/_harness.py`); ops per
delivery include the trigger's enqueue.
The verdict: one pending row per remediable violation, one alert per escalated one, one
remediation task per coalescing key; nothing lost, nothing twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._harness import (
    AZURE_LATENCY_MS,
    ROOT,
    AzuriteMeter,
    add_side_by_side_args,
    azurite_costs,
    baseline_tree,
    count_round_trips,
    host_dispatch,
    latency_args,
    ops_by_kind_table,
    projection_table,
    run_measured,
    run_threads,
    stall_note,
    stalled,
    table,
    use_implementation,
)

ASSIGNMENTS = 20
REMEDIABLE = 10


def assignment(sub: str, i: int) -> str:
    kind = "dine" if i < REMEDIABLE else "audit"
    return f"/subscriptions/{sub}/providers/Microsoft.Authorization/policyAssignments/{kind}-{i:02d}"


def resource(sub: str, run: str, j: int) -> str:
    return f"/subscriptions/{sub}/resourceGroups/rg-{j % 25:02d}/providers/Microsoft.Storage/storageAccounts/st{run}{j:04d}"


def storm(run: str, resources: int, seed: int) -> list[dict[str, Any]]:
    sub = str(uuid.UUID(hashlib.sha256(run.encode()).hexdigest()[:32]))  # per run: tasks are per subscription
    events = []
    for i in range(ASSIGNMENTS):
        for j in range(resources):
            event = {
                "id": f"{run}-{i:02d}-{j:04d}",
                "topic": f"/subscriptions/{sub}",
                "subject": resource(sub, run, j),
                "eventType": "Microsoft.PolicyInsights.PolicyStateChanged",
                "eventTime": "2026-11-20T14:03:12.4475211Z",
                "data": {
                    "timestamp": "2026-11-20T14:02:58.1197132Z",
                    "policyAssignmentId": assignment(sub, i),
                    "policyDefinitionId": "/providers/Microsoft.Authorization/policyDefinitions/bench",
                    "policyDefinitionReferenceId": "",
                    "complianceState": "NonCompliant",
                    "subscriptionId": sub,
                },
                "dataVersion": "1",
            }
            events.extend([event, json.loads(json.dumps(event))])
    random.Random(seed).shuffle(events)
    return events


def _fails_first(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:4], 16) % 10 < 3


class FaultyStore:
    """The real store, but 30% of pending-remediation writes and alert enqueues fail the first time."""

    def __init__(self, store: Any, error: type[Exception]) -> None:
        self._store = store
        self._error = error
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _first(self, key: str) -> bool:
        with self._lock:
            first = key not in self._seen
            self._seen.add(key)
        return first and _fails_first(key)

    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None:
        if table == "remediations" and partition.startswith("pending") and self._first("p" + row):
            raise self._error("injected: pending write failed")
        self._store.upsert(table, partition, row, fields)

    def send(self, queue: str, message: Any, **kw: Any) -> str:
        if queue == "alerts" and isinstance(message, dict) and self._first("a" + str(message["alert"]["dedupe_key"])):
            raise self._error("injected: alert enqueue failed")
        return str(self._store.send(queue, message, **kw))


def child(args: argparse.Namespace) -> int:
    """One measured run with the `shared` of --impl-root; prints one JSON line."""
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    for noisy in ("shared", "azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    trips = count_round_trips(args.storage_latency_ms)

    from devhost.fake_arm import FakeArm
    from shared.adapters.arm import Arm
    from shared.adapters.storage import StateStore
    from shared.errors import StorageError
    from shared.policy.remediation import run_plan
    from shared.policy.worker import WORK_QUEUE, PolicyWorker, accept_event

    try:
        from shared.policy.worker import pending_rows
    except ImportError:  # the baseline (c9e90f0) kept every pending row in partition "pending"

        def pending_rows(store: Any) -> list[dict[str, Any]]:
            return list(store.query("remediations", "PartitionKey eq @pk", pk="pending"))

    from shared.settings import load_settings

    run = uuid.uuid4().hex[:6]
    fake = FakeArm(
        effect_of=lambda f: "deployIfNotExists" if "/dine-" in f else "audit",
        owner_of=lambda r: f"squad-{int(r[-4:]) % 7}" if "/storageAccounts/" in r else "",
    ).start()
    work = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    try:
        settings = load_settings(
            {
                "AzureWebJobsStorage": args.conn,
                "ARM_ENDPOINT": fake.url,
                "REMEDIATION_MODE": "enforce",
                "POLICY_INCIDENT_ASSIGNMENTS": "*/audit-1[0-4]",
                "VALUEFLOW_LOG_FORMAT": "text",
            },
            local_settings=work / "absent.json",
        )
        store = StateStore.from_settings(settings)
        arm = Arm.from_settings(settings)
        worker = PolicyWorker(FaultyStore(store, StorageError), settings, arm)
        batched = args.batched and hasattr(worker, "process_batch")
        events = storm(run, args.resources, seed=7)
        received = datetime.now(UTC) - timedelta(seconds=2 * settings.remediation_window_seconds)
        store.queue_length(WORK_QUEUE)
        store.queue_length("alerts")
        for table_name in ("policystate", "remediations"):
            store.insert(table_name, "bench-setup", "x", {})
        try:  # today's code: rows a baseline run left in the unspread partitions (same Azurite) are moved
            from shared.policy.worker import move_unspread_rows  # now, as a deploy's first batch would: a
        except ImportError:  # one-time upgrade cost, not a per-delivery one
            pass
        else:
            move_unspread_rows(store)
        handled: Counter[str] = Counter()
        lock = threading.Lock()
        last: list[float] = []  # when the last message was done (the run's end, idle polls after it apart)

        def settle(m: Any, outcome: Any) -> None:
            """After an invocation, as the host does: delete the message, or let it come back (1 s)."""
            try:
                if isinstance(outcome, Exception):
                    store.release(WORK_QUEUE, m, delay_seconds=1)
                    status = "retried"
                else:
                    store.ack(WORK_QUEUE, m)
                    status = outcome.status
            except Exception as exc:  # Azurite stalled: the message comes back after its visibility timeout
                status = f"settle-error: {type(exc).__name__}"
            with lock:
                handled[status] += 1
                last[:] = [time.monotonic()]

        def run_one(m: Any) -> None:
            try:
                outcome: Any = worker.process(m.body, dequeue_count=m.dequeue_count, message_id=m.id)
            except Exception as exc:
                outcome = exc
            settle(m, outcome)

        def receive(max_messages: int) -> list[Any] | None:
            try:
                return list(store.receive(WORK_QUEUE, max_messages=max_messages, visibility_timeout=300))
            except Exception:  # Azurite stalled: poll again, as the host does
                with lock:
                    handled["receive-error"] += 1
                time.sleep(1.0)
                return None

        def drain() -> None:  # per-worker: each thread receives its own batches of 32 and runs them in turn
            idle = 0
            while True:
                batch = receive(32)
                if not batch:
                    idle += 1
                    if idle > 5 and store.queue_length(WORK_QUEUE) == 0:
                        return
                    time.sleep(0.2)
                    continue
                idle = 0
                if batched:
                    try:
                        outcomes = worker.process_batch([(m.body, m.dequeue_count, m.id) for m in batch])
                    except Exception as exc:  # the whole invocation failed: every message comes back
                        with lock:
                            handled[f"batch-error: {type(exc).__name__}: {str(exc)[:80]}"] += 1
                        outcomes = [exc] * len(batch)
                    for m, outcome in zip(batch, outcomes, strict=True):
                        settle(m, outcome)
                else:
                    for m in batch:
                        run_one(m)

        meter = AzuriteMeter()
        meter.start()
        trips.active = True
        started = time.monotonic()
        cpu_started = time.process_time()
        with ThreadPoolExecutor(args.workers) as pool:
            statuses = list(pool.map(lambda e: accept_event(store, e, received_at=received).status, events))
        assert Counter(statuses) == {"queued": len(events)}, Counter(statuses)
        enqueued = time.monotonic()
        if args.dispatch == "host" and not batched:
            host_dispatch(
                workers=args.workers,
                receive=receive,
                run_one=run_one,
                drained=lambda: store.queue_length(WORK_QUEUE) == 0,
                deadline=started + args.budget,
            )
        else:
            run_threads([drain] * args.workers)
        drained = last[0] if last else time.monotonic()
        cpu_seconds = time.process_time() - cpu_started
        trips.active = False
        azurite_window = meter.stop()

        pending = [r for r in pending_rows(store) if run in str(r.get("ResourceId", ""))]
        pending_keys = Counter((r["AssignmentId"].lower(), r["ResourceId"].lower()) for r in pending)
        plan = run_plan(store, settings, arm)
        puts = Counter(
            (p["body"]["properties"]["policyAssignmentId"].lower(), p["path"].split("/providers/")[0].lower())
            for p in fake.puts
        )
        alerts: list[dict[str, Any]] = []
        while batch := store.receive("alerts", max_messages=32):
            for m in batch:
                doc = json.loads(m.body)
                if run in json.dumps(doc):
                    alerts.append(doc["alert"])
                store.ack("alerts", m)
        alert_keys = Counter(a["dedupe_key"] for a in alerts)
        escalated = (ASSIGNMENTS - REMEDIABLE) * args.resources
        remediable = REMEDIABLE * args.resources
        deliveries = len(events)
        result = {
            "resources": args.resources,
            "deliveries": deliveries,
            "workers": args.workers,
            "storage_latency_ms": args.storage_latency_ms,
            "batched": batched,
            "seconds": drained - started,
            "trigger_seconds": enqueued - started,
            "worker_seconds": drained - enqueued,
            "deliveries_per_s": deliveries / (drained - started),
            "worker_deliveries_per_s": deliveries / (drained - enqueued),
            "outcomes": dict(handled),
            "dispatch": "per-worker" if batched else args.dispatch,
            **azurite_window,  # Azurite's CPU over the same window (AzuriteMeter)
            "cpu_seconds": cpu_seconds,  # this process: trigger, worker, storage and ARM clients, the driver
            "ops": dict(trips.counts),
            "ops_seconds": dict(trips.seconds),
            "ops_slowest": dict(trips.slowest),
            "ops_per_delivery": trips.total() / deliveries,
            "verdict": {
                "pending_missing": remediable - len(pending_keys),
                "alerts_missing": escalated - len(alert_keys),
                "alerts_duplicated": sum(alert_keys.values()) - len(alert_keys),
                "tasks": len(fake.puts),
                "task_keys": len(puts),
                "tasks_duplicated": sum(puts.values()) - len(puts),
                "tasks_created_by_plan": len(plan.created),
            },
        }
    finally:
        fake.stop()
    print(json.dumps(result))
    return 0


def _ok(r: dict[str, Any] | None) -> bool:
    if r is None:
        return False
    v = r["verdict"]
    return (
        v["pending_missing"] == 0
        and v["alerts_missing"] == 0
        and v["alerts_duplicated"] == 0
        and v["tasks_duplicated"] == 0
        and v["task_keys"] == REMEDIABLE
    )


def _floor_rows(done: list[tuple[str, dict[str, Any]]], latency_ms: float) -> list[tuple[Any, ...]]:
    """With `latency_ms` added to every storage request, a lower bound of any exactly-once worker's
    time per delivery: the write that admits the event (before its effect) and the host's delete,
    one after the other at the added latency alone (a duplicate needs no more; a new event adds its
    effect). Before's worker time (workers / worker deliveries per second) over it caps the ratio."""
    if not latency_ms:
        return []
    rows = []
    for name, r in done:
        if name.startswith("before") and r["worker_deliveries_per_s"]:
            before_ms = 1000 * r["workers"] / r["worker_deliveries_per_s"]
            rows.append(
                (r["workers"], f"{before_ms:.1f}", f"2 x {latency_ms:g}", f"{before_ms / (2 * latency_ms):.1f}x")
            )
    return rows


CEILING_HEADER = (
    "workers",
    "before: deliveries/s (trigger + worker)",
    "5x that",
    "Azurite: CPU ms per operation (all threads / main thread)",
    "exactly-once minimum: operations/delivery",
    "ceiling of ANY design from Azurite's main thread",
    "at 5x: CPU ms/delivery left for this process",
)


def _ceiling_rows(done: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """Without added latency, the most deliveries/s (trigger + worker) any exactly-once design could
    reach on this Azurite: Node.js runs every request's JavaScript on its main thread, so that
    thread's CPU per operation times the fewest operations a delivery needs bounds every
    implementation. The fewest: the trigger's enqueue, the write admitting the delivery (a
    duplicate's conflicts) and the host's delete; per new event its effect, a pending upsert
    (remediable) or an open-alert insert and the alert's enqueue (escalated). Retries are left out:
    a lower bound. Then, at 5x before's rate, the CPU per delivery left for this process on the
    machine's cores once Azurite (all its threads) has its share (negative: not even Azurite fits).
    Azurite's CPU per operation is today's run's: its CPU over the measured window (`AzuriteMeter`;
    not the set-up or the checks after it) over the operations counted there."""
    rows = []
    cores = os.cpu_count() or 1
    for workers, before, today, per_op in azurite_costs(done, "deliveries", "ops_per_delivery"):
        if per_op is None:
            rows.append(
                (workers, f"{before['deliveries_per_s']:.1f}", *["(a run stalled)"] * (len(CEILING_HEADER) - 2))
            )
            continue
        azurite_op_ms, main_op_ms = per_op
        n = today["deliveries"]
        remediable = REMEDIABLE * today["resources"]
        escalated = (ASSIGNMENTS - REMEDIABLE) * today["resources"]
        least_ops = 3 + (remediable + 2 * escalated) / n
        target = 5 * before["deliveries_per_s"]
        rows.append(
            (
                workers,
                f"{before['deliveries_per_s']:.1f}",
                f"{target:.0f}",
                f"{azurite_op_ms:.2f} / {main_op_ms:.2f}",
                f"{least_ops:.2f}",
                f"{1000 / (main_op_ms * least_ops):.0f}",
                f"{cores * 1000 / target - least_ops * azurite_op_ms:.1f}",
            )
        )
    return rows


def report(results: list[tuple[str, dict[str, Any] | None]]) -> bool:
    done = [(name, r) for name, r in results if r is not None]
    if not done:
        print("no run finished")
        return False
    first = done[0][1]
    print(
        f"\n{first['deliveries']:,} deliveries ({first['deliveries'] // 2:,} events x 2, shuffled), "
        "30% first-attempt faults"
        + (
            f", {first['storage_latency_ms']:g} ms of network latency added to every storage request"
            if first.get("storage_latency_ms")
            else ""
        )
        + "\n"
    )
    header = (
        "implementation",
        "workers",
        "deliveries/s (trigger + worker)",
        "worker deliveries/s",
        "storage ops/delivery",
        "lost",
        "duplicated",
        "tasks (keys)",
        "CPU ms/delivery (this process)",
        "Azurite CPU ms/delivery",
    )
    rows = []
    for name, r in results:
        if r is None:
            rows.append((name, *["-"] * (len(header) - 1)))
            continue
        v = r["verdict"]
        n = r["deliveries"]
        azurite = r.get("azurite_cpu_seconds")
        rows.append(
            (
                name,
                r["workers"],
                f"{r['deliveries_per_s']:.1f}",
                f"{r['worker_deliveries_per_s']:.1f}",
                f"{r['ops_per_delivery']:.2f}",
                v["pending_missing"] + v["alerts_missing"],
                v["alerts_duplicated"] + v["tasks_duplicated"],
                f"{v['tasks']} ({v['task_keys']})",
                f"{1000 * r['cpu_seconds'] / n:.1f}" if "cpu_seconds" in r else "-",
                f"{1000 * azurite / n:.1f}" if azurite is not None else "-",
            )
        )
    print(table(rows, header))
    print("\nstorage operations per delivery, by kind (idle polls of empty queues apart):\n")
    print(ops_by_kind_table(done, "deliveries"))
    latency = first.get("storage_latency_ms", 0.0)
    floors = _floor_rows(done, latency)
    if floors:
        print(
            "\nthe most any exactly-once worker could gain over before in this run (ms of worker time per delivery: "
            "the admitting write and the delete one after the other at the added latency alone; no CPU):\n"
        )
        print(table(floors, ("workers", "before: worker ms/delivery", "floor", "largest possible ratio")))
    ceilings = [] if latency else _ceiling_rows(done)
    if ceilings:
        print(
            "\nthe most deliveries/s any exactly-once design could reach on this Azurite (CPU-bound without added "
            "latency; see _ceiling_rows):\n"
        )
        print(table(ceilings, CEILING_HEADER))
    print(f"\nprojection to Azure Storage at {AZURE_LATENCY_MS:g} ms per operation (from the measured ops/delivery):\n")
    proj, seen = [], set()
    for name, r in done:
        if name in seen:
            continue
        seen.add(name)
        # every delivery touches the ledger once: before, all in partition "state"; today over 16
        cpu_ms = None if stalled(r) else r["cpu_seconds"] * 1000 / r["deliveries"]
        proj.append((name, r["ops_per_delivery"], 1.0 if name.startswith("before") else 1 / 16, cpu_ms))
    print(projection_table(proj, "delivery", "deliveries", "ledger-partition"))
    ok = all(_ok(r) for name, r in results if name.startswith("today"))
    for name, r in done:  # what went wrong in the driver itself (Azurite stalls), if anything
        trouble = {k: v for k, v in r["outcomes"].items() if "error" in k}
        if trouble:
            print(f"{name}, {r['workers']} workers: {trouble}")
        if note := stall_note(name, r, "deliveries"):
            print(note)
    print("\ntoday: zero lost, zero duplicated, one task per key: " + ("YES" if ok else "NO"))
    return ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    use_implementation(argv)
    parser = argparse.ArgumentParser(prog="python -m bench.bench_policy", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=50, help="resources per assignment (20 assignments)")
    parser.add_argument("--quick", action="store_true", help="15 resources per assignment")
    add_side_by_side_args(parser, budget=900.0)
    parser.add_argument("--batched", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--dispatch",
        choices=("host", "per-worker"),
        default="host",
        help="how messages reach the W threads: as the Functions host does, each message to the next free thread "
        "(default), or each thread receiving its own batches of 32 and running them in turn (the figures before; "
        "the batched run always does this)",
    )
    args = parser.parse_args(argv)
    if args.child:
        args.workers = int(args.workers)
        return child(args)
    resources = 15 if args.quick else args.resources

    from devhost.azurite import start_azurite

    tmp = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    azurite = start_azurite(tmp / "azurite", free_ports=True, in_memory=True)
    baseline = baseline_tree(args.baseline)
    results: list[tuple[str, dict[str, Any] | None]] = []
    try:
        for workers in [int(w) for w in str(args.workers).split(",")]:
            common = ["--resources", str(resources), "--workers", str(workers), "--conn", azurite.connection_string]
            common += ["--dispatch", args.dispatch, *latency_args(args)]
            if baseline is not None:
                results.append(
                    (f"before ({args.baseline})", run_measured(__spec__.name, azurite, baseline, common, args.budget))
                )
            results.append(("today", run_measured(__spec__.name, azurite, ROOT, common, args.budget)))
            batched = [*common, "--batched"]
            results.append(("today, batched", run_measured(__spec__.name, azurite, ROOT, batched, args.budget)))
    finally:
        azurite.stop()
    return 0 if report(results) else 1


if __name__ == "__main__":
    sys.exit(main())
