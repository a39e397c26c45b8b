"""Benchmark of alert delivery: today's implementation side by side with the one before issue 17
(commit c9e90f0, taken from git history in the same run), both driven by the same code here.

Run: ``python -m bench.bench_alerts [--alerts N] [--workers 8,32] [--quick]``.

N alerts (default 1,000; 1 in 5 critical, so with a ServiceNow incident) go through the real
`alerts` queue on Azurite (in memory) to local fake Teams and ServiceNow endpoints that fail 30% of
first attempts (none with --no-faults); storm control at its default threshold (10 per squad and window; 200 squads):
- Teams: 503 (nothing posted) for 2 in 10 cards, 429 with Retry-After: 1 for 1 in 10;
- ServiceNow: 503 for 2 in 10 creates; for 1 in 10 the incident IS created but the answer is lost
  (the client times out), the case where a blind re-POST duplicates.
W worker threads (8, then 32) run `AlertDelivery.handle()` per message, then delete it (a failure
leaves it for redelivery), as the Functions host does: one poller keeps up to 2W messages in flight
(batchSize W + newBatchThreshold W) and each message goes to the next free thread. `--dispatch
per-worker` is the driver of the figures measured before: each thread receives its own batches of
16 and runs them in turn (at the end of a pass, threads sit idle while others hold unstarted messages). Every storage
request is counted at the HTTP transport (`bench/_harness.py`); storage ops per alert include the
enqueue, not the empty polls of idle workers. The verdict: every card and incident exactly once,
nothing in the poison queue.

Where the fake peers run (the same for both implementations; `--peers`): by default in a process of
their own, speaking HTTP/1.1 keep-alive as Teams and ServiceNow do (in production their CPU is not
ours, and pooled connections are reused). `--peers in-process` puts them in the measured process
with a connection per request (HTTP/1.0), the setup of the figures measured before this option:
their request handling then competes with the workers for the process's GIL and adds a TCP
connection per call. Compare figures only within one run, and quote which setup they come from.
"""

from __future__ import annotations

import argparse
import json
import os
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
    AzuriteMeter,
    add_side_by_side_args,
    azurite_costs,
    baseline_tree,
    count_round_trips,
    host_dispatch,
    latency_args,
    ops_by_kind_table,
    paired_runs,
    projection_table,
    run_measured,
    run_threads,
    stall_note,
    stalled,
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


class FakePeers:
    """What the fake Teams and ServiceNow answer (the fault plan above), and what they received."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.cards: Counter[int] = Counter()
        self.incidents: dict[str, dict[str, str]] = {}
        self.seen_t: set[int] = set()
        self.seen_s: set[int] = set()

    def teams(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        number = int(body.decode().split("bench-alert ")[1].split('"')[0])
        with self.lock:
            first = number not in self.seen_t
            self.seen_t.add(number)
        plan = _failure_plan(number) if first else "ok"
        if plan == "unavailable":
            return 503, {}, b""
        if plan == "throttle":
            return 429, {"Retry-After": "1"}, b""
        with self.lock:
            self.cards[number] += 1
        return 202, {}, b""

    def find(self, query: str) -> tuple[int, dict[str, str], bytes]:
        cid = query.split("^")[0].partition("=")[2]
        with self.lock:
            rows = [r for r in self.incidents.values() if r["correlation_id"] == cid]
        return 200, JSON, json.dumps({"result": rows[:1]}).encode()

    def create(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        cid = json.loads(body)["correlation_id"]
        number = int(cid.split(":")[1])
        with self.lock:
            first = number not in self.seen_s
            self.seen_s.add(number)
        plan = _sn_plan(number) if first else "ok"
        if plan == "unavailable":
            return 503, JSON, b'{"error":{"message":"unavailable"}}'
        with self.lock:
            sys_id = uuid.uuid4().hex
            row = self.incidents[sys_id] = {"sys_id": sys_id, "number": sys_id[:8], "state": "1", "correlation_id": cid}
        if plan == "lost":
            time.sleep(self.timeout_s + 0.3)  # created, but the client has given up
        return 201, JSON, json.dumps({"result": row}).encode()

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"cards": {str(k): v for k, v in self.cards.items()}, "incidents": list(self.incidents.values())}


JSON = {"Content-Type": "application/json"}


def _serve(peers: FakePeers, keep_alive: bool) -> Any:
    """A threaded HTTP server for `peers` on a free loopback port (HTTP/1.1 keep-alive, or HTTP/1.0
    with a connection per request)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall between

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _answer(self, answer: tuple[int, dict[str, str], bytes]) -> None:
            status, headers, body = answer
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/bench/state":
                self._answer((200, JSON, json.dumps(peers.state()).encode()))
            elif url.path == "/api/now/table/incident":
                self._answer(peers.find(parse_qs(url.query).get("sysparm_query", [""])[0]))
            else:
                self._answer((404, {}, b""))

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlsplit(self.path).path
            if path.startswith("/hook/"):
                self._answer(peers.teams(body))
            elif path == "/api/now/table/incident":
                self._answer(peers.create(body))
            else:
                self._answer((404, {}, b""))

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a lost answer's client has hung up: expected, not worth a traceback

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="fake-peers", daemon=True).start()
    return server


def serve_peers(args: argparse.Namespace) -> int:
    """The fake peers in a process of their own: print the base URL, serve until stdin closes."""
    FAULTS["on"] = not args.no_faults
    server = _serve(FakePeers(args.peer_timeout), keep_alive=True)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()
    return 0


class PeerProcess:
    """The fake peers where the bench puts them: their own process (as in production: Teams's and
    ServiceNow's CPU is not ours; HTTP/1.1 keep-alive, as both speak) or this process (the setup
    of the measurements before, on a connection per request)."""

    def __init__(self, where: str, timeout_s: float) -> None:
        import subprocess

        self.process: Any = None
        self.local: FakePeers | None = None
        if where == "in-process":
            self.local = FakePeers(timeout_s)
            self.server = _serve(self.local, keep_alive=False)
            self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
            return
        cmd = [sys.executable, "-m", __spec__.name, "--serve-peers", "--peer-timeout", str(timeout_s)]
        cmd += [] if FAULTS["on"] else ["--no-faults"]  # the fault plan is the peers' to play
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        self.base = self.process.stdout.readline().strip()
        if not self.base.startswith("http://"):
            raise RuntimeError("the fake peers did not start")

    def state(self) -> dict[str, Any]:
        """What the peers received: cards per alert number, incidents."""
        if self.local is not None:
            raw = self.local.state()
        else:
            import urllib.request

            with urllib.request.urlopen(self.base + "/bench/state", timeout=30) as answer:
                raw = json.loads(answer.read())
        return {"cards": Counter({int(k): v for k, v in raw["cards"].items()}), "incidents": raw["incidents"]}

    def stop(self) -> float:
        """Stop the peers; the CPU seconds their process used (0 in this process: counted in ours)."""
        if self.process is None:
            self.server.shutdown()
            return 0.0
        self.process.stdin.close()
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = status
        return float(usage.ru_utime + usage.ru_stime)


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
    per_key = Counter(r["correlation_id"] for r in state["incidents"])
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
    trips = count_round_trips(args.storage_latency_ms)
    FAULTS["on"] = not args.no_faults

    from shared.adapters.storage import StateStore
    from shared.alerts.delivery import POISON, QUEUE, AlertDelivery, alert_message

    timeout_s = 1.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    store = StateStore.from_connection_string(args.conn)
    peers_at = PeerProcess(args.peers, timeout_s)
    base = peers_at.base
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
    meter = AzuriteMeter()
    meter.start()
    trips.active = True
    started = time.monotonic()
    cpu_started = time.process_time()
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda a: store.send(QUEUE, alert_message(a)), alerts))
    enqueued = time.monotonic()
    enqueue_put_seconds = trips.seconds["queue.put"]
    spent: dict[str, float] = {"handle": 0.0, "ack": 0.0}  # worker seconds in handle() and in the message delete (ack)
    lock = threading.Lock()
    handled: Counter[str] = Counter()
    last = [started]
    first_pass = [enqueued]  # when the last first-attempt message was handled (the rest is the retry tail)
    deadline = started + args.budget

    def run_one(msg: Any) -> None:
        """One invocation as the host runs it: handle, then delete (a failure leaves it for redelivery)."""
        began = time.perf_counter()
        try:
            delivery.handle(msg.body)
            handled_at = time.perf_counter()
            store.ack(QUEUE, msg)
            acked_at = time.perf_counter()
        except Exception as exc:  # host semantics: not acked, redelivered after the visibility timeout
            with lock:
                handled["errors"] += 1
                handled[f"error: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            return
        retry = b'"attempt":1}' not in msg.body and b'"attempt":1,' not in msg.body
        with lock:
            spent["handle"] += handled_at - began
            spent["ack"] += acked_at - handled_at
            handled["messages"] += 1
            last[0] = time.monotonic()
            if not retry:
                first_pass[0] = last[0]

    def receive(max_messages: int) -> list[Any] | None:
        try:
            return store.receive(QUEUE, max_messages=max_messages, visibility_timeout=60)
        except Exception as exc:  # Azurite stalled: poll again, as the host does
            with lock:
                handled["errors"] += 1
                handled["error: receive " + type(exc).__name__] += 1
            time.sleep(1.0)
            return None

    def worker() -> None:  # --dispatch per-worker: each thread receives its own batches and runs them in turn
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = receive(16)
            if batch is None:
                continue
            if not batch:
                if time.monotonic() - idle_since > 3 and store.queue_length(QUEUE) == 0:
                    return
                time.sleep(0.2)
                continue
            idle_since = time.monotonic()
            for msg in batch:
                run_one(msg)

    if args.dispatch == "host":
        host_dispatch(
            workers=args.workers,
            receive=receive,
            run_one=run_one,
            drained=lambda: store.queue_length(QUEUE) == 0,
            deadline=deadline,
        )
    else:
        run_threads([worker] * args.workers)
    trips.active = False
    cpu_seconds = time.process_time() - cpu_started
    azurite_window = meter.stop()
    seconds = last[0] - started
    state = peers_at.state()
    peer_cpu_seconds = peers_at.stop()
    result = {
        "alerts": args.alerts,
        "workers": args.workers,
        "storage_latency_ms": args.storage_latency_ms,
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
        "ops_slowest": dict(trips.slowest),
        "ops_per_alert": trips.total() / args.alerts,
        "peer_calls": dict(peers.counts),
        "peer_seconds": dict(peers.seconds),
        "thread_seconds": seconds * args.workers,
        "handle_seconds": spent["handle"],
        "ack_seconds": spent["ack"],
        "enqueue_put_seconds": enqueue_put_seconds,
        **azurite_window,  # Azurite's CPU over the same window (AzuriteMeter)
        "cpu_seconds": cpu_seconds,  # this process: delivery, storage and HTTP clients, the driver (and in-process peers)
        "peer_cpu_seconds": peer_cpu_seconds,  # the fake peers' own process (0 when they run in this one)
        "peers": args.peers,
        "dispatch": args.dispatch,
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
    "worker ms/alert",
    "in handle()",
    "of which storage",
    "of which Teams/ServiceNow",
    "message delete",
    "receive, idle polls, retry-tail wait",
    "CPU ms/alert (this process)",
    "Azurite CPU ms/alert",
    "fake peers' CPU ms/alert",
)


def _time_row(name: str, r: dict[str, Any]) -> tuple[Any, ...]:
    """Worker thread time per alert once the enqueue is done ((run - enqueue) seconds x workers):
    inside `handle()` (its storage waits: table operations and retry puts; its waits on the fake
    peers, the 1 s lost-answer timeouts included; the rest is CPU and waiting for the GIL and the
    machine's cores), the message delete, and the rest (receives, idle polls while retries are
    invisible, the end of the run)."""
    n = r["alerts"]
    if "handle_seconds" not in r:
        return (name, r["workers"], *["-"] * (len(TIME_HEADER) - 2))
    ops = r["ops_seconds"]
    storage = sum(v for k, v in ops.items() if k.startswith("table.")) + ops.get("queue.put", 0.0)
    storage -= r["enqueue_put_seconds"]
    worker = (r["seconds"] - r["enqueue_seconds"]) * r["workers"]
    azurite = r.get("azurite_cpu_seconds")
    ms = 1000 / n
    return (
        name,
        r["workers"],
        f"{r['enqueue_seconds']:.2f}",
        f"{r['first_pass_seconds']:.2f}",
        f"{r['seconds'] - r['first_pass_seconds']:.2f}",
        f"{worker * ms:.0f}",
        f"{r['handle_seconds'] * ms:.0f}",
        f"{storage * ms:.0f}",
        f"{sum(r['peer_seconds'].values()) * ms:.0f}",
        f"{r['ack_seconds'] * ms:.0f}",
        f"{(worker - r['handle_seconds'] - r['ack_seconds']) * ms:.0f}",
        f"{r['cpu_seconds'] * ms:.1f}",
        f"{azurite * ms:.1f}" if azurite is not None else "-",
        f"{r['peer_cpu_seconds'] * ms:.1f}" if r.get("peers") == "process" else "in this process",
    )


FLOOR_HEADER = (
    "workers",
    "before: worker ms/alert",
    "peers (any design)",
    "claim, completion, delete at the added latency",
    "floor",
    "largest possible ratio",
    "today's ratio",
)


def _floor_rows(done: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """With network latency added to every storage request (`--storage-latency-ms` L), a lower bound
    of the worker time per alert of ANY exactly-once delivery: today's waits on the fake peers (the
    same fault plan answers every design), plus three storage requests one after the other at L
    alone (a claim written before the post, a completion after it, the host's delete of the message;
    an alert's channels in parallel, so one channel counted): no CPU, no queueing, no storm or rate
    writes, no retry costs. Before's worker time over that floor caps the ratio any implementation
    could reach at this worker count from waiting alone; where before's time is mostly waiting for
    CPU (32 workers on 2 cores), the cap is loose and CPU is the bound."""
    rows = []
    for workers, before, today in paired_runs(done):
        if "handle_seconds" not in before or "handle_seconds" not in today:
            continue
        peers_ms = sum(today["peer_seconds"].values()) * 1000 / today["alerts"]
        floor_ms = peers_ms + 3 * today.get("storage_latency_ms", 0.0)

        def worker_ms(r: dict[str, Any]) -> float:
            return float((r["seconds"] - r["enqueue_seconds"]) * r["workers"] * 1000 / r["alerts"])

        rows.append(
            (
                workers,
                f"{worker_ms(before):.0f}",
                f"{peers_ms:.0f}",
                f"3 x {today.get('storage_latency_ms', 0.0):g}",
                f"{floor_ms:.0f}",
                f"{worker_ms(before) / floor_ms:.1f}x" if floor_ms else "-",
                f"{worker_ms(before) / worker_ms(today):.1f}x",
            )
        )
    return rows


CEILING_HEADER = (
    "workers",
    "before: alerts/s",
    "5x that",
    "today: CPU ms/alert (this process + Azurite + peers)",
    "today's ceiling on this machine's cores",
    "Azurite: CPU ms per operation (all threads / main thread)",
    "exactly-once minimum: operations/alert",
    "ceiling of ANY design from Azurite's main thread",
    "at 5x: CPU ms/alert left for this process",
    "today: this process's CPU ms/alert",
)


def _ceiling_rows(done: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """Where the bench is bound by CPU (no added latency), what this machine allows:
    - today's code: the machine's cores over the CPU one alert costs in this process, Azurite and
      the fake peers together (perfect overlap, no waiting);
    - any design, from Azurite: Node.js runs every request's JavaScript on Azurite's main thread,
      so that thread's CPU per operation times the fewest operations an exactly-once delivery makes
      in this run bounds every implementation, however little its client costs. The fewest: the
      enqueue and the host's delete, a claim and a completion per channel, and per failed first
      attempt its re-enqueue, that message's delete and one write re-taking the claim (receives
      left out: a lower bound);
    - at 5x before's rate, the CPU per alert left for this process on the machine's cores once
      Azurite (all its threads, at the fewest operations) and the peers have theirs.
    Azurite's CPU per operation is today's run's: its CPU over the measured window (`AzuriteMeter`)
    over the operations counted there, so the window's idle polls make it a little high."""
    rows = []
    cores = os.cpu_count() or 1
    for workers, before, today, per_op in azurite_costs(done, "alerts", "ops_per_alert"):
        if per_op is None:
            rows.append((workers, f"{before['alerts_per_s']:.1f}", *["(a run stalled)"] * (len(CEILING_HEADER) - 2)))
            continue
        azurite_op_ms, main_op_ms = per_op
        n = today["alerts"]
        ms = 1000 / n
        process_ms, peers_ms = today["cpu_seconds"] * ms, today["peer_cpu_seconds"] * ms
        cpu_ms = process_ms + today["azurite_cpu_seconds"] * ms + peers_ms
        channels = 1 + (n // 5) / n  # every alert posts to Teams; 1 in 5 also opens an incident
        retries = max(today["ops"].get("queue.put", n) / n - 1, 0.0)
        least_ops = 2 + 2 * channels + 3 * retries
        target = 5 * before["alerts_per_s"]
        left_ms = cores * 1000 / target - least_ops * azurite_op_ms - peers_ms
        rows.append(
            (
                workers,
                f"{before['alerts_per_s']:.1f}",
                f"{target:.0f}",
                f"{cpu_ms:.1f}",
                f"{cores * 1000 / cpu_ms:.0f}",
                f"{azurite_op_ms:.2f} / {main_op_ms:.2f}",
                f"{least_ops:.2f}",
                f"{1000 / (main_op_ms * least_ops):.0f}",
                f"{left_ms:.1f}",
                f"{process_ms:.1f}",
            )
        )
    return rows


def report(results: list[tuple[str, dict[str, Any] | None]], n: int, storm: int, faults: bool = True) -> bool:
    """Print the side-by-side tables (Markdown, as in docs/benchmarks.md); True if today's runs are exact."""
    control = f"storm control on (threshold {storm})" if storm else "storm control off"
    fault_text = "30% first-attempt faults" if faults else "no faults"
    latency = next((r.get("storage_latency_ms", 0.0) for _, r in results if r is not None), 0.0)
    wait = f", {latency:g} ms of network latency added to every storage request" if latency else ""
    print(f"\n{n} alerts ({n // 5} with incidents), {fault_text}, {control}{wait}\n")
    header = ("implementation", "workers", "alerts/s", "storage ops/alert", "lost", "duplicated", "failed invocations")
    print(table([_row(name, r) for name, r in results], header))
    print("\nstorage operations per alert, by kind (idle polls of empty queues apart):\n")
    done = [(name, r) for name, r in results if r is not None]
    print(ops_by_kind_table(done, "alerts"))
    print("\nwhere the time goes (ms per alert; worker time = (run - enqueue) seconds x workers):\n")
    print(table([_time_row(name, r) for name, r in done], TIME_HEADER))
    if latency:
        print(
            "\nthe most any exactly-once delivery could gain over before in this run (ms of worker time per alert: "
            "the waits on the peers, and a claim, a completion and the delete one after the other at the added "
            "latency alone; no CPU):\n"
        )
        print(table(_floor_rows(done), FLOOR_HEADER))
    else:
        print(
            "\nwhat this machine allows (CPU-bound without added latency; see _ceiling_rows): today's code at its "
            "CPU per alert, any exactly-once design from Azurite's main thread, and the CPU left for this process "
            "at 5x:\n"
        )
        print(table(_ceiling_rows(done), CEILING_HEADER))
    print(f"\nprojection to Azure Storage at {AZURE_LATENCY_MS:g} ms per operation (from the measured ops/alert):\n")
    proj, seen = [], set()
    for name, r in done:
        if name in seen:
            continue
        seen.add(name)
        # the shared partition every alert touches: before, all idempotency records sat in "alerts";
        # today they spread over 16 partitions (storm rows are per squad and window either way)
        idem_ops = sum(v for k, v in r["ops"].items() if k.startswith("table.") and "batch" not in k) / r["alerts"]
        hot = idem_ops if name.startswith("before") else idem_ops / 16
        proj.append((name, r["ops_per_alert"], hot, None if stalled(r) else r["cpu_seconds"] * 1000 / r["alerts"]))
    print(projection_table(proj, "alert", "alerts", "hottest-partition"))
    for name, r in done:
        if note := stall_note(name, r, "alerts"):
            print(note)
        if r.get("error_kinds"):
            print(f"{name}, {r['workers']} workers: failed invocations by cause: {r['error_kinds']}")
    ok = all(
        r is not None and not any(r["verdict"].values()) and r["poison"] == 0 and not r["timed_out"]
        for name, r in results
        if name == "today"
    )
    print("\ntoday: zero lost and zero duplicated: " + ("YES" if ok else "NO"))
    return ok


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
    parser.add_argument(
        "--peers",
        choices=("process", "in-process"),
        default="process",
        help="where the fake Teams/ServiceNow run: their own process with HTTP/1.1 keep-alive (default), or the "
        "measured process with a connection per request (the setup of the figures measured before)",
    )
    parser.add_argument(
        "--dispatch",
        choices=("host", "per-worker"),
        default="host",
        help="how messages reach the W threads: as the Functions host does, each message to the next free thread "
        "(default), or each thread receiving its own batches of 16 and running them in turn (the figures before)",
    )
    parser.add_argument("--serve-peers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peer-timeout", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_peers:
        return serve_peers(args)
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
            common += ["--peers", args.peers, "--dispatch", args.dispatch, *latency_args(args)]
            if args.no_faults:
                common += ["--no-faults"]
            if args.teams_rate_scope:
                common += ["--teams-rate-scope", args.teams_rate_scope]
            if baseline is not None:
                results.append(
                    (
                        f"before ({args.baseline})",
                        run_measured(__spec__.name, azurite, baseline, common, args.budget + 60),
                    )
                )
            results.append(("today", run_measured(__spec__.name, azurite, ROOT, common, args.budget + 60)))
    finally:
        azurite.stop()
    return 0 if report(results, n, args.storm, not args.no_faults) else 1


if __name__ == "__main__":
    sys.exit(main())
