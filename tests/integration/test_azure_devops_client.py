"""The shared Azure DevOps REST client against a fake peer that answers as Azure DevOps does."""

from __future__ import annotations

import base64

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from shared.adapters.azure_devops import API_VERSION, AzureDevOpsClient
from shared.errors import SettingsError, TransientUpstreamError, UpstreamAuthError, UpstreamError


@pytest.fixture
def client(httpserver: HTTPServer) -> AzureDevOpsClient:
    return AzureDevOpsClient(httpserver.url_for("/example-org"), "Platform Team", pat="pat-for-tests")


def test_pat_goes_as_basic_auth_with_api_version_and_an_encoded_project(httpserver, client):
    expected = "Basic " + base64.b64encode(b":pat-for-tests").decode()
    httpserver.expect_request(
        "/example-org/Platform Team/_apis/wit/workitems/42",  # the peer sees the decoded path
        headers={"Authorization": expected},
        query_string={"api-version": API_VERSION},
    ).respond_with_json({"id": 42, "fields": {"System.State": "Doing"}})
    body = client.request("GET", client.project_path("_apis/wit/workitems/42"))
    assert body["fields"]["System.State"] == "Doing"


def test_the_sign_in_page_for_a_bad_pat_is_an_auth_error_not_data(httpserver, client):
    httpserver.expect_request("/example-org/_apis/projects").respond_with_data(
        "<html>Sign in</html>", status=203, content_type="text/html"
    )
    with pytest.raises(UpstreamAuthError, match="203"):
        client.request("GET", "/_apis/projects")


def test_throttling_carries_retry_after(httpserver, client):
    httpserver.expect_request("/example-org/_apis/projects").respond_with_response(
        Response("", status=429, headers={"Retry-After": "17"})
    )
    with pytest.raises(TransientUpstreamError) as err:
        client.request("GET", "/_apis/projects")
    assert err.value.retry_after == 17


def test_a_tf_error_message_is_kept(httpserver, client):
    httpserver.expect_request("/example-org/_apis/wit/workitems/9").respond_with_json(
        {
            "message": "TF401232: Work item 9 does not exist, or you do not have permissions to read it.",
            "typeKey": "WorkItemUnauthorizedAccessException",
        },
        status=404,
    )
    with pytest.raises(UpstreamError, match="TF401232"):
        client.request("GET", "/_apis/wit/workitems/9")


def test_unconfigured_organization_and_project_are_named():
    with pytest.raises(SettingsError, match="AZURE_DEVOPS_ORG_URL"):
        AzureDevOpsClient("")
    with pytest.raises(SettingsError, match="AZURE_DEVOPS_PROJECT"):
        AzureDevOpsClient("http://127.0.0.1:1/org").project_path("_apis/x")
