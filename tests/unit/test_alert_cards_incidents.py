"""Teams cards and ServiceNow incident fields: the exact JSON posted (pure)."""

from shared.alerts import cards, incidents
from shared.alerts.model import Alert
from shared.alerts.routing import AlertRoute
from tests.conftest import load_fixture

WORKFLOWS = "https://prod-01.westeurope.logic.azure.com/workflows/test/triggers/manual/paths/invoke"
LEGACY = "https://contoso.webhook.office.com/webhookb2/test-id/IncomingWebhook/test-token"


def _alert(**over):
    return Alert.from_dict({**load_fixture("alerts/cost_anomaly.json"), **over})


def test_workflows_webhook_gets_an_adaptive_card_1_4_with_only_open_url_actions():
    payload = cards.teams_payload(cards.alert_content(_alert(), "squad-payments"), WORKFLOWS)
    assert payload["type"] == "message"
    attachment = payload["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert {a["type"] for a in card["actions"]} == {"Action.OpenUrl"}
    facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
    assert {"title": "Actual per day", "value": "$504.10"} in facts
    assert card["body"][0]["color"] == "attention"


def test_legacy_connector_url_gets_a_message_card():
    assert cards.is_legacy_webhook(LEGACY) and not cards.is_legacy_webhook(WORKFLOWS)
    payload = cards.teams_payload(cards.alert_content(_alert(action="resolve"), "squad-payments"), LEGACY)
    assert payload["@type"] == "MessageCard" and payload["title"].startswith("Resolved: ")
    assert payload["potentialAction"][0]["@type"] == "OpenUri"


def test_a_huge_alert_is_truncated_under_27_kb_and_says_how_many_facts_were_left_out():
    facts = [[f"fact {i}", "x" * 1900] for i in range(60)]
    alert = _alert(facts=facts, summary="s" * 8000)
    for url in (WORKFLOWS, LEGACY):
        payload = cards.teams_payload(cards.alert_content(alert, "squad-payments"), url)
        assert cards.payload_size(payload) <= cards.MAX_CARD_BYTES
        assert "more facts left out" in str(payload)


def test_digest_card_lists_every_held_back_alert():
    held = [_alert(title=f"alert {i}", dedupe_key=f"k{i}") for i in range(12)]
    payload = cards.teams_payload(cards.digest_content("squad-payments", held, 10), WORKFLOWS)
    text = str(payload)
    assert "12 more alerts for squad squad-payments within 10 minutes" in text
    assert all(f"alert {i}" in text for i in range(12))


def test_incident_fields_never_set_priority_and_map_severity_to_impact_and_urgency():
    route = AlertRoute("squad-payments", servicenow_assignment_group="Payments Ops", cmdb_ci="payments-api")
    body = incidents.incident_fields(_alert(), route)
    assert "priority" not in body
    assert (body["impact"], body["urgency"]) == ("1", "1")
    assert body["correlation_id"] == "cost:vm-payments-01:2025-01-31"
    assert body["correlation_display"] == "ValueFlow"
    assert body["assignment_group"] == "Payments Ops" and body["cmdb_ci"] == "payments-api"
    assert incidents.incident_fields(_alert(severity="info"), route)["impact"] == "3"


def test_long_or_query_unsafe_dedupe_keys_become_a_stable_hash():
    long_key = "/subscriptions/x/" + "r" * 200
    cid = incidents.correlation_id_for(long_key)
    assert cid.startswith("vf-") and len(cid) <= 100 and cid == incidents.correlation_id_for(long_key)
    assert incidents.correlation_id_for("a^active=false").startswith("vf-")


def test_active_incident_query_uses_the_exact_field_names():
    params = incidents.active_incident_query("cost:k")
    assert params["sysparm_query"] == "correlation_id=cost:k^active=true"
    assert params["sysparm_limit"] == "1"
    assert set(params["sysparm_fields"].split(",")) >= {"sys_id", "number", "state"}


def test_resolution_sets_resolved_state_with_close_code_and_notes():
    body = incidents.resolution(_alert(action="resolve"), "Resolved by caller")
    assert body["state"] == "6" and body["close_code"] == "Resolved by caller" and body["close_notes"]
    assert "work_notes" in incidents.work_note(_alert(action="update"))
