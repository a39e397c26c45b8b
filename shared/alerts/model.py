"""The one `Alert` every producer fills (cost, policy, remediation, approvals) and delivery reads.

Pure: plain dataclass in, plain dict out. `Alert.from_dict()` is the producer-side gate: it names
every missing or invalid field at once, so nothing half-valid ever reaches the queue.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import BadInputError

KINDS = (
    "cost_anomaly",
    "cost_data_late",
    "policy_violation",
    "remediation_result",
    "approval",
    "action_audit",
    "delivery_failing",
    "digest",
)
SEVERITIES = ("info", "warning", "critical")
ACTIONS = ("open", "update", "resolve")

# bounds that keep one alert well inside a 48 KiB queue message and a 27 KB card
MAX_TITLE = 300
MAX_SUMMARY = 8000
MAX_FACTS = 60
MAX_LINKS = 10
MAX_TEXT = 2000


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Alert:
    """Something a squad must know about one resource. `dedupe_key` names the condition (one incident per key)."""

    kind: str
    severity: str
    title: str
    resource_id: str
    owner: str
    facts: tuple[tuple[str, str], ...]
    links: tuple[tuple[str, str], ...]
    dedupe_key: str
    correlation_id: str = ""
    action: str = "open"
    incident: bool | None = None
    summary: str = ""
    created_at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise BadInputError(_describe(problems), errors=problems)

    def wants_incident(self) -> bool:
        """An explicit `incident`, else critical alerts open incidents."""
        return self.incident if self.incident is not None else self.severity == "critical"

    def fingerprint(self) -> str:
        """What makes two deliveries the same: everything but `created_at` and `correlation_id` (a replay
        of the same alert built again later is still the same delivery)."""
        doc = self.to_dict()
        doc.pop("created_at", None)
        doc.pop("correlation_id", None)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "resource_id": self.resource_id,
            "owner": self.owner,
            "facts": [[k, v] for k, v in self.facts],
            "links": [[t, u] for t, u in self.links],
            "dedupe_key": self.dedupe_key,
            "correlation_id": self.correlation_id,
            "action": self.action,
            "incident": self.incident,
            "summary": self.summary,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Alert:
        """Build from JSON-like data; BadInputError naming every missing or invalid field."""
        if not isinstance(d, dict):
            raise BadInputError(f"an alert must be a JSON object, got {type(d).__name__}")
        problems: list[dict[str, Any]] = []
        for name in ("kind", "severity", "title", "resource_id", "owner", "dedupe_key"):
            if name not in d or d[name] is None:
                problems.append({"field": name, "problem": "missing"})
            elif not isinstance(d[name], str):
                problems.append({"field": name, "problem": f"must be a string, got {type(d[name]).__name__}"})
        facts = _pairs(d.get("facts", []), "facts", problems)
        links = _pairs(d.get("links", []), "links", problems)
        for name in ("correlation_id", "action", "summary", "created_at"):
            if name in d and d[name] is not None and not isinstance(d[name], str):
                problems.append({"field": name, "problem": f"must be a string, got {type(d[name]).__name__}"})
        for name, allowed in (("kind", KINDS), ("severity", SEVERITIES), ("action", ACTIONS)):
            value = d.get(name)
            if isinstance(value, str) and value not in allowed:
                problems.append({"field": name, "problem": f"expected one of {', '.join(allowed)}; got {value!r}"})
        incident = d.get("incident")
        if incident is not None and not isinstance(incident, bool):
            problems.append({"field": "incident", "problem": "must be true, false or null"})
        unknown = sorted(set(d) - _FIELDS)
        for name in unknown:
            problems.append({"field": name, "problem": "unknown field"})
        if problems:
            raise BadInputError(_describe(problems), errors=problems)
        kwargs: dict[str, Any] = {
            "kind": d["kind"],
            "severity": d["severity"],
            "title": d["title"],
            "resource_id": d["resource_id"],
            "owner": d["owner"],
            "facts": facts,
            "links": links,
            "dedupe_key": d["dedupe_key"],
            "correlation_id": d.get("correlation_id") or "",
            "action": d.get("action") or "open",
            "incident": incident,
            "summary": d.get("summary") or "",
        }
        if d.get("created_at"):
            kwargs["created_at"] = d["created_at"]
        return cls(**kwargs)


_FIELDS = {
    "kind",
    "severity",
    "title",
    "resource_id",
    "owner",
    "facts",
    "links",
    "dedupe_key",
    "correlation_id",
    "action",
    "incident",
    "summary",
    "created_at",
}


def _pairs(value: Any, name: str, problems: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    if isinstance(value, dict):  # {"Cost": "12"} is a natural way to write facts
        value = list(value.items())
    if not isinstance(value, (list, tuple)):
        problems.append({"field": name, "problem": "must be a list of [name, value] pairs"})
        return ()
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            problems.append({"field": f"{name}[{i}]", "problem": "must be a [string, string] pair"})
            continue
        out.append((pair[0], pair[1]))
    return tuple(out)


def validate(alert: Alert) -> list[dict[str, Any]]:
    """Every problem of an alert as {"field", "problem"}; [] when it is deliverable."""
    p: list[dict[str, Any]] = []
    if alert.kind not in KINDS:
        p.append({"field": "kind", "problem": f"expected one of {', '.join(KINDS)}; got {alert.kind!r}"})
    if alert.severity not in SEVERITIES:
        p.append({"field": "severity", "problem": f"expected one of {', '.join(SEVERITIES)}; got {alert.severity!r}"})
    if alert.action not in ACTIONS:
        p.append({"field": "action", "problem": f"expected one of {', '.join(ACTIONS)}; got {alert.action!r}"})
    for name, limit in (("title", MAX_TITLE), ("dedupe_key", 1024), ("resource_id", 2048)):
        value = getattr(alert, name)
        if not isinstance(value, str) or not value.strip():
            p.append({"field": name, "problem": "must be a non-empty string"})
        elif len(value) > limit:
            p.append({"field": name, "problem": f"longer than {limit} characters"})
    if not isinstance(alert.owner, str):
        p.append({"field": "owner", "problem": "must be a string (empty = default route)"})
    if isinstance(alert.summary, str) and len(alert.summary) > MAX_SUMMARY:
        p.append({"field": "summary", "problem": f"longer than {MAX_SUMMARY} characters"})
    if len(alert.facts) > MAX_FACTS:
        p.append({"field": "facts", "problem": f"more than {MAX_FACTS} facts"})
    for i, (k, v) in enumerate(alert.facts):
        if len(k) > 200 or len(v) > MAX_TEXT:
            p.append({"field": f"facts[{i}]", "problem": f"name over 200 or value over {MAX_TEXT} characters"})
    if len(alert.links) > MAX_LINKS:
        p.append({"field": "links", "problem": f"more than {MAX_LINKS} links"})
    for i, (_, url) in enumerate(alert.links):
        if not (url.startswith("https://") or url.startswith("http://")):
            p.append({"field": f"links[{i}]", "problem": "url must start with https:// or http://"})
    try:
        parsed = datetime.fromisoformat(alert.created_at.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            p.append({"field": "created_at", "problem": "must carry a time zone (e.g. 2025-01-31T06:30:00+00:00)"})
    except (ValueError, AttributeError):
        p.append({"field": "created_at", "problem": "must be an ISO 8601 timestamp"})
    return p


def _describe(problems: list[dict[str, Any]]) -> str:
    return "invalid alert: " + "; ".join(f"{x['field']}: {x['problem']}" for x in problems)
