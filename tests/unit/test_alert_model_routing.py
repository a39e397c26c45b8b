"""The Alert model's producer-side gate and owner routing (pure)."""

import json
from pathlib import Path

import pytest

from shared.alerts.model import Alert
from shared.alerts.routing import AlertRoute, load_routes, owner_from_tags, parse_routes, route_for
from shared.errors import BadInputError, SettingsError
from shared.settings import load_settings
from tests.conftest import load_fixture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alerts"
ALLOWED = ("*.logic.azure.com", "*.webhook.office.com")


def _alert(**over):
    doc = {**load_fixture("alerts/cost_anomaly.json"), **over}
    return Alert.from_dict(doc)


def test_alert_with_missing_fields_is_rejected_naming_every_field():
    with pytest.raises(BadInputError) as err:
        Alert.from_dict(load_fixture("alerts/missing_fields.json"))
    named = {e["field"] for e in err.value.errors}
    assert {"title", "resource_id", "owner", "dedupe_key", "facts[0]"} <= named
    assert "title: missing" in err.value.detail


def test_invalid_severity_kind_and_action_are_named_with_the_allowed_values():
    with pytest.raises(BadInputError) as err:
        _alert(severity="severe", kind="nope", action="close")
    text = err.value.detail
    assert "severity: expected one of info, warning, critical; got 'severe'" in text
    assert "kind: expected one of" in text and "action: expected one of open, update, resolve" in text


def test_alert_round_trips_through_json():
    alert = _alert()
    again = Alert.from_dict(json.loads(json.dumps(alert.to_dict())))
    assert again == alert
    assert alert.wants_incident()  # critical -> incident
    assert not _alert(severity="warning").wants_incident()
    assert _alert(severity="info", incident=True).wants_incident()


def test_fingerprint_ignores_when_the_alert_was_built_but_not_what_it_says():
    a = _alert(created_at="2025-01-31T06:30:00+00:00")
    assert a.fingerprint() == _alert(created_at="2025-02-01T00:00:00+00:00").fingerprint()
    assert a.fingerprint() != _alert(facts=[["Actual per day", "$900"]]).fingerprint()


def test_owner_from_tags_is_case_insensitive_and_follows_key_order():
    keys = ("owner", "squad", "team")
    assert owner_from_tags({"Squad": "payments", "TEAM": "other"}, keys) == "payments"
    assert owner_from_tags({"OWNER": " squad-data "}, keys) == "squad-data"
    assert owner_from_tags({"cost-center": "42", "owner": ""}, keys) == ""
    assert owner_from_tags({}, keys) == ""


def test_routes_from_a_yaml_file_fall_back_to_the_default_route(tmp_path):
    settings = load_settings(
        {
            "ALERT_ROUTES": str(FIXTURES / "routes.yaml"),
            "TEAMS_DEFAULT_WEBHOOK_URL": "https://prod-02.westeurope.logic.azure.com/workflows/test-default",
        },
        local_settings=tmp_path / "none.json",
    )
    routes = load_routes(settings)
    payments = route_for(_alert(owner="SQUAD-PAYMENTS"), routes)
    assert payments.squad == "squad-payments" and payments.cmdb_ci == "payments-api"
    assert "test-payments" in payments.teams_webhook_url
    data = route_for(_alert(owner="squad-data"), routes)
    assert data.servicenow_assignment_group == "Data Platform"
    assert "test-default" in data.teams_webhook_url  # no own webhook: the default one
    unknown = route_for(_alert(owner=""), routes)
    assert unknown.servicenow_assignment_group == "Cloud Platform" and unknown.squad == "default"


def test_a_routing_file_that_does_not_validate_names_the_squad_and_field(tmp_path):
    settings = load_settings({"ALERT_ROUTES": str(FIXTURES / "routes_bad_field.json")}, local_settings=tmp_path / "n")
    with pytest.raises(SettingsError, match=r"routes\.squad-payments\.assignment_grp is not a route field"):
        load_routes(settings)


def test_a_webhook_outside_the_allow_list_stops_start_up_without_showing_the_url():
    doc = {"routes": {"squad-x": {"teams_webhook_url": "https://evil.example.net/hook?sig=test-signature"}}}
    with pytest.raises(SettingsError) as err:
        parse_routes(doc, default_webhook_url="", allowed_hosts=ALLOWED)
    assert "routes.squad-x.teams_webhook_url" in err.value.detail and "evil.example.net" in err.value.detail
    assert "test-signature" not in err.value.detail


def test_loopback_webhooks_are_always_allowed_and_plain_http_only_there():
    routes = parse_routes(
        {"routes": {"a": {"teams_webhook_url": "http://127.0.0.1:9/hook"}}}, default_webhook_url="", allowed_hosts=()
    )
    assert routes.squads["a"].teams_webhook_url == "http://127.0.0.1:9/hook"
    with pytest.raises(SettingsError, match="must be https"):
        parse_routes(
            {"routes": {"a": {"teams_webhook_url": "http://x.logic.azure.com/h"}}},
            default_webhook_url="",
            allowed_hosts=ALLOWED,
        )


def test_invalid_inline_json_is_reported(tmp_path):
    with pytest.raises(SettingsError, match="ALERT_ROUTES: not valid JSON"):
        load_routes(load_settings({"ALERT_ROUTES": "{oops"}, local_settings=tmp_path / "n"))


def test_route_repr_never_shows_the_webhook_url():
    assert "secret-path" not in repr(AlertRoute("s", teams_webhook_url="https://a.logic.azure.com/secret-path"))
