"""The Backstage scorecard of one component: DORA metrics, open policy violations, open cost anomalies and
month-to-date cost of the Azure resources tagged with the component (DORA_COMPONENT_TAG).

Resources are mapped to components in COMPONENT_RESOURCES, filled by `sync_component_resources`
(the tags of the resources that cost money this month or have an open violation, read from ARM) or
loaded from a CSV (`dora components load`). Reads only: COST_DAILY / COST_ANOMALIES (warehouse) and
the `policystate` table of the policy capability (NonCompliant rows), without touching their modules.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from shared.adapters.warehouse import WarehouseSession
from shared.dora.metrics import Window
from shared.dora.model import iso

log = logging.getLogger(__name__)

POLICY_STATE_TABLE = "policystate"  # shared/policy/dedupe.py: one row per violation key, partition "state"
POLICY_STATE_PARTITION = "state"


def component_resources(wh: WarehouseSession, component: str) -> list[str]:
    rows = wh.query(
        "SELECT DISTINCT RESOURCE_ID FROM COMPONENT_RESOURCES WHERE LOWER(COMPONENT) = LOWER(%s) ORDER BY RESOURCE_ID",
        (component,),
    )
    return [r["RESOURCE_ID"] for r in rows]


def _in_list(ids: list[str]) -> str:
    return ", ".join(["%s"] * len(ids))


def cost_summary(wh: WarehouseSession, resources: list[str], today: date) -> dict[str, Any]:
    """Month-to-date usage cost per currency and the open cost anomaly episodes of the resources."""
    if not resources:
        return {"monthToDate": {}, "anomalies": []}
    first = today.replace(day=1)
    cost_rows = wh.query(
        "SELECT COALESCE(CURRENCY, 'USD') AS CURRENCY, SUM(COST) AS COST FROM COST_DAILY "
        f"WHERE IS_USAGE AND USAGE_DATE >= %s AND USAGE_DATE <= %s AND LOWER(RESOURCE_ID) IN ({_in_list(resources)}) "
        "GROUP BY COALESCE(CURRENCY, 'USD')",
        [first, today, *resources],
    )
    anomaly_rows = wh.query(
        "SELECT EPISODE_ID, SERIES_ID, SEVERITY, START_DATE, EXCESS_USD_PER_DAY, TOTAL_EXCESS_USD, REASON "
        "FROM COST_ANOMALIES WHERE STATUS = 'open' AND SERIES_KIND = 'resource' "
        f"AND LOWER(SERIES_ID) IN ({_in_list(resources)}) ORDER BY EXCESS_USD_PER_DAY DESC",
        resources,
    )
    return {
        "monthToDate": {r["CURRENCY"]: round(float(r["COST"] or 0), 2) for r in cost_rows},
        "anomalies": [
            {
                "id": r["EPISODE_ID"],
                "resourceId": r["SERIES_ID"],
                "severity": r["SEVERITY"],
                "since": str(r["START_DATE"]),
                "excessUsdPerDay": round(float(r["EXCESS_USD_PER_DAY"] or 0), 2),
                "totalExcessUsd": round(float(r["TOTAL_EXCESS_USD"] or 0), 2),
                "reason": r["REASON"],
            }
            for r in anomaly_rows
        ],
    }


def open_violations(storage: Any, resources: Iterable[str]) -> list[dict[str, Any]]:
    """NonCompliant policy states of the resources, from the policy capability's `policystate` table."""
    wanted = {r.lower() for r in resources}
    if not wanted:
        return []
    rows = storage.query(
        POLICY_STATE_TABLE,
        "PartitionKey eq @pk and ComplianceState eq @state",
        pk=POLICY_STATE_PARTITION,
        state="NonCompliant",
    )
    out = []
    for row in rows:
        resource = str(row.get("ResourceId") or "")
        if resource.lower() in wanted:
            out.append(
                {
                    "resourceId": resource,
                    "assignmentId": row.get("AssignmentId") or "",
                    "definitionReferenceId": row.get("DefinitionReferenceId") or "",
                    "since": row.get("Timestamp_") or "",
                }
            )
    return sorted(out, key=lambda v: (v["resourceId"], v["assignmentId"]))


def document(
    name: str,
    entity_ref: str,
    window: Window,
    dora: list[dict[str, Any]],
    resources: list[str],
    violations: list[dict[str, Any]],
    costs: dict[str, Any],
    today: date,
) -> dict[str, Any]:
    from shared.dora.service import target_status

    return {
        "entityRef": entity_ref or f"component:default/{name}",
        "component": name,
        "from": window.label_from,
        "to": window.label_to,
        "dora": [{**entry, "meetsTarget": target_status(entry)} for entry in dora],
        "resources": len(resources),
        "policyViolations": {"open": len(violations), "items": violations[:100]},
        "costAnomalies": {"open": len(costs["anomalies"]), "items": costs["anomalies"][:100]},
        "cost": {"monthToDate": costs["monthToDate"], "since": today.replace(day=1).isoformat()},
        "generatedAt": iso(datetime.now(UTC).replace(tzinfo=None)),
    }


# -- filling COMPONENT_RESOURCES --


def replace_component_resources(wh: WarehouseSession, pairs: Iterable[tuple[str, str]], source: str) -> int:
    stamp = datetime.now(UTC).replace(tzinfo=None)
    rows = sorted({(r.strip().lower(), c.strip()) for r, c in pairs if r.strip() and c.strip()})
    with wh.transaction():
        wh.execute("DELETE FROM COMPONENT_RESOURCES WHERE SOURCE = %s", (source,))
        for resource, component in rows:
            wh.execute(
                "INSERT INTO COMPONENT_RESOURCES (RESOURCE_ID, COMPONENT, SOURCE, UPDATED_AT) VALUES (%s, %s, %s, %s)",
                (resource, component, source, stamp),
            )
    return len(rows)


def parse_component_csv(text: str) -> list[tuple[str, str]]:
    """`resource_id,component` rows (header required); ValueError names the bad line."""
    reader = csv.DictReader(io.StringIO(text))
    fields = {(f or "").strip().lower() for f in reader.fieldnames or []}
    if not {"resource_id", "component"} <= fields:
        raise ValueError("CSV needs the header resource_id,component")
    out = []
    for i, row in enumerate(reader, start=2):
        clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not clean.get("resource_id", "").startswith("/subscriptions/") or not clean.get("component"):
            raise ValueError(f"line {i}: expected /subscriptions/... and a component name")
        out.append((clean["resource_id"], clean["component"]))
    return out


def candidate_resources(wh: WarehouseSession, storage: Any, today: date) -> list[str]:
    """Resources worth mapping: those with cost this month and those with an open policy violation."""
    rows = wh.query(
        "SELECT DISTINCT LOWER(RESOURCE_ID) AS R FROM COST_DAILY WHERE USAGE_DATE >= %s AND RESOURCE_ID LIKE '/subscriptions/%%'",
        (today.replace(day=1),),
    )
    found = {r["R"] for r in rows}
    for row in storage.query(
        POLICY_STATE_TABLE, "PartitionKey eq @pk and ComplianceState eq @state", pk=POLICY_STATE_PARTITION,
        state="NonCompliant",
    ):  # fmt: skip
        if row.get("ResourceId"):
            found.add(str(row["ResourceId"]).lower())
    return sorted(found)


def component_of(tags: dict[str, str], tag: str) -> str:
    wanted = tag.strip().lower()
    for key, value in tags.items():
        if key.strip().lower() == wanted and str(value).strip():
            return str(value).strip()
    return ""


def sync_component_resources(
    runtime: Any, arm: Any, *, today: date | None = None, limit: int = 20000
) -> dict[str, int]:
    """Read the component tag of candidate resources from ARM and replace the `arm` rows of COMPONENT_RESOURCES."""
    day = today or datetime.now(UTC).date()
    tag = runtime.settings.dora_component_tag
    with runtime.warehouse.session() as wh:
        candidates = candidate_resources(wh, runtime.storage, day)[:limit]
    pairs = []
    for resource in candidates:
        component = component_of(arm.resource_tags(resource), tag)
        if component:
            pairs.append((resource, component))
    with runtime.warehouse.session() as wh:
        written = replace_component_resources(wh, pairs, "arm")
    return {"resources": len(candidates), "mapped": written}
