"""Getting cost data in: export runs from blob storage (Event Grid) or local files (CLI), and Query API pulls.

Each source ends in `store.load_export_run`: the run is streamed block by block into a staging table, then
swapped in by one transaction (all-or-nothing, idempotent per run id). Files are never read whole into memory:
local files are opened by path, blobs are downloaded in chunks.

Blob layouts that start a load (BlobCreated -> queue `cost-ingest` -> `cost_ingest_worker`):

* Cost Management exports: `<root>/<export>/<YYYYMMDD-YYYYMMDD>/<runId>/manifest.json` (written last).
* Any other FOCUS export (AWS CUR 2.0 FOCUS, Google Cloud, Oracle, or Azure files copied by hand), manifest-less:
  put the data files (csv, csv.gz, parquet) in `<root>/<provider>/<export>/<YYYYMMDD-YYYYMMDD>/<runId>/`, then
  write an empty `_SUCCESS` blob in the same folder. Every data file of the folder is one run (`runId` = the
  folder), replacing the period of the folder name for the source `<root>/<provider>/<export>`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from shared.adapters.cost_exports import CostExportStorage, parse_blob_url
from shared.costs import store
from shared.costs.ingest import (
    ExportFile,
    ExportRun,
    ParsedRun,
    RunReport,
    TagKeys,
    is_data_file,
    locate,
    manifest_blob_names,
    parse_manifest,
    query_result_frame,
    read_run,
    run_from_manifest,
)
from shared.errors import BadInputError
from shared.idempotency import Scope, idempotency_key
from shared.runtime import Runtime
from shared.settings import Settings

log = logging.getLogger(__name__)

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
INGEST_QUEUE = "cost-ingest"
# one partition named after the scope (tests and operators list `PartitionKey eq 'cost-export'`)
EXPORT_SCOPE = Scope("cost-export", lease=timedelta(minutes=10), expires_after=timedelta(days=60), spread=1)
RUN_MARKER = "_success"  # a manifest-less run folder is complete when this blob lands (compared lower-cased)


def tag_keys(settings: Settings) -> TagKeys:
    return TagKeys(
        owner=settings.owner_tag_keys,
        cost_center=settings.cost_center_tag_keys,
        environment=settings.environment_tag_keys,
    )


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did: the run's outcome and what was read."""

    source: str
    outcome: store.LoadOutcome | None
    schema: str = ""
    rows_read: int = 0
    skipped: str = ""
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """At least status, schema, rows_read, rows, period and cost_by_currency (the `costs ingest --json` contract)."""
        out: dict[str, Any] = {"source": self.source, "schema": self.schema, "rows_read": self.rows_read}
        if self.outcome:
            out.update(self.outcome.as_dict())
            if self.outcome.status == "already_loaded":
                # the figures of the run as it was loaded the first time
                out["schema"] = self.schema or self.outcome.report.get("schema", "")
                out["rows_read"] = self.rows_read or self.outcome.report.get("rows_read", 0)
        else:
            out.setdefault("status", "skipped")
        if self.skipped:
            out["skipped"] = self.skipped
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def ingest_blob_event(runtime: Runtime, event_type: str, data: dict[str, Any]) -> IngestResult:
    """Load the export run whose manifest.json an Event Grid BlobCreated event announces.

    Other blobs (the data parts arrive before the manifest) and other event types are skipped. Raises
    CostExportError (bad files: Event Grid must not retry) or a storage/warehouse error (retry)."""
    url = str(data.get("url") or "")
    if event_type != BLOB_CREATED:
        return IngestResult(url, None, skipped=f"event type {event_type} is not {BLOB_CREATED}")
    ref = parse_blob_url(url)
    leaf = PurePosixPath(ref.name).name.lower()
    if leaf not in ("manifest.json", RUN_MARKER):
        return IngestResult(url, None, skipped="not a manifest.json or _SUCCESS blob")
    exports = CostExportStorage.from_settings(runtime.settings, runtime.storage)
    if leaf == RUN_MARKER:
        return _load(runtime, _folder_run(exports, ref.container, ref.name), f"{ref.container}/{ref.name}")
    manifest_bytes = exports.read(ref.container, ref.name)
    manifest = parse_manifest(ref.name, manifest_bytes)
    files = [ExportFile(name, opener=exports.opener(ref.container, name)) for name in manifest_blob_names(manifest)]
    run = run_from_manifest(ref.name, manifest, files)
    return _load(runtime, run, f"{ref.container}/{ref.name}")


def _folder_run(exports: CostExportStorage, container: str, marker: str) -> ExportRun:
    """The run of a manifest-less folder: every data file next to its `_SUCCESS` marker."""
    folder = str(PurePosixPath(marker).parent)
    where = locate(marker)
    if where is None:
        from shared.costs.ingest import CostExportError

        problem = "a manifest-less run folder must be <root>/<provider>/<export>/<YYYYMMDD-YYYYMMDD>/<runId>/"
        raise CostExportError(
            f"{container}/{marker}: {problem}", errors=[{"file": marker, "line": None, "problem": problem}]
        )
    names = sorted(n for n in exports.list(container, folder + "/") if is_data_file(n))
    files = tuple(ExportFile(n, opener=exports.opener(container, n)) for n in names)
    return ExportRun(
        run_id=f"blob:{container}/{folder}".lower(),
        source_key=f"blob:{container}/{where.export_path}".lower(),
        period_start=where.period_start,
        period_end=where.period_end,
        files=files,
    )


def ingest_paths(runtime: Runtime, paths: list[str]) -> list[IngestResult]:
    """Load local export files or folders (`costs ingest`): each manifest.json found is one run; data files
    without a manifest are one run per folder, their run id the hash of their content (reloading is a no-op)."""
    manifests: list[Path] = []
    loose: dict[Path, list[Path]] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BadInputError(f"{raw}: no such file or folder")
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in candidates:
            if file.name.lower() == "manifest.json":
                manifests.append(file)
        with_manifest = {m.parent for m in manifests}
        for file in candidates:
            if is_data_file(file.name) and file.parent not in with_manifest:
                loose.setdefault(file.parent, []).append(file)
    if not manifests and not loose:
        raise BadInputError(f"no export files (manifest.json, *.csv, *.csv.gz, *.parquet) in {', '.join(paths)}")
    results = []
    for manifest_path in manifests:
        manifest = parse_manifest(str(manifest_path), manifest_path.read_bytes())
        files = []
        for name in manifest_blob_names(manifest):
            local = manifest_path.parent / PurePosixPath(name).name
            if not local.is_file():
                raise BadInputError(f"{manifest_path}: lists {name}, but {local} does not exist")
            files.append(ExportFile(str(local), path=str(local)))
        results.append(_load(runtime, run_from_manifest(manifest_path.as_posix(), manifest, files), str(manifest_path)))
    for folder, data_files in sorted(loose.items()):
        files = [ExportFile(str(f), path=str(f)) for f in sorted(data_files)]
        # the run id is the content hash (streamed): reloading the same files is a no-op
        digest = hashlib.sha256("".join(f.sha256() for f in files).encode()).hexdigest()[:32]
        where = locate(data_files[0].as_posix())
        source_key = "local:" + (where.export_path if where else folder.resolve().as_posix()).lower()
        run = ExportRun(
            run_id="local-" + digest,
            source_key=source_key,
            period_start=where.period_start if where else None,
            period_end=where.period_end if where else None,
            files=tuple(files),
        )
        results.append(_load(runtime, run, str(folder)))
    return results


def pull_query_api(
    runtime: Runtime, scope: str, start: date, end: date, *, query: Any = None, now: datetime | None = None
) -> IngestResult:
    """Pull daily amortized cost of `scope` for start..end from the Query API and replace that period's rows."""
    from shared.adapters.cost_management import CostManagementQuery

    client = query or CostManagementQuery.from_settings(runtime.settings)
    owner_tag = (runtime.settings.owner_tag_keys or ("owner",))[0].lower()
    page = client.daily_costs(scope, start, end, owner_tag)
    frame = query_result_frame(page.columns, page.rows, scope, owner_tag)
    pulled = (now or datetime.now(UTC)).replace(tzinfo=None)
    run = ExportRun(
        run_id=f"query:{scope.lower()}:{start}:{end}:{pulled.isoformat(timespec='seconds')}",
        source_key="query:" + scope.strip().lower().rstrip("/"),
        period_start=start,
        period_end=end,
        files=(),
        submitted_at=pulled,
        export_type="AmortizedCost",
    )
    parsed = ParsedRun(
        run=run, schema="query-api", frame=frame, rows_read=len(page.rows), period_start=start, period_end=end
    )
    with runtime.warehouse.session() as wh:
        outcome = store.load_run(wh, parsed)
    log.info("cost query pulled", extra={"scope": scope, "rows": outcome.rows, "period": f"{start}..{end}"})
    return IngestResult(scope, outcome, "query-api", len(page.rows))


def pull_configured_scopes(runtime: Runtime, day: date, days: int = 3) -> list[IngestResult]:
    """The daily scan's first step: refresh the last `days` days of every COST_QUERY_SCOPES scope."""
    results = []
    for scope in runtime.settings.cost_query_scopes:
        results.append(pull_query_api(runtime, scope, day - timedelta(days=days - 1), day))
    return results


def _load(runtime: Runtime, run: ExportRun, source: str) -> IngestResult:
    settings = runtime.settings
    keys = tag_keys(settings)

    def read(sink: Any) -> RunReport:
        return read_run(
            run,
            sink,
            keys,
            block_bytes=settings.cost_ingest_block_mb << 20,
            flush_rows=settings.cost_ingest_flush_rows,
        )

    with runtime.warehouse.session() as wh:
        outcome, report = store.load_export_run(wh, run, read)
    log.info(
        "cost export run %s",
        outcome.status,
        extra={
            "run_id": run.run_id,
            "rows": outcome.rows,
            "period": f"{outcome.period_start}..{outcome.period_end}",
            "cost_by_currency": outcome.report.get("cost_by_currency"),
        },
    )
    if report is None:
        return IngestResult(source, outcome)
    return IngestResult(source, outcome, report.schema, report.rows_read, warnings=tuple(report.warnings))


def accept_export_event(runtime: Runtime, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Event Grid entry, answered within milliseconds: queue the manifest for `cost_ingest_worker`.

    Event Grid retries anything slower than 30 s, and a large export takes longer to load. Events that
    announce no manifest, or carry no blob URL, are acknowledged and logged (a retry would not fix them)."""
    url = str(data.get("url") or "")
    if event_type != BLOB_CREATED:
        return {"url": url, "status": "skipped", "reason": f"event type {event_type} is not {BLOB_CREATED}"}
    try:
        ref = parse_blob_url(url)
    except BadInputError as err:
        log.warning("cost export event ignored: %s", err.detail)
        return {"url": url, "status": "ignored", "reason": err.detail}
    if PurePosixPath(ref.name).name.lower() not in ("manifest.json", RUN_MARKER):
        return {"url": url, "status": "skipped", "reason": "not a manifest.json or _SUCCESS blob"}
    runtime.storage.send(INGEST_QUEUE, {"event_type": event_type, "data": {"url": url}})
    return {"url": url, "status": "queued"}


def handle_export_event(runtime: Runtime, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Event Grid entry: load the run once per manifest URL. A broken run is rejected for good (logged with
    every file/line problem, not retried: the files will not change); a run being loaded by another invocation
    raises TransientUpstreamError so that Event Grid retries later."""
    from shared.costs.ingest import CostExportError

    url = str(data.get("url") or "")
    key = idempotency_key("cost-export", url)  # a URL has '/' that a table RowKey may not

    def load() -> dict[str, Any]:
        try:
            return ingest_blob_event(runtime, event_type, data).as_dict()
        except CostExportError as err:  # rejected for good: completed with the rejection, never retried
            log.error("cost export run rejected: %s", err.detail, extra={"url": url, "problems": err.errors})
            _alert_rejected_run(runtime, key, url, err)
            return {"url": url, "status": "rejected", "detail": err.detail, "problems": err.errors}

    outcome = runtime.idempotency.once(EXPORT_SCOPE, key, load).raise_if_busy(f"export run {url}")
    if outcome.replayed:
        return {"url": url, "status": "duplicate", "earlier": outcome.result}
    return outcome.result or {}


def _alert_rejected_run(runtime: Runtime, key: str, url: str, err: Any) -> None:
    """A rejected run leaves its period unscored until a good re-export: tell the platform team once."""
    from shared.alerts.delivery import enqueue_alert
    from shared.alerts.model import Alert

    problems = tuple((f"{p.get('file', '')}:{p.get('line', '')}", str(p.get("problem", ""))) for p in err.errors[:10])
    enqueue_alert(
        runtime.storage,
        Alert(
            kind="cost_data_late",
            severity="warning",
            title="Cost export run rejected: nothing of it was loaded",
            resource_id="cost-data",
            owner="",
            facts=(("Manifest", url.split("?")[0]), *problems),
            links=(),
            dedupe_key=f"cost-export-rejected:{key}",
            summary=f"{err.detail}. Earlier data is intact; the period is scored again once a good run lands.",
        ),
    )
