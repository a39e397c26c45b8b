"""Demo step for cost anomalies (dev only): a FOCUS export of a few hundred resources over 120 days, with
anomalies, uploaded to Azurite like Cost Management would, loaded through the BlobCreated event, scored by
the daily timer through the admin API; prints open episodes and charts each critical one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.costs.synthetic import generate_costs

EXPORT_CONTAINER = "cost-exports"
EXPORT_ROOT = "focus"
EXPORT_NAME = "focus-daily"
SUBSCRIPTIONS = [f"00000000-0000-4000-8000-0000000000{i}" for i in ("a1", "b2", "c3")]
SQUADS = ["squad-payments", "squad-data", "squad-web", "squad-platform", ""]
SERVICES = [
    ("microsoft.compute/virtualmachines", "Virtual Machines", "D4s v5"),
    ("microsoft.containerservice/managedclusters", "Azure Kubernetes Service", "Standard_D8s_v5"),
    ("microsoft.storage/storageaccounts", "Storage", "Hot LRS Data Stored"),
    ("microsoft.sql/servers/databases", "SQL Database", "vCore"),
    ("microsoft.web/sites", "Azure App Service", "P1v3"),
]


@dataclass(frozen=True)
class DemoExport:
    """Files of one export run: blob names (relative to the container) and bytes; the manifest is last."""

    run_id: str
    period: str
    blobs: list[tuple[str, bytes]]

    @property
    def manifest_blob(self) -> str:
        return self.blobs[-1][0]


def demo_costs(
    n_resources: int = 300, days: int = 120, end: date | None = None, seed: int = 7
) -> tuple[pd.DataFrame, list[str]]:
    """Long FOCUS-like rows (one per resource-day) ending `end` (default yesterday UTC) with injected anomalies
    on the last days; returns (rows, ids of the resources made anomalous on purpose)."""
    end = end or (datetime.now(UTC).date() - timedelta(days=1))
    synthetic = generate_costs(n_series=n_resources, n_days=days, seed=seed, event_probability=0.0)
    costs = synthetic.costs.copy()
    rng = np.random.default_rng(seed)
    # resources that existed the whole window make readable anomalies
    whole = [i for i in range(n_resources) if not np.isnan(costs[i]).any() and np.nanmedian(costs[i]) > 20]
    picks = rng.choice(whole, size=4, replace=False)
    costs[picks[0], -1] = np.nanmedian(costs[picks[0], -15:]) + 36_000.0  # critical: +$1,500/hour
    costs[picks[1], -1] *= 4.0  # a spike
    costs[picks[2], -1] *= 0.3  # a drop: recorded, never alerted
    costs[picks[3], -1] = np.nanmedian(costs[picks[3], -15:]) + 400.0
    start = end - timedelta(days=days - 1)
    rows: list[dict[str, Any]] = []
    for i in range(n_resources):
        sub = SUBSCRIPTIONS[i % len(SUBSCRIPTIONS)]
        provider, service, meter = SERVICES[i % len(SERVICES)]
        squad = SQUADS[(i // 3) % len(SQUADS)]
        rid = f"/subscriptions/{sub}/resourcegroups/rg-{squad or 'shared'}/providers/{provider}/res-{i:04d}"
        tags = json.dumps({"owner": squad, "env": "prod" if i % 2 else "dev"}) if squad else ""
        for t in np.flatnonzero(~np.isnan(costs[i])):
            day = start + timedelta(days=int(t))
            rows.append(
                {
                    "BilledCost": round(float(costs[i, t]), 4),
                    "BillingCurrency": "USD",
                    "ChargeCategory": "Usage",
                    "ChargePeriodEnd": f"{day + timedelta(days=1)}T00:00:00Z",
                    "ChargePeriodStart": f"{day}T00:00:00Z",
                    "EffectiveCost": round(float(costs[i, t]), 4),
                    "ResourceId": rid,
                    "ResourceName": f"res-{i:04d}",
                    "ServiceName": service,
                    "SubAccountId": sub,
                    "SubAccountName": f"demo-{sub[:4]}",
                    "Tags": tags,
                    "x_ResourceGroupName": f"rg-{squad or 'shared'}",
                    "x_SkuMeterName": meter,
                }
            )
    ids = [
        rows_id for rows_id in {r["ResourceId"] for r in rows} if rows_id.endswith(tuple(f"res-{p:04d}" for p in picks))
    ]
    return pd.DataFrame(rows), sorted(ids)


def export_runs(frame: pd.DataFrame, submitted: datetime | None = None) -> list[DemoExport]:
    """Split rows into one monthly export run each, in the Cost Management blob layout with a manifest."""
    submitted = submitted or datetime.now(UTC)
    days = pd.to_datetime(frame["ChargePeriodStart"].str[:10])
    runs = []
    for month, part in frame.groupby(days.dt.to_period("M")):
        first = month.start_time.date()
        last = month.end_time.date()
        period = f"{first:%Y%m%d}-{last:%Y%m%d}"
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo:{period}:{len(part)}"))
        folder = f"{EXPORT_ROOT}/{EXPORT_NAME}/{period}/{run_id}"
        data = part.to_csv(index=False).encode()
        manifest = {
            "manifestVersion": "2024-04-01",
            "byteCount": len(data),
            "blobCount": 1,
            "dataRowCount": len(part),
            "exportConfig": {
                "exportName": EXPORT_NAME,
                "resourceId": f"/subscriptions/{SUBSCRIPTIONS[0]}/providers/Microsoft.CostManagement/exports/{EXPORT_NAME}",
                "dataVersion": "1.0r2",
                "type": "FocusCost",
                "timeFrame": "MonthToDate",
                "granularity": "Daily",
            },
            "deliveryConfig": {"partitionData": True, "fileFormat": "Csv", "containerName": EXPORT_CONTAINER},
            "runInfo": {
                "executionType": "Scheduled",
                "submittedTime": submitted.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
                "runId": run_id,
                "startDate": f"{first}T00:00:00",
                "endDate": f"{last}T00:00:00",
            },
            "blobs": [{"blobName": f"{folder}/part_0_0001.csv", "byteCount": len(data), "dataRowCount": len(part)}],
        }
        runs.append(
            DemoExport(
                run_id,
                period,
                [(f"{folder}/part_0_0001.csv", data), (f"{folder}/manifest.json", json.dumps(manifest).encode())],
            )
        )
    return runs


def blob_created_event(blob_url: str, event_id: str | None = None) -> dict[str, Any]:
    """An Event Grid `Microsoft.Storage.BlobCreated` event (Event Grid schema) for a blob URL."""
    container_and_name = blob_url.split(f"/{EXPORT_CONTAINER}/", 1)[1]
    return {
        "id": event_id or str(uuid.uuid4()),
        "topic": "/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/rg-demo/providers/"
        "Microsoft.Storage/storageAccounts/stcostexportsdemo",
        "subject": f"/blobServices/default/containers/{EXPORT_CONTAINER}/blobs/{container_and_name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": datetime.now(UTC).isoformat(),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {
            "api": "PutBlob",
            "contentType": "application/json",
            "blobType": "BlockBlob",
            "url": blob_url,
        },
    }


def upload_and_announce(ctx: Any, runs: list[DemoExport]) -> list[tuple[int, Any]]:
    """Upload each run's parts then its manifest to Azurite, and POST the manifest's BlobCreated event."""
    storage = ctx.runtime.storage
    answers = []
    blob_base = storage._blobs.url.rstrip("/")  # noqa: SLF001 - the demo needs the Azurite blob endpoint
    for run in runs:
        for name, data in run.blobs:
            storage.put_blob(EXPORT_CONTAINER, name, data)
        event = blob_created_event(f"{blob_base}/{EXPORT_CONTAINER}/{run.manifest_blob}")
        answers.append(
            ctx.call(
                "POST",
                "/runtime/webhooks/eventgrid?functionName=cost_export_ingest",
                [event],
                headers={"aeg-event-type": "Notification"},
            )
        )
    return answers


def wait_for_runs(ctx: Any, expected: int, timeout: float = 180.0) -> int:
    """Wait until the ingest worker has loaded `expected` export runs; returns how many it loaded."""
    import time

    from shared.costs import store

    deadline = time.monotonic() + timeout
    loaded = 0
    while time.monotonic() < deadline:
        with ctx.runtime.warehouse.session() as wh:
            loaded = len(store.export_runs(wh))
        if loaded >= expected:
            break
        time.sleep(0.5)
    return loaded


def chart_episode(episode: dict[str, Any], history: pd.DataFrame, band: tuple[float, float], out: Path) -> Path:
    """A PNG of a series' daily cost with the expected band on the anomaly day (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=100)
    days = pd.to_datetime(history["USAGE_DATE"])
    ax.plot(days, history["COST"], color="#1f77b4", lw=1.4, label="actual $/day")
    last = pd.Timestamp(episode["last_flagged_date"])
    ax.fill_between([last - pd.Timedelta(hours=12), last + pd.Timedelta(hours=12)], band[0], band[1],
                    color="#2ca02c", alpha=0.3, label="expected band")  # fmt: skip
    ax.axhline(episode["expected"], color="#2ca02c", lw=0.8, ls="--", label=f"expected ${episode['expected']:,.0f}")
    ax.scatter([last], [episode["cost"]], color="#d62728", zorder=5, label=f"actual ${episode['cost']:,.0f}")
    ax.set_title(f"{episode['series_id'].rsplit('/', 1)[-1]} ({episode['owner'] or 'untagged'}): "
                 f"+${episode['excess_usd_per_hour']:,.0f}/hour, {episode['severity']}", fontsize=10)  # fmt: skip
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("$ per day")
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def step_costs(ctx: Any) -> None:
    """The demo step: export -> blobs -> Event Grid -> warehouse -> timer -> episodes, alerts and charts."""
    from shared.cli.costs import format_episode_table
    from shared.costs import store
    from shared.costs.feedback import list_episodes

    frame, injected = demo_costs()
    runs = export_runs(frame)
    answers = upload_and_announce(ctx, runs)
    failed = [a for a in answers if a[0] != 200]
    ctx.summary.append(
        f"export: {frame['ResourceId'].nunique()} resources x {frame['ChargePeriodStart'].nunique()} days "
        f"({len(frame)} rows) in {len(runs)} monthly runs; BlobCreated -> cost_export_ingest: "
        f"{len(answers) - len(failed)} ok, {len(failed)} failed"
    )
    loaded = wait_for_runs(ctx, len(runs))
    ctx.summary.append(f"cost_ingest_worker (queue cost-ingest) loaded {loaded} of {len(runs)} runs")
    status, body = ctx.call("POST", "/admin/functions/cost_daily_scan", {"input": ""})
    ctx.summary.append(f"cost_daily_scan via admin API: HTTP {status} {body.get('status') if body else ''}")
    episodes = list_episodes(ctx.runtime, "open")
    ctx.summary.append(f"open episodes: {len(episodes)} (injected anomalies on {len(injected)} resources)")
    ctx.summary.extend("  " + line for line in format_episode_table(episodes).splitlines())
    ctx.summary.append(
        "alerts: one per cause, on queue `alerts` (alert_delivery -> outbox); totals explained by a resource's "
        "own episode are recorded above but not alerted"
    )
    reports = Path(ctx.runtime.settings.state_dir) / "reports"
    with ctx.runtime.warehouse.session() as wh:
        for episode in (e for e in episodes if e["severity"] == "critical" and e["series_kind"] == "resource"):
            day = date.fromisoformat(episode["last_flagged_date"])
            history = store.daily_series(wh, "resource", day - timedelta(days=60), day)
            history = history[history["SERIES_ID"] == episode["series_id"]].sort_values("USAGE_DATE")
            path = chart_episode(
                episode, history, (episode["lower"], episode["upper"]), reports / f"{episode['episode_id']}.png"
            )
            ctx.summary.append(f"chart: {path}")
