"""Problems from Dynatrace (problem-notification webhook or a Workflows HTTP action) and ServiceNow
(outbound REST), mapped to the generic `Problem`; pure.

`parse_problem_payload()` accepts, per item:
- the generic contract (`id`, `services`, `priority`, `state`, `startedAt`...) — used as sent;
- a Dynatrace problem as the Problems API v2 shapes it (`problemId`, `displayId`, `title`,
  `status` OPEN/CLOSED, `severityLevel`, `impactLevel`, `startTime`/`endTime` in epoch ms,
  `affectedEntities`/`impactedEntities` [{entityId: {id, type}, name}], `rootCauseEntity`,
  `managementZones`, `entityTags`) — which is what the `{ProblemDetailsJSONv2}` placeholder of a
  custom webhook expands to, so the recommended webhook body is
  `{"ProblemID": "{ProblemID}", "State": "{State}", "ProblemURL": "{ProblemURL}", "Details": {ProblemDetailsJSONv2}}`;
- the classic placeholders alone (`ProblemID`, `PID`, `State`, `ProblemSeverity`, `ProblemImpact`,
  `ImpactedEntities`, `ProblemTitle`, `ProblemURL`, `Tags`); the start time is then the time received;
- a ServiceNow incident (`sys_id`, `number`, `priority` "1 - Critical", `state`, `opened_at`,
  `resolved_at`, `business_service`/`cmdb_ci`), see docs/dora.md for the outbound REST message.
The priority of Dynatrace problems comes from the configurable rule (`DORA_PRIORITY_RULES`);
impacted entities are service aliases (SERVICE_ALIASES resolves them when stored).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.dora.model import Problem, _Errors, _items, parse_instant, problem_from_generic
from shared.dora.rules import PriorityRule, priority_for

ENV_TAG_KEYS = ("environment", "env", "stage")
_SNOW_RESOLVED_STATES = {"6", "7", "resolved", "closed"}


def parse_problem_payload(
    doc: Any,
    rules: Sequence[PriorityRule],
    production: Iterable[str],
    *,
    received_at: datetime | None = None,
) -> list[Problem]:
    """Problems from a `POST /api/dora/problems` body of any accepted shape; BadInputError names each bad field."""
    production = tuple(production)
    items, many = _items(doc, "problem")
    errors = _Errors()
    out: list[Problem] = []
    now = received_at or datetime.now(UTC).replace(tzinfo=None)
    for i, item in enumerate(items):
        where = f"items[{i}]." if many else ""
        if not isinstance(item, dict):
            errors.add(where.rstrip(".") or "body", "must be a JSON object")
            continue
        kind = payload_kind(item)
        problem: Problem | None
        if kind == "generic":
            problem = problem_from_generic(item, where, errors, source=str(item.get("source") or "api"))
        elif kind == "dynatrace":
            problem = _from_dynatrace(item, where, errors, rules, production, now)
        elif kind == "servicenow":
            problem = _from_servicenow(item, where, errors)
        else:
            errors.add(
                where.rstrip(".") or "body",
                "not a problem: expected the generic contract (id, services, priority, state, startedAt), "
                "a Dynatrace problem (problemId / ProblemID) or a ServiceNow incident (sys_id, number)",
            )
            continue
        if problem is not None:
            out.append(problem)
    errors.raise_if_any("problem" + ("s" if many else ""))
    return out


def payload_kind(item: dict[str, Any]) -> str:
    if "services" in item or ("priority" in item and "id" in item):
        return "generic"
    if any(k in item for k in ("problemId", "ProblemID", "PID", "Details", "ProblemDetailsJSONv2", "displayId")):
        return "dynatrace"
    if "sys_id" in item or ("number" in item and "opened_at" in item):
        return "servicenow"
    return "unknown"


# -- Dynatrace --


def _epoch_or_iso(value: Any) -> datetime | None:
    if value is None or value == "" or value == -1:
        return None
    if isinstance(value, bool):
        raise ValueError("expected epoch milliseconds or an ISO 8601 timestamp")
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        number = float(value)
        if number < 0:
            return None
        return datetime.fromtimestamp(number / 1000.0, UTC).replace(tzinfo=None)
    return parse_instant(value)


def _entity_names(entities: Any) -> list[str]:
    """Names and ids of entities as the API (`entityId.id`, `name`) or the placeholder (`entity`, `name`) give them."""
    out: list[str] = []
    if isinstance(entities, dict):
        entities = [entities]
    if not isinstance(entities, list):
        return out
    for e in entities:
        if isinstance(e, str):
            out.append(e)
            continue
        if not isinstance(e, dict):
            continue
        entity_id = e.get("entityId")
        ident = entity_id.get("id") if isinstance(entity_id, dict) else entity_id or e.get("entity") or e.get("id")
        name = e.get("name")
        # the name is the human alias; the id is the stable one. Prefer the name when present.
        chosen = name if isinstance(name, str) and name.strip() else ident
        if isinstance(chosen, str) and chosen.strip():
            out.append(chosen.strip())
    return list(dict.fromkeys(out))


def _environments(details: dict[str, Any], item: dict[str, Any]) -> set[str]:
    envs: set[str] = set()
    for tag in details.get("entityTags") or []:
        if isinstance(tag, dict) and str(tag.get("key", "")).lower() in ENV_TAG_KEYS and tag.get("value"):
            envs.add(str(tag["value"]).lower())
    for zone in details.get("managementZones") or []:
        if isinstance(zone, dict) and zone.get("name"):
            envs.add(str(zone["name"]).lower())
    tags = item.get("Tags")
    if isinstance(tags, str):
        for part in tags.split(","):
            key, _, value = part.strip().partition(":")
            if key.strip().lower() in ENV_TAG_KEYS and value.strip():
                envs.add(value.strip().lower())
    return envs


def _from_dynatrace(
    item: dict[str, Any],
    where: str,
    errors: _Errors,
    rules: Sequence[PriorityRule],
    production: tuple[str, ...],
    now: datetime,
) -> Problem | None:
    details = item.get("Details") or item.get("ProblemDetailsJSONv2") or item
    if not isinstance(details, dict):
        errors.add(f"{where}Details", "must be the problem object ({ProblemDetailsJSONv2})")
        return None
    before = len(errors.items)
    problem_id = str(details.get("problemId") or item.get("ProblemID") or item.get("PID") or "").strip()
    if not problem_id:
        errors.add(f"{where}problemId", "required: the Dynatrace problem id (problemId or {ProblemID})")
    status = str(details.get("status") or item.get("State") or "").strip().upper()
    if status not in ("OPEN", "CLOSED", "RESOLVED", "MERGED"):
        errors.add(f"{where}status", f"expected OPEN, CLOSED or RESOLVED (State); got {status[:20]!r}")
    try:
        started = _epoch_or_iso(details.get("startTime")) or now
        ended = _epoch_or_iso(details.get("endTime"))
    except ValueError as exc:
        errors.add(f"{where}startTime", str(exc))
        return None
    entities = _entity_names(details.get("impactedEntities") or details.get("affectedEntities"))
    if not entities:
        entities = _entity_names(item.get("ImpactedEntities")) or _entity_names(item.get("ImpactedEntity"))
    if not entities:
        errors.add(f"{where}impactedEntities", "required: at least one impacted entity (the services)")
    if len(errors.items) > before:
        return None
    resolved = status in ("CLOSED", "RESOLVED", "MERGED")
    severity = str(details.get("severityLevel") or item.get("ProblemSeverity") or "").upper()
    impact = str(details.get("impactLevel") or item.get("ProblemImpact") or "").upper()
    title = str(details.get("title") or item.get("ProblemTitle") or "")[:2000]
    facts = {
        "severity": [severity],
        "impact": [impact],
        "env": sorted(_environments(details, item)),
        "source": ["dynatrace"],
        "title": [title],
    }
    root = details.get("rootCauseEntity")
    return Problem(
        id=f"dynatrace:{problem_id}",
        services=tuple(entities),
        priority=priority_for(facts, rules, production),
        state="resolved" if resolved else "open",
        started_at=started,
        resolved_at=(ended or now) if resolved else None,
        title=title,
        url=str(item.get("ProblemURL") or details.get("url") or ""),
        source="dynatrace",
        root_cause=(_entity_names(root) or [""])[0] if root else "",
        severity=severity,
        extra={"displayId": details.get("displayId") or item.get("PID"), "impact": impact} if impact else {},
    )


# -- ServiceNow (outbound REST message) --


def _snow_value(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if isinstance(value, dict):  # sysparm_display_value=all shapes: {"value", "display_value"}
        value = value.get("display_value") or value.get("value")
    return str(value or "").strip()


def _from_servicenow(item: dict[str, Any], where: str, errors: _Errors) -> Problem | None:
    before = len(errors.items)
    number = _snow_value(item, "number") or _snow_value(item, "sys_id")
    priority_text = _snow_value(item, "priority")
    digit = priority_text[:1]
    if not number:
        errors.add(f"{where}number", "required: the incident number")
    if digit not in ("1", "2", "3", "4", "5"):
        errors.add(f"{where}priority", f"expected 1..5 (e.g. '1 - Critical'); got {priority_text[:20]!r}")
    opened_text = _snow_value(item, "opened_at")
    try:
        opened = _snow_time(opened_text)
        resolved_at = _snow_time(_snow_value(item, "resolved_at")) if _snow_value(item, "resolved_at") else None
    except ValueError as exc:
        errors.add(f"{where}opened_at", str(exc))
        return None
    if opened is None:
        errors.add(f"{where}opened_at", "required: when the incident opened (UTC, 'YYYY-MM-DD HH:MM:SS' or ISO 8601)")
    services = [s for s in (_snow_value(item, "business_service"), _snow_value(item, "cmdb_ci")) if s]
    if not services:
        errors.add(f"{where}business_service", "required: business_service or cmdb_ci (the impacted service)")
    if len(errors.items) > before or opened is None:
        return None
    state = _snow_value(item, "state").lower()
    resolved = state in _SNOW_RESOLVED_STATES or resolved_at is not None
    return Problem(
        id=f"servicenow:{number}",
        services=tuple(dict.fromkeys(services)),
        priority=f"P{digit}",
        state="resolved" if resolved else "open",
        started_at=opened,
        resolved_at=(resolved_at or opened) if resolved else None,
        title=_snow_value(item, "short_description")[:2000],
        url=_snow_value(item, "url"),
        source="servicenow",
    )


def _snow_time(text: str) -> datetime | None:
    """ServiceNow's `YYYY-MM-DD HH:MM:SS` (UTC in the REST API) or an ISO 8601 timestamp with offset."""
    if not text:
        return None
    if len(text) == 19 and text[10] == " ":
        try:
            return datetime.fromisoformat(text.replace(" ", "T"))
        except ValueError:
            raise ValueError(f"not a ServiceNow date-time: {text!r}") from None
    return parse_instant(text)
