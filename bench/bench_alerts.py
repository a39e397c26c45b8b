"""Benchmark of alert delivery: N alerts through the real `alerts` queue on Azurite, against local fake
Teams and ServiceNow endpoints that fail 30% of first attempts; side by side with a naive baseline.

Run: ``python -m bench.bench_alerts [--alerts N] [--workers 8] [--quick]``. The default (2,000 alerts) keeps
the run under 3 minutes: Azurite's table and queue calls cost ~5-9 ms each on a 2-CPU machine and a
delivery takes 5-8 of them. ``--alerts 10000`` is the issue's full run (about 10+ minutes there);
``--quick`` = 500 alerts.

Failures injected on the first attempt of 30% of deliveries, the same for both methods:
- Teams: 503 (nothing posted) for 1 in 5 cards; 429 with Retry-After: 1 for 1 in 10;
- ServiceNow: 503 for 1 in 5 creates; for 1 in 10 the incident IS created but the answer is lost (the
  client times out), the case where a blind re-POST duplicates.
Our delivery: `AlertDelivery.handle()` per queue message, as the queue function does (idempotency
records in Azurite tables, re-enqueue with backoff). Baseline: post every channel, no idempotency,
no look-up before create; a failure fails the whole message, which the queue redelivers (host
semantics: up to maxDequeueCount=5, then poison = lost), re-posting channels that had succeeded.
Storm control is off (200 squads x 50 alerts would all be digests otherwise).
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SQUADS = 200


def _failure_plan(number: int) -> str:
    """Deterministic first-attempt failure for alert `number` (30% in all)."""
    bucket = number % 10
    return {0: "unavailable", 1: "unavailable", 2: "throttle"}.get(bucket, "ok")


def _sn_plan(number: int) -> str:
    bucket = (number // 10) % 10
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


def _alerts(n: int, run: str) -> list[Any]:
    from shared.alerts.model import Alert

    return [
        Alert(
            kind="policy_violation",
            severity="critical" if i % 10 == 0 else "warning",
            title=f"bench-alert {i}",
            resource_id=f"/subscriptions/bench/resourceGroups/rg/providers/x/{i}",
            owner=f"squad-{i % SQUADS}",
            facts=(("n", str(i)),),
            links=(),
            dedupe_key=f"bench-{run}:{i}",
        )
        for i in range(n)
    ]


def _settings(conn: str, tmp: Path, sn_url: str, timeout_s: float) -> Any:
    from shared.settings import load_settings

    return load_settings(
        {
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


def _routes(base: str) -> Any:
    from shared.alerts.routing import parse_routes

    return parse_routes(
        {"routes": {f"squad-{i}": {"teams_webhook_url": f"{base}/hook/{i}"} for i in range(SQUADS)}},
        default_webhook_url=f"{base}/hook/default",
        allowed_hosts=(),
    )


def run_ours(store: Any, alerts: list[Any], settings: Any, base: str, workers: int, deadline: float) -> dict[str, Any]:
    from shared.adapters.servicenow import ServiceNowClient
    from shared.adapters.teams import TeamsWebhook
    from shared.alerts.delivery import POISON, QUEUE, AlertDelivery, alert_message

    delivery = AlertDelivery(
        settings,
        store,
        _routes(base),
        teams=TeamsWebhook((), timeout=settings.alert_http_timeout_seconds),
        servicenow=ServiceNowClient.from_settings(settings),
    )
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda a: store.send(QUEUE, alert_message(a)), alerts))
    enqueued = time.monotonic()
    stop = threading.Event()
    handled = Counter()

    def worker() -> None:
        idle_since = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                batch = store.receive(QUEUE, max_messages=16, visibility_timeout=60)
            except Exception:  # Azurite stalled: poll again, as the host does
                handled["errors"] += 1
                time.sleep(1.0)
                continue
            if not batch:
                if time.monotonic() - idle_since > 6 and store.queue_length(QUEUE) == 0:
                    return
                time.sleep(0.2)
                continue
            idle_since = time.monotonic()
            for msg in batch:
                try:
                    delivery.handle(msg.body)
                    store.ack(QUEUE, msg)
                except Exception:  # host semantics: not acked, redelivered after the visibility timeout
                    handled["errors"] += 1
                    continue
                handled["messages"] += 1

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "seconds": time.monotonic() - started,
        "enqueue_seconds": enqueued - started,
        "messages": handled["messages"],
        "errors": handled["errors"],
        "poison": store.queue_length(POISON),
        "timed_out": time.monotonic() >= deadline,
    }


def run_baseline(alerts: list[Any], settings: Any, base: str, workers: int) -> dict[str, Any]:
    """Naive delivery: post every channel, create incidents blindly; any failure redelivers the whole message."""
    import requests

    from shared.alerts import cards, incidents
    from shared.alerts.routing import route_for

    routes = _routes(base)
    session = requests.Session()
    lost = Counter()
    started = time.monotonic()

    def deliver(alert: Any) -> None:
        route = route_for(alert, routes)
        for _dequeue in range(5):  # the queue's redeliveries
            try:
                payload = cards.teams_payload(cards.alert_content(alert, route.squad), route.teams_webhook_url)
                r = session.post(route.teams_webhook_url, json=payload, timeout=settings.alert_http_timeout_seconds)
                r.raise_for_status()
                if alert.wants_incident():
                    r = session.post(
                        settings.servicenow_instance_url + "/api/now/table/incident",
                        json=incidents.incident_fields(alert, route),
                        auth=("bench-user", "bench-password"),
                        timeout=settings.alert_http_timeout_seconds,
                    )
                    r.raise_for_status()
                return
            except requests.RequestException:
                continue
        lost["alerts"] += 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(deliver, alerts))
    return {"seconds": time.monotonic() - started, "lost_messages": lost["alerts"]}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=2_000, help="alerts to deliver (the issue's full run: 10000)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="500 alerts")
    parser.add_argument("--budget", type=float, default=900.0, help="give up our run after this many seconds")
    args = parser.parse_args(argv)
    n = 500 if args.quick else args.alerts
    import logging

    logging.basicConfig(level=logging.ERROR)
    for noisy in ("werkzeug", "shared", "azure"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)

    from devhost.azurite import start_azurite
    from shared.adapters.storage import StateStore

    timeout_s = 1.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    azurite = start_azurite(tmp / "azurite", free_ports=True, in_memory=True)
    try:
        store = StateStore.from_connection_string(azurite.connection_string)
        server, state, _ = _fakes(timeout_s)
        base = server.url_for("/").rstrip("/")
        settings = _settings(azurite.connection_string, tmp, base, timeout_s)
        alerts = _alerts(n, uuid.uuid4().hex[:8])
        print(f"delivering {n} alerts ({sum(a.wants_incident() for a in alerts)} with incidents) to {SQUADS} squads")
        ours = run_ours(store, alerts, settings, base, args.workers, time.monotonic() + args.budget)
        ours_verdict = _verdict(state, alerts)
        server.stop()

        server2, state2, _ = _fakes(timeout_s)
        base2 = server2.url_for("/").rstrip("/")
        baseline = run_baseline(
            alerts, _settings(azurite.connection_string, tmp, base2, timeout_s), base2, args.workers
        )
        base_verdict = _verdict(state2, alerts)
        server2.stop()
    finally:
        azurite.stop()

    rows = [
        ("alerts", n, n),
        ("seconds", f"{ours['seconds']:.1f}", f"{baseline['seconds']:.1f}"),
        ("alerts/s", f"{n / ours['seconds']:.1f}", f"{n / baseline['seconds']:.1f}"),
        ("queue messages handled", ours["messages"], "-"),
        ("invocations failed, retried", ours["errors"], "-"),
        ("cards missing (loss)", ours_verdict["cards_missing"], base_verdict["cards_missing"]),
        ("cards duplicated", ours_verdict["cards_duplicated"], base_verdict["cards_duplicated"]),
        ("incidents missing (loss)", ours_verdict["incidents_missing"], base_verdict["incidents_missing"]),
        ("incidents duplicated", ours_verdict["incidents_duplicated"], base_verdict["incidents_duplicated"]),
        ("messages in poison / lost", ours["poison"], baseline["lost_messages"]),
    ]
    print(f"\n{'':<28}{'ours (queue on Azurite)':>26}{'naive baseline':>18}")
    for name, a, b in rows:
        print(f"{name:<28}{a!s:>26}{b!s:>18}")
    print(f"(ours includes enqueueing: {ours['enqueue_seconds']:.1f}s; baseline posts directly, no queue, no state)")
    ok = not any(ours_verdict.values()) and ours["poison"] == 0 and not ours["timed_out"]
    print("zero loss and zero duplicates: " + ("YES" if ok else "NO"))
    if ours["timed_out"]:
        print(f"our run hit the --budget of {args.budget:.0f}s before the queue drained")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
