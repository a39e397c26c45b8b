"""DORA in the embedded warehouse: the views compute the hand-computed week, whatever the arrival order,
and agree with the plain-Python reference."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from shared.dora import service, store
from shared.dora.metrics import merge_problem, parse_window, reference_failed_deploys, reference_metrics
from shared.dora.model import Deployment, Problem, iso, parse_deployments, parse_problems
from shared.runtime import Runtime
from shared.settings import load_settings
from tests.conftest import load_fixture

PROD = ("production", "prod")
DOC = load_fixture("dora/handcomputed.json")


@pytest.fixture
def wh_runtime(base_env, tmp_path: Path) -> Runtime:
    """A runtime with the embedded warehouse only (no storage needed) and the fixture's service map."""
    env = {**base_env, "DORA_SERVICE_MAP": json.dumps(DOC["serviceMap"])}
    return Runtime(load_settings(env, local_settings=tmp_path / "absent.json"))


def _deliver(runtime: Runtime, order: list[int] | None = None) -> None:
    """GIVEN the fixture's messages: one message at a time in `order`, or as two batches (in-batch duplicates)."""
    if order is None:
        service.write(runtime, deploys=parse_deployments(DOC["deployments"]))
        service.write(runtime, problems=parse_problems(DOC["problems"]))
        return
    messages = [("d", d) for d in DOC["deployments"]] + [("p", p) for p in DOC["problems"]]
    for i in order:
        kind, item = messages[i]
        if kind == "d":
            service.write(runtime, deploys=parse_deployments(item))
        else:
            service.write(runtime, problems=parse_problems(item))


def test_views_compute_the_handcomputed_week(wh_runtime):
    _deliver(wh_runtime)
    got = service.metrics(wh_runtime, from_=DOC["window"]["from"], to=DOC["window"]["to"])
    assert got == DOC["expected"]
    failed = service.failed(wh_runtime, from_=DOC["window"]["from"], to=DOC["window"]["to"])
    assert sorted((f["deployId"], f["problem"]["id"]) for f in failed) == [tuple(p) for p in DOC["expectedFailed"]]
    c2 = next(f for f in failed if f["deployId"] == "c2")
    assert c2["problem"]["minutesAfterDeploy"] == 60.0 and c2["squad"] == "payments"


def test_out_of_order_and_duplicate_delivery_changes_nothing(wh_runtime, base_env, tmp_path):
    _deliver(wh_runtime)
    expected = service.metrics(wh_runtime, from_="2026-03-01", to="2026-03-10")
    count = len(DOC["deployments"]) + len(DOC["problems"])
    for seed in (1,):
        order = list(range(count)) + list(range(0, count, 3))  # one message at a time, a third of them twice
        random.Random(seed).shuffle(order)
        env = {
            **base_env,
            "WAREHOUSE_PATH": str(tmp_path / f"wh{seed}"),
            "DORA_SERVICE_MAP": json.dumps(DOC["serviceMap"]),
        }
        other = Runtime(load_settings(env, local_settings=tmp_path / "absent.json"))
        _deliver(other, order)
        assert service.metrics(other, from_="2026-03-01", to="2026-03-10") == expected
    with wh_runtime.warehouse.session() as wh:
        states = {r["PROBLEM_ID"]: r["STATE"] for r in wh.query("SELECT PROBLEM_ID, STATE FROM PROBLEMS")}
        assert wh.query("SELECT COUNT(*) AS N FROM DEPLOYS")[0]["N"] == 9  # c1 sent twice, stored once
    assert states["pA"] == "resolved"  # resolved first, a later `open` did not reopen it


def test_from_to_take_timestamps_and_filter_by_service_and_squad(wh_runtime):
    _deliver(wh_runtime)
    w = DOC["timestampWindow"]
    got = service.metrics(wh_runtime, service="checkout-ci", from_=w["from"], to=w["to"])  # an alias works too
    [entry] = got["services"]
    for key, value in DOC["expectedTimestampWindow"].items():
        assert entry[key] == value, key
    assert got["from"] == "2026-03-02T22:00:00Z" and got["to"] == "2026-03-04T09:00:00Z"
    squad = service.metrics(wh_runtime, squad="discovery", from_="2026-03-02", to="2026-03-08")
    assert [s["service"] for s in squad["services"]] == ["search"]
    nothing = service.metrics(wh_runtime, service="unknown-service", from_="2026-03-02", to="2026-03-08")
    assert nothing["services"] == [
        {"service": "unknown-service", "deployments": 0, "failedDeployments": 0, "changeFailureRate": None,
         "deploymentsPerDay": 0.0, "leadTimeHours": {"median": None, "p90": None},
         "timeToRestoreHours": {"median": None}, "level": None}
    ]  # fmt: skip


def test_weekly_views_for_qlik(wh_runtime):
    _deliver(wh_runtime)
    with wh_runtime.warehouse.session() as wh:
        rows = wh.query("SELECT * FROM DORA_SERVICE_WEEK WHERE WEEK = '2026-03-02' ORDER BY SERVICE")
        squads = wh.query("SELECT * FROM DORA_SQUAD_WEEK WHERE WEEK = '2026-03-02' ORDER BY SQUAD")
    by_service = {r["SERVICE"]: r for r in rows}
    assert by_service["checkout"]["DEPLOYMENTS"] == 4 and by_service["checkout"]["FAILED_DEPLOYMENTS"] == 2
    assert float(by_service["checkout"]["CHANGE_FAILURE_RATE"]) == 0.5
    assert float(by_service["checkout"]["LEAD_TIME_MEDIAN_HOURS"]) == 9.0
    assert float(by_service["checkout"]["TIME_TO_RESTORE_MEDIAN_HOURS"]) == 1.25
    assert by_service["search"]["SQUAD"] == "discovery"
    assert [s["SQUAD"] for s in squads] == ["discovery", "payments"]


def test_changing_production_environments_reclassifies(base_env, tmp_path):
    env = {**base_env, "DORA_PRODUCTION_ENVIRONMENTS": "live"}
    runtime = Runtime(load_settings(env, local_settings=tmp_path / "absent.json"))
    service.write(runtime, deploys=parse_deployments([
        {"id": "a", "service": "s", "environment": "LIVE", "result": "succeeded", "finishedAt": "2026-03-02T10:00:00Z"},
        {"id": "b", "service": "s", "environment": "production", "result": "succeeded", "finishedAt": "2026-03-02T11:00:00Z"},
    ]))  # fmt: skip
    [entry] = service.metrics(runtime, from_="2026-03-02", to="2026-03-02")["services"]
    assert entry["deployments"] == 1


def _random_world(seed: int, n_deploys: int = 400, n_problems: int = 120) -> tuple[list[Deployment], list[Problem]]:
    rng = random.Random(seed)
    start = datetime(2026, 3, 2)
    services = [f"svc-{i}" for i in range(6)]
    deploys = []
    for i in range(n_deploys):
        finished = start + timedelta(minutes=rng.randrange(0, 14 * 24 * 60), milliseconds=rng.choice([0, 1, 500]))
        deploys.append(Deployment(
            id=f"d{i}", service=rng.choice(services), environment=rng.choice(["production", "prod", "staging"]),
            result=rng.choice(["succeeded"] * 8 + ["failed", "canceled"]), finished_at=finished,
            commit_time=finished - timedelta(minutes=rng.randrange(1, 5000)) if rng.random() < 0.8 else None,
        ))  # fmt: skip
    problems = []
    for i in range(n_problems):
        anchor = rng.choice(deploys).finished_at
        started = anchor + timedelta(minutes=rng.choice([-1, 0, 30, 60, 61, 200]))
        resolved = rng.random() < 0.7
        problems.append(Problem(
            id=f"p{i}", services=tuple(rng.sample(services, rng.choice([1, 1, 2]))),
            priority=rng.choice(["P1", "P1", "P2", "P3"]), state="resolved" if resolved else "open",
            started_at=started, resolved_at=started + timedelta(minutes=rng.randrange(5, 600)) if resolved else None,
        ))  # fmt: skip
    return deploys, problems


def test_warehouse_and_reference_agree_on_random_data(base_env, tmp_path):
    runtime = Runtime(load_settings(base_env, local_settings=tmp_path / "absent.json"))
    deploys, problems = _random_world(7)
    service.write(runtime, deploys=deploys, problems=problems)
    window = parse_window("2026-03-03", "2026-03-12")
    with runtime.warehouse.session() as wh:
        got = store.metrics(wh, window, today=date(2026, 3, 20))
        pairs = sorted(
            (r["DEPLOY_ID"], r["PROBLEM_ID"]) for r in wh.query("SELECT DEPLOY_ID, PROBLEM_ID FROM DORA_FAILED_DEPLOYS")
        )
    want = reference_metrics(deploys, problems, PROD, window, today=date(2026, 3, 20))
    assert got["services"] and _rounded(got) == _rounded(want)
    assert pairs == reference_failed_deploys(deploys, problems, PROD)


def _rounded(doc):
    return json.loads(json.dumps(doc), parse_float=lambda s: round(float(s), 6))


def test_problem_fold_is_resolve_once_in_the_warehouse(base_env, tmp_path):
    runtime = Runtime(load_settings(base_env, local_settings=tmp_path / "absent.json"))
    base = {"id": "p", "services": ["a"], "priority": "P2", "startedAt": "2026-03-02T10:00:00Z"}
    messages = [
        {**base, "state": "resolved", "resolvedAt": "2026-03-02T12:00:00Z"},
        {**base, "state": "open", "priority": "P1", "services": ["b"]},
        {**base, "state": "open", "startedAt": "2026-03-02T09:00:00Z"},
    ]
    folded = None
    for m in messages:
        [p] = parse_problems(m)
        service.write(runtime, problems=[p])
        folded = merge_problem(folded, p)
    with runtime.warehouse.session() as wh:
        [row] = wh.query("SELECT * FROM PROBLEMS")
        services = sorted(r["SERVICE"] for r in wh.query("SELECT SERVICE FROM PROBLEM_SERVICES"))
    assert (row["STATE"], row["PRIORITY"], iso(row["STARTED_AT"]), iso(row["RESOLVED_AT"])) == (
        "resolved",
        "P1",
        "2026-03-02T09:00:00Z",
        "2026-03-02T12:00:00Z",
    )
    assert folded is not None and (folded.state, folded.priority, folded.services) == ("resolved", "P1", ("a", "b"))
    assert services == ["a", "b"]
