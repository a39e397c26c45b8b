"""Demand sync and catalog refresh through the local host, with fake Azure DevOps, ServiceNow and Backstage."""

from __future__ import annotations

import base64
import time

import pytest

from tests.conftest import FIXTURES, load_fixture, start_host, stop_host
from tests.fixtures.demands.peers import reset_demand_state, start_peers

pytestmark = pytest.mark.e2e

SYS_ID = "5f3c0a7e1b2d4c6e8f9a0b1c2d3e4f50"
HOOK_AUTH = {"Authorization": "Basic " + base64.b64encode(b"svc-hooks:pw-for-tests").decode()}


def _wait(condition, seconds: float = 45.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def peers(httpserver):
    return start_peers(httpserver)


@pytest.fixture
def host(env, peers, tmp_path):
    reset_demand_state(env["AzureWebJobsStorage"])
    host = start_host(
        {**env, **peers.env(), "ADO_HOOK_USERNAME": "svc-hooks", "ADO_HOOK_PASSWORD": "pw-for-tests"},
        tmp_path / "host.log",
    )
    yield host
    stop_host(host)
    reset_demand_state(env["AzureWebJobsStorage"])


def test_demand_approved_work_item_created_moved_to_done_demand_completed(peers, host):
    doc = load_fixture("demands/demand-approved.json")
    peers.servicenow.add_demand(SYS_ID, doc["number"], doc["title"])
    # bad input and missing keys are refused precisely, nothing is queued
    status, _, body = host.request("POST", "/api/demands", {"sysId": "x", "title": 3})
    assert status == 400 and {e["field"] for e in body["errors"]} == {"sysId", "number", "title"}
    status, _, body = host.request("POST", "/api/demands", raw=b"{nope")
    assert status == 400 and "not valid JSON" in body["detail"]
    assert host.request("POST", "/api/demands", doc, key=False)[0] == 401

    # approved -> 202 at once, then the work item appears and is written back
    status, _, body = host.request("POST", "/api/demands", doc)
    assert status == 202 and body == {"accepted": True, "sysId": SYS_ID, "number": "DMND0001234"}
    assert _wait(lambda: peers.servicenow.records[SYS_ID].get("u_azure_devops_work_item")), host.log()[-3000:]
    [work_item_id] = peers.ado.work_items
    # the Flow retries its REST step: still one work item
    assert host.request("POST", "/api/demands", doc)[0] == 202

    # someone moves it to Done in Azure Boards; the service hook tells us
    event = peers.ado.move(work_item_id, "Done", by="Dana Example")
    assert host.request("POST", "/api/hooks/azure-devops", event, headers=HOOK_AUTH, key=True)[0] == 202
    assert _wait(lambda: peers.servicenow.records[SYS_ID].get("state") == "Completed"), host.log()[-3000:]
    notes = peers.servicenow.notes(SYS_ID)
    assert notes[0].startswith(f"Azure Boards work item {work_item_id} created") and "moved Feature" in notes[-1]
    time.sleep(1.0)
    assert len(peers.ado.work_items) == 1 and len(peers.servicenow.notes(SYS_ID)) == 2


def test_a_push_changing_a_catalog_file_refreshes_backstage(peers, host):
    head = "b" * 40
    peers.ado.push_commits[14] = [head]
    peers.ado.commit_changes[head] = [{"item": {"path": "/catalog-info.yaml"}, "changeType": "edit"}]
    peers.ado.files[("/catalog-info.yaml", head)] = (FIXTURES / "demands" / "catalog-info.yaml").read_text()
    peers.backstage.entities |= {"component:default/checkout", "api:payments/checkout-api"}
    status, _, _ = host.request(
        "POST", "/api/hooks/azure-devops", load_fixture("demands/git-push.json"), headers=HOOK_AUTH
    )
    assert status == 202
    assert _wait(lambda: len(peers.backstage.refreshed) == 2), host.log()[-3000:]
    assert "token-for-tests" not in host.log() and "pat-for-tests" not in host.log()
