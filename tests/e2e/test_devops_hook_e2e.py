"""`POST /api/hooks/azure-devops` through the local host: auth, 400s, 202 and the queue worker."""

from __future__ import annotations

import base64
import time

import pytest

from tests.conftest import load_fixture, start_host, stop_host

pytestmark = pytest.mark.e2e

HOOK = "/api/hooks/azure-devops"


@pytest.fixture
def hook_host(env, tmp_path):
    host = start_host(
        {**env, "ADO_HOOK_USERNAME": "svc-hooks", "ADO_HOOK_PASSWORD": "pw-for-tests"}, tmp_path / "host.log"
    )
    yield host
    stop_host(host)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_service_hook_is_authenticated_checked_acknowledged_and_dispatched(hook_host):
    event = load_fixture("devops/workitem-updated.json")
    # the function key and the subscription's basic auth are both required
    assert hook_host.request("POST", HOOK, event, headers=_basic("svc-hooks", "pw-for-tests"), key=False)[0] == 401
    status, _, body = hook_host.request("POST", HOOK, event, headers=_basic("svc-hooks", "wrong"))
    assert status == 401 and "ADO_HOOK_USERNAME" in body["detail"]
    status, _, body = hook_host.request("POST", HOOK, {"id": "e1"}, headers=_basic("svc-hooks", "pw-for-tests"))
    assert status == 400 and {e["field"] for e in body["errors"]} == {"eventType", "resource"}

    status, _, body = hook_host.request("POST", HOOK, event, headers=_basic("svc-hooks", "pw-for-tests"))
    assert status == 202 and body == {"accepted": True, "id": event["id"], "eventType": "workitem.updated"}
    deadline = time.monotonic() + 30
    while "azure devops event dispatched" not in hook_host.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "azure devops event dispatched" in hook_host.log()
    assert "pw-for-tests" not in hook_host.log()
