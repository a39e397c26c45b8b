"""Which work item a demand became, and which work item revisions the sync wrote itself (table `demands`).

Rows: `demand/<sys_id>` (WorkItemId, Number, Url), `workitem/<id>` (SysId, Number) for the way
back, and `ownrev/<id>-<rev>` for each revision the sync made (a `workitem.updated` for one of them
is our own echo and is ignored: no ping-pong).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

TABLE = "demands"


class LinkTable(Protocol):
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None: ...
    def query(self, table: str, filter: str | None = None, **params: Any) -> Any: ...


@dataclass(frozen=True)
class DemandLink:
    sys_id: str
    number: str
    work_item_id: int
    url: str


class DemandLinks:
    def __init__(self, store: LinkTable) -> None:
        self.store = store

    def of_demand(self, sys_id: str) -> DemandLink | None:
        row = self.store.get(TABLE, "demand", sys_id)
        if not row or not row.get("WorkItemId"):
            return None
        return DemandLink(sys_id, str(row.get("Number") or ""), int(row["WorkItemId"]), str(row.get("Url") or ""))

    def of_work_item(self, work_item_id: int) -> DemandLink | None:
        row = self.store.get(TABLE, "workitem", str(work_item_id))
        if not row or not row.get("SysId"):
            return None
        return DemandLink(str(row["SysId"]), str(row.get("Number") or ""), work_item_id, str(row.get("Url") or ""))

    def save(self, link: DemandLink) -> None:
        now = datetime.now(UTC).isoformat()
        fields = {"Number": link.number, "Url": link.url, "LinkedAt": now}
        self.store.upsert(TABLE, "demand", link.sys_id, {**fields, "WorkItemId": link.work_item_id})
        self.store.upsert(TABLE, "workitem", str(link.work_item_id), {**fields, "SysId": link.sys_id})

    def all(self) -> list[DemandLink]:
        rows = self.store.query(TABLE, "PartitionKey eq @pk", pk="demand")
        return [
            DemandLink(str(r["RowKey"]), str(r.get("Number") or ""), int(r["WorkItemId"]), str(r.get("Url") or ""))
            for r in rows
            if r.get("WorkItemId")
        ]

    def mark_own_revision(self, work_item_id: int, rev: int) -> None:
        self.store.upsert(TABLE, "ownrev", f"{work_item_id}-{rev}", {"At": datetime.now(UTC).isoformat()})

    def is_own_revision(self, work_item_id: int, rev: int) -> bool:
        return self.store.get(TABLE, "ownrev", f"{work_item_id}-{rev}") is not None
