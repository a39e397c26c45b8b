"""Currencies are never summed together, and AWS/GCP FOCUS files dropped in a container load like Azure exports."""

import gzip
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.costs import store
from shared.costs.feedback import list_episodes
from shared.costs.loader import BLOB_CREATED, INGEST_QUEUE, accept_export_event, handle_export_event, ingest_paths
from shared.costs.scan import run_daily_scan
from shared.runtime import Runtime
from shared.settings import load_settings
from tests.integration.test_cost_pipeline import _alerts, _drain

END = date(2026, 10, 20)


@pytest.fixture
def cost_runtime(runtime):
    """The runtime with the cost scopes of the shared Azurite emptied (each test has its own warehouse)."""
    from shared.costs.fanout import PARTITION_QUEUE
    from shared.idempotency import TABLE

    for scope in ("cost-scan", "cost-alerts", "cost-partition", "cost-aggregates", "cost-export"):
        for row in list(runtime.storage.query(TABLE, "PartitionKey eq @pk", pk=scope)):
            runtime.storage.delete(TABLE, scope, row["RowKey"])
    for row in list(runtime.storage.query("episodes")):
        runtime.storage.delete("episodes", row["PartitionKey"], row["RowKey"])
    for queue in ("alerts", PARTITION_QUEUE, INGEST_QUEUE):
        _drain(runtime, queue)
    return runtime


VARIANTS = Path(__file__).resolve().parents[1] / "fixtures" / "costs" / "variants"


def _two_currency_export(path: Path) -> None:
    """60 quiet days of one squad's VMs: one billed in USD, one in EUR (another billing account); both
    jump from 100 to 700 a day on the last day."""
    rng = np.random.default_rng(11)
    rows = []
    for currency, sub in (
        ("USD", "00000000-0000-4000-8000-0000000000a1"),
        ("EUR", "00000000-0000-4000-8000-0000000000e1"),
    ):
        rid = f"/subscriptions/{sub}/resourcegroups/rg-a/providers/microsoft.compute/virtualmachines/vm-{currency.lower()}"
        for back in range(60):
            day = END - timedelta(days=back)
            cost = 700.0 if back == 0 else 100.0 * (1 + rng.normal(0, 0.01))
            rows.append({
                "BilledCost": round(cost, 4), "BillingCurrency": currency, "ChargeCategory": "Usage",
                "ChargePeriodEnd": f"{day + timedelta(days=1)}T00:00:00Z", "ChargePeriodStart": f"{day}T00:00:00Z",
                "EffectiveCost": round(cost, 4), "ResourceId": rid, "ResourceName": f"vm-{currency.lower()}",
                "ServiceName": "Virtual Machines", "SubAccountId": f"/subscriptions/{sub}", "SubAccountName": "sub",
                "Tags": json.dumps({"owner": "squad-a"}), "x_ResourceGroupName": "rg-a",
            })  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def test_without_a_rate_euro_series_are_not_scored_with_dollar_thresholds_and_the_scan_says_so(cost_runtime, tmp_path):
    _two_currency_export(tmp_path / "export" / "focus.csv")
    [loaded] = ingest_paths(cost_runtime, [str(tmp_path / "export")])
    # GIVEN one run in two currencies: reconciled per currency, never one sum
    assert set(loaded.as_dict()["cost_by_currency"]) == {"EUR", "USD"}
    # WHEN the scan runs with thresholds in USD and no EUR rate
    report = run_daily_scan(cost_runtime, END)
    alerts = [a for a in _alerts(cost_runtime) if a["kind"] != "cost_data_late"]
    # THEN the EUR series (the VM, its squad, subscription and service) are reported unscored; only dollars
    # are alerted, and they say USD
    assert report.unscored_currencies == {"EUR": 4}
    assert alerts and all(dict(map(tuple, a["facts"]))["Currency"] == "USD" for a in alerts)
    assert not any("vm-eur" in a["resource_id"] for a in alerts)


def test_with_an_explicit_rate_each_currency_is_its_own_series_and_alerts_name_their_currency(
    cost_runtime, env, tmp_path
):
    settings = load_settings(
        {**env, "WAREHOUSE_PATH": str(tmp_path / "wh"), "COST_CURRENCY_RATES": "EUR=1.1"},
        local_settings=tmp_path / "none.json",
    )
    runtime = Runtime(settings)
    _two_currency_export(tmp_path / "export" / "focus.csv")
    ingest_paths(runtime, [str(tmp_path / "export")])
    report = run_daily_scan(runtime, END)
    assert report.unscored_currencies == {}
    alerts = _alerts(runtime)
    eur = next(a for a in alerts if a["resource_id"].endswith("vm-eur [EUR]") or "vm-eur" in a["resource_id"])
    facts = dict(map(tuple, eur["facts"]))
    assert facts["Currency"] == "EUR" and facts["Provider"] == "Azure"
    assert "EUR " in eur["title"] and "$" not in eur["title"]
    # the squad billed in two currencies has two series, one per currency, never a sum of both
    squads = {e["series_id"] for e in list_episodes(runtime) if e["series_kind"] == "owner"}
    assert squads <= {"squad-a", "squad-a [EUR]"}
    with runtime.warehouse.session() as wh:
        series = store.daily_series(wh, "owner", END - timedelta(days=2), END)
    last = series[series["USAGE_DATE"] == END].set_index("CURRENCY")["COST"].to_dict()
    assert last == {"EUR": 700.0, "USD": 700.0}
    doc = next(e for e in list_episodes(runtime) if "vm-eur" in e["series_id"])
    assert (doc["currency"], doc["provider"]) == ("EUR", "azure")
    # and the anomaly API's view of it says so too
    from shared.approvals.anomalies import episode_view

    wire = episode_view(doc).as_wire()
    assert (wire["currency"], wire["provider"]) == ("EUR", "azure")


def test_aws_focus_files_dropped_in_a_container_load_through_blob_created_with_a_success_marker(cost_runtime):
    # GIVEN AWS CUR 2.0 FOCUS parts copied into the export container, in the manifest-less folder convention
    folder = "aws/cur-focus/20261101-20261130/run-2026-11-22"
    text = (VARIANTS / "focus-1.0-aws.csv").read_text().splitlines()
    part1 = "\n".join(text[:4]) + "\n"
    part2 = "\n".join([text[0], *text[4:]]) + "\n"
    cost_runtime.storage.put_blob("cost-exports", f"{folder}/part-00001.csv.gz", gzip.compress(part1.encode()))
    cost_runtime.storage.put_blob("cost-exports", f"{folder}/part-00002.csv", part2.encode())
    base = cost_runtime.storage._blobs.url.rstrip("/")
    _drain(cost_runtime, INGEST_QUEUE)
    # WHEN Event Grid announces each blob: the data parts are skipped, the _SUCCESS marker is queued
    assert (
        accept_export_event(cost_runtime, BLOB_CREATED, {"url": f"{base}/cost-exports/{folder}/part-00001.csv.gz"})[
            "status"
        ]
        == "skipped"
    )
    cost_runtime.storage.put_blob("cost-exports", f"{folder}/_SUCCESS", b"")
    assert (
        accept_export_event(cost_runtime, BLOB_CREATED, {"url": f"{base}/cost-exports/{folder}/_SUCCESS"})["status"]
        == "queued"
    )
    [message] = cost_runtime.storage.receive(INGEST_QUEUE, max_messages=8)
    body = json.loads(message.text())
    result = handle_export_event(cost_runtime, body["event_type"], body["data"])
    # THEN both parts are one run, reconciled to the file's own usage total, stored as AWS cost
    assert result["status"] == "loaded" and result["rows_read"] == 7
    assert result["cost_by_currency"] == {"USD": 15.3} and result["providers"] == ["aws"]
    assert result["period"] == "2026-11-01..2026-11-30"
    assert handle_export_event(cost_runtime, body["event_type"], body["data"])["status"] == "duplicate"
    with cost_runtime.warehouse.session() as wh:
        rows = wh.query("SELECT DISTINCT SOURCE_KEY, PROVIDER FROM COST_DAILY")
    assert rows == [{"SOURCE_KEY": "blob:cost-exports/aws/cur-focus", "PROVIDER": "aws"}]


def test_a_success_marker_outside_the_folder_convention_is_rejected_for_good_naming_the_convention(cost_runtime):
    cost_runtime.storage.put_blob("cost-exports", "dropped/_SUCCESS", b"")
    base = cost_runtime.storage._blobs.url.rstrip("/")
    result = handle_export_event(cost_runtime, BLOB_CREATED, {"url": f"{base}/cost-exports/dropped/_SUCCESS"})
    assert result["status"] == "rejected" and "<YYYYMMDD-YYYYMMDD>/<runId>" in result["detail"]
