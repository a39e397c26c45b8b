"""The manifest-less FOCUS folder convention is wired in Azure: a `_SUCCESS` marker also reaches cost_export_ingest."""

from tests.infra.test_terraform_wiring import first, load_infra


def test_success_markers_of_manifest_less_folders_fire_the_same_ingest_function():
    infra = load_infra()
    manifest = infra.one("azurerm_eventgrid_system_topic_event_subscription", "cost_export_manifest").body
    marker = infra.one("azurerm_eventgrid_system_topic_event_subscription", "cost_export_success_marker").body
    assert first(marker["azure_function_endpoint"]) == first(manifest["azure_function_endpoint"])
    assert marker["included_event_types"] == ["Microsoft.Storage.BlobCreated"]
    subject = first(marker["subject_filter"])
    assert subject["subject_ends_with"] == "/_SUCCESS"
    assert subject["subject_begins_with"] == first(manifest["subject_filter"])["subject_begins_with"]
    assert "storage_blob_dead_letter_destination" in marker and "retry_policy" in marker
