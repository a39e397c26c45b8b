"""DORA, pure: the JSON contracts, the platform's rule computed by hand, priority rules, levels, mapping."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import datetime

import pytest

from shared.dora.azure_pipelines import deployment_from_event
from shared.dora.metrics import merge_problem, parse_window, reference_failed_deploys, reference_metrics
from shared.dora.model import parse_deployments, parse_instant, parse_problems
from shared.dora.problems import parse_problem_payload
from shared.dora.rules import (
    DEFAULT_PRIORITY_RULES,
    badges_for,
    grade,
    overall_level,
    parse_priority_rules,
    priority_for,
)
from shared.dora.services import (
    ServiceEntry,
    ServiceMap,
    from_backstage_entities,
    parse_service_map_csv,
    require_entity_ref,
)
from shared.errors import BadInputError
from tests.conftest import load_fixture

PROD = ("production", "prod")
RULES = parse_priority_rules(DEFAULT_PRIORITY_RULES)


def _resolved(deploys, problems, mapping):
    """What the warehouse stores: names resolved to service keys, problem messages folded per id."""
    deploys_by_id = {}
    for d in deploys:
        deploys_by_id[d.id] = replace(d, service=mapping.resolve(d.service))
    folded = {}
    for p in problems:
        p = replace(p, services=tuple(dict.fromkeys(mapping.resolve(s) for s in p.services)))
        folded[p.id] = merge_problem(folded.get(p.id), p)
    return list(deploys_by_id.values()), list(folded.values())


def _handcomputed():
    doc = load_fixture("dora/handcomputed.json")
    mapping = ServiceMap.of(
        ServiceEntry(e["service"], e["squad"], e["component"], tuple(e["aliases"])) for e in doc["serviceMap"]
    )
    return doc, mapping, parse_deployments(doc["deployments"]), parse_problems(doc["problems"])


# -- the contract --


def test_timestamps_with_different_offsets_are_the_same_instant():
    assert (
        parse_instant("2026-03-03T12:00:00+02:00") == parse_instant("2026-03-03T10:00:00Z") == datetime(2026, 3, 3, 10)
    )
    assert parse_instant("2026-03-02T10:00:00.1234567Z") == datetime(2026, 3, 2, 10, 0, 0, 123456)
    for bad in ("2026-03-03", "2026-03-03T10:00:00", "yesterday", 17):
        with pytest.raises(ValueError):
            parse_instant(bad)


def test_a_bad_batch_is_refused_whole_naming_each_item_and_field():
    good = {
        "id": "d1",
        "service": "s",
        "environment": "prod",
        "result": "succeeded",
        "finishedAt": "2026-03-02T10:00:00Z",
    }
    batch = [
        good,
        {**good, "id": "", "result": "done"},
        {**good, "finishedAt": "2026-03-02T10:00:00"},
        {**good, "startedAt": "2026-03-02T11:00:00Z"},
        "not an object",
    ]
    with pytest.raises(BadInputError) as caught:
        parse_deployments(batch)
    fields = {e["field"] for e in caught.value.errors}
    assert fields == {"items[1].id", "items[1].result", "items[2].finishedAt", "items[3].startedAt", "items[4]"}
    assert "has no offset" in caught.value.detail


def test_single_objects_name_fields_without_an_index_and_extra_fields_are_kept():
    with pytest.raises(BadInputError, match=r"services: required"):
        parse_problems({"id": "p", "priority": "P1", "state": "open", "startedAt": "2026-03-02T10:00:00Z"})
    [d] = parse_deployments(
        {
            "id": "d",
            "service": "s",
            "environment": "prod",
            "result": "Succeeded",
            "finishedAt": "2026-03-02T10:00:00Z",
            "team": "blue",
        }  # fmt: skip
    )
    assert d.result == "succeeded" and d.extra == {"team": "blue"} and d.to_json()["team"] == "blue"


def test_empty_and_non_object_bodies_are_refused():
    for body in ([], "x", 3):
        with pytest.raises(BadInputError):
            parse_deployments(body)


# -- the platform's rule, by hand --


def test_handcomputed_week_matches_the_reference():
    doc, mapping, deploys, problems = _handcomputed()
    stored_deploys, stored_problems = _resolved(deploys, problems, mapping)
    window = parse_window(doc["window"]["from"], doc["window"]["to"])
    got = reference_metrics(stored_deploys, stored_problems, PROD, window)
    assert got == doc["expected"]
    assert reference_failed_deploys(stored_deploys, stored_problems, PROD) == [tuple(p) for p in doc["expectedFailed"]]


def test_problem_messages_fold_the_same_in_any_order():
    doc, mapping, _, problems = _handcomputed()
    messages = [p for p in problems if p.id in ("pA", "pB", "pF")]
    outcomes = set()
    for order in itertools.permutations(messages):
        _, folded = _resolved([], list(order), mapping)
        outcomes.add(tuple(sorted((p.id, p.state, p.resolved_at, tuple(sorted(p.services))) for p in folded)))
    assert len(outcomes) == 1
    folded = {p[0]: p for p in next(iter(outcomes))}
    assert folded["pA"][1] == "resolved"  # a later `open` does not reopen it
    assert folded["pF"][3] == ("checkout", "search")


def test_the_60_minute_window_is_inclusive_and_compares_instants():
    deploy = parse_deployments(
        {
            "id": "d",
            "service": "s",
            "environment": "prod",
            "result": "succeeded",
            "finishedAt": "2026-03-02T12:00:00+02:00",
        }
    )

    def failed(started: str) -> bool:
        [p] = parse_problems({"id": "p", "services": ["s"], "priority": "P1", "state": "open", "startedAt": started})
        return bool(reference_failed_deploys(deploy, [p], PROD))

    assert failed("2026-03-02T10:00:00Z")  # the same instant as finishedAt
    assert failed("2026-03-02T11:00:00Z")  # exactly 60 minutes
    assert failed("2026-03-02T12:00:00+01:00")  # 60 minutes, other offset
    assert not failed("2026-03-02T11:00:00.001Z")
    assert not failed("2026-03-02T09:59:59Z")  # before the deployment finished


def test_no_deployments_means_no_rate_and_no_level():
    [p] = parse_problems(
        {"id": "p", "services": ["s"], "priority": "P1", "state": "open", "startedAt": "2026-03-02T10:00:00Z"}
    )
    doc = reference_metrics([], [p], PROD, parse_window("2026-03-01", "2026-03-07"))
    [entry] = doc["services"]
    assert entry["deployments"] == 0 and entry["changeFailureRate"] is None and entry["level"] is None


def test_window_bounds_dates_inclusive_and_refuses_nonsense():
    w = parse_window("2026-03-02", "2026-03-08")
    assert w.contains(datetime(2026, 3, 8, 23, 59, 59)) and not w.contains(datetime(2026, 3, 9))
    assert w.days() == 7
    for a, b in (("2026-03-09", "2026-03-08"), ("03/02/2026", None), ("2026-03-02T10:00:00", None)):
        with pytest.raises(BadInputError):
            parse_window(a, b)


# -- levels, priority, badges --


def test_levels_follow_the_dora_bands():
    assert grade("deploymentsPerDay", 3) == "elite" and grade("deploymentsPerDay", 0.2) == "high"
    assert grade("deploymentsPerDay", 0.05) == "medium" and grade("deploymentsPerDay", 0.01) == "low"
    assert grade("leadTimeHours", 23) == "elite" and grade("leadTimeHours", 100) == "high"
    assert grade("changeFailureRate", 0.05) == "elite" and grade("changeFailureRate", 0.5) == "low"
    assert grade("timeToRestoreHours", 0.5) == "elite" and grade("timeToRestoreHours", 24) == "medium"
    assert overall_level(10, 2.0, 5.0, 0.0, None) == "elite"
    assert overall_level(10, 2.0, 5.0, 0.25, 0.5) == "medium"


def test_priority_rule_is_configurable_first_match_wins():
    facts = {"severity": ["AVAILABILITY"], "impact": ["SERVICES"], "env": ["prod"], "source": ["dynatrace"]}
    assert priority_for(facts, RULES, PROD) == "P1"
    assert priority_for({**facts, "severity": ["PERFORMANCE"]}, RULES, PROD) == "P2"
    assert priority_for({**facts, "env": ["staging"]}, RULES, PROD) == "P3"
    custom = parse_priority_rules("title=checkout -> P1; impact=APPLICATION -> P2")
    assert priority_for({"title": ["Checkout is down"]}, custom, PROD) == "P1"
    assert priority_for({"title": ["x"], "impact": ["INFRASTRUCTURE"]}, custom, PROD) == "P5"
    for bad in ("severity=ERROR", "colour=red -> P1", "* -> P9", ""):
        with pytest.raises(ValueError):
            parse_priority_rules(bad)


def test_badges_have_rules_from_data_we_have():
    entry = {
        "deployments": 40, "failedDeployments": 0, "changeFailureRate": 0.0, "deploymentsPerDay": 1.5,
        "leadTimeHours": {"median": 10.0}, "timeToRestoreHours": {"median": 0.5}, "unresolvedP1": 0,
        "openCostAnomalies": 0, "cost": 90.0, "previousCost": 100.0,
    }  # fmt: skip
    assert {b["id"] for b in badges_for(entry)} == {
        "cicd-master",
        "fast-lane",
        "quick-recovery",
        "safe-shipper",
        "finops-saver",
    }
    assert badges_for({"deployments": 0}) == []


# -- mapping: Azure DevOps events, Dynatrace, ServiceNow, identity --


def test_stage_event_is_a_production_deployment_with_the_run_commit():
    event = load_fixture("dora/ado-stage-completed.json")
    d = deployment_from_event(event["eventType"], event["id"], event["createdDate"], event["resource"],
                              event["resourceContainers"]["project"]["id"], PROD)  # fmt: skip
    assert d is not None
    assert d.id == "ado:6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c:run:4711:stage:Deploy_Production"
    assert (d.service, d.environment, d.result) == ("checkout-ci", "production", "succeeded")
    assert d.commit_id == "3f2b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
    assert d.commit_time == datetime(2026, 3, 2, 8, 58)  # the committer date the event carries
    assert d.finished_at == datetime(2026, 3, 2, 10, 0, 0, 123456)
    assert d.extra["repositoryId"] == "f4a3c6a1-2b7e-4d0e-8c61-0d2f3e9a1b55"


def test_the_documented_stage_sample_without_times_or_repositories():
    # shaped like the sample payload of Microsoft's service-hook events reference: no start/finish, no commit
    resource = {
        "stage": {"id": "0", "name": "Deploy_Prod", "displayName": None, "state": "completed", "result": "succeeded"},
        "run": {
            "pipeline": {"id": 2, "name": "TEST-CI"},
            "state": "completed",
            "result": "succeeded",
            "id": 2,
            "name": "2",
        },
        "pipeline": {"id": 2, "name": "TEST-CI"},
    }
    d = deployment_from_event(
        "ms.vss-pipelines.stage-state-changed-event", "e", "2019-12-13T06:10:10.186Z", resource, "p", PROD
    )
    assert d is not None and (d.environment, d.finished_at, d.commit_id) == (
        "prod",
        datetime(2019, 12, 13, 6, 10, 10, 186000),
        "",
    )
    resource["stage"]["name"] = "__default"  # a single-stage pipeline: not a deployment stage
    assert (
        deployment_from_event(
            "ms.vss-pipelines.stage-state-changed-event", "e", "2019-12-13T06:10:10Z", resource, "p", PROD
        )
        is None
    )


def test_the_documented_minimal_release_payload():
    resource = {
        "environment": {"id": 5, "releaseId": 0, "name": "Production", "status": "succeeded",
                        "modifiedOn": "2016-01-21T08:19:17.26Z", "release": {"id": 1, "name": "Release-1"}},
        "project": {"id": "p1", "name": "Fabrikam"},
    }  # fmt: skip
    d = deployment_from_event(
        "ms.vss-release.deployment-completed-event", "e", "2016-09-19T13:03:28Z", resource, "", PROD
    )
    assert d is not None and (d.id, d.environment, d.result, d.run_id) == (
        "ado:p1:release-environment:5", "production", "succeeded", "Release-1"
    )  # fmt: skip


def test_run_and_release_events_and_unfinished_ones():
    run = load_fixture("dora/ado-run-completed.json")
    d = deployment_from_event(run["eventType"], run["id"], run["createdDate"], run["resource"], "proj", PROD)
    assert d is not None and (d.id, d.environment, d.service) == ("ado:proj:run:4800", "prod", "search-deploy")
    rel = load_fixture("dora/ado-release-deployment-completed.json")
    r = deployment_from_event(rel["eventType"], rel["id"], rel["createdDate"], rel["resource"], "proj", PROD)
    assert r is not None and (r.id, r.environment, r.service) == (
        "ado:proj:release-deployment:905",
        "production",
        "payments-release",
    )
    assert r.commit_id.startswith("0c1d2e3f") and r.finished_at == datetime(2026, 3, 4, 14, 20, 30)
    running = json.loads(json.dumps(run))
    running["resource"]["run"]["state"] = "inProgress"
    assert deployment_from_event(running["eventType"], "x", "", running["resource"], "p", PROD) is None


def test_dynatrace_problem_maps_priority_services_and_times():
    [opened] = parse_problem_payload(load_fixture("dora/dynatrace-problem-open.json"), RULES, PROD)
    assert opened.id == "dynatrace:-4127553108361826291_1772445600000V2"
    assert (opened.priority, opened.state, opened.services) == ("P1", "open", ("checkout-api",))
    assert opened.started_at == datetime(2026, 3, 2, 10, 30) and opened.root_cause == "checkout-api-7d9f"
    [closed] = parse_problem_payload(load_fixture("dora/dynatrace-problem-resolved.json"), RULES, PROD)
    assert closed.state == "resolved" and closed.resolved_at == datetime(2026, 3, 2, 11)
    received = datetime(2026, 3, 2, 12, 0)
    [perf] = parse_problem_payload(
        load_fixture("dora/dynatrace-placeholders-only.json"), RULES, PROD, received_at=received
    )
    assert (perf.priority, perf.services, perf.started_at) == ("P2", ("search-api",), received)


def test_servicenow_incident_is_a_second_source_of_p1s():
    [inc] = parse_problem_payload(load_fixture("dora/servicenow-incident.json"), RULES, PROD)
    assert (inc.id, inc.priority, inc.state, inc.services) == ("servicenow:INC0012345", "P1", "resolved", ("checkout",))
    assert inc.resolved_at - inc.started_at == datetime(2026, 1, 1, 0, 40) - datetime(2026, 1, 1)


def test_unknown_problem_shapes_are_refused():
    with pytest.raises(BadInputError, match="not a problem"):
        parse_problem_payload([{"hello": "world"}], RULES, PROD)
    with pytest.raises(BadInputError, match="impactedEntities"):
        parse_problem_payload({"ProblemID": "1", "State": "OPEN"}, RULES, PROD)


def test_service_identity_from_csv_and_backstage():
    mapping = parse_service_map_csv(
        "service,squad,component,aliases\ncheckout,Payments,checkout,checkout-ci;SERVICE-1\n"
    )
    assert mapping.resolve("CHECKOUT-CI") == "checkout" and mapping.resolve("other") == "other"
    assert mapping.squad_of("service-1") == "payments"
    catalog = from_backstage_entities([
        {"kind": "Component", "metadata": {"name": "search", "annotations": {
            "dynatrace.com/dynatrace-entity-id": "SERVICE-1F2E", "dev.azure.com/project-repo": "shop/search-repo"}},
         "spec": {"owner": "group:default/discovery"}},
        {"kind": "Group", "metadata": {"name": "discovery"}},
    ])  # fmt: skip
    assert [e.service for e in catalog.entries] == ["search"]
    assert catalog.resolve("service-1f2e") == "search" and catalog.resolve("search-repo") == "search"
    assert catalog.squad_of("search") == "discovery"
    assert require_entity_ref("component:default/search") == "search"
    with pytest.raises(BadInputError):
        require_entity_ref("group:default/discovery")
