"""Pure parts of the demand sync: the contract gate, the work item patches, the state map, reconcile planning."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.demands import mapping
from shared.demands.boards import WorkItem
from shared.demands.links import DemandLink
from shared.demands.model import Demand
from shared.demands.reconcile import parse_since, plan
from shared.errors import BadInputError, PayloadTooLargeError
from shared.settings import SettingsError, load_settings
from tests.conftest import load_fixture

STATE_MAP = (("Doing", "In progress"), ("Done", "Completed"))


def demand(**changes):
    return Demand.from_payload({**load_fixture("demands/demand-approved.json"), **changes})


def test_the_documented_payload_round_trips():
    d = demand(extraField="kept")
    assert d.priority == 2 and d.cost_center == "CC-4711" and d.extra == {"extraField": "kept"}
    assert Demand.from_payload(d.to_payload()) == d


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"sysId": None, "number": ""}, {"sysId", "number"}),
        ({"sysId": "not-a-sys-id"}, {"sysId"}),
        ({"title": 42, "priority": "urgent"}, {"title", "priority"}),
        ({"priority": 9, "url": "javascript:alert(1)"}, {"priority", "url"}),
        ({"costCenter": ["CC-1"], "description": "x" * 30_001}, {"costCenter", "description"}),
        ({"number": "DMND 0001"}, {"number"}),
    ],
)
def test_every_bad_field_is_named_at_once(changes, fields):
    with pytest.raises(BadInputError) as err:
        demand(**changes)
    assert {e["field"] for e in err.value.errors} == fields


def test_a_body_that_is_not_an_object_or_drowns_in_extra_fields_is_refused():
    with pytest.raises(BadInputError, match="JSON object"):
        Demand.from_payload([1])
    with pytest.raises(PayloadTooLargeError, match="documented fields"):
        demand(blob="x" * 5000)


def test_a_title_over_the_boards_limit_is_shortened_and_kept_whole_in_the_description():
    long = "Migrate " + "very " * 80 + "old workloads"
    d = demand(title=long)
    assert len(d.title) == 255 and d.title.endswith("…") and d.description.startswith(long)


@pytest.mark.parametrize(("raw", "expected"), [(1, 1), ("3 - Moderate", 3), ("5", 5), (None, None), ("", None)])
def test_servicenow_priorities_are_read_and_mapped_to_boards(raw, expected):
    d = demand(priority=raw)
    assert d.priority == expected
    assert mapping.boards_priority(d.priority) == (None if expected is None else min(expected, 4))


def test_the_create_patch_carries_fields_tags_and_the_hyperlink():
    ops = mapping.create_patch(
        demand(costCenter="CC;47,11"),
        record_link="https://sn.example/x",
        criteria_field="Microsoft.VSTS.Common.AcceptanceCriteria",
    )
    by_path = {op["path"]: op["value"] for op in ops}
    assert by_path["/fields/System.Tags"] == "SN:DMND0001234; CC:CC 47 11"  # ';' and ',' break tags
    assert by_path["/fields/Microsoft.VSTS.Common.AcceptanceCriteria"].count("<br>") == 1
    assert by_path["/relations/-"]["rel"] == "Hyperlink"
    assert "&lt;" in mapping.as_html("<script>")


def test_without_a_criteria_field_the_criteria_go_into_the_description():
    fields = mapping.desired_fields(demand(), criteria_field="")
    assert "Acceptance criteria" in fields[mapping.DESCRIPTION] and len(fields) == 3


def test_the_update_patch_is_empty_when_nothing_changed_and_keeps_peoples_tags():
    d = demand()
    current = {
        "rev": 4,
        "fields": {
            **mapping.desired_fields(d, criteria_field=""),
            mapping.TAGS: "SN:DMND0001234; CC:CC-4711; squad-payments",
        },
        "relations": [{"rel": "Hyperlink", "url": "https://sn.example/x"}],
    }
    assert mapping.update_patch(d, current, record_link="https://sn.example/x", criteria_field="") == []
    moved = mapping.update_patch(
        demand(costCenter="CC-9"), current, record_link="https://sn.example/x", criteria_field=""
    )
    assert [op["path"] for op in moved] == ["/fields/System.Description", "/fields/System.Tags"]
    assert moved[1]["value"] == "squad-payments; SN:DMND0001234; CC:CC-9"


def test_a_work_item_update_notification_is_read_and_mapped():
    change = mapping.work_item_change(load_fixture("devops/workitem-updated.json")["resource"])
    assert (change.work_item_id, change.rev, change.old_state, change.new_state) == (42, 3, "New", "Doing")
    assert change.changed_by == "Dana Example" and change.state_changed
    fields = mapping.state_update(change, STATE_MAP)
    assert fields["state"] == "In progress"
    assert fields["work_notes"].startswith("Azure Boards: Dana Example moved Work item 42 from New to Doing")
    assert mapping.map_state("done", STATE_MAP) == "Completed" and mapping.map_state("Review", STATE_MAP) is None
    with pytest.raises(ValueError, match="workItemId"):
        mapping.work_item_change({"fields": {}})


def test_release_build_artifacts_are_found():
    resource = load_fixture("demands/release-deployment-completed.json")["resource"]
    assert mapping.build_ids_of_release(resource) == [1207]


def test_reconcile_plans_a_create_for_an_unlinked_demand_and_a_state_fix_for_a_lagging_one():
    def row(sys_id, number, state):
        return {
            "sys_id": {"value": sys_id, "display_value": sys_id},
            "number": {"value": number, "display_value": number},
            "state": {"value": "8", "display_value": state},
        }

    rows = [row("a" * 32, "DMND1", "Approved"), row("b" * 32, "DMND2", "Approved"), row("c" * 32, "DMND3", "Completed")]
    links = {
        "b" * 32: DemandLink("b" * 32, "DMND2", 7, ""),
        "c" * 32: DemandLink("c" * 32, "DMND3", 8, ""),
    }
    items = {7: WorkItem(7, 5, {"System.State": "Done"}, []), 8: WorkItem(8, 2, {"System.State": "Done"}, [])}
    repairs = plan(rows, links, items, STATE_MAP)
    assert [(r.action, r.number, r.target_state, r.rev) for r in repairs] == [
        ("create", "DMND1", "", 0),
        ("state", "DMND2", "Completed", 5),
    ]


def test_since_takes_dates_timestamps_and_durations():
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    assert parse_since("7d", now=now) == datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert parse_since("12h", now=now) == datetime(2026, 11, 29, 0, tzinfo=UTC)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(BadInputError, match="--since"):
        parse_since("last week")


def test_demand_settings_are_parsed_and_bad_ones_named(tmp_path):
    settings = load_settings(
        {"DEMANDS_STATE_MAP": "Doing=In progress, Done = Completed", "AZURE_DEVOPS_WORK_ITEM_TYPE": "Epic"},
        local_settings=tmp_path / "absent.json",
    )
    assert settings.demands_state_map == (("Doing", "In progress"), ("Done", "Completed"))
    assert settings.azure_devops_work_item_type == "Epic" and settings.servicenow_demand_table == "dmn_demand"
    # an empty setting means its default, so '-' is how a field is switched off
    off = load_settings(
        {"SERVICENOW_DEMAND_WORK_ITEM_URL_FIELD": "-", "AZURE_DEVOPS_ACCEPTANCE_CRITERIA_FIELD": "-"},
        local_settings=tmp_path / "absent.json",
    )
    assert off.servicenow_demand_work_item_url_field == "" and off.azure_devops_acceptance_criteria_field == ""
    assert off.servicenow_demand_work_item_field == "u_azure_devops_work_item"
    with pytest.raises(SettingsError) as err:
        load_settings(
            {
                "DEMANDS_STATE_MAP": "Done",
                "SERVICENOW_DEMAND_TABLE": "dmn demand; drop",
                "DEMANDS_RECONCILE_SCHEDULE": "nightly",
            },
            local_settings=tmp_path / "absent.json",
        )
    assert {e["setting"] for e in err.value.errors} == {
        "DEMANDS_STATE_MAP",
        "SERVICENOW_DEMAND_TABLE",
        "DEMANDS_RECONCILE_SCHEDULE",
    }
