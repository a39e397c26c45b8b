"""Benchmark: a storm of policy events, delivered twice and shuffled (`python -m bench.bench_policy`).

10,000 NonCompliant events over 20 assignments x 500 resources (10 assignments deployIfNotExists,
10 audit, half of those marked for incidents), every event delivered twice, shuffled. Measures on
Azurite and a local fake ARM: events/s the trigger (`accept_event`) and the worker
(`PolicyWorker.process`) sustain, then checks exactly one remediation task per coalescing key and
zero duplicate incidents. The baseline, measured in the same run, is the naive design: one
remediation PUT per event, inline in the trigger, through the same ARM client and write budget.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

SUB = "3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"


def assignment(i: int) -> str:
    kind = "dine" if i < 10 else "audit"
    return f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyAssignments/{kind}-{i:02d}"


def resource(j: int) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-{j % 25:02d}/providers/Microsoft.Storage/storageAccounts/st{j:04d}"


def storm(assignments: int, resources: int, copies: int, seed: int) -> list[dict[str, object]]:
    events = []
    for i in range(assignments):
        for j in range(resources):
            event = {
                "id": f"{i:02d}-{j:04d}",
                "topic": f"/subscriptions/{SUB}",
                "subject": resource(j),
                "eventType": "Microsoft.PolicyInsights.PolicyStateChanged",
                "eventTime": "2026-11-20T14:03:12.4475211Z",
                "data": {
                    "timestamp": "2026-11-20T14:02:58.1197132Z",
                    "policyAssignmentId": assignment(i),
                    "policyDefinitionId": "/providers/Microsoft.Authorization/policyDefinitions/bench",
                    "policyDefinitionReferenceId": "",
                    "complianceState": "NonCompliant",
                    "subscriptionId": SUB,
                },
                "dataVersion": "1",
            }
            events.extend([event] * copies)
    random.Random(seed).shuffle(events)
    return events


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} events/s ({n:,} in {seconds:.1f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_policy", description=__doc__)
    parser.add_argument("--assignments", type=int, default=20)
    parser.add_argument("--resources", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16, help="concurrent invocations (trigger and worker)")
    parser.add_argument("--round", type=int, default=1000, help="deliveries per trigger/worker round")
    parser.add_argument("--baseline-events", type=int, default=100, help="events the naive baseline PUTs")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 resources per assignment")
    args = parser.parse_args(argv)
    if args.quick:
        args.resources, args.baseline_events = min(args.resources, 50), min(args.baseline_events, 30)

    from devhost.azurite import start_azurite
    from devhost.fake_arm import FakeArm
    from shared.adapters.arm import Arm
    from shared.adapters.storage import StateStore
    from shared.policy.remediation import run_plan
    from shared.policy.worker import WORK_QUEUE, PolicyWorker, accept_event
    from shared.settings import load_settings

    # a `timeout` or Ctrl-C must still stop Azurite and the fake ARM (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    azurite = start_azurite(work / "azurite", free_ports=True, in_memory=True)
    fake = FakeArm(
        effect_of=lambda f: "deployIfNotExists" if "/dine-" in f else "audit",
        owner_of=lambda r: f"squad-{int(r.rsplit('st', 1)[-1]) % 7}" if "/storageAccounts/" in r else "",
    ).start()
    try:
        settings = load_settings(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "ARM_ENDPOINT": fake.url,
                "REMEDIATION_MODE": "enforce",
                "POLICY_INCIDENT_ASSIGNMENTS": "*/audit-1[0-4]",
                "VALUEFLOW_LOG_FORMAT": "text",
            },
            local_settings=work / "absent.json",
        )
        store = StateStore.from_settings(settings)
        arm = Arm.from_settings(settings)
        worker = PolicyWorker(store, settings, arm)
        events = storm(args.assignments, args.resources, 2, seed=7)
        received = datetime.now(UTC) - timedelta(seconds=2 * settings.remediation_window_seconds)
        print(f"storm: {len(events):,} deliveries of {len(events) // 2:,} events, {args.threads} threads", flush=True)

        # -- baseline: the naive trigger PUTs one remediation task per event (same ARM client, same budget)
        naive = Arm.from_settings(settings)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(
                pool.map(
                    lambda e: naive.put_remediation(
                        f"/subscriptions/{SUB}",
                        f"naive-{e['id']}",
                        e["data"]["policyAssignmentId"],  # type: ignore[index]
                        "",
                        resource_count=1,
                        parallel_deployments=1,
                        failure_threshold=1.0,
                    ),
                    events[: args.baseline_events],
                )
            )
        naive_seconds = time.perf_counter() - started
        naive_puts = len(fake.puts)
        fake.puts.clear()
        print(f"naive baseline (one PUT per event, inline): {rate(naive_puts, naive_seconds)}", flush=True)

        # -- the trigger (parse, check, enqueue) and the worker (drain policy-work), fed in rounds: in the
        # live system the worker drains while events arrive; Azurite's queue receive slows down badly
        # with tens of thousands of waiting messages (not so Azure Storage), which would measure Azurite
        def drain() -> Counter[str]:
            seen: Counter[str] = Counter()
            while True:
                batch = store.receive(WORK_QUEUE, max_messages=32, visibility_timeout=300)
                if not batch:
                    return seen
                for msg in batch:
                    try:
                        outcome = worker.process(msg.body, dequeue_count=msg.dequeue_count, message_id=msg.id)
                    except Exception:  # as the host does: the message comes back for another attempt
                        seen["retried"] += 1
                        store.release(WORK_QUEUE, msg, delay_seconds=0)
                        continue
                    seen[outcome.status] += 1
                    store.ack(WORK_QUEUE, msg)

        trigger_seconds = worker_seconds = 0.0
        totals: Counter[str] = Counter()
        with ThreadPoolExecutor(args.threads) as pool:
            for start in range(0, len(events), args.round):
                chunk = events[start : start + args.round]
                started = time.perf_counter()
                outcomes = list(pool.map(lambda e: accept_event(store, e, received_at=received).status, chunk))
                trigger_seconds += time.perf_counter() - started
                assert Counter(outcomes) == {"queued": len(chunk)}, Counter(outcomes)
                started = time.perf_counter()
                for done in [pool.submit(drain) for _ in range(args.threads)]:
                    totals += done.result()
                worker_seconds += time.perf_counter() - started
                print(f"  {start + len(chunk):,} deliveries done", flush=True)
        print(f"trigger (check + enqueue):                  {rate(len(events), trigger_seconds)}", flush=True)
        print(f"worker (dedupe, effect, pending/alert):     {rate(len(events), worker_seconds)}", flush=True)

        # -- the plan (the watch timer): one task per coalescing key
        started = time.perf_counter()
        run = run_plan(store, settings, arm)
        plan_seconds = time.perf_counter() - started
        keys = Counter(
            (p["body"]["properties"]["policyAssignmentId"].lower(), p["path"].split("/providers/")[0].lower())
            for p in fake.puts
        )
        remediable = sum(1 for i in range(args.assignments) if i < 10)

        alerts = []
        while batch := store.receive("alerts", max_messages=32):
            for m in batch:
                alerts.append(json.loads(m.body)["alert"])
                store.ack("alerts", m)
        incidents = Counter(a["dedupe_key"] for a in alerts if a.get("incident"))
        alert_keys = Counter(a["dedupe_key"] for a in alerts)

        print(f"worker outcomes: {dict(totals)}")
        print(f"plan of the closed window:                  {len(run.created)} task(s) in {plan_seconds:.2f} s")
        print(
            f"remediation PUTs: {len(fake.puts)} for {len(keys)} key(s), expected {remediable}; "
            f"max per key {max(keys.values()) if keys else 0}"
        )
        print(
            f"alerts: {len(alerts)} for {len(alert_keys)} violation(s); incidents {sum(incidents.values())} "
            f"for {len(incidents)} key(s); duplicates {sum(alert_keys.values()) - len(alert_keys)}"
        )
        naive_storm = (len(events) // 2) * remediable / args.assignments * 2 / settings.arm_writes_per_second
        print(
            f"the naive design would PUT {len(events) * remediable // args.assignments:,} tasks for this storm: "
            f"~{naive_storm:,.0f} s of ARM write budget at {settings.arm_writes_per_second:g} writes/s, "
            f"and over the tenant's 100 concurrent tasks"
        )
        ok = (
            len(fake.puts) == remediable
            and len(keys) == remediable
            and max(keys.values(), default=0) == 1
            and sum(alert_keys.values()) == len(alert_keys)
            and len(alert_keys) == (args.assignments - remediable) * args.resources
        )
        print("RESULT:", "ok" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        fake.stop()
        azurite.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
