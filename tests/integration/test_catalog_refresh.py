"""Backstage refresh on `git.push`, against fake Azure DevOps and Backstage peers and Azurite."""

from __future__ import annotations

import copy
import json

import pytest

from shared.devops.hooks import dispatch, event_from_dict
from shared.errors import TransientUpstreamError
from shared.runtime import Runtime
from shared.settings import load_settings
from tests.conftest import FIXTURES, load_fixture
from tests.fixtures.demands.peers import reset_demand_state, start_peers

REPO = "278d5cd2-584d-4b63-824a-2ba458937249"
OLDER, HEAD = "a" * 40, "b" * 40
CATALOG = (FIXTURES / "demands" / "catalog-info.yaml").read_text()
HANDLER = "shared.catalog.refresh.on_git_push"


@pytest.fixture
def peers(httpserver):
    peers = start_peers(httpserver)
    peers.ado.push_commits[14] = [HEAD, OLDER]  # newest first, as Azure DevOps lists them
    peers.ado.commit_changes[OLDER] = [
        {"item": {"path": "/catalog-info.yaml", "gitObjectType": "blob"}, "changeType": "edit"},
        {"item": {"path": "/src/app.py", "gitObjectType": "blob"}, "changeType": "edit"},
    ]
    peers.ado.commit_changes[HEAD] = [
        {"item": {"path": "/services/payments/catalog-info.yaml", "gitObjectType": "blob"}, "changeType": "add"},
        {"item": {"path": "/services/payments", "gitObjectType": "tree", "isFolder": True}, "changeType": "add"},
    ]
    peers.ado.files[("/catalog-info.yaml", HEAD)] = CATALOG
    peers.ado.files[("/services/payments/catalog-info.yaml", HEAD)] = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: payments\n"
    )
    peers.backstage.entities |= {"component:default/checkout", "api:payments/checkout-api"}
    return peers


@pytest.fixture
def rt(env, peers, tmp_path):
    reset_demand_state(env["AzureWebJobsStorage"])
    return Runtime(load_settings({**env, **peers.env()}, local_settings=tmp_path / "absent.json"))


def alerts(rt):
    out = []
    while batch := rt.storage.receive("alerts", max_messages=32):
        for message in batch:
            out.append(json.loads(message.text()))
            rt.storage.ack("alerts", message)
    return out


def push_event(**resource_changes):
    doc = copy.deepcopy(load_fixture("demands/git-push.json"))
    doc["resource"].update(resource_changes)
    return event_from_dict(doc)


def test_a_push_refreshes_the_entities_of_changed_catalog_files_and_registers_a_new_one(peers, rt):
    outcome = dispatch(push_event(), rt).handled[HANDLER]
    # the edited file's two documents are refreshed by their canonical refs
    assert peers.backstage.refreshed == ["component:default/checkout", "api:payments/checkout-api"]
    # the added file is registered as a location (the Azure DevOps URL Backstage reads), once
    assert peers.backstage.locations == [
        "https://dev.azure.com/example-org/Platform%20Team/_git/checkout?path=/services/payments/catalog-info.yaml"
    ]
    assert "refreshed: component:default/checkout" in outcome and "registered" in outcome
    # the file is read at the pushed head, not at an older commit
    assert ("GET", f"/example-org/Platform Team/_apis/git/repositories/{REPO}/items") in peers.ado.requests
    assert alerts(rt) == []
    # a redelivered push registers nothing twice (Backstage answers 409) and still refreshes
    dispatch(push_event(), rt)
    assert len(peers.backstage.locations) == 1


def test_pushes_to_other_branches_and_pushes_without_catalog_files_ask_nothing_of_backstage(peers, rt):
    other = push_event(refUpdates=[{"name": "refs/heads/feature/x", "oldObjectId": OLDER, "newObjectId": HEAD}])
    assert dispatch(other, rt).handled[HANDLER] == "ignored: not a push to the default branch"
    peers.ado.commit_changes[OLDER] = [{"item": {"path": "/README.md"}, "changeType": "edit"}]
    peers.ado.commit_changes[HEAD] = []
    assert dispatch(push_event(), rt).handled[HANDLER] == "no catalog file changed"
    assert peers.backstage.refreshed == [] and peers.backstage.locations == []


def test_a_broken_catalog_file_is_reported_with_an_alert_and_not_retried(peers, rt):
    peers.ado.files[("/catalog-info.yaml", HEAD)] = "kind: Component\nmetadata:\n  description: no name\n"
    outcome = dispatch(push_event(), rt).handled[HANDLER]  # returns: the queue does not retry it
    assert "document 1 (Component): metadata.name is missing" in outcome
    assert peers.backstage.locations  # the other file of the push still went through
    [alert] = alerts(rt)
    assert "catalog refresh failed for checkout" in alert["alert"]["title"]


def test_refused_backstage_token_is_reported_once_not_retried(peers, rt):
    peers.backstage.token = "rotated-token"
    outcome = dispatch(push_event(), rt).handled[HANDLER]
    assert "BACKSTAGE_TOKEN" in outcome
    assert len(alerts(rt)) == 1


def test_backstage_unavailable_is_left_to_the_queue_for_a_bounded_retry(peers, rt):
    peers.backstage.fail("POST", "/api/catalog/refresh$", 503, headers={"Retry-After": "5"})
    with pytest.raises(TransientUpstreamError) as err:
        dispatch(push_event(), rt)
    assert err.value.retry_after == 5


def test_a_push_whose_commit_listing_is_empty_falls_back_to_the_payloads_commits(peers, rt):
    peers.ado.push_commits.clear()
    dispatch(push_event(), rt)
    assert "component:default/checkout" in peers.backstage.refreshed


def test_no_backstage_configured_means_nothing_is_asked(peers, env, tmp_path):
    settings = load_settings({**env, **peers.env(), "BACKSTAGE_URL": ""}, local_settings=tmp_path / "absent.json")
    outcome = dispatch(push_event(), Runtime(settings)).handled[HANDLER]
    assert outcome == "ignored: BACKSTAGE_URL is not set" and peers.ado.requests == []
