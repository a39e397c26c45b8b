"""Benchmark of alert delivery: today's implementation side by side with the one before issue 17
(commit c9e90f0, taken from git history in the same run), both driven by the same code here.

Run: ``python -m bench.bench_alerts [--alerts N] [--workers 8,32] [--quick]``.

N alerts (default 1,000; 1 in 5 critical, so with a ServiceNow incident) go through the real
`alerts` queue on Azurite (in memory) to local fake Teams and ServiceNow endpoints that fail 30% of
first attempts (none with --no-faults); storm control at its default threshold (10 per squad and window; 200 squads):
- Teams: 503 (nothing posted) for 2 in 10 cards, 429 with Retry-After: 1 for 1 in 10;
- ServiceNow: 503 for 2 in 10 creates; for 1 in 10 the incident IS created but the answer is lost
  (the client times out), the case where a blind re-POST duplicates.
W worker threads (8, then 32) each receive batches of 16 and run `AlertDelivery.handle()` per
message, then delete it (a failure leaves it for redelivery, as the host does). Every storage
request is counted at the HTTP transport (`bench/_harness.py`); storage ops per alert include the
enqueue, not the empty polls of idle workers. The verdict: every card and incident exactly once,
nothing in the poison queue.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench._harness import (
    AZURE_LATENCY_MS,
    ROOT,
    add_side_by_side_args,
    baseline_tree,
    count_round_trips,
    group_cpu_seconds,
    ops_by_kind_table,
    projection_table,
    run_child,
    table,
    use_implementation,
)

SQUADS = 200
FAULTS = {"on": True}  # --no-faults: every first attempt succeeds (the happy-path operation count)


def _failure_plan(number: int) -> str:
    """Deterministic first-attempt failure for alert `number` (30% in all)."""
    bucket = number % 10 if FAULTS["on"] else -1
    return {0: "unavailable", 1: "unavailable", 2: "throttle"}.get(bucket, "ok")


def _sn_plan(number: int) -> str:
    bucket = (number // 10) % 10 if FAULTS["on"] else -1
    return {0: "unavailable", 1: "unavailable", 2: "lost"}.get(bucket, "ok")


def _fakes(timeout_s: float) -> tuple[Any, Any, Any]:
    from pytest_httpserver import HTTPServer
    from werkzeug import Request, Response

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    lock = threading.Lock()
    state: dict[str, Any] = {"cards": Counter(), "incidents": {}, "seen_t": set(), "seen_s": set(), "posts": 0}

    def teams(request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        number = int(json.dumps(body).split("bench-alert ")[1].split('"')[0])
        with lock:
            first = number not in state["seen_t"]
            state["seen_t"].add(number)
        plan = _failure_plan(number) if first else "ok"
        if plan == "unavailable":
            return Response(b"", status=503)
        if plan == "throttle":
            return Response(b"", status=429, headers={"Retry-After": "1"})
        with lock:
            state["cards"][number] += 1
        return Response(b"", status=202)

    def table(request: Request) -> Response:
        if request.method == "GET":
            cid = request.args.get("sysparm_query", "").split("^")[0].partition("=")[2]
            with lock:
                rows = [r for r in state["incidents"].values() if r["correlation_id"] == cid]
            return Response(json.dumps({"result": rows[:1]}), content_type="application/json")
        body = request.get_json()
        cid = body["correlation_id"]
        number = int(cid.split(":")[1])
        with lock:
            first = number not in state["seen_s"]
            state["seen_s"].add(number)
        plan = _sn_plan(number) if first else "ok"
        if plan == "unavailable":
            return Response(b'{"error":{"message":"unavailable"}}', status=503, content_type="application/json")
        with lock:
            sys_id = uuid.uuid4().hex
            state["incidents"][sys_id] = {"sys_id": sys_id, "number": sys_id[:8], "state": "1", "correlation_id": cid}
        if plan == "lost":
            time.sleep(timeout_s + 0.3)  # created, but the client has given up
        return Response(json.dumps({"result": state["incidents"][sys_id]}), status=201, content_type="application/json")

    import re

    server.expect_request(re.compile(r"^/hook/.*"), method="POST").respond_with_handler(teams)
    server.expect_request("/api/now/table/incident").respond_with_handler(table)
    return server, state, lock


def _time_peer_calls(base: str, trips: Any) -> Any:
    """Count and time the HTTP calls to the fake Teams and ServiceNow peers (wall time a worker waits)."""
    import requests

    from bench._harness import RoundTrips

    peers = RoundTrips()
    original = requests.Session.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        if not str(request.url).startswith(base):
            return original(self, request, **kwargs)
        started = time.perf_counter()
        try:
            return original(self, request, **kwargs)
        finally:
            peers.active = trips.active
            kind = "teams" if "/hook/" in str(request.url) else "servicenow"
            peers.add(f"{kind}.{request.method.lower()}", time.perf_counter() - started)

    requests.Session.send = send  # type: ignore[method-assign]
    return peers


def _alerts(n: int, run: str) -> list[Any]:
    from shared.alerts.model import Alert

    return [
        Alert(
            kind="policy_violation",
            severity="critical" if i % 5 == 0 else "warning",
            title=f"bench-alert {i}",
            resource_id=f"/subscriptions/bench/resourceGroups/rg/providers/x/{i}",
            owner=f"squad-{run}-{i % SQUADS}",  # per run: storm windows are per squad
            facts=(("n", str(i)),),
            links=(),
            dedupe_key=f"bench-{run}:{i}",
        )
        for i in range(n)
    ]


def _settings(conn: str, tmp: Path, sn_url: str, timeout_s: float, routes: str = "") -> Any:
    from shared.settings import load_settings

    return load_settings(
        {
            "ALERT_ROUTES": routes,
            "AzureWebJobsStorage": conn,
            "OUTBOX_DIR": str(tmp / "outbox"),
            "SERVICENOW_INSTANCE_URL": sn_url,
            "SERVICENOW_USERNAME": "bench-user",
            "SERVICENOW_PASSWORD": "bench-password",
            "ALERT_STORM_THRESHOLD": "0",
            "ALERT_RETRY_BASE_SECONDS": "0.5",
            "ALERT_RETRY_MAX_SECONDS": "4",
            "ALERT_HTTP_TIMEOUT_SECONDS": str(timeout_s),
            "VALUEFLOW_LOG_FORMAT": "text",
        },
        local_settings=tmp / "none.json",
    )


def _routes_doc(base: str, run: str) -> dict[str, Any]:
    return {"routes": {f"squad-{run}-{i}": {"teams_webhook_url": f"{base}/hook/{i}"} for i in range(SQUADS)}}


def _routes(base: str, run: str) -> Any:
    from shared.alerts.routing import parse_routes

    return parse_routes(
        _routes_doc(base, run),
        default_webhook_url=f"{base}/hook/default",
        allowed_hosts=(),
    )


def _verdict(state: dict[str, Any], alerts: list[Any]) -> dict[str, int]:
    cards_per_alert = state["cards"]
    per_key = Counter(r["correlation_id"] for r in state["incidents"].values())
    wanted = [a for a in alerts if a.wants_incident()]
    return {
        "cards_missing": sum(1 for i in range(len(alerts)) if cards_per_alert[i] == 0),
        "cards_duplicated": sum(n - 1 for n in cards_per_alert.values() if n > 1),
        "incidents_missing": sum(1 for a in wanted if per_key[a.dedupe_key] == 0),
        "incidents_duplicated": sum(n - 1 for n in per_key.values() if n > 1),
    }


def child(args: argparse.Namespace) -> int:
    """One measured run in this process, with the `shared` of --impl-root; prints one JSON line."""
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    for noisy in ("werkzeug", "shared", "azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    trips = count_round_trips()
    FAULTS["on"] = not args.no_faults

    from shared.adapters.storage import StateStore
    from shared.alerts.delivery import POISON, QUEUE, AlertDelivery, alert_message

    timeout_s = 1.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    store = StateStore.from_connection_string(args.conn)
    server, state, _ = _fakes(timeout_s)
    base = server.url_for("/").rstrip("/")
    peers = _time_peer_calls(base, trips)
    run = uuid.uuid4().hex[:8]
    routes = json.dumps(_routes_doc(base, run))
    settings = replace(_settings(args.conn, tmp, base, timeout_s, routes), alert_storm_threshold=args.storm)
    if args.teams_rate_scope and hasattr(settings, "teams_rate_scope"):
        settings = replace(settings, teams_rate_scope=args.teams_rate_scope)
    alerts = _alerts(args.alerts, run)
    # built as the queue function builds it (today: through the runtime's composition)
    delivery = AlertDelivery.from_settings(settings, store)
    poison_before = store.queue_length(POISON)
    store.queue_length(QUEUE)  # queues and tables exist before counting starts
    for table_name in ("idempotency", "alertstorms", "teamsbudget"):
        store.insert(table_name, "bench-setup", "x", {})
    trips.active = True
    started = time.monotonic()
    cpu_started = time.process_time()
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda a: store.send(QUEUE, alert_message(a)), alerts))
    enqueued = time.monotonic()
    lock = threading.Lock()
    handled: Counter[str] = Counter()
    last = [started]
    first_pass = [enqueued]  # when the last first-attempt message was handled (the rest is the retry tail)
    deadline = started + args.budget

    def worker() -> None:
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                batch = store.receive(QUEUE, max_messages=16, visibility_timeout=60)
            except Exception as exc:  # Azurite stalled: poll again, as the host does
                with lock:
                    handled["errors"] += 1
                    handled["error: receive " + type(exc).__name__] += 1
                time.sleep(1.0)
                continue
            if not batch:
                if time.monotonic() - idle_since > 3 and store.queue_length(QUEUE) == 0:
                    return
                time.sleep(0.2)
                continue
            idle_since = time.monotonic()
            for msg in batch:
                try:
                    delivery.handle(msg.body)
                    store.ack(QUEUE, msg)
                except Exception as exc:  # host semantics: not acked, redelivered after the visibility timeout
                    with lock:
                        handled["errors"] += 1
                        handled[f"error: {type(exc).__name__}: {str(exc)[:80]}"] += 1
                    continue
                retry = b'"attempt":1}' not in msg.body and b'"attempt":1,' not in msg.body
                with lock:
                    handled["messages"] += 1
                    last[0] = time.monotonic()
                    if not retry:
                        first_pass[0] = last[0]

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trips.active = False
    cpu_seconds = time.process_time() - cpu_started
    seconds = last[0] - started
    server.stop()
    result = {
        "alerts": args.alerts,
        "workers": args.workers,
        "seconds": seconds,
        "enqueue_seconds": enqueued - started,
        "first_pass_seconds": first_pass[0] - started,
        "alerts_per_s": args.alerts / seconds if seconds > 0 else 0.0,
        "messages": handled["messages"],
        "errors": handled["errors"],
        "error_kinds": {k: v for k, v in handled.items() if k.startswith("error:")},
        "poison": store.queue_length(POISON) - poison_before,
        "timed_out": time.monotonic() >= deadline,
        "ops": dict(trips.counts),
        "ops_seconds": dict(trips.seconds),
        "ops_per_alert": trips.total() / args.alerts,
        "peer_calls": dict(peers.counts),
        "peer_seconds": dict(peers.seconds),
        "thread_seconds": seconds * args.workers,
        "cpu_seconds": cpu_seconds,  # this process: delivery, storage and HTTP clients, the driver, the fake peers
        "verdict": _verdict(state, alerts),
    }
    print(json.dumps(result))
    return 0


def _row(name: str, r: dict[str, Any] | None) -> tuple[Any, ...]:
    if r is None:
        return (name, "-", "-", "-", "-", "-", "-")
    v = r["verdict"]
    return (
        name,
        r["workers"],
        f"{r['alerts_per_s']:.1f}",
        f"{r['ops_per_alert']:.2f}",
        v["cards_missing"] + v["incidents_missing"] + r["poison"],
        v["cards_duplicated"] + v["incidents_duplicated"],
        r["errors"],
    )


TIME_HEADER = (
    "implementation",
    "workers",
    "enqueue s",
    "first attempts done s",
    "retry tail s",
    "thread ms/alert",
    "waiting on storage ms",
    "waiting on Teams/ServiceNow ms",
    "CPU ms/alert (this process)",
    "Azurite CPU ms/alert",
)


def _time_row(name: str, r: dict[str, Any]) -> tuple[Any, ...]:
    """Thread time per alert split into storage waits (the driver's enqueue, gets and deletes
    included), waits on the fake peers (the 1 s lost-answer timeouts included) and the rest (CPU and
    waiting for the GIL and the machine's cores, idle polls at the end)."""
    n = r["alerts"]
    if "first_pass_seconds" not in r:
        return (name, r["workers"], *["-"] * (len(TIME_HEADER) - 2))
    storage = sum(v for k, v in r["ops_seconds"].items() if k not in ("queue.get-empty", "queue.properties"))
    azurite = r.get("azurite_cpu_seconds")
    return (
        name,
        r["workers"],
        f"{r['enqueue_seconds']:.2f}",
        f"{r['first_pass_seconds']:.2f}",
        f"{r['seconds'] - r['first_pass_seconds']:.2f}",
        f"{r['seconds'] * r['workers'] / n * 1000:.0f}",
        f"{storage / n * 1000:.0f}",
        f"{sum(r['peer_seconds'].values()) / n * 1000:.0f}",
        f"{r['cpu_seconds'] / n * 1000:.1f}",
        f"{azurite / n * 1000:.1f}" if azurite is not None else "-",
    )


def report(results: list[tuple[str, dict[str, Any] | None]], n: int, storm: int, faults: bool = True) -> bool:
    """Print the side-by-side tables (Markdown, as in docs/benchmarks.md); True if today's runs are exact."""
    control = f"storm control on (threshold {storm})" if storm else "storm control off"
    fault_text = "30% first-attempt faults" if faults else "no faults"
    print(f"\n{n} alerts ({n // 5} with incidents), {fault_text}, {control}\n")
    header = ("implementation", "workers", "alerts/s", "storage ops/alert", "lost", "duplicated", "failed invocations")
    print(table([_row(name, r) for name, r in results], header))
    print("\nstorage operations per alert, by kind (idle polls of empty queues apart):\n")
    done = [(name, r) for name, r in results if r is not None]
    print(ops_by_kind_table(done, "alerts"))
    print("\nwhere the time goes (per alert; thread time = run seconds x workers):\n")
    print(table([_time_row(name, r) for name, r in done], TIME_HEADER))
    print(f"\nprojection to Azure Storage at {AZURE_LATENCY_MS:g} ms per operation (from the measured ops/alert):\n")
    proj, seen = [], set()
    for name, r in done:
        if name in seen:
            continue
        seen.add(name)
        # the shared partition every alert touches: before, all idempotency records sat in "alerts";
        # today they spread over 16 partitions (storm rows are per squad and window either way)
        idem_ops = sum(v for k, v in r["ops"].items() if k.startswith("table.") and "batch" not in k) / r["alerts"]
        proj.append((name, r["ops_per_alert"], idem_ops if name.startswith("before") else idem_ops / 16))
    print(projection_table(proj, "alert", "alerts", "hottest-partition"))
    for name, r in done:
        if r.get("error_kinds"):
            print(f"{name}, {r['workers']} workers: failed invocations by cause: {r['error_kinds']}")
    ok = all(
        r is not None and not any(r["verdict"].values()) and r["poison"] == 0 and not r["timed_out"]
        for name, r in results
        if name == "today"
    )
    print("\ntoday: zero lost and zero duplicated: " + ("YES" if ok else "NO"))
    return ok


def _measured(run: Any, azurite: Any, root: Path, common: list[str], timeout: float) -> dict[str, Any] | None:
    """One child run, with the CPU Azurite spent meanwhile."""
    pgid = azurite.process.pid if azurite.process is not None else None
    before = group_cpu_seconds(pgid)
    result: dict[str, Any] | None = run(__spec__.name, root, common, timeout)
    after = group_cpu_seconds(pgid)
    if result is not None and before is not None and after is not None:
        result["azurite_cpu_seconds"] = after - before
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    use_implementation(argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="300 alerts")
    add_side_by_side_args(parser, budget=600.0)
    parser.add_argument("--storm", type=int, default=10, help="ALERT_STORM_THRESHOLD (0 = storm control off)")
    parser.add_argument(
        "--teams-rate-scope", default="", help="TEAMS_RATE_SCOPE for today's runs (default: the setting's default)"
    )
    parser.add_argument("--no-faults", action="store_true", help="no first-attempt faults (happy path only)")
    args = parser.parse_args(argv)
    if args.child:
        args.workers = int(args.workers)
        return child(args)
    n = 300 if args.quick else args.alerts

    from devhost.azurite import start_azurite

    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    azurite = start_azurite(tmp / "azurite", free_ports=True, in_memory=True)
    baseline = baseline_tree(args.baseline)
    results: list[tuple[str, dict[str, Any] | None]] = []
    try:
        for workers in [int(w) for w in str(args.workers).split(",")]:
            common = ["--alerts", str(n), "--workers", str(workers), "--conn", azurite.connection_string]
            common += ["--budget", str(args.budget), "--storm", str(args.storm)]
            if args.no_faults:
                common += ["--no-faults"]
            if args.teams_rate_scope:
                common += ["--teams-rate-scope", args.teams_rate_scope]
            if baseline is not None:
                results.append(
                    (f"before ({args.baseline})", _measured(run_child, azurite, baseline, common, args.budget + 60))
                )
            results.append(("today", _measured(run_child, azurite, ROOT, common, args.budget + 60)))
    finally:
        azurite.stop()
    return 0 if report(results, n, args.storm, not args.no_faults) else 1


if __name__ == "__main__":
    sys.exit(main())
