"""Pure parts of the catalog refresh: catalog file changes over a push, entity refs, the pushed branch."""

from __future__ import annotations

import pytest

from shared.catalog.entities import (
    CatalogFileError,
    FileChange,
    catalog_changes,
    default_branch_update,
    entity_refs,
    location_target,
)
from tests.conftest import FIXTURES, load_fixture


def test_entity_refs_are_backstages_canonical_lower_case_refs():
    text = (FIXTURES / "demands" / "catalog-info.yaml").read_text()
    assert entity_refs(text) == ["component:default/checkout", "api:payments/checkout-api"]
    assert entity_refs("---\n---\nkind: Group\nmetadata: {name: Squad-A}\n") == ["group:default/squad-a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Component\nmetadata: {name: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "document 1: expected a mapping"),
        ("metadata: {name: x}\n", "document 1: kind is missing"),
        ("kind: API\nmetadata: {}\n---\nkind: API\n", "document 1 (API): metadata.name is missing"),
        ("kind: API\nmetadata: {name: x, namespace: [a]}\n", "metadata.namespace must be a string"),
    ],
)
def test_a_broken_catalog_file_names_the_document_and_the_problem(text, message):
    with pytest.raises(CatalogFileError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        entity_refs(text)


def test_changes_over_a_push_are_netted_per_catalog_file():
    commits = [
        [
            {"item": {"path": "/a/catalog-info.yaml"}, "changeType": "add"},
            {"item": {"path": "/b/catalog-info.yml"}, "changeType": "edit"},
            {"item": {"path": "/c/catalog-info.yaml"}, "changeType": "add"},
            {"item": {"path": "/src/main.py"}, "changeType": "edit"},
        ],
        [
            {"item": {"path": "/a/catalog-info.yaml"}, "changeType": "edit"},
            {"item": {"path": "/b/catalog-info.yml"}, "changeType": "delete"},
            {"item": {"path": "/c/catalog-info.yaml"}, "changeType": "delete"},
            {"item": {"path": "/d/Catalog-Info.yaml"}, "changeType": "rename, edit"},
        ],
    ]
    assert catalog_changes(commits) == [
        FileChange("/a/catalog-info.yaml", "add"),  # added then edited: still new to Backstage
        FileChange("/b/catalog-info.yml", "delete"),
        FileChange("/d/Catalog-Info.yaml", "add"),  # renamed in: a new location
    ]  # /c was added and deleted within the push: nothing to do


def test_only_the_default_branch_counts_and_the_url_loses_its_user_name():
    resource = load_fixture("demands/git-push.json")["resource"]
    push = default_branch_update(resource)
    assert push is not None and push.branch == "main" and push.head == "b" * 40 and push.push_id == 14
    assert push.web_url == "https://dev.azure.com/example-org/Platform%20Team/_git/checkout"
    assert location_target(push.web_url, "/x/catalog-info.yaml").endswith("?path=/x/catalog-info.yaml")
    deleted = {**resource, "refUpdates": [{"name": "refs/heads/main", "newObjectId": "0" * 40}]}
    assert default_branch_update(deleted) is None
    tag = {**resource, "refUpdates": [{"name": "refs/tags/v1", "newObjectId": "c" * 40}]}
    assert default_branch_update(tag) is None
