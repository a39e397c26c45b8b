"""The local host as a real process: Core Tools' URLs, keys, handshakes, timers and queues."""

import json
import time
from pathlib import Path

import pytest

from shared.adapters.storage import StateStore
from tests.conftest import SAMPLES, start_host, stop_host

pytestmark = pytest.mark.e2e


@pytest.fixture
def sample_host(env, tmp_path):
    record = tmp_path / "invocations.jsonl"
    record.touch()
    host_env = {**env, "SAMPLE_RECORD_FILE": str(record), "SAMPLE_SCHEDULE": "*/2 * * * * *"}
    host_json = tmp_path / "host.json"
    host_json.write_text(
        json.dumps(
            {"version": "2.0", "extensions": {"queues": {"maxDequeueCount": 5, "visibilityTimeout": "00:00:00"}}}
        )
    )
    host = start_host(
        host_env, tmp_path / "host.log", app="tests.fixtures.sample_app:app", extra=["--host-json", str(host_json)]
    )
    host.record = record  # type: ignore[attr-defined]
    yield host
    stop_host(host)


def _records(host, kind):
    lines = Path(host.record).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_http_function_needs_the_key_and_gets_route_and_query(sample_host):
    status, _, body = sample_host.request("GET", "/api/items/42?q=abc", key=False)
    assert status == 401 and body["title"] == "Unauthorized"
    status, _, body = sample_host.request("GET", "/api/items/42?q=abc")
    assert (status, body) == (200, {"item_id": 42, "method": "GET"})
    status, _, _ = sample_host.request("GET", "/api/items/42?code=" + sample_host.key, key=False)
    assert status == 200
    assert _records(sample_host, "http")[0]["q"] == "abc"


def test_anonymous_function_needs_no_key(sample_host):
    status, _, body = sample_host.request("GET", "/api/public/ping", key=False)
    assert (status, body) == (200, "pong")


def test_function_error_is_a_json_500_without_the_traceback(sample_host):
    status, headers, body = sample_host.request("GET", "/api/boom")
    assert status == 500
    assert headers["Content-Type"] == "application/problem+json"
    assert "secret-internal-detail" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)


def test_unknown_routes_and_functions_get_404_json(sample_host):
    assert sample_host.request("GET", "/api/nothing-here")[0] == 404
    status, _, body = sample_host.request("POST", "/admin/functions/nope", {"input": ""})
    assert status == 404 and "nope" in body["detail"]
    status, _, body = sample_host.request("POST", "/runtime/webhooks/eventgrid?functionName=nope", [])
    assert status == 404


def test_bad_bodies_get_4xx_with_a_reason(sample_host):
    status, _, body = sample_host.request("POST", "/runtime/webhooks/eventgrid?functionName=on_event", raw=b"{oops")
    assert status == 400 and "not valid JSON" in body["detail"]
    status, _, body = sample_host.request(
        "POST", "/admin/functions/tick", raw=b"input=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415
    status, _, body = sample_host.request("POST", "/api/items/1", raw=b"x" * (1024 * 1024 + 1))
    assert status == 413 and "1 MiB" in body["detail"]
    # the host is still alive after all that
    assert sample_host.request("GET", "/api/public/ping", key=False)[0] == 200


def test_event_grid_validation_handshake_answers_the_code(sample_host):
    validation = json.loads((SAMPLES / "eventgrid-subscription-validation.json").read_text())
    status, _, body = sample_host.request(
        "POST",
        "/runtime/webhooks/eventgrid?functionName=on_event",
        validation,
        headers={"aeg-event-type": "SubscriptionValidation"},
    )
    assert (status, body) == (200, {"validationResponse": validation[0]["data"]["validationCode"]})
    assert _records(sample_host, "eventgrid") == []


def test_cloudevents_options_handshake_allows_the_origin(sample_host):
    status, headers, _ = sample_host.request(
        "OPTIONS",
        "/runtime/webhooks/eventgrid?functionName=on_event",
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
    )
    assert status == 200 and headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_each_event_of_a_batch_is_one_invocation_in_both_schemas(sample_host):
    eg = json.loads((SAMPLES / "policy-state-changed.eventgrid.json").read_text())
    ce = json.loads((SAMPLES / "policy-state-created.cloudevents.json").read_text())
    second = {**eg[0], "id": "second"}
    status, _, _ = sample_host.request(
        "POST",
        "/runtime/webhooks/eventgrid?functionName=on_event",
        [eg[0], second],
        headers={"aeg-event-type": "Notification"},
    )
    assert status == 200
    status, _, _ = sample_host.request(
        "POST",
        "/runtime/webhooks/eventgrid?functionName=on_event",
        ce,
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert status == 200
    seen = _records(sample_host, "eventgrid")
    assert [r["id"] for r in seen] == [eg[0]["id"], "second", ce[0]["id"]]
    assert seen[2]["topic"] == ce[0]["source"]


def test_a_failing_event_makes_event_grid_retry(sample_host):
    eg = json.loads((SAMPLES / "policy-state-changed.eventgrid.json").read_text())[0]
    status, _, body = sample_host.request(
        "POST", "/runtime/webhooks/eventgrid?functionName=on_event", [{**eg, "data": {"fail": True}}]
    )
    assert status == 500 and body["errors"][0]["id"] == eg["id"]


def test_timer_runs_through_the_admin_endpoint_and_on_its_schedule(sample_host):
    status, _, body = sample_host.request("POST", "/admin/functions/tick", {"input": ""})
    assert status == 202 and body["status"] == "completed"
    assert sample_host.request("POST", "/admin/functions/tick", {"input": ""}, key=False)[0] == 401
    deadline = time.monotonic() + 10
    while len(_records(sample_host, "timer")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_records(sample_host, "timer")) >= 2  # one from admin, at least one from the 2 s schedule


def test_queue_trigger_processes_messages_and_poisons_after_max_dequeue(sample_host, env):
    store = StateStore.from_connection_string(env["AzureWebJobsStorage"])
    store.send("sample-work", "hello")
    store.send("sample-work", "fail")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store.queue_length("sample-work-poison") >= 1 and _records(sample_host, "queue"):
            break
        time.sleep(0.3)
    bodies = [r["body"] for r in _records(sample_host, "queue")]
    assert bodies.count("hello") == 1
    assert bodies.count("fail") == 5  # host.json maxDequeueCount
    assert [m.text() for m in store.peek("sample-work-poison")] == ["fail"]
