"""Parsing Azure Policy state events: both schemas, both topic kinds, initiative and single policy, bad input."""

import pytest

from shared.policy.events import BadPolicyEvent, PolicyStateEvent, normalise_timestamp, parse_policy_event
from tests.conftest import load_fixture


def one(name):
    return load_fixture(f"policy/{name}")[0]


def test_event_grid_schema_on_a_subscription_topic_for_a_single_policy():
    event = parse_policy_event(one("eventgrid-subscription-single-policy.json"))
    assert event.schema == "eventgrid"
    assert event.event_type == "Microsoft.PolicyInsights.PolicyStateChanged"
    assert event.topic == "/subscriptions/3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"
    assert event.resource_id.endswith("/storageAccounts/stpaymentsprod01")
    assert event.subscription_id == "3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"
    assert event.definition_reference_id == ""  # empty string in the payload: a single policy
    assert event.is_non_compliant and not event.is_compliant
    assert event.timestamp == "2026-11-20T14:02:58.1197132Z"


def test_cloud_events_schema_on_a_management_group_topic_for_an_initiative_member():
    event = parse_policy_event(one("cloudevents-management-group-initiative.json"))
    assert event.schema == "cloudevents"
    assert event.topic.endswith("/managementGroups/mg-platform")
    assert event.event_type == "Microsoft.PolicyInsights.PolicyStateCreated"
    assert event.definition_reference_id == "aksDiagnosticSettings"
    assert event.assignment_id.startswith("/providers/Microsoft.Management/managementGroups/mg-platform/")
    assert event.subscription_id == "9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"


def test_event_grid_schema_on_a_management_group_topic():
    event = parse_policy_event(one("eventgrid-management-group-initiative.json"))
    assert event.schema == "eventgrid" and event.definition_reference_id == "aksDiagnosticSettings"


def test_cloud_event_without_a_definition_reference_field_is_a_single_policy():
    event = parse_policy_event(one("cloudevents-subscription-single-policy.json"))
    assert event.schema == "cloudevents" and event.definition_reference_id == ""


def test_compliant_and_deleted_states_are_recognised():
    assert parse_policy_event(one("eventgrid-compliant.json")).is_compliant
    deleted = parse_policy_event(one("eventgrid-deleted.json"))
    assert deleted.is_deleted and not deleted.is_non_compliant


@pytest.mark.parametrize("case", load_fixture("policy/bad-events.json"), ids=lambda c: c["reason"])
def test_bad_events_are_refused_with_a_countable_reason_and_a_clear_detail(case):
    with pytest.raises(BadPolicyEvent) as err:
        parse_policy_event(case["event"])
    assert err.value.reason == case["reason"]
    assert err.value.detail  # says what and where


def test_not_an_object_is_refused():
    with pytest.raises(BadPolicyEvent) as err:
        parse_policy_event(["nope"])
    assert err.value.reason == "not-an-object"


def test_dedupe_key_ignores_case_of_arm_ids():
    a = parse_policy_event(one("eventgrid-subscription-single-policy.json"))
    raw = one("eventgrid-subscription-single-policy.json")
    raw["subject"] = raw["subject"].upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")
    raw["data"]["subscriptionId"] = raw["data"]["subscriptionId"].upper()
    b = parse_policy_event(raw)
    assert a.key == b.key


def test_timestamps_normalise_to_sortable_utc_text():
    assert normalise_timestamp("2026-11-20T14:02:58Z") == "2026-11-20T14:02:58.0000000Z"
    assert normalise_timestamp("2026-11-20T16:02:58.5+02:00") == "2026-11-20T14:02:58.5000000Z"
    assert normalise_timestamp("2026-11-20T14:02:58.1197132Z") > normalise_timestamp("2026-11-20T14:02:58.1197131Z")


def test_parsed_event_round_trips_through_a_work_item():
    event = parse_policy_event(one("cloudevents-management-group-initiative.json"))
    assert PolicyStateEvent.from_dict(event.as_dict()) == event
