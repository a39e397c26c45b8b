"""The demand a ServiceNow Business Rule / Flow sends to `POST /api/demands`, checked once at the door.

Contract (docs/demands.md): `{"sysId", "number", "title", "description"?, "priority"?, "costCenter"?,
"acceptanceCriteria"?, "requestedBy"?}` plus the optional `portfolio` and `url`; other fields are
kept (a Flow may send more) but not used. `Demand.from_payload()` names every bad field at once,
so nothing half-valid reaches the queue. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from shared.errors import BadInputError, PayloadTooLargeError

SYS_ID = re.compile(r"^[0-9a-f]{32}$")
NUMBER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")
MAX_TITLE = 255  # System.Title's limit in Azure Boards
MAX_DESCRIPTION = 30_000
MAX_CRITERIA = 15_000
MAX_SHORT = 200
MAX_EXTRA_BYTES = 4_000
KNOWN = {
    "sysId",
    "number",
    "title",
    "description",
    "priority",
    "costCenter",
    "acceptanceCriteria",
    "requestedBy",
    "portfolio",
    "url",
}


@dataclass(frozen=True)
class Demand:
    """One approved ServiceNow demand. `priority` is 1 (critical) to 5 (planning), or None."""

    sys_id: str
    number: str
    title: str
    description: str = ""
    priority: int | None = None
    cost_center: str = ""
    acceptance_criteria: str = ""
    requested_by: str = ""
    portfolio: str = ""
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_payload(cls, doc: Any) -> Demand:
        """Validate the JSON of `POST /api/demands`; BadInputError lists each bad field."""
        if not isinstance(doc, dict):
            raise BadInputError(f"expected a JSON object (one demand), got {type(doc).__name__}")
        problems: list[dict[str, Any]] = []

        def text(name: str, *, required: bool = False, limit: int = MAX_SHORT) -> str:
            value = doc.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                if required:
                    problems.append({"field": name, "message": "required"})
                return ""
            if not isinstance(value, str):
                problems.append({"field": name, "message": f"must be a string, got {type(value).__name__}"})
                return ""
            if len(value) > limit:
                problems.append({"field": name, "message": f"at most {limit} characters, got {len(value)}"})
                return ""
            return value.strip()

        sys_id = text("sysId", required=True, limit=64)
        if sys_id and not SYS_ID.match(sys_id):
            problems.append({"field": "sysId", "message": "must be the record's 32-character hexadecimal sys_id"})
        number = text("number", required=True, limit=40)
        if number and not NUMBER.match(number):
            problems.append({"field": "number", "message": "must be the record number, e.g. DMND0001234"})
        title = text("title", required=True, limit=4_000)
        description = text("description", limit=MAX_DESCRIPTION)
        criteria = text("acceptanceCriteria", limit=MAX_CRITERIA)
        cost_center = text("costCenter")
        requested_by = text("requestedBy")
        portfolio = text("portfolio")
        url = text("url", limit=2_000)
        if url and not re.match(r"^https?://", url):
            problems.append({"field": "url", "message": "must be an http(s) URL of the demand record"})
        priority = _priority(doc.get("priority"), problems)
        extra = {k: v for k, v in doc.items() if k not in KNOWN}
        if extra and len(json.dumps(extra, default=str)) > MAX_EXTRA_BYTES:
            raise PayloadTooLargeError(
                f"fields other than the demand contract's ({', '.join(sorted(extra))[:200]}) exceed "
                f"{MAX_EXTRA_BYTES} bytes; send only the documented fields"
            )
        if problems:
            raise BadInputError(
                "invalid demand: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems), errors=problems
            )
        if len(title) > MAX_TITLE:  # ServiceNow allows longer titles; keep the whole one in the description
            description = f"{title}\n\n{description}".strip()
            title = title[: MAX_TITLE - 1].rstrip() + "…"
        return cls(
            sys_id=sys_id,
            number=number,
            title=title,
            description=description,
            priority=priority,
            cost_center=cost_center,
            acceptance_criteria=criteria,
            requested_by=requested_by,
            portfolio=portfolio,
            url=url,
            extra=extra,
        )

    def to_payload(self) -> dict[str, Any]:
        """The contract JSON again (what the queue carries); `from_payload(to_payload())` round-trips."""
        doc: dict[str, Any] = {"sysId": self.sys_id, "number": self.number, "title": self.title}
        optional = {
            "description": self.description,
            "priority": self.priority,
            "costCenter": self.cost_center,
            "acceptanceCriteria": self.acceptance_criteria,
            "requestedBy": self.requested_by,
            "portfolio": self.portfolio,
            "url": self.url,
        }
        doc.update({k: v for k, v in optional.items() if v not in ("", None)})
        doc.update(self.extra)
        return doc

    def fingerprint(self) -> str:
        """What makes two approvals the same content (a re-sent approval with edits is a new update)."""
        raw = json.dumps(self.to_payload(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _priority(value: Any, problems: list[dict[str, Any]]) -> int | None:
    """ServiceNow priorities come as 1..5, "2" or "2 - High"; anything else is named."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        problems.append({"field": "priority", "message": "must be 1 to 5 (ServiceNow priority)"})
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.match(r"^\s*[1-5]\b", value):
        number = int(value.strip()[0])
    else:
        problems.append({"field": "priority", "message": f"must be 1 to 5 (ServiceNow priority), got {value!r}"[:200]})
        return None
    if not 1 <= number <= 5:
        problems.append({"field": "priority", "message": f"must be 1 to 5 (ServiceNow priority), got {number}"})
        return None
    return number
