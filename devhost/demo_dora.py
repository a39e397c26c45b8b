"""`make demo` step: a generated week of deployments and problems through the local host, then the DORA
metrics per service and one deployment that failed by the platform's rule (and the problem that failed it).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

SERVICES = {"checkout": "payments", "payments-api": "payments", "search": "discovery", "catalog": "discovery"}
# how often each service deploys per working day, and how likely a deploy is followed by a P1
PROFILE = {"checkout": (6, 0.08), "payments-api": (2, 0.0), "search": (3, 0.15), "catalog": (1, 0.3)}


def generate_week(monday: datetime, seed: int = 14) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deployments (generic contract) and problems (Dynatrace-shaped and generic) for one week."""
    rng = random.Random(seed)
    deploys: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for service, (per_day, failure) in PROFILE.items():
        for day in range(5):
            for n in range(per_day):
                finished = monday + timedelta(days=day, hours=8 + rng.random() * 9)
                commit = finished - timedelta(hours=rng.uniform(0.5, 40))
                deploy_id = f"demo-{service}-{day}-{n}"
                deploys.append({
                    "id": deploy_id, "service": f"{service}-ci", "environment": "production", "result": "succeeded",
                    "finishedAt": finished.isoformat(), "commitTime": commit.isoformat(),
                    "commitId": f"{rng.getrandbits(160):040x}", "pipeline": f"{service}-ci",
                    "url": f"https://dev.azure.example.test/shop/_build/results?buildId={rng.randrange(10_000, 99_999)}",
                })  # fmt: skip
                if rng.random() < failure:
                    start = finished + timedelta(minutes=rng.uniform(2, 55))
                    problems.append(
                        _dynatrace(f"P-{deploy_id[5:]}", service, start, start + timedelta(minutes=rng.uniform(10, 90)))
                    )
        # a staging deploy and a slow-burning problem well after a deploy: neither counts against CFR
        deploys.append({"id": f"demo-{service}-staging", "service": service, "environment": "staging",
                        "result": "succeeded", "finishedAt": (monday + timedelta(days=2, hours=9)).isoformat()})  # fmt: skip
    problems.append({"id": "demo-noise", "services": ["search"], "priority": "P3", "state": "open",
                     "startedAt": (monday + timedelta(days=3, hours=3)).isoformat(), "title": "Disk 80% on a build agent"})  # fmt: skip
    return deploys, problems


def _dynatrace(pid: str, service: str, start: datetime, end: datetime) -> dict[str, Any]:
    """A problem as Dynatrace's custom webhook sends it with {ProblemDetailsJSONv2} (opened, then resolved)."""
    return {
        "ProblemID": pid,
        "State": "RESOLVED",
        "ProblemURL": f"https://dynatrace.example.test/#problems/problemdetails;pid={pid}",
        "Details": {
            "problemId": pid, "title": f"Failure rate increase on {service}", "status": "CLOSED",
            "severityLevel": "ERROR", "impactLevel": "SERVICES",
            "impactedEntities": [{"entityId": {"id": f"SERVICE-{abs(hash(service)) % 10**12:012d}", "type": "SERVICE"},
                                  "name": f"{service}-api" if service != "payments-api" else service}],
            "entityTags": [{"key": "environment", "value": "production"}],
            "startTime": int(start.timestamp() * 1000), "endTime": int(end.timestamp() * 1000),
        },
    }  # fmt: skip


def step_dora(ctx: Any) -> None:
    from shared.dora import store
    from shared.dora.digest import send_digests
    from shared.dora.services import ServiceEntry, ServiceMap

    today = datetime.now(UTC).date()
    monday = datetime.combine(today - timedelta(days=today.weekday() + 7), datetime.min.time(), UTC)
    mapping = ServiceMap.of(ServiceEntry(s, squad, s, (f"{s}-ci", f"{s}-api")) for s, squad in SERVICES.items())
    with ctx.runtime.warehouse.session() as wh:
        store.replace_service_map(wh, mapping, "csv")
    deploys, problems = generate_week(monday)
    status, body = ctx.call("POST", "/api/dora/deployments", deploys)
    ctx.summary.append(f"POST /api/dora/deployments: HTTP {status}, {body.get('accepted')} deployments queued")
    status, body = ctx.call("POST", "/api/dora/problems", problems)
    ctx.summary.append(
        f"POST /api/dora/problems: HTTP {status}, {body.get('accepted')} problems queued (Dynatrace-shaped)"
    )
    week = f"from={monday.date().isoformat()}&to={(monday + timedelta(days=6)).date().isoformat()}"
    expected = sum(1 for d in deploys if d["environment"] == "production")
    deadline = time.monotonic() + 120
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, doc = ctx.call("GET", f"/api/dora/metrics?{week}")
        if status == 200 and sum(s["deployments"] for s in doc["services"]) == expected:
            _, failed = ctx.call("GET", f"/api/dora/failed-deploys?{week}")
            if len(failed["items"]) >= 1:
                status, doc = ctx.call("GET", f"/api/dora/metrics?{week}")  # both queues written
                break
        time.sleep(0.5)
    ctx.summary.append(f"GET /api/dora/metrics?{week}")
    ctx.summary.append(f"  {'service':<14} {'deploys':>7} {'failed':>6} {'CFR':>6} {'/day':>5} {'lead med':>8} "
                       f"{'restore':>8}  level")  # fmt: skip
    for s in doc.get("services", []):
        cfr = "-" if s["changeFailureRate"] is None else f"{s['changeFailureRate']:.0%}"
        lead = s["leadTimeHours"]["median"]
        restore = s["timeToRestoreHours"]["median"]
        ctx.summary.append(
            f"  {s['service']:<14} {s['deployments']:>7} {s['failedDeployments']:>6} {cfr:>6} {s['deploymentsPerDay']:>5.1f} "
            f"{'-' if lead is None else f'{lead:.1f}h':>8} {'-' if restore is None else f'{restore:.2f}h':>8}  {s['level']}"
        )
    _, failed = ctx.call("GET", f"/api/dora/failed-deploys?{week}")
    if failed["items"]:
        f = failed["items"][0]
        p = f["problem"]
        ctx.summary.append(
            f"one failed deploy: {f['deployId']} ({f['service']}, finished {f['finishedAt']}) -> P1 {p['id']} "
            f"'{p['title']}' started {p['minutesAfterDeploy']:.0f} min later"
        )
    report = send_digests(ctx.runtime, today=today)
    ctx.summary.append(
        f"weekly digest: {report['sent']} squad digest(s) queued on `alerts` for the week of {report['week']}"
    )
    _, board = ctx.call("GET", f"/api/dora/leaderboard?{week}")
    for squad in board.get("squads", [])[:3]:
        badges = ", ".join(b["name"] for b in squad["badges"]) or "-"
        ctx.summary.append(f"leaderboard #{squad['rank']}: {squad['squad']} ({squad['level']}) badges: {badges}")
