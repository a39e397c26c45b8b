"""Cost exports and Query API answers, read as a stream and normalised into daily cost rows (pure: bytes in, frames out).

Every documented export variant is recognised by its header (column names compared case-insensitively):

* FOCUS 1.0, 1.0r2, 1.1, 1.2 (and the 1.3 `ServiceProviderName`) from Azure (`FocusCost` exports), AWS (CUR 2.0
  FOCUS), Google Cloud (FOCUS BigQuery export written to CSV/Parquet) and Oracle (OCI FOCUS reports):
  `EffectiveCost` (amortized) is the cost, `ChargePeriodStart` the day, `SubAccountId` the account,
  `ServiceName` the service, `ProviderName` the provider, `Tags` the tags.
* Azure usage details, actual or amortized: EA in both column vintages (`CostInBillingCurrency` +
  `BillingCurrencyCode`, and the newer `Cost` + `BillingCurrency`), MCA (camelCase, `costInBillingCurrency`),
  pay-as-you-go/MOSP (`PreTaxCost`, `UsageDateTime`, `InstanceId`, `SubscriptionGuid`, `Currency`).

Only usage counts as resource usage: FOCUS `ChargeCategory=Usage` (minus unused commitment), usage-details
`ChargeType=Usage`. Purchases, refunds, unused reservations/savings plans, taxes, credits and adjustments are stored
with `IS_USAGE = False` (for reconciliation), never scored, and counted by reason in the run's report. Negative
usage (corrections, `ChargeClass=Correction`) is real data: netted into its day and counted, never rejected.

Memory does not grow with the export: files are read in blocks (`pyarrow`'s streaming CSV reader on only the
needed columns, typed as strings; Parquet row batches), each block is validated and normalised, and the rows go to
a sink (the warehouse's staging table) whenever `flush_rows` are buffered; the warehouse aggregates them to one row
per (day, resource, meter, charge category, tags, currency, provider) when the run is swapped in (`store.py`).
Bad input raises :class:`CostExportError` listing file, line, column and problem, and nothing is loaded.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import IO, Any

import numpy as np
import pandas as pd

from shared.alerts.routing import owner_from_tags
from shared.errors import BadInputError

SCHEMA_FOCUS = "focus"
SCHEMA_USAGE_DETAILS = "usage-details"
SCHEMA_QUERY_API = "query-api"

SERIES_BUCKETS = 4096
MAX_REPORTED_PROBLEMS = 20
DEFAULT_BLOCK_BYTES = 8 << 20
READER_BLOCK_BYTES = 1 << 20
DEFAULT_FLUSH_ROWS = 100_000
_TAG_CACHE_LIMIT = 200_000

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
    "PROVIDER",
)
GROUP_KEYS = [c for c in FRAME_COLUMNS if c not in ("COST", "BILLED_COST", "SERIES_BUCKET")]
_GROUP_KEYS = GROUP_KEYS

_PERIOD_FOLDER = re.compile(r"^(\d{8})-(\d{8})$")
_NULL_IDS = {"", "null", "none", "n/a", "not applicable"}

# provider names as FOCUS files write them -> the short name stored in PROVIDER
PROVIDERS = {
    "microsoft": "azure",
    "azure": "azure",
    "microsoft azure": "azure",
    "aws": "aws",
    "amazon web services": "aws",
    "google cloud": "gcp",
    "google": "gcp",
    "gcp": "gcp",
    "oracle": "oci",
    "oracle cloud infrastructure": "oci",
    "oci": "oci",
}
PROVIDER_LABELS = {"azure": "Azure", "aws": "AWS", "gcp": "Google Cloud", "oci": "Oracle Cloud"}


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
    """One data file of a run (csv, csv.gz or parquet): its name and where its bytes come from.

    Exactly one of `data` (bytes in memory: tests, small files), `path` (a local file) or `opener` (a callable
    returning a fresh binary stream, e.g. a blob download read in chunks) is set; big files never need `data`."""

    name: str
    data: bytes | None = None
    path: str | None = None
    opener: Callable[[], IO[bytes]] | None = None

    def open(self) -> IO[bytes]:
        if self.opener is not None:
            return self.opener()
        if self.path is not None:
            return open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        return io.BytesIO(self.data or b"")

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.open() as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


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
    data_version: str = ""


@dataclass
class RunReport:
    """What reading a run found: the reconciliation figures `costs ingest --json` prints.

    `cost_by_currency` is the usage cost per billing currency (what a FinOps team reconciles against the export's
    own usage total); `excluded` counts rows that are not usage, by reason (they are stored, never scored)."""

    schema: str = ""
    rows_read: int = 0
    usage_rows: int = 0
    cost_by_currency: dict[str, float] = field(default_factory=dict)
    billed_by_currency: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    negative_usage_rows: int = 0
    corrections: int = 0
    unattributed_rows: int = 0
    providers: list[str] = field(default_factory=list)
    first_day: date | None = None
    last_day: date | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "rows_read": self.rows_read,
            "usage_rows": self.usage_rows,
            "cost_by_currency": {k: round(v, 6) for k, v in sorted(self.cost_by_currency.items())},
            "billed_by_currency": {k: round(v, 6) for k, v in sorted(self.billed_by_currency.items())},
            "excluded": dict(sorted(self.excluded.items())),
            "negative_usage_rows": self.negative_usage_rows,
            "corrections": self.corrections,
            "unattributed_rows": self.unattributed_rows,
            "providers": sorted(self.providers),
        }


@dataclass(frozen=True)
class ParsedRun:
    """A validated run held in memory (small runs, tests, Query API pulls): normalised daily rows and the report."""

    run: ExportRun
    schema: str
    frame: pd.DataFrame
    rows_read: int
    period_start: date
    period_end: date
    warnings: tuple[str, ...] = ()
    report: RunReport | None = None

    @property
    def usage_cost(self) -> float:
        return float(self.frame.loc[self.frame["IS_USAGE"], "COST"].sum()) if len(self.frame) else 0.0

    @property
    def cost_by_currency(self) -> dict[str, float]:
        if not len(self.frame):
            return {}
        usage = self.frame[self.frame["IS_USAGE"]]
        return {str(k): round(float(v), 6) for k, v in usage.groupby("CURRENCY")["COST"].sum().items()}


@dataclass
class _Problems:
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, file: str, line: int | None, problem: str) -> None:
        self.items.append({"file": file, "line": line, "problem": problem})

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_REPORTED_PROBLEMS

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
        data_version=str(config.get("dataVersion") or ""),
    )


def manifest_blob_names(manifest: dict[str, Any]) -> list[str]:
    return [str(b["blobName"]) for b in manifest.get("blobs", [])]


def is_data_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith((".csv", ".csv.gz", ".parquet", ".snappy.parquet", ".gz"))


# -- tags -----------------------------------------------------------------------------------------------------


def parse_tags(text: str) -> dict[str, str] | None:
    """Tags of a row in any shape exports write; None if unparseable.

    A JSON object (FOCUS, `{"owner":"a"}`), JSON members without braces (usage details, `"owner": "a","env": "b"`),
    a Python dict some tools write (`{'owner': 'a'}`), or a list of key/value pairs (Google Cloud,
    `[{"key":"owner","value":"a"}]`)."""
    raw = (text or "").strip()
    if not raw or raw.lower() in ("null", "{}", "[]"):
        return {}
    if not raw.startswith(("{", "[")):
        raw = "{" + raw + "}"
    doc: Any
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        try:
            doc = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if isinstance(doc, list):
        pairs: dict[str, str] = {}
        for item in doc:
            if not isinstance(item, dict) or "key" not in item:
                return None
            pairs[str(item["key"])] = "" if item.get("value") is None else str(item.get("value"))
        return pairs
    if not isinstance(doc, dict):
        return None
    return {str(k): "" if v is None else str(v) for k, v in doc.items()}


def _tag_aliases(tags: dict[str, str]) -> dict[str, str]:
    # AWS writes user tags as `user:owner`, OCI defined tags as `Namespace.owner`: also match the bare key
    out = dict(tags)
    for key, value in tags.items():
        for sep in (":", "."):
            if sep in key:
                bare = key.rsplit(sep, 1)[1]
                if bare and bare.lower() not in {k.lower() for k in out}:
                    out[bare] = value
    return out


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
    tags = _tag_aliases(tags)
    # the alert routing's rule, so a cost alert routes to the squad the tag names
    owner = owner_from_tags(tags, keys.owner).lower()
    return owner, pick_tag(tags, keys.cost_center), pick_tag(tags, keys.environment).lower()


def series_bucket(resource_id: str) -> int:
    """Stable bucket 0..4095 of a series id; partitions are `bucket % n` (the same in Python and SQL)."""
    return zlib.crc32(resource_id.encode("utf-8")) % SERIES_BUCKETS


# -- identifiers ----------------------------------------------------------------------------------------------


def normalise_provider(name: str, default: str = "azure") -> str:
    """`azure|aws|gcp|oci` (or the lower-cased name of another provider) from a FOCUS ProviderName."""
    text = (name or "").strip().lower()
    if not text:
        return default
    return PROVIDERS.get(text, text)


def normalise_account(value: str) -> str:
    """An account id in one shape: Azure's `/subscriptions/<guid>` (FOCUS SubAccountId) becomes the bare guid."""
    text = (value or "").strip()
    lower = text.lower()
    if lower.startswith("/subscriptions/"):
        return lower.split("/")[2]
    if re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", text):
        return lower
    return text


def provider_of_series(series_id: str) -> str:
    """`azure|aws|gcp|oci` of a resource series id by its shape ('' for aggregates: squads, services...)."""
    text = series_id.strip().lower()
    if text.startswith("/subscriptions/"):
        return "azure"
    if text.startswith("arn:aws") or text.startswith("aws:"):
        return "aws"
    if text.startswith("//") and ".googleapis.com/" in text or text.startswith("gcp:"):
        return "gcp"
    if text.startswith("ocid1.") or text.startswith("oci:"):
        return "oci"
    return ""


def provider_label(provider: str) -> str:
    """How a provider is shown to people (`AWS`, `Google Cloud`...)."""
    return PROVIDER_LABELS.get(provider, provider)


def unattributed_id(provider: str, account: str, service: str) -> str:
    """The series of usage without a resource id (tax, support, marketplace fees): one per account and service."""
    slug = re.sub(r"[^a-z0-9.]+", "-", (service or "unknown").lower()).strip("-") or "unknown"
    if provider == "azure" and account:
        return f"/subscriptions/{account.lower()}/unattributed/{slug}"
    return f"{provider}:{account or 'unknown'}/unattributed/{slug}"


# -- schemas --------------------------------------------------------------------------------------------------

# logical field -> candidate columns, first present wins (case-insensitive)
FOCUS_FIELDS: dict[str, tuple[str, ...]] = {
    "day": ("ChargePeriodStart",),
    "day_end": ("ChargePeriodEnd",),
    "cost": ("EffectiveCost",),
    "billed": ("BilledCost",),
    "currency": ("BillingCurrency",),
    "category": ("ChargeCategory",),
    "charge_class": ("ChargeClass",),
    "commitment_status": ("CommitmentDiscountStatus",),
    "account": ("SubAccountId",),
    "billing_account": ("BillingAccountId",),
    "resource": ("ResourceId",),
    "resource_group": ("x_ResourceGroupName", "ResourceGroupName"),
    "service": ("ServiceName",),
    "meter": ("x_SkuMeterName", "SkuMeter", "ChargeDescription"),
    "tags": ("Tags",),
    "provider": ("ServiceProviderName", "ProviderName"),
}
USAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "day": ("Date", "UsageDateTime", "UsageDate"),
    "cost": ("CostInBillingCurrency", "Cost", "PreTaxCost"),
    "currency": ("BillingCurrency", "BillingCurrencyCode", "Currency"),
    "category": ("ChargeType",),
    "account": ("SubscriptionId", "SubscriptionGuid"),
    "resource": ("ResourceId", "InstanceId"),
    "resource_group": ("ResourceGroup", "ResourceGroupName"),
    "service": ("MeterCategory", "ServiceName", "ConsumedService"),
    "meter": ("MeterName", "MeterSubCategory", "MeterSubcategory"),
    "tags": ("Tags",),
}
_REQUIRED = {"day": "the charge date", "cost": "the cost"}


def detect_schema(columns: Iterable[str]) -> str | None:
    """The export variant of a header, or None when it is not a cost export.

    `focus-1.0|1.1|1.2`; `usage-details-ea` (CostInBillingCurrency), `usage-details-ea-cost` (the newer `Cost`
    column vintage), `usage-details-mca` (camelCase), `usage-details-payg` (MOSP: PreTaxCost, UsageDateTime)."""
    names = [str(c).strip().lstrip("\ufeff") for c in columns]
    have = {c.lower() for c in names}
    if {"effectivecost", "chargeperiodstart", "chargecategory"} <= have:
        if {"invoiceid", "pricingcurrency", "serviceprovidername"} & have:
            return SCHEMA_FOCUS + "-1.2"
        if {"servicesubcategory", "capacityreservationid", "skumeter"} & have:
            return SCHEMA_FOCUS + "-1.1"
        return SCHEMA_FOCUS + "-1.0"
    has_day = bool({"date", "usagedatetime"} & have)
    has_cost = bool({"costinbillingcurrency", "cost", "pretaxcost"} & have)
    has_id = bool({"resourceid", "instanceid", "chargetype", "metercategory"} & have)
    if not (has_day and has_cost and has_id):
        return None
    if "pretaxcost" in have and "usagedatetime" in have:
        return SCHEMA_USAGE_DETAILS + "-payg"
    if "costInBillingCurrency" in names or ("date" in names and "Date" not in names):
        return SCHEMA_USAGE_DETAILS + "-mca"
    if "costinbillingcurrency" in have:
        return SCHEMA_USAGE_DETAILS + "-ea"
    return SCHEMA_USAGE_DETAILS + "-ea-cost"


def _field_columns(schema: str, columns: Sequence[str]) -> dict[str, str]:
    """logical field -> actual column name of this header."""
    fields = FOCUS_FIELDS if schema.startswith(SCHEMA_FOCUS) else USAGE_FIELDS
    lookup: dict[str, str] = {}
    for c in columns:
        lookup.setdefault(str(c).strip().lstrip("\ufeff").lower(), str(c))
    out = {}
    for name, candidates in fields.items():
        for candidate in candidates:
            if candidate.lower() in lookup:
                out[name] = lookup[candidate.lower()]
                break
    return out


# -- reading files in blocks ----------------------------------------------------------------------------------


@dataclass
class _Block:
    frame: pd.DataFrame  # logical field names -> strings
    first_line: int  # the file line of the block's first row (the header is line 1; parquet rows count from 1)


class _FileReader:
    """Reads one file as blocks of the needed columns (as strings), whatever its format and compression."""

    def __init__(self, file: ExportFile, problems: _Problems, block_bytes: int) -> None:
        self.file = file
        self.problems = problems
        self.block_bytes = block_bytes
        self.header: list[str] = []
        self.kind = "csv"
        self.compressed = False
        self._spooled: Any = None

    def _magic(self) -> bytes:
        with self.file.open() as stream:
            return stream.read(4)

    def _text_stream(self) -> Any:
        """A pyarrow input stream of the file's (decompressed) bytes."""
        import pyarrow as pa

        raw = pa.PythonFile(self.file.open(), mode="r")
        return pa.CompressedInputStream(raw, "gzip") if self.compressed else raw

    def open(self) -> bool:
        """Find format and header; False (with a problem recorded) when the file cannot be read."""
        name = self.file.name
        try:
            magic = self._magic()
        except OSError as exc:
            self.problems.add(name, None, f"cannot read the file ({exc})")
            return False
        self.compressed = magic[:2] == b"\x1f\x8b"
        if magic == b"PAR1" or name.lower().endswith(".parquet"):
            self.kind = "parquet"
            return self._open_parquet()
        try:
            stream = self._text_stream()
            try:
                head = stream.read(1 << 16)
            finally:
                stream.close()
        except Exception as exc:  # corrupt gzip: pyarrow raises OSError/ArrowInvalid
            self.problems.add(name, None, f"corrupt gzip file ({_first_line(exc)})")
            return False
        if not head.strip():
            self.problems.add(name, 1, "empty file (no header)")
            return False
        first = head.split(b"\n", 1)[0].rstrip(b"\r")
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.problems.add(name, 1, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            return False
        self.header = next(csv.reader([text]), [])
        return True

    def _open_parquet(self) -> bool:
        import pyarrow.parquet as pq

        try:
            if self.file.path is not None:
                source: Any = self.file.path
            elif self.file.data is not None:
                source = io.BytesIO(self.file.data)
            else:
                # parquet needs random access (the footer is at the end): spool the stream to a temporary file
                self._spooled = tempfile.TemporaryFile()  # noqa: SIM115 - closed after the last block
                with self.file.open() as stream:
                    while chunk := stream.read(1 << 20):
                        self._spooled.write(chunk)
                self._spooled.seek(0)
                source = self._spooled
            self._parquet = pq.ParquetFile(source)
        except Exception as exc:  # pyarrow raises several types for a broken file
            self.problems.add(self.file.name, None, f"unreadable parquet file ({_first_line(exc)[:200]})")
            return False
        self.header = list(self._parquet.schema_arrow.names)
        return True

    def blocks(self, columns: dict[str, str]) -> Iterator[_Block]:
        """Blocks with the logical fields of `columns` (field -> column) as string columns."""
        try:
            if self.kind == "parquet":
                yield from self._parquet_blocks(columns)
            else:
                yield from self._csv_blocks(columns)
        finally:
            if self._spooled is not None:
                self._spooled.close()

    def _csv_blocks(self, columns: dict[str, str]) -> Iterator[_Block]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        bad_rows: list[tuple[int, int, str]] = []

        def invalid_row(row: Any) -> str:
            bad_rows.append((row.expected_columns, row.actual_columns, str(row.text)[:80]))
            return "skip"

        wanted = sorted(set(columns.values()))
        stream = self._text_stream()
        line = 2
        try:
            reader = pacsv.open_csv(
                stream,
                # pyarrow's streaming reader holds more memory as it goes with big blocks (measured: 8 MB blocks
                # peak at 300 MB over 1M rows, 1 MB blocks stay at 40 MB): read small, normalise in bigger groups
                read_options=pacsv.ReadOptions(block_size=READER_BLOCK_BYTES, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted,
                    column_types={c: pa.string() for c in wanted},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            pending: list[Any] = []
            size = 0
            for batch in reader:
                if bad_rows:
                    break
                pending.append(batch)
                size += batch.nbytes
                if size >= self.block_bytes:
                    frame = _strings_frame(pa.Table.from_batches(pending), columns)
                    pending, size = [], 0
                    yield _Block(frame, line)
                    line += len(frame)
            if pending and not bad_rows:
                frame = _strings_frame(pa.Table.from_batches(pending), columns)
                yield _Block(frame, line)
        except Exception as exc:
            message = _first_line(exc)
            if "utf8" in message.lower() or "utf-8" in message.lower():
                self.problems.add(self.file.name, None, f"not UTF-8 text ({message[:200]})")
            elif "gzip" in message.lower() or "zlib" in message.lower() or "decompress" in message.lower():
                self.problems.add(self.file.name, None, f"corrupt gzip file ({message[:200]})")
            else:
                self.problems.add(self.file.name, None, f"malformed CSV ({message[:200]})")
        finally:
            stream.close()
        if bad_rows:
            self._locate_bad_rows()

    def _locate_bad_rows(self) -> None:
        """A second pass, only on error, to name the lines whose column count is wrong."""
        width = len(self.header)
        stream = self._text_stream()
        try:
            raw = io.BufferedReader(_ArrowReadable(stream))
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.reader(text)
            for record in reader:
                if len(record) != width and record:
                    self.problems.add(
                        self.file.name,
                        reader.line_num,
                        f"malformed CSV (expected {width} columns, found {len(record)})",
                    )
                    if self.problems.full:
                        break
        finally:
            stream.close()

    def _parquet_blocks(self, columns: dict[str, str]) -> Iterator[_Block]:
        wanted = sorted(set(columns.values()))
        row = 1
        rows_per_batch = max(1024, self.block_bytes // 256)
        for batch in self._parquet.iter_batches(batch_size=rows_per_batch, columns=wanted):
            frame = _strings_frame(batch, columns)
            yield _Block(frame, row)
            row += len(frame)


class _ArrowReadable(io.RawIOBase):
    """A pyarrow input stream as a Python raw stream (for the csv module)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _strings_frame(batch: Any, columns: dict[str, str]) -> pd.DataFrame:
    """A record batch's needed columns as a pandas frame of Python strings, keyed by logical field."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    for field_name, column in columns.items():
        array = batch.column(batch.schema.get_field_index(column))
        if hasattr(array, "combine_chunks"):
            array = array.combine_chunks()
        if pa.types.is_map(array.type) or pa.types.is_struct(array.type) or pa.types.is_list(array.type):
            values = [_json_value(v) for v in array.to_pylist()]
            out[field_name] = pd.Series(values, dtype=object)
            continue
        if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
            array = pc.cast(array, pa.string())
        array = pc.utf8_trim_whitespace(array.fill_null(""))
        out[field_name] = pd.Series(array.to_numpy(zero_copy_only=False), dtype=object)
    return pd.DataFrame(out)


def _json_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        value = dict(value)  # a parquet map arrives as a list of (key, value)
    return json.dumps(value, default=str)


# -- normalising a block --------------------------------------------------------------------------------------


@dataclass
class _RunState:
    run: ExportRun
    keys: TagKeys
    problems: _Problems
    report: RunReport
    tag_cache: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    unparseable_tags: int = 0
    schema_kind: str = ""


def _parse_days(values: pd.Series) -> pd.Series:
    """ISO (`2026-11-20`, `2026-11-20T00:00:00Z`, `2026-11-20 00:00:00 UTC`) or US (`11/20/2026`) dates; NaT if neither."""
    iso = pd.to_datetime(values.str[:10], format="%Y-%m-%d", errors="coerce")
    missing = iso.isna() & values.str.contains("/", regex=False)
    if missing.any():
        us = pd.to_datetime(values[missing].str.split(" ").str[0], format="%m/%d/%Y", errors="coerce")
        iso = iso.copy()
        iso[missing] = us
    return iso


def _normalise_block(block: _Block, file: ExportFile, columns: dict[str, str], state: _RunState) -> Any:
    """Validate a block (problems recorded with file and line), count it in the report; its rows as an Arrow table
    with FRAME_COLUMNS (None once a problem was found)."""
    raw = block.frame
    n = len(raw)
    empty = pd.Series([""] * n, index=raw.index, dtype=object)

    def col(name: str) -> pd.Series:
        return raw.get(name, empty)  # trimmed when read

    focus = state.schema_kind == SCHEMA_FOCUS
    day = _parse_days(col("day"))
    cost_text = col("cost")
    cost = pd.to_numeric(cost_text, errors="coerce")
    billed_text = col("billed") if "billed" in raw else cost_text
    billed = pd.to_numeric(billed_text.where(billed_text != "", "0"), errors="coerce")
    category = col("category")
    lower_category = category.str.lower()
    if focus:
        unused = col("commitment_status").str.lower() == "unused"
        is_usage = (lower_category == "usage") & ~unused
        category = category.where(~unused, "Usage (unused commitment)")
        corrections = int((col("charge_class").str.lower() == "correction").sum())
        provider = _map_distinct(col("provider"), normalise_provider)
        day_end = _parse_days(col("day_end")) if "day_end" in raw else pd.Series(pd.NaT, index=raw.index)
    else:
        is_usage = (lower_category == "usage") | (lower_category == "") if "category" in raw else empty == ""
        corrections = 0
        provider = pd.Series(["azure"] * n, index=raw.index, dtype=object)
        day_end = pd.Series(pd.NaT, index=raw.index)
    category = category.where(category != "", "Usage")

    # -- checks: every problem named by file, line and column
    lines = np.arange(n) + block.first_line
    day_column = columns.get("day", "date")
    cost_column = columns.get("cost", "cost")
    checks: list[tuple[pd.Series, Callable[[int], str]]] = [
        (day.isna(), lambda i: f"column {day_column}: {col('day').iloc[i]!r} is not a date"),
        (cost.isna(), lambda i: f"column {cost_column}: {cost_text.iloc[i]!r} is not a number"),
        (
            billed.isna(),
            lambda i: f"column {columns.get('billed', cost_column)}: {billed_text.iloc[i]!r} is not a number",
        ),
        (
            day_end.notna() & day.notna() & (day_end < day),
            lambda i: (
                f"dates out of order: ChargePeriodEnd {day_end.iloc[i].date()} is before "
                f"ChargePeriodStart {day.iloc[i].date()}"
            ),
        ),
    ]
    run = state.run
    if run.period_start or run.period_end:
        outside = pd.Series(False, index=raw.index)
        if run.period_start:
            outside |= day < pd.Timestamp(run.period_start)
        if run.period_end:
            outside |= day > pd.Timestamp(run.period_end)
        # a purchase is dated at the start of its billing period; only usage has to fall inside the export period
        checks.append(
            (
                outside & is_usage & day.notna(),
                lambda i: (
                    f"column {day_column}: date {day.iloc[i].date()} is outside the export period "
                    f"{run.period_start}..{run.period_end}"
                ),
            )
        )
    for mask, message in checks:
        if state.problems.full:
            break
        for i in np.flatnonzero(mask.to_numpy())[:MAX_REPORTED_PROBLEMS]:
            state.problems.add(file.name, int(lines[i]), message(int(i)))
            if state.problems.full:
                break
    if state.problems.items:
        return None  # keep reading (to find more problems) but stop normalising

    # -- identifiers in one shape per source
    account = _map_distinct(col("account"), normalise_account)
    if "billing_account" in raw:
        account = account.where(account != "", col("billing_account"))
    service = col("service")
    resource_text = col("resource")
    unattributed = resource_text.str.lower().isin(_NULL_IDS)
    azure_ids = resource_text.str.lower().str.startswith("/subscriptions/") | (provider == "azure")
    # Azure resource ids are case-insensitive; AWS ARNs and GCP names are not
    resource_id = resource_text.where(~azure_ids, resource_text.str.lower())
    if unattributed.any():
        resource_id = resource_id.copy()
        idx = unattributed.to_numpy()
        resource_id[idx] = [
            unattributed_id(p, a, s) for p, a, s in zip(provider[idx], account[idx], service[idx], strict=True)
        ]
    meter = col("meter")

    # -- tags, parsed once per distinct text
    cache = state.tag_cache
    if len(cache) > _TAG_CACHE_LIMIT:
        cache.clear()
    codes, distinct = pd.factorize(col("tags"))
    triples = []
    for text in distinct:
        if text not in cache:
            tags = parse_tags(text)
            if tags is None:
                state.unparseable_tags += 1
                tags = {}
            cache[text] = normalise_tags(tags, state.keys)
        triples.append(cache[text])
    owner_of, center_of, env_of = (np.asarray([t[k] for t in triples] or [""], dtype=object) for k in range(3))
    codes = np.where(codes < 0, 0, codes)

    currency = col("currency").str.upper()
    frame = pd.DataFrame(
        {
            "USAGE_DATE": day,
            "RESOURCE_ID": resource_id,
            "SUBSCRIPTION_ID": account.where(~azure_ids, account.str.lower()),
            "RESOURCE_GROUP": col("resource_group").str.lower(),
            "SERVICE_NAME": service,
            "METER": meter.where(meter != "", service),
            "OWNER": owner_of[codes],
            "COST_CENTER": center_of[codes],
            "ENVIRONMENT": env_of[codes],
            "CHARGE_CATEGORY": category,
            "IS_USAGE": is_usage.astype(bool),
            "COST": cost.astype(float),
            "BILLED_COST": billed.astype(float),
            "CURRENCY": currency,
            "PROVIDER": provider,
        }
    )

    # -- the reconciliation figures
    report = state.report
    usage = frame["IS_USAGE"].to_numpy()
    report.usage_rows += int(usage.sum())
    report.negative_usage_rows += int((usage & (frame["COST"].to_numpy() < 0)).sum())
    report.corrections += corrections
    report.unattributed_rows += int((unattributed.to_numpy() & usage).sum())
    for cur, total in frame.loc[usage].groupby("CURRENCY")["COST"].sum().items():
        report.cost_by_currency[str(cur)] = report.cost_by_currency.get(str(cur), 0.0) + float(total)
    for cur, total in frame.loc[usage].groupby("CURRENCY")["BILLED_COST"].sum().items():
        report.billed_by_currency[str(cur)] = report.billed_by_currency.get(str(cur), 0.0) + float(total)
    for reason, count in Counter(frame.loc[~usage, "CHARGE_CATEGORY"]).items():
        report.excluded[str(reason)] = report.excluded.get(str(reason), 0) + int(count)
    for p in set(frame["PROVIDER"]):
        if p not in report.providers:
            report.providers.append(str(p))
    if len(frame):
        first, last = frame["USAGE_DATE"].min().date(), frame["USAGE_DATE"].max().date()
        report.first_day = first if report.first_day is None else min(report.first_day, first)
        report.last_day = last if report.last_day is None else max(report.last_day, last)
    # staged as normalised rows: the warehouse's GROUP BY merges them when the run is swapped in
    frame["SERIES_BUCKET"] = _map_distinct(frame["RESOURCE_ID"], series_bucket).astype("int64")
    return _to_arrow(frame[list(FRAME_COLUMNS)])


def _to_arrow(frame: pd.DataFrame) -> Any:
    """Rows as an Arrow table (contiguous strings: a third of the memory of Python objects), dates as date32."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    index = table.schema.get_field_index("USAGE_DATE")
    return table.set_column(index, "USAGE_DATE", table.column(index).cast(pa.date32()))


def _map_distinct(values: pd.Series, fn: Callable[[str], Any]) -> pd.Series:
    """`fn` applied once per distinct value (exports repeat the same ids and names on many rows)."""
    codes, distinct = pd.factorize(values)
    if not len(distinct):
        return pd.Series(np.full(len(values), fn(""), dtype=object), index=values.index)
    mapped = np.asarray([fn(v) for v in distinct], dtype=object)
    return pd.Series(mapped[np.where(codes < 0, 0, codes)], index=values.index)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (day, resource, meter, charge category, tags, currency, provider): what the warehouse stores."""
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FRAME_COLUMNS})
    grouped = frame.groupby(GROUP_KEYS, dropna=False, sort=False, as_index=False)[["COST", "BILLED_COST"]].sum()
    ids = grouped["RESOURCE_ID"]
    buckets = {r: series_bucket(r) for r in ids.unique()}
    grouped["SERIES_BUCKET"] = ids.map(buckets).astype("int64")
    grouped["COST"] = grouped["COST"].round(6)
    grouped["BILLED_COST"] = grouped["BILLED_COST"].round(6)
    return grouped[list(FRAME_COLUMNS)].reset_index(drop=True)


# -- a run ----------------------------------------------------------------------------------------------------


class _Buffer:
    """Normalised rows (Arrow tables), handed to the sink whenever `flush_rows` are buffered (few, large loads)."""

    def __init__(self, sink: Callable[[Any], None], flush_rows: int) -> None:
        self.sink = sink
        self.flush_rows = flush_rows
        self.tables: list[Any] = []
        self.rows = 0

    def add(self, table: Any) -> None:
        if table is None or not len(table):
            return
        self.tables.append(table)
        self.rows += len(table)
        if self.rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self.tables:
            return
        table = self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)
        self.tables, self.rows = [], 0
        self.sink(table)


def read_run(
    run: ExportRun,
    sink: Callable[[Any], None],
    keys: TagKeys = TagKeys(),
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    flush_rows: int = DEFAULT_FLUSH_ROWS,
) -> RunReport:
    """Read every file of a run block by block, handing normalised rows (Arrow tables with FRAME_COLUMNS) to
    `sink`; returns the run's report.

    Raises CostExportError (file, line, column, problem) when anything is wrong: the caller must then discard
    what the sink received (the store stages it under a load id and only swaps it in on success)."""
    problems = _Problems()
    report = RunReport()
    state = _RunState(run, keys, problems, report)
    buffer = _Buffer(sink, flush_rows)
    if not run.files:
        problems.add(run.run_id, None, "the run has no data files")
    schemas: dict[str, str] = {}
    for file in run.files:
        reader = _FileReader(file, problems, block_bytes)
        if not reader.open():
            continue
        schema = detect_schema(reader.header)
        if schema is None:
            problems.add(
                file.name,
                1,
                "unknown schema: the header has neither FOCUS columns (EffectiveCost, ChargePeriodStart, "
                "ChargeCategory) nor usage-details columns (Date/UsageDateTime, CostInBillingCurrency/Cost/PreTaxCost, "
                "ResourceId/InstanceId); header was " + ",".join(map(str, reader.header[:12])),
            )
            continue
        schemas[file.name] = schema
        state.schema_kind = SCHEMA_FOCUS if schema.startswith(SCHEMA_FOCUS) else SCHEMA_USAGE_DETAILS
        columns = _field_columns(schema, reader.header)
        for name, what in _REQUIRED.items():
            if name not in columns:
                problems.add(file.name, 1, f"no column for {what} in the header")
        if "day" not in columns or "cost" not in columns:
            continue
        for block in reader.blocks(columns):
            report.rows_read += len(block.frame)
            buffer.add(_normalise_block(block, file, columns, state))
            if problems.full:
                break
        if problems.full:
            break
    kinds = {s.split("-")[0] + ("-" + s.split("-")[1] if s.startswith("usage") else "") for s in schemas.values()}
    if len(kinds) > 1:
        problems.add(run.run_id, None, f"files of one run have different schemas: {sorted(set(schemas.values()))}")
    if run.expected_rows is not None and report.rows_read != run.expected_rows and run.files and not problems.items:
        problems.add(
            run.run_id, None, f"manifest says {run.expected_rows} data rows, the files have {report.rows_read}"
        )
    problems.raise_if_any(f"export run {run.run_id} not loaded")
    buffer.flush()
    if state.unparseable_tags:
        report.warnings.append(f"{state.unparseable_tags} distinct Tags value(s) not parseable, treated as untagged")
    if report.negative_usage_rows:
        report.warnings.append(
            f"{report.negative_usage_rows} usage row(s) with negative cost (corrections) netted into their day"
        )
    report.schema = _schema_name(next(iter(schemas.values()), SCHEMA_FOCUS), run)
    return report


def _schema_name(schema: str, run: ExportRun) -> str:
    if schema.startswith(SCHEMA_FOCUS) and run.data_version:
        version = run.data_version.strip().lower().removeprefix("v")
        if re.fullmatch(r"1\.\d+(r\d+)?(-preview)?", version):
            return f"{SCHEMA_FOCUS}-{version}"
    if schema.startswith(SCHEMA_USAGE_DETAILS) and run.export_type:
        kind = run.export_type.lower().replace("cost", "")
        if kind in ("actual", "amortized"):
            return f"{schema}-{kind}"
    return schema


def parse_run(run: ExportRun, keys: TagKeys = TagKeys(), *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> ParsedRun:
    """Read a (small) run into memory: validated, normalised daily rows; CostExportError naming file and line."""
    import pyarrow as pa

    tables: list[Any] = []
    report = read_run(run, tables.append, keys, block_bytes=block_bytes)
    frame = aggregate(pa.concat_tables(tables).to_pandas(date_as_object=True) if tables else pd.DataFrame())
    frame = frame.sort_values(["USAGE_DATE", "RESOURCE_ID", "METER", "CHARGE_CATEGORY"]).reset_index(drop=True)
    first = report.first_day or run.period_start or date.today()
    last = report.last_day or run.period_end or first
    return ParsedRun(
        run=run,
        schema=report.schema,
        frame=frame,
        rows_read=report.rows_read,
        period_start=run.period_start or first,
        period_end=run.period_end or last,
        warnings=tuple(report.warnings),
        report=report,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


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
                "PROVIDER": "azure",
            }
        )
        if len(problems.items) >= MAX_REPORTED_PROBLEMS:
            break
    problems.raise_if_any("Query API answer not loaded")
    frame = pd.DataFrame(out, columns=[c for c in FRAME_COLUMNS if c != "SERIES_BUCKET"])
    return aggregate(frame)


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
