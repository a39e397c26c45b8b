"""Every documented export variant through `costs ingest --json`, on the embedded warehouse.

Each fixture in tests/fixtures/costs/variants is written from the documented column set of its variant (our own
rows, made-up ids). The contract: `cost_by_currency` equals the file's own usage total, per currency, computed
here independently of the loader (FOCUS: ChargeCategory=Usage minus unused commitment, summing EffectiveCost;
usage details: ChargeType=Usage, summing the cost column)."""

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from shared.cli.__main__ import main

VARIANTS = Path(__file__).resolve().parents[1] / "fixtures" / "costs" / "variants"
R2_RUN = VARIANTS / "focus-1.0r2-azure-run"


def own_usage_total(path: Path) -> dict[str, float]:
    """The export's own usage total per currency, by the documented rule of its schema."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    columns = {c.lower(): c for c in frame.columns}
    if "effectivecost" in columns:
        status = frame[columns["commitmentdiscountstatus"]] if "commitmentdiscountstatus" in columns else ""
        usage = frame[(frame["ChargeCategory"] == "Usage") & (status != "Unused")]
        cost, currency = "EffectiveCost", "BillingCurrency"
    else:
        cost = next(columns[c] for c in ("costinbillingcurrency", "cost", "pretaxcost") if c in columns)
        currency = next(columns[c] for c in ("billingcurrency", "billingcurrencycode", "currency") if c in columns)
        usage = frame[frame[columns["chargetype"]] == "Usage"] if "chargetype" in columns else frame
    return {
        str(k): round(float(v), 6)
        for k, v in usage.groupby(currency)[cost].apply(lambda s: s.astype(float).sum()).items()
    }


@pytest.fixture
def cli(base_env, monkeypatch, capsys, tmp_path):
    """`python -m shared.cli costs ingest --json ...` in-process, against this test's own warehouse."""
    for key, value in base_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no local.settings.json of the checkout

    def run(*paths: Path) -> list[dict]:
        capsys.readouterr()
        assert main(["costs", "ingest", "--json", *map(str, paths)]) == 0
        return json.loads(capsys.readouterr().out)

    return run


def _warehouse_rows(base_env, sql):
    from shared.runtime import Runtime
    from shared.settings import load_settings

    runtime = Runtime(load_settings(base_env, local_settings=Path("/nonexistent")))
    with runtime.warehouse.session() as wh:
        return wh.query(sql)


# file, schema, usage total per currency (written out, and checked against the file's own total too),
# rows not loaded as usage by reason, providers
CASES = [
    ("ea-costinbillingcurrency-actual.csv", "usage-details-ea", {"EUR": 10.86}, {"Purchase": 1}, ["azure"]),
    ("ea-cost-actual.csv", "usage-details-ea-cost", {"USD": 15.3333}, {"Refund": 1}, ["azure"]),
    ("ea-cost-amortized.csv", "usage-details-ea-cost", {"USD": 19.2}, {"UnusedReservation": 1}, ["azure"]),
    ("mca-actual.csv", "usage-details-mca", {"GBP": 7.2}, {"Purchase": 1, "Tax": 1}, ["azure"]),
    ("mca-amortized.csv", "usage-details-mca", {"GBP": 8.4}, {"UnusedSavingsPlan": 1}, ["azure"]),
    ("payg-mosp.csv", "usage-details-payg", {"USD": 2.8668}, {}, ["azure"]),
    ("focus-1.0-azure.csv", "focus-1.0", {"USD": 27.25}, {"Purchase": 1, "Usage (unused commitment)": 1}, ["azure"]),
    ("focus-1.1-azure.csv", "focus-1.1", {"EUR": 27.25}, {"Purchase": 1, "Usage (unused commitment)": 1}, ["azure"]),
    (
        "focus-1.2-azure-two-currencies.csv",
        "focus-1.2",
        {"EUR": 27.25, "USD": 27.25},
        {"Purchase": 2, "Usage (unused commitment)": 2},
        ["azure"],
    ),
    ("focus-1.0-aws.csv", "focus-1.0", {"USD": 15.3}, {"Credit": 1, "Tax": 1}, ["aws"]),
    ("focus-1.2-aws.csv", "focus-1.2", {"USD": 15.3}, {"Credit": 1, "Tax": 1}, ["aws"]),
    ("focus-1.0-gcp.csv", "focus-1.0", {"EUR": 8.83}, {"Credit": 1}, ["gcp"]),
    ("focus-1.0-oci.csv.gz", "focus-1.0", {"GBP": 15.59}, {}, ["oci"]),
    ("focus-1.0-negative-correction.csv", "focus-1.0", {"USD": -5.0}, {"Refund": 1}, ["azure"]),
]


@pytest.mark.parametrize(("name", "schema", "total", "excluded", "providers"), CASES, ids=[c[0] for c in CASES])
def test_every_export_variant_loads_and_reconciles_to_its_own_usage_total(
    cli, name, schema, total, excluded, providers
):
    path = VARIANTS / name
    assert own_usage_total(path) == total  # the fixture says what the test claims
    [run] = cli(path)
    assert run["status"] == "loaded" and run["schema"] == schema
    assert run["cost_by_currency"] == total
    assert run["excluded"] == excluded and run["providers"] == providers
    assert run["rows_read"] == len(pd.read_csv(path, dtype=str)) and run["rows"] > 0
    assert run["period"] == "2026-11-01..2026-11-21" or run["period"].startswith("2026-11-")


def test_azure_focus_1_0r2_run_with_its_manifest(cli):
    [run] = cli(R2_RUN)
    assert (run["status"], run["schema"], run["period"]) == ("loaded", "focus-1.0r2", "2026-11-01..2026-11-30")
    assert run["cost_by_currency"] == own_usage_total(next(R2_RUN.rglob("part_0_0001.csv"))) == {"USD": 27.25}
    assert run["corrections"] == 1 and run["negative_usage_rows"] == 1
    [again] = cli(R2_RUN)
    # a run loaded before is not read again, and still reports what it loaded
    assert again["status"] == "already_loaded" and again["cost_by_currency"] == {"USD": 27.25}


def test_identifiers_have_one_shape_per_source_and_unattributed_usage_keeps_its_account(cli, base_env):
    cli(VARIANTS / "focus-1.0-azure.csv")
    rows = _warehouse_rows(
        base_env, "SELECT DISTINCT RESOURCE_ID, SUBSCRIPTION_ID, PROVIDER FROM COST_DAILY WHERE IS_USAGE"
    )
    subs = {r["SUBSCRIPTION_ID"] for r in rows}
    # FOCUS writes /subscriptions/<guid> in SubAccountId; usage details and the Query API the bare guid
    assert subs == {"11111111-2222-4333-8444-555555555510"}
    ids = {r["RESOURCE_ID"] for r in rows}
    assert "/subscriptions/11111111-2222-4333-8444-555555555510/unattributed/azure-support" in ids
    assert not any(i in ("", "null") or "//subscriptions" in i for i in ids)


def test_aws_arns_keep_their_case_null_resource_ids_become_unattributed_and_user_tags_route(cli, base_env):
    cli(VARIANTS / "focus-1.0-aws.csv")
    rows = _warehouse_rows(
        base_env, "SELECT RESOURCE_ID, OWNER, SUM(COST) AS C FROM COST_DAILY WHERE IS_USAGE GROUP BY RESOURCE_ID, OWNER"
    )
    by_id = {r["RESOURCE_ID"]: (r["OWNER"], round(float(r["C"]), 2)) for r in rows}
    assert by_id["arn:aws:lambda:us-east-1:123456789012:function:OrderHandler"] == ("squad-checkout", 5.25)
    # the negative correction is netted into its day, not rejected
    assert by_id["arn:aws:ec2:us-east-1:123456789012:instance/i-0abc123def4567890"] == ("squad-checkout", 9.0)
    assert by_id["aws:123456789012/unattributed/aws-support-business"] == ("", 1.05)


def test_gcp_key_value_labels_and_oci_namespaced_tags_name_the_owner(cli, base_env, tmp_path):
    cli(VARIANTS / "focus-1.0-gcp.csv")
    rows = _warehouse_rows(base_env, "SELECT DISTINCT RESOURCE_ID, OWNER, ENVIRONMENT, PROVIDER FROM COST_DAILY")
    web = next(r for r in rows if r["RESOURCE_ID"].endswith("instances/Web-1"))
    assert (web["OWNER"], web["ENVIRONMENT"], web["PROVIDER"]) == ("squad-gcp", "prod", "gcp")
    cli(VARIANTS / "focus-1.0-oci.csv.gz")
    rows = _warehouse_rows(
        base_env, "SELECT DISTINCT RESOURCE_ID, OWNER, PROVIDER FROM COST_DAILY WHERE PROVIDER = 'oci'"
    )
    db = next(r for r in rows if "autonomousdatabase" in r["RESOURCE_ID"])
    assert db["OWNER"] == "squad-db"


def test_the_same_export_as_parquet_reconciles_like_the_csv(cli, tmp_path):
    frame = pd.read_csv(VARIANTS / "focus-1.2-aws.csv", dtype=str, keep_default_na=False)
    frame["EffectiveCost"] = frame["EffectiveCost"].astype(float)  # typed columns, as real parquet exports have
    frame["ChargePeriodStart"] = pd.to_datetime(frame["ChargePeriodStart"])
    target = tmp_path / "aws" / "part-00001.snappy.parquet"
    target.parent.mkdir()
    frame.to_parquet(target)
    [run] = cli(target)
    assert run["status"] == "loaded" and run["cost_by_currency"] == {"USD": 15.3}


def test_a_broken_file_in_a_run_names_file_line_and_column_and_loads_nothing(cli, base_env, tmp_path, capsys):
    good = (VARIANTS / "focus-1.0-azure.csv").read_text().splitlines()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "part_1.csv").write_text("\n".join(good) + "\n")
    bad = good[:2] + [good[2].replace(",12.50,", ",twelve,")]
    (folder / "part_2.csv").write_text("\n".join(bad) + "\n")
    code = main(["costs", "ingest", "--json", str(folder)])
    err = capsys.readouterr().err
    assert code != 0 and "part_2.csv, line 3" in err and "EffectiveCost" in err and "'twelve' is not a number" in err
    assert _warehouse_rows(base_env, "SELECT COUNT(*) AS N FROM COST_DAILY")[0]["N"] == 0
    assert _warehouse_rows(base_env, "SELECT COUNT(*) AS N FROM COST_DAILY_STAGE")[0]["N"] == 0
