"""ServiceNow Table API on the demand table (`SERVICENOW_DEMAND_TABLE`, `dmn_demand` by default).

Reuses `ServiceNowClient` for auth (basic or OAuth client credentials, one token renewal on 401),
Retry-After on 429 and the error mapping; adds what the demand sync needs: PATCH a demand (display
values accepted, so the state map speaks "Completed", not a choice number), read by number, and
list approved demands updated since a time. ServiceNow silently ignores an invalid `sysparm_query`
part, so every row read back is checked against what was asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.adapters.servicenow import ServiceNowClient
from shared.errors import BadInputError, UpstreamError
from shared.settings import Settings

FIELDS = (
    "sys_id,number,short_description,description,priority,state,approval,cost_center,requested_by,"
    "portfolio,sys_updated_on"
)
PAGE = 200


class ServiceNowDemands:
    def __init__(self, client: ServiceNowClient, table: str, *, id_field: str = "", url_field: str = "") -> None:
        self.client = client
        self.table = table
        self.path = f"/api/now/table/{table}"
        self.id_field = id_field
        self.url_field = url_field

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceNowDemands:
        return cls(
            ServiceNowClient.from_settings(settings),
            settings.servicenow_demand_table,
            id_field=settings.servicenow_demand_work_item_field,
            url_field=settings.servicenow_demand_work_item_url_field,
        )

    @property
    def instance_url(self) -> str:
        return self.client.base

    def _fields(self) -> str:
        extra = ",".join(f for f in (self.id_field, self.url_field) if f)
        return FIELDS + ("," + extra if extra else "")

    def update(self, sys_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """PATCH one demand (`work_notes` appends to the journal); returns the record's display values."""
        doc = self.client._request(
            "PATCH",
            f"{self.path}/{sys_id}",
            params={
                "sysparm_input_display_value": "true",
                "sysparm_display_value": "true",
                "sysparm_fields": self._fields(),
            },
            body=fields,
        )
        return dict(doc.get("result") or {})

    def get(self, sys_id: str) -> dict[str, Any] | None:
        try:
            doc = self.client._request(
                "GET",
                f"{self.path}/{sys_id}",
                params={"sysparm_display_value": "true", "sysparm_fields": self._fields()},
            )
        except UpstreamError as err:  # a 404 is "no such demand", anything else propagates
            if "answered 404" in err.detail:
                return None
            raise
        return dict(doc.get("result") or {}) or None

    def find_by_number(self, number: str) -> dict[str, Any] | None:
        doc = self.client._request(
            "GET",
            self.path,
            params={
                "sysparm_query": f"number={number}",
                "sysparm_display_value": "true",
                "sysparm_fields": self._fields(),
                "sysparm_limit": "2",
            },
        )
        rows = [r for r in doc.get("result") or [] if isinstance(r, dict) and r.get("number") == number]
        return rows[0] if len(rows) == 1 else None

    def approved_since(self, approved_query: str, since: datetime) -> list[dict[str, Any]]:
        """Approved demands updated since `since` (display values), every page."""
        checks = _query_checks(approved_query)
        stamp = since.strftime("%Y-%m-%d %H:%M:%S")
        day, time = stamp.split(" ")
        query = f"{approved_query}^sys_updated_on>=javascript:gs.dateGenerate('{day}','{time}')^ORDERBYsys_updated_on"
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            doc = self.client._request(
                "GET",
                self.path,
                params={
                    "sysparm_query": query,
                    "sysparm_fields": self._fields(),
                    "sysparm_display_value": "all",
                    "sysparm_limit": str(PAGE),
                    "sysparm_offset": str(offset),
                },
            )
            page = [r for r in doc.get("result") or [] if isinstance(r, dict)]
            # a misspelt query field matches everything: keep only rows that really match
            rows.extend(r for r in page if all(_raw(r, f).lower() == v.lower() for f, v in checks))
            if len(page) < PAGE:
                return rows
            offset += PAGE


def _raw(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if isinstance(value, dict):  # sysparm_display_value=all: {"value", "display_value"}
        return str(value.get("value") or "")
    return str(value or "")


def display(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if isinstance(value, dict):
        return str(value.get("display_value") or value.get("value") or "")
    return str(value or "")


def _query_checks(query: str) -> list[tuple[str, str]]:
    checks = []
    for part in query.split("^"):
        field, sep, value = part.partition("=")
        if not sep or not field.strip() or any(c in field for c in "<>!"):
            raise BadInputError(
                f"SERVICENOW_DEMAND_APPROVED_QUERY: use field=value parts joined by '^'; {part!r} is not one"
            )
        checks.append((field.strip(), value.strip()))
    return checks


def demand_payload(row: dict[str, Any], instance_url: str, table: str) -> dict[str, Any]:
    """A ServiceNow demand row (display_value=all) as the `POST /api/demands` contract."""
    from shared.demands.mapping import record_url

    priority = _raw(row, "priority")
    return {
        "sysId": _raw(row, "sys_id"),
        "number": _raw(row, "number"),
        "title": display(row, "short_description"),
        "description": display(row, "description"),
        "priority": int(priority) if priority.isdigit() else None,
        "costCenter": display(row, "cost_center"),
        "requestedBy": display(row, "requested_by"),
        "portfolio": display(row, "portfolio"),
        "url": record_url(instance_url, table, _raw(row, "sys_id")),
    }
