"""The Cost Management Query API source against a local fake ARM (documented shape: properties.columns/rows,
nextLink paging, 429 with x-ms-ratelimit-microsoft.costmanagement-*-retry-after)."""

import json
from datetime import date

import pytest
from werkzeug import Response

from shared.adapters.cost_management import CostManagementQuery
from shared.costs.loader import pull_query_api
from shared.errors import TransientUpstreamError
from shared.settings import load_settings

SCOPE = "/subscriptions/00000000-0000-4000-8000-000000000001"
PATH = f"{SCOPE}/providers/Microsoft.CostManagement/query"
VM = f"{SCOPE}/resourceGroups/rg-a/providers/Microsoft.Compute/virtualMachines/vm-a"
COLUMNS = [
    {"name": "Cost", "type": "Number"},
    {"name": "UsageDate", "type": "Number"},
    {"name": "ResourceId", "type": "String"},
    {"name": "TagKey", "type": "String"},
    {"name": "TagValue", "type": "String"},
    {"name": "Currency", "type": "String"},
]


def _client(httpserver, tmp_path, sleeps):
    settings = load_settings(
        {"ARM_ENDPOINT": httpserver.url_for("/").rstrip("/")}, local_settings=tmp_path / "none.json"
    )
    return CostManagementQuery.from_settings(settings, sleep=sleeps.append)


def test_query_follows_next_link_and_waits_out_429_then_loads_the_rows(httpserver, tmp_path, runtime):
    calls = {"n": 0}
    second_page = httpserver.url_for("/page2")

    def first(request):
        calls["n"] += 1
        assert request.headers["Authorization"] == "Bearer local-dev-token"
        body = json.loads(request.data)
        assert body["type"] == "AmortizedCost" and body["dataset"]["granularity"] == "Daily"
        if calls["n"] == 1:  # throttled once: the longest of the documented retry-after headers wins
            return Response("{}", status=429, headers={
                "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "2",
                "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after": "7",
            })  # fmt: skip
        doc = {"properties": {"nextLink": second_page, "columns": COLUMNS,
                              "rows": [[10.5, 20261120, VM, "owner", "squad-a", "USD"]]}}  # fmt: skip
        return Response(json.dumps(doc), content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(first)
    page2 = {
        "properties": {"nextLink": None, "columns": COLUMNS, "rows": [[4.0, 20261121, VM, "owner", "squad-a", "USD"]]}
    }
    httpserver.expect_request("/page2", method="POST").respond_with_json(page2)
    sleeps: list[float] = []
    result = pull_query_api(
        runtime, SCOPE, date(2026, 11, 20), date(2026, 11, 21), query=_client(httpserver, tmp_path, sleeps)
    )
    assert sleeps == [7.0]
    assert result.outcome.status == "loaded" and result.outcome.rows == 2
    with runtime.warehouse.session() as wh:
        rows = wh.query("SELECT RESOURCE_ID, OWNER, SUM(COST) AS C FROM COST_DAILY GROUP BY RESOURCE_ID, OWNER")
    assert rows == [{"RESOURCE_ID": VM.lower(), "OWNER": "squad-a", "C": 14.5}]


def test_persistent_throttling_gives_a_transient_error_with_the_wait(httpserver, tmp_path):
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        Response("{}", status=429, headers={"x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after": "3"})
    )
    sleeps: list[float] = []
    with pytest.raises(TransientUpstreamError) as caught:
        _client(httpserver, tmp_path, sleeps).daily_costs(SCOPE, date(2026, 11, 1), date(2026, 11, 2), "owner")
    assert caught.value.retry_after == 3.0 and sleeps == [3.0, 3.0, 3.0]
