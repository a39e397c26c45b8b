"""Abusing the Logic Apps API with a valid function key: other incidents' dedupe keys, idempotency
collisions, late subscribers redirecting a decided approval's callback, racing decisions, SAS leaks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devhost.server import LocalHost
from shared.approvals import service
from shared.approvals.http import request_key
from shared.approvals.notify import caller_dedupe_key, escalation_alert, incident_alert
from shared.approvals.workflow import Approval
from shared.runtime import Runtime, set_runtime
from shared.settings import load_settings
from tests.fixtures.approvals.seed import load, seed_episode
from tests.security.conftest import KEY

pytestmark = pytest.mark.e2e

EPISODE = load("episode-critical-vm.json")
EPISODE_ID = EPISODE["EPISODE_ID"]
APP_KEY_PREFIXES = ("approval-escalation:", "approval-audit:", "cost-", "policy-", "delivery-failing:", "demo:")


# -- dedupe keys: callers live in their own namespace --


def test_a_caller_cannot_address_the_escalation_incident_the_app_opened():
    approval = Approval(
        EPISODE_ID, EPISODE_ID, "deallocate_vm", "/subscriptions/s/x", "squad", "critical", 1, 1, "s", "t"
    )
    ours = escalation_alert(approval, "refused: protected").dedupe_key
    theirs = incident_alert(
        title="close it",
        severity="info",
        resource_id="/subscriptions/s/x",
        owner="",
        summary="",
        dedupe_key=ours,
        action="resolve",
        facts={},
    ).dedupe_key
    assert ours == f"approval-escalation:{EPISODE_ID}" and theirs == f"logicapp:{ours}" and theirs != ours


@given(key=st.text(max_size=200), title=st.text(min_size=1, max_size=20))
def test_every_caller_key_lands_in_the_caller_namespace_and_is_stable(key, title):
    namespaced = caller_dedupe_key(key, title, "/r")
    assert namespaced.startswith("logicapp:")
    assert not namespaced.startswith(APP_KEY_PREFIXES)
    assert caller_dedupe_key(namespaced, title, "/r") == namespaced  # the key an answer returned can be sent back


# -- idempotency keys derived from a Logic App run --


def test_run_derived_keys_name_the_action_and_the_loop_iteration():
    run = {"x-ms-workflow-run-id": "08585000000000000000000000000CU00"}
    a = request_key({**run, "x-ms-workflow-operation-name": "Open_incident"})
    b = request_key({**run, "x-ms-workflow-operation-name": "Open_second_incident"})
    c = request_key(
        {**run, "x-ms-workflow-operation-name": "Open_incident", "x-ms-workflow-repeatitem-scope-name": "For_each",
         "x-ms-workflow-repeatitem-index": "3"}
    )  # fmt: skip
    assert len({a, b, c}) == 3 and all(k.startswith("run:") for k in (a, b, c))
    assert request_key({**run, "Idempotency-Key": "mine"}) == "mine"


# -- through the local host, with the real app --


@pytest.fixture
def app_host(env: dict[str, str], tmp_path: Path, httpserver) -> Iterator[tuple[LocalHost, Runtime]]:
    from function_app import app

    settings = load_settings({**env, "CALLBACK_ALLOWED_HOSTS": "127.0.0.1"}, local_settings=tmp_path / "absent.json")
    runtime = Runtime(settings)
    set_runtime(runtime)
    # Azurite lives for the whole session: each test gets its own episode (and approval) id
    episode_id = "ce-" + uuid.uuid4().hex[:20]
    seed_episode(runtime, {**EPISODE, "EPISODE_ID": episode_id})
    host = LocalHost(app, settings, key=KEY, port=0, run_schedules=False)
    host.start()
    host.peer = httpserver  # type: ignore[attr-defined]
    host.episode_id = episode_id  # type: ignore[attr-defined]
    yield host, runtime
    host.stop()
    # this host runs no queue workers: take back what the test queued, so that no later test's worker
    # (Azurite is shared by the session) runs these approvals' actions or delivers these incidents
    for queue in ("alerts", "approval-actions"):
        while batch := runtime.storage.receive(queue, max_messages=32, visibility_timeout=1):
            for message in batch:
                runtime.storage.ack(queue, message)
    set_runtime(None)


def _call(host: LocalHost, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{host.port}{path}", data=data, method=method)
    req.add_header("x-functions-key", KEY)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def _subscribe(host: LocalHost, run: str, **extra: Any):
    port = host.peer.port  # type: ignore[attr-defined]
    body = {
        **load("logic-app-subscribe.json"),
        "episodeId": host.episode_id,  # type: ignore[attr-defined]
        "runId": run,
        "callbackUrl": f"http://127.0.0.1:{port}/cb/{run}?sp=%2Fruns&sv=1.0&sig=sig-of-{run}",
        **extra,
    }
    return _call(host, "POST", "/api/approvals", body, {"Idempotency-Key": f"subscribe-{host.episode_id}-{run}"})  # type: ignore[attr-defined]


def _queued_keys(runtime: Runtime) -> list[str]:
    docs = [json.loads(m.text()) for m in runtime.storage.peek("alerts", max_messages=32)]
    return [(d.get("alert") or d).get("dedupe_key", "") for d in docs]


def test_posting_an_incident_with_the_apps_own_key_gets_a_namespaced_one(app_host):
    host, runtime = app_host
    ours = f"approval-escalation:{host.episode_id}"
    body = {"title": "close it", "resourceId": "/r", "dedupeKey": ours, "action": "resolve"}
    status, _, answer = _call(host, "POST", "/api/incidents", body)
    assert status == 202 and answer["dedupeKey"] == f"logicapp:{ours}"
    assert ours not in _queued_keys(runtime) and f"logicapp:{ours}" in _queued_keys(runtime)


def test_two_incidents_from_one_logic_app_run_do_not_collide_and_a_retry_replays(app_host):
    host, runtime = app_host
    run = {"x-ms-workflow-run-id": "run-" + host.episode_id}
    tag = host.episode_id
    first = {"title": "disk full", "resourceId": "/r", "dedupeKey": f"disk-{tag}"}
    second = {"title": "cpu hot", "resourceId": "/r", "dedupeKey": f"cpu-{tag}"}
    s1, _, a1 = _call(host, "POST", "/api/incidents", first, {**run, "x-ms-workflow-operation-name": "Open_disk"})
    s2, _, a2 = _call(host, "POST", "/api/incidents", second, {**run, "x-ms-workflow-operation-name": "Open_cpu"})
    s3, h3, a3 = _call(host, "POST", "/api/incidents", first, {**run, "x-ms-workflow-operation-name": "Open_disk"})
    # a run without the action header (not a Logic App action): told apart by its body
    s4, _, a4 = _call(
        host, "POST", "/api/incidents", {"title": "mem", "resourceId": "/r", "dedupeKey": f"mem-{tag}"}, run
    )
    assert (s1, s2, s3, s4) == (202, 202, 202, 202)
    assert a1["messageId"] != a2["messageId"] and a3 == a1 and h3.get("Idempotent-Replayed") == "true"
    mine = sorted(k for k in _queued_keys(runtime) if k.endswith(tag))
    assert mine == [f"logicapp:cpu-{tag}", f"logicapp:disk-{tag}", f"logicapp:mem-{tag}"]


def test_a_decided_approval_refuses_a_callback_from_another_run(app_host):
    host, runtime = app_host
    assert _subscribe(host, "run-1")[0] == 202
    decision = {"decision": "reject", "approver": "manager@example.test", "reason": "planned"}
    assert _call(host, "POST", f"/api/approvals/{host.episode_id}/decision", decision)[0] == 202
    # WHEN another run subscribes after the decision
    status, _, body = _subscribe(host, "run-2")
    # THEN 409 with the earlier decision, and the stored callback is still run-1's
    assert status == 409 and body["earlierDecision"]["approver"] == "manager@example.test"
    approval, _ = service.load(runtime.storage, host.episode_id)
    assert approval.run_id == "run-1" and "/cb/run-1" in approval.callback_url
    # the run that was waiting may subscribe again (a retry of its webhook action)
    assert _subscribe(host, "run-1")[0] == 202


def test_a_backslash_callback_url_is_refused_and_never_echoed(app_host):
    host, _ = app_host
    status, _, body = _subscribe(host, "run-9", callbackUrl="https://attacker.example\\.logic.azure.com/cb?sig=leak-me")
    assert status == 400 and body["errors"][0]["field"] == "callbackUrl"
    assert "leak-me" not in json.dumps(body) and "attacker" not in json.dumps(body)


def test_sas_signatures_never_appear_in_answers(app_host):
    host, _ = app_host
    status, _, body = _subscribe(host, "run-1")
    assert status == 202 and body["callbackRegistered"] is True
    status, _, read = _call(host, "GET", "/api/anomalies")
    for answer in (body, read):
        assert "sig-of-run-1" not in json.dumps(answer) and "/cb/run-1" not in json.dumps(answer)


def test_thirty_concurrent_decisions_exactly_one_wins(app_host):
    host, _ = app_host
    assert _subscribe(host, "run-1")[0] == 202

    def decide(i: int) -> int:
        body = {"decision": "approve" if i % 2 else "reject", "approver": f"user{i}@example.test", "reason": "r"}
        status, _, answer = _call(host, "POST", f"/api/approvals/{host.episode_id}/decision", body)
        return status, answer

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(decide, range(30)))
    assert sorted(s for s, _ in answers) == [202] + [409] * 29, answers
