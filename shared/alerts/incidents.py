"""ServiceNow incident fields for an alert (Table API `incident`). Pure: Alert + route in, dicts out.

Never sets `priority`: the instance computes it from impact and urgency. `correlation_id` is the
alert's dedupe key (hashed when it would not survive the field's 100 characters or the encoded
query syntax), `correlation_display` is "ValueFlow".
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from shared.alerts.model import Alert
from shared.alerts.routing import AlertRoute

CORRELATION_DISPLAY = "ValueFlow"
RESOLVED_STATE = "6"
# impact/urgency: 1 high, 2 medium, 3 low
_LEVEL = {"critical": "1", "warning": "2", "info": "3"}
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:/\-]{1,100}$")


def correlation_id_for(dedupe_key: str) -> str:
    """The dedupe key itself when it is short and query-safe, else `vf-` + its sha256 (stable)."""
    if _SAFE_KEY.match(dedupe_key):
        return dedupe_key
    return "vf-" + hashlib.sha256(dedupe_key.encode()).hexdigest()[:40]


def active_incident_query(correlation_id: str) -> dict[str, str]:
    """Query parameters finding the active incident of a correlation id (exact field names matter:
    ServiceNow silently ignores an unknown field in `sysparm_query` and matches everything)."""
    return {
        "sysparm_query": f"correlation_id={correlation_id}^active=true",
        "sysparm_fields": "sys_id,number,state,correlation_id",
        "sysparm_limit": "1",
    }


def _description(alert: Alert) -> str:
    lines = [alert.summary] if alert.summary else []
    lines.append(f"Resource: {alert.resource_id}")
    lines.append(f"Squad: {alert.owner or 'default'} · kind: {alert.kind} · severity: {alert.severity}")
    lines += [f"{k}: {v}" for k, v in alert.facts]
    lines += [f"{t}: {u}" for t, u in alert.links]
    lines.append(f"Dedupe key: {alert.dedupe_key}")
    return "\n".join(lines)


def incident_fields(alert: Alert, route: AlertRoute) -> dict[str, Any]:
    """The body of `POST /api/now/table/incident` for an alert."""
    body: dict[str, Any] = {
        "short_description": _cut(f"[ValueFlow] {alert.title}", 160),
        "description": _cut(_description(alert), 4000),
        "impact": _LEVEL[alert.severity],
        "urgency": _LEVEL[alert.severity],
        "category": route.servicenow_category,
        "correlation_id": correlation_id_for(alert.dedupe_key),
        "correlation_display": CORRELATION_DISPLAY,
    }
    if route.servicenow_assignment_group:
        body["assignment_group"] = route.servicenow_assignment_group
    if route.cmdb_ci:
        body["cmdb_ci"] = route.cmdb_ci
    return body


def work_note(alert: Alert) -> dict[str, Any]:
    """A PATCH appending a journal entry (work_notes appends on every write) for a repeat or update."""
    verb = {"open": "Repeated", "update": "Updated", "resolve": "Cleared"}[alert.action]
    facts = "; ".join(f"{k}: {v}" for k, v in alert.facts)
    text = f"[ValueFlow] {verb} at {alert.created_at}: {alert.title}" + (f"\n{facts}" if facts else "")
    if alert.summary:
        text += f"\n{alert.summary}"
    return {"work_notes": _cut(text, 4000)}


def resolution(alert: Alert, close_code: str) -> dict[str, Any]:
    """A PATCH resolving the incident: state Resolved with close code and close notes (both mandatory)."""
    notes = f"Condition cleared, resolved by ValueFlow at {alert.created_at}: {alert.title}"
    if alert.summary:
        notes += f"\n{alert.summary}"
    return {"state": RESOLVED_STATE, "close_code": close_code, "close_notes": _cut(notes, 4000)}


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
