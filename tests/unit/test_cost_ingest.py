"""Parsing Cost Management exports: both schemas, tags, non-usage rows, and bad input named by file and line."""

import gzip
import io
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from shared.costs.ingest import (
    CostExportError,
    ExportFile,
    ExportRun,
    TagKeys,
    detect_schema,
    locate,
    manifest_blob_names,
    parse_manifest,
    parse_run,
    parse_tags,
    query_result_frame,
    run_from_manifest,
)

COSTS = Path(__file__).resolve().parents[1] / "fixtures" / "costs"
FOCUS_RUN = COSTS / "cost-export-focus" / "20261101-20261130" / "6f2c1a9e-0b7d-4d3e-9a51-0c8e2b4f7a10"
AKS = "/subscriptions/3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11/resourcegroups/rg-payments-prod/providers/microsoft.containerservice/managedclusters/aks-cluster-prod"


def _run(*paths: Path, start=None, end=None) -> ExportRun:
    return ExportRun("run-1", "local:test", start, end, tuple(ExportFile(p.name, p.read_bytes()) for p in paths))


def _focus_run() -> ExportRun:
    manifest = parse_manifest("manifest.json", (FOCUS_RUN / "manifest.json").read_bytes())
    files = [ExportFile(n, (FOCUS_RUN / Path(n).name).read_bytes()) for n in manifest_blob_names(manifest)]
    blob = "focus/focus-daily/20261101-20261130/6f2c1a9e-0b7d-4d3e-9a51-0c8e2b4f7a10/manifest.json"
    return run_from_manifest(blob, manifest, files)


def test_focus_export_run_is_read_with_its_period_source_and_amortized_cost():
    run = _focus_run()
    assert run.run_id == "6f2c1a9e-0b7d-4d3e-9a51-0c8e2b4f7a10"
    assert (run.period_start, run.period_end) == (date(2026, 11, 1), date(2026, 11, 30))
    assert run.source_key.endswith("/providers/microsoft.costmanagement/exports/focus-daily")
    parsed = parse_run(run)
    assert parsed.schema == "focus-1.0r2" and parsed.rows_read == 6  # the manifest's dataVersion
    usage = parsed.frame[parsed.frame["IS_USAGE"]]
    # EffectiveCost (amortized), not BilledCost: the reserved VM costs 18.31, billed 24.00
    vm = usage[usage["RESOURCE_ID"].str.endswith("vm-etl-dev-01")].iloc[0]
    assert (vm["COST"], vm["BILLED_COST"], vm["OWNER"], vm["ENVIRONMENT"]) == (18.31, 24.0, "squad-data", "dev")
    aks = usage[usage["RESOURCE_ID"] == AKS].sort_values("USAGE_DATE")
    assert list(aks["COST"]) == [41.22, 39.81]
    assert (aks.iloc[0]["OWNER"], aks.iloc[0]["COST_CENTER"], aks.iloc[0]["ENVIRONMENT"]) == (
        "squad-payments",
        "CC-1042",
        "prod",
    )
    assert round(parsed.usage_cost, 2) == 105.37


def test_purchase_rows_are_kept_but_never_count_as_usage():
    parsed = parse_run(_focus_run())
    purchase = parsed.frame[parsed.frame["CHARGE_CATEGORY"] == "Purchase"]
    assert len(purchase) == 1 and not purchase.iloc[0]["IS_USAGE"] and purchase.iloc[0]["BILLED_COST"] == 8760.0


def test_usage_details_with_us_dates_and_tags_without_braces_match_the_focus_series():
    parsed = parse_run(_run(COSTS / "usage-details-amortized.csv"))
    assert parsed.schema == "usage-details-ea"
    frame = parsed.frame
    assert set(frame["USAGE_DATE"]) == {date(2026, 11, 20)}
    aks = frame[frame["RESOURCE_ID"] == AKS].iloc[0]  # same lower-cased id as in FOCUS
    assert (aks["OWNER"], aks["COST_CENTER"], aks["COST"]) == ("squad-payments", "CC-1042", 41.22)
    unused = frame[frame["CHARGE_CATEGORY"] == "UnusedReservation"].iloc[0]
    assert not unused["IS_USAGE"] and unused["COST"] == 5.69


def test_focus_1_2_unused_commitment_and_refunds_are_not_usage_and_tag_keys_are_case_insensitive():
    parsed = parse_run(_run(COSTS / "focus-1.2-refund.csv"), TagKeys(owner=("owner", "squad")))
    assert parsed.schema == "focus-1.2"
    usage = parsed.frame[parsed.frame["IS_USAGE"]]
    assert len(usage) == 1
    assert (usage.iloc[0]["OWNER"], usage.iloc[0]["COST_CENTER"], usage.iloc[0]["ENVIRONMENT"]) == (
        "squad-a",
        "CC-7",
        "prod",
    )
    other = parsed.frame[~parsed.frame["IS_USAGE"]].set_index("CHARGE_CATEGORY")["COST"]
    assert other["Refund"] == -120.0  # a refund may be negative
    assert other["Usage (unused commitment)"] == 4.5


def test_configured_tag_keys_decide_the_owner():
    parsed = parse_run(_run(COSTS / "focus-1.2-refund.csv"), TagKeys(owner=("team",)))
    assert parsed.frame[parsed.frame["IS_USAGE"]].iloc[0]["OWNER"] == ""


def test_gzip_and_parquet_parts_read_like_csv():
    csv_bytes = (FOCUS_RUN / "part_0_0001.csv").read_bytes()
    buffer = io.BytesIO()
    pd.read_csv(io.BytesIO(csv_bytes), dtype=str, keep_default_na=False).to_parquet(buffer)
    runs = [
        ExportRun("gz", "s", None, None, (ExportFile("part_0_0001.csv.gz", gzip.compress(csv_bytes)),)),
        ExportRun("pq", "s", None, None, (ExportFile("part_0_0001.parquet", buffer.getvalue()),)),
    ]
    for run in runs:
        assert round(parse_run(run).usage_cost, 2) == 105.37


@pytest.mark.parametrize(
    ("name", "line", "words"),
    [
        ("non-numeric-cost.csv", 3, "'two dollars' is not a number"),
        ("dates-out-of-order.csv", 2, "dates out of order"),
        ("malformed.csv", 3, "malformed CSV"),
        ("unknown-schema.csv", 1, "unknown schema"),
    ],
)
def test_bad_export_files_are_rejected_naming_file_line_and_problem(name, line, words):
    with pytest.raises(CostExportError) as caught:
        parse_run(_run(COSTS / "bad" / name))
    problems = caught.value.errors
    assert problems[0]["file"] == name and problems[0]["line"] == line, problems
    assert words in problems[0]["problem"]
    assert name in caught.value.detail and f"line {line}" in caught.value.detail


def test_negative_usage_and_refunds_are_real_data_netted_and_counted_never_rejected():
    parsed = parse_run(_run(COSTS / "variants" / "focus-1.0-negative-correction.csv"))
    assert parsed.report.negative_usage_rows == 1 and parsed.report.excluded == {"Refund": 1}
    assert parsed.cost_by_currency == {"USD": -5.0}
    assert any("negative cost" in w for w in parsed.warnings)


def test_usage_outside_the_export_period_is_rejected():
    run = _run(COSTS / "usage-details-amortized.csv", start=date(2026, 12, 1), end=date(2026, 12, 31))
    with pytest.raises(CostExportError, match="outside the export period"):
        parse_run(run)


def test_manifest_row_count_must_match_the_files():
    run = _focus_run()
    short = ExportRun(run.run_id, run.source_key, run.period_start, run.period_end, run.files, expected_rows=7)
    with pytest.raises(CostExportError, match="manifest says 7 data rows, the files have 6"):
        parse_run(short)


def test_broken_manifest_is_named():
    with pytest.raises(CostExportError, match="not valid JSON"):
        parse_manifest("focus/x/manifest.json", b"{not json")
    with pytest.raises(CostExportError, match="runInfo.runId"):
        parse_manifest("m.json", b'{"blobs": []}')


def test_export_layout_and_schema_detection():
    where = locate("focus/focus-daily/20261101-20261130/run-7/part_0_0001.csv")
    assert (where.export_path, where.period_start, where.run_id) == ("focus/focus-daily", date(2026, 11, 1), "run-7")
    assert locate("somewhere/else.csv") is None
    assert detect_schema(["Date", "CostInBillingCurrency", "ChargeType"]) == "usage-details-ea"
    assert detect_schema(["Date", "Cost", "BillingCurrency", "ResourceId"]) == "usage-details-ea-cost"
    assert detect_schema(["date", "costInBillingCurrency", "resourceId"]) == "usage-details-mca"
    assert detect_schema(["UsageDateTime", "PreTaxCost", "InstanceId", "Currency"]) == "usage-details-payg"
    assert detect_schema(["EffectiveCost", "ChargePeriodStart", "ChargeCategory", "ServiceSubcategory"]) == "focus-1.1"
    assert detect_schema(["cost", "day"]) is None
    assert parse_tags('"owner": "a","env": "prod"') == {"owner": "a", "env": "prod"}
    assert parse_tags("{broken") is None


def test_query_api_rows_become_daily_usage_rows():
    columns = [
        {"name": "Cost", "type": "Number"},
        {"name": "UsageDate", "type": "Number"},
        {"name": "ResourceId", "type": "String"},
        {"name": "TagKey", "type": "String"},
        {"name": "TagValue", "type": "String"},
        {"name": "Currency", "type": "String"},
    ]
    rows = [
        [12.5, 20261120, AKS.upper(), "owner", "Squad-Payments", "USD"],
        [3.0, 20261120, AKS, "", "", "USD"],
    ]
    frame = query_result_frame(columns, rows, "/subscriptions/3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11", "owner")
    assert len(frame) == 2 and round(frame["COST"].sum(), 2) == 15.5
    assert set(frame["RESOURCE_ID"]) == {AKS} and "squad-payments" in set(frame["OWNER"])
    with pytest.raises(CostExportError, match="no numeric cost"):
        query_result_frame(columns, [["x", 20261120, AKS, "", "", "USD"]], "/subscriptions/s", "owner")


def test_streamed_sources_read_like_bytes_parquet_spooled_and_gzip_decompressed_as_a_stream():
    csv_bytes = (FOCUS_RUN / "part_0_0001.csv").read_bytes()
    buffer = io.BytesIO()
    pd.read_csv(io.BytesIO(csv_bytes), dtype=str, keep_default_na=False).to_parquet(buffer)
    parquet = buffer.getvalue()
    files = (
        ExportFile("blob/part_0_0001.parquet", opener=lambda: io.BytesIO(parquet)),
        ExportFile("blob/part_0_0002.csv.gz", opener=lambda: io.BytesIO(gzip.compress(csv_bytes))),
    )
    parsed = parse_run(ExportRun("blob", "s", None, None, files))
    assert parsed.rows_read == 12 and parsed.cost_by_currency == {"USD": round(2 * 105.37, 6)}


def test_a_corrupt_gzip_or_a_file_that_is_not_utf8_is_named():
    good = (FOCUS_RUN / "part_0_0001.csv").read_bytes()
    broken = gzip.compress(good)[:-30] + b"\x00" * 30
    with pytest.raises(CostExportError, match="part.csv.gz: corrupt gzip file"):
        parse_run(ExportRun("r", "s", None, None, (ExportFile("part.csv.gz", broken),)))
    latin = good.replace(b"squad-payments", "squad-p\u00e4yments".encode("latin-1"))
    with pytest.raises(CostExportError, match="not UTF-8"):
        parse_run(ExportRun("r", "s", None, None, (ExportFile("part.csv", latin),)))
