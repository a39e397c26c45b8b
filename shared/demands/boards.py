"""Azure Boards calls of the demand sync, built on the shared `AzureDevOpsClient.request()`.

Work items: create (`POST {project}/_apis/wit/workitems/${type}`, JSON Patch), read with relations,
update (`PATCH`, JSON Patch, `test /rev` first), batch read, WIQL by tag; builds' linked work items.
Errors are the client's: 429/5xx/timeouts transient (with Retry-After), 401/403/203 auth, other
4xx keep the `TFxxxxx` message (e.g. TF401232 unknown work item, TF51535 unknown field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.adapters.azure_devops import JSON_PATCH, AzureDevOpsClient
from shared.demands.mapping import sn_tag, work_item_web_url
from shared.errors import UpstreamError

BATCH = 200  # most ids `wit/workitems?ids=` accepts


@dataclass(frozen=True)
class WorkItem:
    id: int
    rev: int
    fields: dict[str, Any]
    relations: list[dict[str, Any]]

    @property
    def state(self) -> str:
        return str(self.fields.get("System.State") or "")

    def as_current(self) -> dict[str, Any]:
        return {"rev": self.rev, "fields": self.fields, "relations": self.relations}


def _work_item(doc: Any, what: str) -> WorkItem:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), int):
        raise UpstreamError(f"Azure DevOps {what} answered without a work item id")
    return WorkItem(
        int(doc["id"]), int(doc.get("rev") or 0), dict(doc.get("fields") or {}), list(doc.get("relations") or [])
    )


class AzureBoards:
    def __init__(self, client: AzureDevOpsClient) -> None:
        self.client = client

    def web_url(self, work_item_id: int) -> str:
        return work_item_web_url(self.client.base, self.client.project, work_item_id)

    def create(self, work_item_type: str, patch: list[dict[str, Any]]) -> WorkItem:
        path = self.client.project_path(f"_apis/wit/workitems/${quote(work_item_type, safe='')}")
        return _work_item(self.client.request("POST", path, json=patch, content_type=JSON_PATCH), "create")

    def get(self, work_item_id: int) -> WorkItem | None:
        """The work item with its relations, or None when it was deleted (404 TF401232)."""
        path = self.client.project_path(f"_apis/wit/workitems/{work_item_id}")
        try:
            doc = self.client.request("GET", path, params={"$expand": "relations"})
        except UpstreamError as err:
            if "answered 404" in err.detail:
                return None
            raise
        return _work_item(doc, "get")

    def update(self, work_item_id: int, patch: list[dict[str, Any]]) -> WorkItem:
        path = self.client.project_path(f"_apis/wit/workitems/{work_item_id}")
        return _work_item(self.client.request("PATCH", path, json=patch, content_type=JSON_PATCH), "update")

    def states(self, ids: list[int]) -> dict[int, WorkItem]:
        """id -> work item (State and Rev only) for existing ids; deleted ones are left out."""
        out: dict[int, WorkItem] = {}
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            doc = self.client.request(
                "GET",
                self.client.project_path("_apis/wit/workitems"),
                params={
                    "ids": ",".join(str(i) for i in chunk),
                    "fields": "System.State,System.Tags",
                    "errorPolicy": "omit",
                },
            )
            for item in (doc or {}).get("value") or []:
                if isinstance(item, dict) and isinstance(item.get("id"), int):
                    out[item["id"]] = _work_item(item, "batch read")
        return out

    def find_by_demand(self, number: str) -> list[int]:
        """Ids of work items tagged `SN:<number>` (the fallback when the link record is missing)."""
        tag = sn_tag(number).replace("'", "''")
        wiql = {
            "query": "SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project "
            f"AND [System.Tags] CONTAINS '{tag}' ORDER BY [System.Id]"
        }
        doc = self.client.request("POST", self.client.project_path("_apis/wit/wiql"), json=wiql)
        return [int(w["id"]) for w in (doc or {}).get("workItems") or [] if isinstance(w, dict) and "id" in w]

    def build_work_items(self, build_id: int) -> list[int]:
        """Work items linked to a build (`GET build/builds/{id}/workitems`)."""
        doc = self.client.request("GET", self.client.project_path(f"_apis/build/builds/{build_id}/workitems"))
        out = []
        for ref in (doc or {}).get("value") or []:
            raw = ref.get("id") if isinstance(ref, dict) else None
            if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
                out.append(int(raw))
        return out
