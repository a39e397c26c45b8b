"""The local host's pure parts: route templates, event conversion, schedules, host.json options."""

import json
from datetime import UTC, datetime

import pytest

from devhost.index import RouteTemplate
from devhost.server import to_event_grid_event
from devhost.triggers import QueueOptions, next_fire, resolve_binding_expression
from shared.errors import BadInputError, SettingsError
from tests.conftest import SAMPLES


def test_route_template_matches_typed_and_optional_parameters():
    t = RouteTemplate.compile("anomalies/{id}/feedback")
    assert t.match("/anomalies/ep-1/feedback") == {"id": "ep-1"}
    assert t.match("/anomalies/ep-1") is None
    typed = RouteTemplate.compile("items/{item_id:int}")
    assert typed.match("/items/42") == {"item_id": "42"}
    assert typed.match("/items/abc") is None
    optional = RouteTemplate.compile("anomalies/{id?}")
    assert optional.match("/anomalies") == {}
    assert optional.match("/anomalies/x") == {"id": "x"}


def test_event_grid_schema_event_becomes_one_trigger_value():
    event = json.loads((SAMPLES / "policy-state-changed.eventgrid.json").read_text())[0]
    ev = to_event_grid_event(event, 0)
    assert ev.event_type == "Microsoft.PolicyInsights.PolicyStateChanged"
    assert ev.topic.startswith("/subscriptions/")
    assert ev.get_json()["complianceState"] == "NonCompliant"
    assert ev.event_time is not None and ev.event_time.replace(tzinfo=None) == datetime(2026, 11, 20, 14, 3, 12, 447521)


def test_cloudevent_maps_source_and_type_like_the_functions_trigger():
    event = json.loads((SAMPLES / "policy-state-created.cloudevents.json").read_text())[0]
    ev = to_event_grid_event(event, 0)
    assert ev.topic == event["source"]
    assert ev.event_type == "Microsoft.PolicyInsights.PolicyStateCreated"
    assert ev.get_json()["policyDefinitionReferenceId"] == "aksDiagnosticSettings"


def test_event_missing_fields_is_rejected_naming_index_and_fields():
    with pytest.raises(BadInputError, match=r"event \[3\] is missing id, eventType"):
        to_event_grid_event({"subject": "x", "data": {}, "eventTime": "2026-01-01T00:00:00Z"}, 3)


def test_six_field_ncrontab_fires_at_the_next_matching_second():
    after = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    assert next_fire("0 30 6 * * *", after) == datetime(2026, 11, 25, 6, 30, tzinfo=UTC)
    assert next_fire("*/10 * * * * *", after) == datetime(2026, 11, 24, 7, 0, 10, tzinfo=UTC)


def test_binding_expressions_resolve_from_settings_or_fail_clearly(monkeypatch):
    monkeypatch.setenv("SOME_QUEUE", "work-items")
    assert resolve_binding_expression("%SOME_QUEUE%") == "work-items"
    assert resolve_binding_expression("%COST_SCAN_SCHEDULE%") == "0 30 6 * * *"
    with pytest.raises(SettingsError, match="%NOT_SET_ANYWHERE%"):
        resolve_binding_expression("%NOT_SET_ANYWHERE%")


def test_queue_options_come_from_host_json(tmp_path):
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"extensions": {"queues": {"maxDequeueCount": 3, "visibilityTimeout": "00:00:07"}}}))
    opts = QueueOptions.from_host_json(path)
    assert opts.max_dequeue_count == 3
    assert opts.visibility_timeout_seconds == 7
