"""The previous cost export parser (as shipped before issue 10), kept only as the baseline `bench_ingest` measures.

Not used by the app. Its original description follows.

Cost Management exports and Query API answers, parsed and normalised into daily cost rows (pure: bytes in, frames out).

Schemas, detected by header (case-insensitive):

* FOCUS 1.0/1.1/1.2 (`FocusCost` exports): `EffectiveCost` (amortized) is the cost, `ChargePeriodStart` the day,
  `SubAccountId` the subscription, `ServiceName` the service, `Tags` a JSON object.
* Azure usage details, actual or amortized (`ActualCost`/`AmortizedCost` exports, EA/MCA): `CostInBillingCurrency`,
  `Date` (US `MM/DD/YYYY` or ISO), `SubscriptionId`, `MeterCategory` as the service, `Tags` as JSON members
  without the braces (`"owner": "squad-a","env": "prod"`).

Only usage counts as resource usage: FOCUS `ChargeCategory=Usage` (minus unused commitment), usage-details
`ChargeType=Usage`. Purchases, refunds, unused reservations/savings plans, taxes, credits and adjustments are
kept with `IS_USAGE = False` (for reconciliation) and never scored; they may be negative (a refund), a usage
row may not. Bad input raises :class:`CostExportError` listing file, line and problem, and nothing is loaded.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from shared.alerts.routing import owner_from_tags
from shared.errors import BadInputError

SCHEMA_FOCUS = "focus"
SCHEMA_USAGE_DETAILS = "usage-details"
SCHEMA_QUERY_API = "query-api"

SERIES_BUCKETS = 4096
MAX_REPORTED_PROBLEMS = 20

# the columns of COST_DAILY a parsed run provides (SOURCE_KEY and RUN_ID are added when it is stored)
FRAME_COLUMNS = (
    "USAGE_DATE",
    "RESOURCE_ID",
    "SERIES_BUCKET",
    "SUBSCRIPTION_ID",
    "RESOURCE_GROUP",
    "SERVICE_NAME",
    "METER",
    "OWNER",
    "COST_CENTER",
    "ENVIRONMENT",
    "CHARGE_CATEGORY",
    "IS_USAGE",
    "COST",
    "BILLED_COST",
    "CURRENCY",
)
_GROUP_KEYS = [c for c in FRAME_COLUMNS if c not in ("COST", "BILLED_COST", "SERIES_BUCKET")]

_PERIOD_FOLDER = re.compile(r"^(\d{8})-(\d{8})$")


class CostExportError(BadInputError):
    """An export run cannot be loaded; `errors` lists {file, line, problem} (line 1 is the header)."""


@dataclass(frozen=True)
class TagKeys:
    """Tag keys (compared case-insensitively) naming owner squad, cost center and environment; first match wins."""

    owner: tuple[str, ...] = ("owner", "squad", "team")
    cost_center: tuple[str, ...] = ("cost-center", "costcenter", "cost_center")
    environment: tuple[str, ...] = ("env", "environment", "stage")


@dataclass(frozen=True)
class ExportFile:
    """One data file of a run: its name (blob name or path) and raw bytes (csv, csv.gz or parquet)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class ExportRun:
    """One export run to load: what it replaces (`source_key` over `period_start..period_end`) and its files."""

    run_id: str
    source_key: str
    period_start: date | None
    period_end: date | None
    files: tuple[ExportFile, ...]
    submitted_at: datetime | None = None
    export_type: str = ""
    expected_rows: int | None = None


@dataclass(frozen=True)
class ParsedRun:
    """A validated run: normalised daily rows (`FRAME_COLUMNS`) and what was read."""

    run: ExportRun
    schema: str
    frame: pd.DataFrame
    rows_read: int
    period_start: date
    period_end: date
    warnings: tuple[str, ...] = ()

    @property
    def usage_cost(self) -> float:
        return float(self.frame.loc[self.frame["IS_USAGE"], "COST"].sum()) if len(self.frame) else 0.0


@dataclass
class _Problems:
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, file: str, line: int | None, problem: str) -> None:
        self.items.append({"file": file, "line": line, "problem": problem})

    def raise_if_any(self, what: str) -> None:
        if not self.items:
            return
        shown = "; ".join(
            f"{p['file']}" + (f", line {p['line']}" if p["line"] is not None else "") + f": {p['problem']}"
            for p in self.items[:5]
        )
        more = f" (and {len(self.items) - 5} more)" if len(self.items) > 5 else ""
        raise CostExportError(f"{what}: {shown}{more}", errors=self.items[:MAX_REPORTED_PROBLEMS])


# -- layout and manifest --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportLocation:
    """`<dir>/<export>/<YYYYMMDD-YYYYMMDD>/<runId>/...` of an export blob or file."""

    export_path: str
    period_start: date
    period_end: date
    run_id: str


def locate(name: str) -> ExportLocation | None:
    """Parse the export layout out of a blob name or path; None when it does not follow it."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    for i in range(len(parts) - 1):
        match = _PERIOD_FOLDER.match(parts[i])
        if match and i + 1 < len(parts) - 1:
            try:
                start = datetime.strptime(match.group(1), "%Y%m%d").date()
                end = datetime.strptime(match.group(2), "%Y%m%d").date()
            except ValueError:
                return None
            return ExportLocation("/".join(parts[:i]), start, end, parts[i + 1])
    return None


def parse_manifest(name: str, data: bytes) -> dict[str, Any]:
    """The manifest.json of a run as a dict; CostExportError when it is not the documented shape."""
    problems = _Problems()
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.add(name, None, f"manifest is not valid JSON ({exc})")
        problems.raise_if_any("unreadable manifest")
    if not isinstance(doc, dict):
        problems.add(name, None, "manifest must be a JSON object")
    else:
        if not str((doc.get("runInfo") or {}).get("runId") or "").strip():
            problems.add(name, None, "manifest has no runInfo.runId")
        blobs = doc.get("blobs")
        if not isinstance(blobs, list) or not all(isinstance(b, dict) and b.get("blobName") for b in blobs):
            problems.add(name, None, "manifest has no blobs[].blobName list")
    problems.raise_if_any("unusable manifest")
    return dict(doc)


def run_from_manifest(manifest_name: str, manifest: dict[str, Any], files: Sequence[ExportFile]) -> ExportRun:
    """An ExportRun from a parsed manifest and the files it lists (read by the caller)."""
    run_info = manifest.get("runInfo") or {}
    config = manifest.get("exportConfig") or {}
    run_id = str(run_info["runId"]).strip()
    where = locate(manifest_name)
    period_start = where.period_start if where else _date_or_none(run_info.get("startDate"))
    period_end = where.period_end if where else _date_or_none(run_info.get("endDate"))
    source_key = str(config.get("resourceId") or "").strip().lower()
    if not source_key:
        source_key = "export:" + (where.export_path if where else str(config.get("exportName") or "unnamed"))
    return ExportRun(
        run_id=run_id,
        source_key=source_key,
        period_start=period_start,
        period_end=period_end,
        files=tuple(files),
        submitted_at=_datetime_or_none(run_info.get("submittedTime")),
        export_type=str(config.get("type") or ""),
        expected_rows=_int_or_none(manifest.get("dataRowCount")),
    )


def manifest_blob_names(manifest: dict[str, Any]) -> list[str]:
    return [str(b["blobName"]) for b in manifest.get("blobs", [])]


def is_data_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith((".csv", ".csv.gz", ".parquet", ".snappy.parquet", ".gz"))


# -- tags -----------------------------------------------------------------------------------------------------


def parse_tags(text: str) -> dict[str, str] | None:
    """Tags of a row: a JSON object (FOCUS) or JSON members without braces (usage details); None if unparseable."""
    raw = (text or "").strip()
    if not raw:
        return {}
    if not raw.startswith("{"):
        raw = "{" + raw + "}"
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    return {str(k): "" if v is None else str(v) for k, v in doc.items()}


def pick_tag(tags: dict[str, str], keys: Iterable[str]) -> str:
    """The value of the first of `keys` present in `tags` (case-insensitive), stripped; '' if none."""
    lowered = {k.strip().lower(): v for k, v in tags.items()}
    for key in keys:
        value = lowered.get(key.strip().lower(), "").strip()
        if value:
            return value
    return ""


def normalise_tags(tags: dict[str, str], keys: TagKeys) -> tuple[str, str, str]:
    """(owner squad lower-cased, cost center, environment lower-cased) from a row's tags."""
    owner = _owner_from_tags(tags, keys.owner)
    return owner, pick_tag(tags, keys.cost_center), pick_tag(tags, keys.environment).lower()


def _owner_from_tags(tags: dict[str, str], owner_keys: tuple[str, ...]) -> str:
    # the alert routing's rule, so a cost alert routes to the squad the tag names
    return owner_from_tags(tags, owner_keys).lower()


def series_bucket(resource_id: str) -> int:
    """Stable bucket 0..4095 of a series id; partitions are `bucket % n` (the same in Python and SQL)."""
    return zlib.crc32(resource_id.encode("utf-8")) % SERIES_BUCKETS


# -- reading files --------------------------------------------------------------------------------------------


def _read_table(file: ExportFile, problems: _Problems) -> pd.DataFrame | None:
    """All columns as strings; None (with a problem recorded) when the file cannot be read."""
    data = file.data
    name = file.name.lower()
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        problems.add(file.name, None, f"corrupt gzip file ({exc})")
        return None
    if name.endswith(".parquet") or data[:4] == b"PAR1":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several types for a broken file
            problems.add(file.name, None, f"unreadable parquet file ({str(exc).splitlines()[0][:200]})")
            return None
        return frame.astype(object).where(frame.notna(), "").astype(str)
    if not data.strip():
        problems.add(file.name, 1, "empty file (no header)")
        return None
    try:
        return pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[], encoding="utf-8-sig", engine="c"
        )
    except pd.errors.ParserError as exc:
        message = str(exc).strip().splitlines()[0]
        match = re.search(r"line (\d+)", message)
        problems.add(file.name, int(match.group(1)) if match else None, f"malformed CSV ({message})")
    except UnicodeDecodeError as exc:
        problems.add(file.name, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except pd.errors.EmptyDataError:
        problems.add(file.name, 1, "empty file (no header)")
    return None


def detect_schema(columns: Iterable[str]) -> str | None:
    """`focus-1.0|1.1|1.2` or `usage-details` from a header; None when neither."""
    have = {c.strip().lower() for c in columns}
    if {"effectivecost", "chargeperiodstart", "chargecategory"} <= have:
        if {"invoiceid", "pricingcurrency"} & have:
            return SCHEMA_FOCUS + "-1.2"
        if "servicesubcategory" in have:
            return SCHEMA_FOCUS + "-1.1"
        return SCHEMA_FOCUS + "-1.0"
    if {"date", "costinbillingcurrency"} <= have and ("chargetype" in have or "resourceid" in have):
        return SCHEMA_USAGE_DETAILS
    return None


def _col(frame: pd.DataFrame, *names: str) -> pd.Series:
    """The first of `names` present (case-insensitive), else a column of ''."""
    lookup = {c.strip().lower(): c for c in frame.columns}
    for name in names:
        if name.lower() in lookup:
            return frame[lookup[name.lower()]].astype(str).str.strip()
    return pd.Series([""] * len(frame), index=frame.index, dtype=object)


def _parse_days(values: pd.Series) -> pd.Series:
    """ISO (`2026-11-20`, `2026-11-20T00:00:00Z`) or US (`11/20/2026`) dates; NaT where neither."""
    iso = pd.to_datetime(values.str[:10], format="%Y-%m-%d", errors="coerce")
    missing = iso.isna() & values.str.contains("/", regex=False)
    if missing.any():
        us = pd.to_datetime(values[missing].str.split(" ").str[0], format="%m/%d/%Y", errors="coerce")
        iso = iso.copy()
        iso[missing] = us
    return iso


def _normalise_file(
    file: ExportFile, raw: pd.DataFrame, schema: str, keys: TagKeys, problems: _Problems, warnings: list[str]
) -> pd.DataFrame:
    line = pd.Series(np.arange(len(raw)) + 2, index=raw.index)
    if schema.startswith(SCHEMA_FOCUS):
        day = _parse_days(_col(raw, "ChargePeriodStart"))
        day_end = _parse_days(_col(raw, "ChargePeriodEnd"))
        cost_text = _col(raw, "EffectiveCost")
        billed_text = _col(raw, "BilledCost")
        category = _col(raw, "ChargeCategory")
        unused = _col(raw, "CommitmentDiscountStatus").str.lower() == "unused"
        is_usage = (category.str.lower() == "usage") & ~unused
        category = category.where(~unused, "Usage (unused commitment)")
        subscription = _col(raw, "SubAccountId")
        resource_group = _col(raw, "x_ResourceGroupName", "ResourceGroupName")
        service = _col(raw, "ServiceName")
        meter = _col(raw, "x_SkuMeterName", "SkuMeter", "ChargeDescription")
        currency = _col(raw, "BillingCurrency")
        date_column = "ChargePeriodStart"
    else:
        day = _parse_days(_col(raw, "Date"))
        day_end = pd.Series(pd.NaT, index=raw.index)
        cost_text = _col(raw, "CostInBillingCurrency")
        billed_text = cost_text
        category = _col(raw, "ChargeType")
        is_usage = category.str.lower() == "usage"
        subscription = _col(raw, "SubscriptionId", "SubscriptionGuid")
        resource_group = _col(raw, "ResourceGroup", "ResourceGroupName")
        service = _col(raw, "MeterCategory", "ConsumedService")
        meter = _col(raw, "MeterName", "MeterSubCategory")
        currency = _col(raw, "BillingCurrency", "BillingCurrencyCode")
        date_column = "Date"

    cost = pd.to_numeric(cost_text, errors="coerce")
    billed = pd.to_numeric(billed_text.where(billed_text != "", "0"), errors="coerce").fillna(0.0)
    checks = [
        (day.isna(), lambda i: f"{date_column} {raw.iloc[i][_name(raw, date_column)]!r} is not a date"),
        (cost.isna(), lambda i: f"cost {cost_text.iloc[i]!r} is not a number"),
        (is_usage & (cost < 0), lambda i: f"negative cost {cost.iloc[i]} on a usage row (only refunds/credits may be)"),
        (
            day_end.notna() & day.notna() & (day_end < day),
            lambda i: (
                f"dates out of order: ChargePeriodEnd {day_end.iloc[i].date()} is before "
                f"ChargePeriodStart {day.iloc[i].date()}"
            ),
        ),
    ]
    for mask, message in checks:
        for i in np.flatnonzero(mask.to_numpy())[:MAX_REPORTED_PROBLEMS]:
            problems.add(file.name, int(line.iloc[i]), message(int(i)))

    duplicated = raw.duplicated(keep="first")
    if duplicated.any():
        firsts = raw.reset_index(drop=True)
        seen: dict[tuple[Any, ...], int] = {}
        for i, row in enumerate(firsts.itertuples(index=False, name=None)):
            if row in seen:
                problems.add(file.name, i + 2, f"duplicate of line {seen[row]} (every column identical)")
                if len(problems.items) >= MAX_REPORTED_PROBLEMS:
                    break
            else:
                seen[row] = i + 2

    tag_text = _col(raw, "Tags")
    parsed_tags: dict[str, tuple[str, str, str]] = {}
    unparseable = 0
    for text in tag_text.unique():
        tags = parse_tags(text)
        if tags is None:
            unparseable += 1
            tags = {}
        parsed_tags[text] = normalise_tags(tags, keys)
    if unparseable:
        warnings.append(f"{file.name}: {unparseable} distinct Tags value(s) not parseable, treated as untagged")
    owner = tag_text.map(lambda t: parsed_tags[t][0])
    cost_center = tag_text.map(lambda t: parsed_tags[t][1])
    environment = tag_text.map(lambda t: parsed_tags[t][2])

    resource_id = _col(raw, "ResourceId", "InstanceId").str.lower()
    # usage without a resource id (some marketplace and support charges) still belongs to a series
    unattributed = resource_id == ""
    resource_id = resource_id.where(
        ~unattributed,
        "/subscriptions/" + subscription.str.lower() + "/unattributed/" + service.str.lower().str.replace(" ", "-"),
    )
    return pd.DataFrame(
        {
            "USAGE_DATE": day.dt.date,
            "RESOURCE_ID": resource_id,
            "SUBSCRIPTION_ID": subscription.str.lower(),
            "RESOURCE_GROUP": resource_group.str.lower(),
            "SERVICE_NAME": service,
            "METER": meter.where(meter != "", service),
            "OWNER": owner,
            "COST_CENTER": cost_center,
            "ENVIRONMENT": environment,
            "CHARGE_CATEGORY": category.where(category != "", "Usage"),
            "IS_USAGE": is_usage.astype(bool),
            "COST": cost.fillna(0.0).astype(float),
            "BILLED_COST": billed.astype(float),
            "CURRENCY": currency.str.upper(),
            "_LINE": line,
        }
    )


def _name(frame: pd.DataFrame, wanted: str) -> str:
    for c in frame.columns:
        if c.strip().lower() == wanted.lower():
            return str(c)
    return wanted


def _group(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (day, resource, meter, charge category, tags): what the warehouse stores."""
    if frame.empty:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in FRAME_COLUMNS})
        return out
    grouped = frame.groupby(_GROUP_KEYS, dropna=False, sort=True, as_index=False)[["COST", "BILLED_COST"]].sum()
    grouped["SERIES_BUCKET"] = grouped["RESOURCE_ID"].map(series_bucket).astype("int64")
    grouped["COST"] = grouped["COST"].round(6)
    grouped["BILLED_COST"] = grouped["BILLED_COST"].round(6)
    return grouped[list(FRAME_COLUMNS)].reset_index(drop=True)


def parse_run(run: ExportRun, keys: TagKeys = TagKeys()) -> ParsedRun:
    """Validate and normalise every file of a run; CostExportError naming file and line if anything is wrong."""
    problems = _Problems()
    warnings: list[str] = []
    if not run.files:
        problems.add(run.run_id, None, "the run has no data files")
    frames: list[pd.DataFrame] = []
    schemas: dict[str, str] = {}
    rows_read = 0
    for file in run.files:
        raw = _read_table(file, problems)
        if raw is None:
            continue
        schema = detect_schema(raw.columns)
        if schema is None:
            problems.add(
                file.name,
                1,
                "unknown schema: the header has neither FOCUS columns (EffectiveCost, ChargePeriodStart, "
                "ChargeCategory) nor usage-details columns (Date, CostInBillingCurrency); header was "
                + ",".join(map(str, raw.columns[:12])),
            )
            continue
        schemas[file.name] = schema
        rows_read += len(raw)
        frames.append(_normalise_file(file, raw, schema, keys, problems, warnings))
    if len({s.split("-1.")[0] for s in schemas.values()}) > 1:
        problems.add(run.run_id, None, f"files of one run have different schemas: {sorted(set(schemas.values()))}")
    problems.raise_if_any(f"export run {run.run_id} not loaded")

    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*FRAME_COLUMNS, "_LINE"])
    if len(frame) and (run.period_start or run.period_end):
        days = pd.to_datetime(frame["USAGE_DATE"])
        outside = pd.Series(False, index=frame.index)
        if run.period_start:
            outside |= days < pd.Timestamp(run.period_start)
        if run.period_end:
            outside |= days > pd.Timestamp(run.period_end)
        # a purchase is dated at the start of its billing period; only usage has to fall inside the export period
        outside &= frame["IS_USAGE"]
        file_of_row = np.repeat([f.name for f in run.files if f.name in schemas], [len(x) for x in frames])
        for i in np.flatnonzero(outside.to_numpy())[:MAX_REPORTED_PROBLEMS]:
            problems.add(
                str(file_of_row[i]),
                int(frame["_LINE"].iloc[i]),
                f"date {frame['USAGE_DATE'].iloc[i]} is outside the export period {run.period_start}..{run.period_end}",
            )
    if run.expected_rows is not None and rows_read != run.expected_rows and run.files:
        problems.add(run.run_id, None, f"manifest says {run.expected_rows} data rows, the files have {rows_read}")
    problems.raise_if_any(f"export run {run.run_id} not loaded")

    grouped = _group(frame.drop(columns=["_LINE"]))
    if len(grouped):
        first, last = min(grouped["USAGE_DATE"]), max(grouped["USAGE_DATE"])
    else:
        first = last = run.period_start or date.today()
    schema_name = next(iter(schemas.values()), SCHEMA_FOCUS)
    if schema_name == SCHEMA_USAGE_DETAILS and run.export_type:
        schema_name += "-" + run.export_type.lower().replace("cost", "")
    return ParsedRun(
        run=run,
        schema=schema_name,
        frame=grouped,
        rows_read=rows_read,
        period_start=run.period_start or first,
        period_end=run.period_end or last,
        warnings=tuple(warnings),
    )


# -- Cost Management Query API --------------------------------------------------------------------------------


def query_result_frame(
    columns: Sequence[dict[str, Any]], rows: Sequence[Sequence[Any]], scope: str, owner_tag: str
) -> pd.DataFrame:
    """Rows of a Query API answer (daily amortized cost grouped by ResourceId and the owner tag) as FRAME_COLUMNS.

    `columns` is `properties.columns` ([{name, type}]); the cost column is `Cost`/`PreTaxCost` (or their `USD`
    variants), the day `UsageDate` (a number like 20261120), tags `TagKey`/`TagValue`. Raises CostExportError
    when a needed column is missing or a value does not parse.
    """
    problems = _Problems()
    names = [str(c.get("name", "")) for c in columns]
    index = {n.lower(): i for i, n in enumerate(names)}

    def find(*candidates: str) -> int | None:
        return next((index[c.lower()] for c in candidates if c.lower() in index), None)

    i_cost = find("Cost", "PreTaxCost", "CostUSD", "PreTaxCostUSD")
    i_day = find("UsageDate", "BillingMonth")
    i_resource = find("ResourceId")
    i_tag_key, i_tag_value = find("TagKey"), find("TagValue")
    i_currency = find("Currency")
    i_service = find("ServiceName", "MeterCategory")
    for label, idx in (("cost", i_cost), ("UsageDate", i_day), ("ResourceId", i_resource)):
        if idx is None:
            problems.add(scope, None, f"Query API answer has no {label} column (columns: {', '.join(names)})")
    problems.raise_if_any("unusable Query API answer")
    assert i_cost is not None and i_day is not None and i_resource is not None
    out = []
    subscription = scope.strip("/").split("/")[1].lower() if scope.lower().startswith("/subscriptions/") else ""
    for n, row in enumerate(rows, start=1):
        try:
            cost = float(row[i_cost])
            day = datetime.strptime(str(int(row[i_day])), "%Y%m%d").date()
        except (TypeError, ValueError, IndexError):
            problems.add(scope, n, f"row {list(row)!r} has no numeric cost or UsageDate")
            continue
        if cost < 0:
            problems.add(scope, n, f"negative cost {cost} on a usage row")
            continue
        resource = str(row[i_resource] or "").lower()
        owner = ""
        if i_tag_key is not None and i_tag_value is not None and str(row[i_tag_key] or "").lower() == owner_tag:
            owner = str(row[i_tag_value] or "").strip().lower()
        parts = resource.split("/")
        out.append(
            {
                "USAGE_DATE": day,
                "RESOURCE_ID": resource or f"/subscriptions/{subscription}/unattributed/query",
                "SUBSCRIPTION_ID": parts[2] if len(parts) > 2 and parts[1] == "subscriptions" else subscription,
                "RESOURCE_GROUP": parts[4] if len(parts) > 4 and parts[3] == "resourcegroups" else "",
                "SERVICE_NAME": str(row[i_service]) if i_service is not None else _service_of(resource),
                "METER": str(row[i_service]) if i_service is not None else _service_of(resource),
                "OWNER": owner,
                "COST_CENTER": "",
                "ENVIRONMENT": "",
                "CHARGE_CATEGORY": "Usage",
                "IS_USAGE": True,
                "COST": cost,
                "BILLED_COST": cost,
                "CURRENCY": str(row[i_currency]).upper() if i_currency is not None else "",
            }
        )
        if len(problems.items) >= MAX_REPORTED_PROBLEMS:
            break
    problems.raise_if_any("Query API answer not loaded")
    frame = pd.DataFrame(out, columns=[c for c in FRAME_COLUMNS if c != "SERIES_BUCKET"])
    return _group(frame)


def _service_of(resource_id: str) -> str:
    """`microsoft.compute/virtualmachines` from a resource id: the closest thing to a service without a column."""
    parts = resource_id.split("/providers/")
    if len(parts) < 2:
        return "unknown"
    segs = parts[-1].split("/")
    return "/".join(segs[:2]) if len(segs) >= 2 else segs[0]


# -- small parsers --------------------------------------------------------------------------------------------


def _date_or_none(value: Any) -> date | None:
    dt = _datetime_or_none(value)
    return dt.date() if dt else None


def _datetime_or_none(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    # .NET writes 7 fractional digits; Python accepts at most 6
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=None) if parsed.tzinfo else parsed


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
