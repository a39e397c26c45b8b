"""DORA through the local host: POST deployments/problems (202), the dora-events worker, GET metrics,
failed deploys, scorecard, and the routes in /api/openapi.json."""

from __future__ import annotations

import time

import pytest

from tests.conftest import load_fixture, start_host, stop_host

pytestmark = pytest.mark.e2e

DATA = load_fixture("dora/handcomputed.json")
SECRET = {"X-Webhook-Secret": "dt-secret-for-tests"}


@pytest.fixture
def dora_host(env, tmp_path):
    import json

    host = start_host(
        {**env, "DYNATRACE_WEBHOOK_SECRET": "dt-secret-for-tests", "DORA_SERVICE_MAP": json.dumps(DATA["serviceMap"])},
        tmp_path / "host.log",
    )
    yield host
    stop_host(host)


def test_metrics_api_over_the_local_host(dora_host):
    status, _, body = dora_host.request("POST", "/api/dora/deployments", DATA["deployments"])
    assert status == 202 and body["accepted"] == len(DATA["deployments"])
    status, _, body = dora_host.request("POST", "/api/dora/problems", DATA["problems"])
    assert status == 401 and "X-Webhook-Secret" in body["detail"]
    status, _, _ = dora_host.request("POST", "/api/dora/problems", DATA["problems"], headers=SECRET)
    assert status == 202
    status, _, body = dora_host.request("POST", "/api/dora/deployments", [{"id": "x"}])
    assert status == 400 and {e["field"] for e in body["errors"]} >= {"items[0].service", "items[0].finishedAt"}

    query = f"/api/dora/metrics?from={DATA['window']['from']}&to={DATA['window']['to']}"
    deadline = time.monotonic() + 60
    body = None
    while time.monotonic() < deadline:
        status, _, body = dora_host.request("GET", query)
        if status == 200 and body == DATA["expected"]:
            break
        time.sleep(0.5)
    assert body == DATA["expected"]

    status, _, body = dora_host.request("GET", "/api/dora/failed-deploys?squad=payments&from=2026-03-02&to=2026-03-08")
    assert status == 200 and sorted(f["deployId"] for f in body["items"]) == ["c1", "c2"]
    status, _, body = dora_host.request("GET", "/api/dora/metrics?from=2026-13-01")
    assert status == 400 and "from" in body["detail"]
    status, _, body = dora_host.request(
        "GET", "/api/catalog/scorecard?entityRef=component:default/checkout&from=2026-03-02&to=2026-03-08"
    )
    assert status == 200 and body["dora"][0]["failedDeployments"] == 2
    status, _, body = dora_host.request("GET", "/api/catalog/scorecard")
    assert status == 400
    status, _, body = dora_host.request("GET", "/api/openapi.json")
    assert {"/dora/deployments", "/dora/problems", "/dora/metrics", "/catalog/scorecard"} <= set(body["paths"])
