"""The shared Azure DevOps service-hook endpoint: authentication, envelope checks, queueing, dispatch."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import replace

import pytest

from shared.devops import hooks
from shared.devops.hooks import (
    EVENTS_QUEUE,
    HookEvent,
    authenticate,
    dispatch,
    enqueue_event,
    load_queued,
    parse_event,
    register,
)
from shared.errors import BadInputError, UnauthorizedError
from tests.conftest import load_fixture


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def hook_settings(settings):
    return replace(settings, ado_hook_username="svc-hooks", ado_hook_password="pw-for-tests", ado_hook_secret="")


def test_basic_auth_of_the_subscription_is_required_when_configured(hook_settings):
    authenticate(_basic("svc-hooks", "pw-for-tests"), hook_settings)
    for headers in ({}, _basic("svc-hooks", "wrong"), _basic("other", "pw-for-tests"), {"Authorization": "Basic !!"}):
        with pytest.raises(UnauthorizedError, match="ADO_HOOK_USERNAME"):
            authenticate(headers, hook_settings)


def test_header_secret_is_required_when_configured(settings):
    configured = replace(settings, ado_hook_secret="s3cret-for-tests")
    authenticate({"x-hook-secret": "s3cret-for-tests"}, configured)
    with pytest.raises(UnauthorizedError, match="X-Hook-Secret"):
        authenticate({"X-Hook-Secret": "nope"}, configured)
    with pytest.raises(UnauthorizedError):
        authenticate({}, configured)


def test_without_hook_credentials_the_function_key_alone_guards_the_endpoint(settings):
    authenticate({}, replace(settings, ado_hook_username="", ado_hook_password="", ado_hook_secret=""))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 5000, "not valid JSON"),
        (json.dumps({"eventType": "workitem.updated", "resource": {}}).encode(), "id: required"),
        (json.dumps({"id": "e1", "resource": {}}).encode(), "eventType: required"),
        (json.dumps({"id": "e1", "eventType": "git.push", "resource": "x"}).encode(), "resource: required"),
    ],
)
def test_bad_envelopes_are_refused_naming_the_field(body, message):
    with pytest.raises(BadInputError, match=message):
        parse_event(body)


def test_a_notification_is_queued_whole_and_read_back(runtime):
    body = json.dumps(load_fixture("devops/workitem-updated.json")).encode()
    event = parse_event(body)
    enqueue_event(runtime.storage, event, body)
    [message] = runtime.storage.receive(EVENTS_QUEUE, max_messages=1)
    again = load_queued(runtime.storage, message.text())
    assert (again.id, again.event_type, again.project_id) == (event.id, "workitem.updated", event.project_id)
    assert again.resource["fields"]["System.State"]["newValue"] == "Doing"
    runtime.storage.ack(EVENTS_QUEUE, message)


def test_a_payload_over_the_queue_limit_travels_through_a_blob(runtime):
    doc = copy.deepcopy(load_fixture("devops/workitem-updated.json"))
    doc["id"] = "big-event"
    doc["resource"]["fields"]["System.Description"] = {"newValue": "x" * 120_000}
    body = json.dumps(doc).encode()
    enqueue_event(runtime.storage, parse_event(body), body)
    [message] = runtime.storage.receive(EVENTS_QUEUE, max_messages=1)
    assert len(message.text()) < 1_000 and "payloadBlob" in message.text()
    event = load_queued(runtime.storage, message.text())
    assert len(event.resource["fields"]["System.Description"]["newValue"]) == 120_000
    runtime.storage.ack(EVENTS_QUEUE, message)


def test_a_message_pointing_to_a_missing_blob_is_bad_input(runtime):
    with pytest.raises(BadInputError, match="does not exist"):
        load_queued(runtime.storage, json.dumps({"id": "x", "eventType": "git.push", "payloadBlob": "gone.json"}))


def test_dispatch_runs_exact_and_prefix_handlers_and_acknowledges_unknown_types(runtime, monkeypatch):
    monkeypatch.setattr(hooks, "_registry", [])
    monkeypatch.setattr("shared.devops.handlers.load_handlers", lambda: None)  # only this test's handlers
    seen: list[tuple[str, str]] = []

    @register("workitem.updated")
    def exact(event: HookEvent, rt) -> str:
        seen.append(("exact", event.id))
        return "state mapped"

    @register("workitem.*")
    def prefix(event: HookEvent, rt) -> str:
        seen.append(("prefix", event.id))
        return "noted"

    event = hooks.event_from_dict(load_fixture("devops/workitem-updated.json"))
    outcome = dispatch(event, runtime)
    assert seen == [("exact", event.id), ("prefix", event.id)]
    assert sorted(outcome.handled.values()) == ["noted", "state mapped"]
    other = dispatch(replace(event, event_type="tfs.unknown"), runtime)
    assert other.handled == {} and len(seen) == 2


def test_a_pattern_with_a_star_inside_is_refused():
    with pytest.raises(ValueError, match="prefix ending"):
        register("work*item")


def test_max_dequeue_count_matches_host_json():
    from tests.conftest import ROOT

    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == hooks.MAX_DEQUEUE_COUNT


def _drain(runtime, queue):
    out = []
    while batch := runtime.storage.receive(queue, max_messages=32, visibility_timeout=1):
        for message in batch:
            out.append(message.text())
            runtime.storage.ack(queue, message)
    return out


def test_an_unreadable_message_goes_to_poison_at_once_with_one_alert(runtime):
    _drain(runtime, hooks.POISON_QUEUE)
    assert hooks.process_message(runtime, b'{"neither": 1}', dequeue_count=1, message_id="m-unreadable") is None
    assert _drain(runtime, hooks.POISON_QUEUE) == ['{"neither": 1}']
    alerts = [a for a in _drain(runtime, "alerts") if "m-unreadable" in a]
    assert len(alerts) == 1 and "ado-events-poison" in alerts[0]


def test_a_failing_handler_is_retried_and_alerts_on_the_last_attempt(runtime, monkeypatch):
    monkeypatch.setattr(hooks, "_registry", [])
    monkeypatch.setattr("shared.devops.handlers.load_handlers", lambda: None)

    @register("git.push")
    def broken(event, rt):
        raise RuntimeError("boom")

    doc = {**load_fixture("devops/workitem-updated.json"), "eventType": "git.push"}
    body = json.dumps({"id": doc["id"], "eventType": "git.push", "payload": doc})
    _drain(runtime, "alerts")
    for attempt in range(1, hooks.MAX_DEQUEUE_COUNT + 1):
        with pytest.raises(RuntimeError):
            hooks.process_message(runtime, body, dequeue_count=attempt, message_id="m-failing")
    alerts = [a for a in _drain(runtime, "alerts") if "m-failing" in a]
    assert len(alerts) == 1 and "RuntimeError" in alerts[0]
