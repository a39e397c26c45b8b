"""Reconciliation: repair what a lost webhook or a lost message missed, and say what was fixed.

Nightly (timer `demand_reconcile`) and on demand (`python -m shared.cli demands reconcile --since`):
1. every approved demand ServiceNow updated since `since` (`SERVICENOW_DEMAND_APPROVED_QUERY`)
   without a live work item gets one (the same exactly-once sync as `POST /api/demands`; a work
   item tagged `SN:<number>` is adopted, never duplicated);
2. every linked demand whose work item's state maps to a different demand state is set to it, with
   a work note (keyed like the webhook's step, so a late webhook for that revision changes nothing).
`plan()` is pure: ServiceNow rows, links and work item states in, the repairs out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.demands import mapping
from shared.demands.boards import WorkItem
from shared.demands.links import DemandLink
from shared.demands.model import Demand
from shared.demands.servicenow import demand_payload, display
from shared.demands.sync import DemandSync
from shared.errors import BadInputError, ValueFlowError

log = logging.getLogger(__name__)

REPORTS_CONTAINER = "reports"


@dataclass(frozen=True)
class Repair:
    """`create`: the demand has no work item; `state`: the demand's state lags its work item's."""

    action: str
    sys_id: str
    number: str
    work_item_id: int = 0
    rev: int = 0
    boards_state: str = ""
    target_state: str = ""
    current_state: str = ""


@dataclass
class ReconcileReport:
    since: str
    checked: int = 0
    fixed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    in_sync: int = 0

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def plan(
    rows: Iterable[Mapping[str, Any]],
    links: Mapping[str, DemandLink],
    work_items: Mapping[int, WorkItem],
    state_map: Iterable[tuple[str, str]],
) -> list[Repair]:
    """The repairs for approved demand rows (display_value=all), their links and their work items."""
    state_map = list(state_map)
    repairs = []
    for row in rows:
        sys_id, number = display_raw(row, "sys_id"), display_raw(row, "number")
        link = links.get(sys_id)
        item = work_items.get(link.work_item_id) if link else None
        if item is None:
            repairs.append(Repair("create", sys_id, number))
            continue
        target = mapping.map_state(item.state, state_map)
        current = display(row, "state")
        if target and target.lower() != current.lower():
            repairs.append(Repair("state", sys_id, number, item.id, item.rev, item.state, target, current))
    return repairs


def display_raw(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if isinstance(value, dict):
        return str(value.get("value") or "")
    return str(value or "")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`2026-11-01`, an ISO timestamp, or a duration like `7d` / `12h` back from now."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in ("d", "h"):
        amount = int(value[:-1])
        return now - (timedelta(days=amount) if value.endswith("d") else timedelta(hours=amount))
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadInputError(
            f"--since {text!r}: expected a date (2026-11-01), an ISO timestamp or a duration (7d, 12h)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def reconcile(sync: DemandSync, since: datetime, *, dry_run: bool = False) -> ReconcileReport:
    """Compare ServiceNow with Azure Boards since `since` and repair (unless dry_run); one failure
    does not stop the others, it is reported."""
    settings = sync.settings
    servicenow = sync.servicenow
    rows = servicenow.approved_since(settings.servicenow_demand_approved_query, since.astimezone(UTC))
    report = ReconcileReport(since=since.astimezone(UTC).isoformat(), checked=len(rows))
    links = {}
    for row in rows:
        link = sync.links.of_demand(display_raw(row, "sys_id"))
        if link:
            links[link.sys_id] = link
    work_items = sync.boards.states(sorted({link.work_item_id for link in links.values()}))
    repairs = plan(rows, links, work_items, settings.demands_state_map)
    report.in_sync = len(rows) - len(repairs)
    by_id = {display_raw(r, "sys_id"): r for r in rows}
    for repair in repairs:
        entry = {k: v for k, v in asdict(repair).items() if v not in ("", 0)}
        if dry_run:
            report.fixed.append({**entry, "result": "would fix (dry run)"})
            continue
        try:
            if repair.action == "create":
                demand = Demand.from_payload(
                    demand_payload(by_id[repair.sys_id], servicenow.instance_url, servicenow.table)
                )
                _, detail, effects = sync.sync(demand)
                entry["result"] = "; ".join(effects) or detail
            else:
                fields = mapping.reconcile_state_update(repair.work_item_id, repair.boards_state, repair.target_state)
                _, ran = sync.once(
                    ("state", repair.work_item_id, repair.rev),
                    lambda r=repair, f=fields: sync.write_back(r.sys_id, f),  # type: ignore[misc]
                )
                entry["result"] = (
                    f"state {repair.current_state or '?'} -> {repair.target_state}" if ran else "already done"
                )
            report.fixed.append(entry)
        except ValueFlowError as err:
            report.failed.append({**entry, "error": err.detail[:500]})
            log.error("reconciliation could not repair %s: %s", repair.number, err.detail)
    log.info(
        "demand reconciliation finished",
        extra={
            "checked": report.checked,
            "fixed": len(report.fixed),
            "failed": len(report.failed),
            "since": report.since,
        },
    )
    return report


def save_report(store: Any, report: ReconcileReport, *, now: datetime | None = None) -> str:
    """Keep the report as a blob (`reports/demands/reconcile-<time>.json`); returns its name."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    name = f"demands/reconcile-{stamp}.json"
    store.put_blob(REPORTS_CONTAINER, name, json.dumps(report.summary(), indent=2).encode(), overwrite=True)
    return name
