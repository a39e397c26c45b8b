"""The DORA JSON contracts (`POST /api/dora/deployments`, `POST /api/dora/problems`) as plain data.

Pure: JSON in, `Deployment`/`Problem` out, or a `BadInputError` naming every bad field of every item
(`items[3].finishedAt: ...`) so that a batch is accepted whole or not at all. Timestamps must carry an
offset; they are kept as naive UTC datetimes (the warehouse stores TIMESTAMP_NTZ in UTC), so instants
with different offsets compare correctly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import BadInputError

RESULTS = ("succeeded", "failed", "canceled")
STATES = ("open", "resolved")
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
MAX_ITEMS = 5000
MAX_TEXT = 2000
MAX_ID = 256

DEPLOYMENT_FIELDS = (
    "id",
    "service",
    "environment",
    "result",
    "finishedAt",
    "startedAt",
    "commitId",
    "commitTime",
    "pipeline",
    "runId",
    "url",
    "requestedBy",
    "source",
)
PROBLEM_FIELDS = ("id", "services", "priority", "state", "startedAt", "resolvedAt", "title", "url", "source")


@dataclass(frozen=True)
class Deployment:
    """One deployment of a service to an environment. Times are naive UTC."""

    id: str
    service: str
    environment: str
    result: str
    finished_at: datetime
    started_at: datetime | None = None
    commit_id: str = ""
    commit_time: datetime | None = None
    pipeline: str = ""
    run_id: str = ""
    url: str = ""
    requested_by: str = ""
    source: str = "api"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The contract's camelCase JSON (extra fields kept)."""
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            {
                "id": self.id,
                "service": self.service,
                "environment": self.environment,
                "result": self.result,
                "finishedAt": iso(self.finished_at),
                "startedAt": iso(self.started_at),
                "commitId": self.commit_id or None,
                "commitTime": iso(self.commit_time),
                "pipeline": self.pipeline or None,
                "runId": self.run_id or None,
                "url": self.url or None,
                "requestedBy": self.requested_by or None,
                "source": self.source,
            }
        )
        return doc


@dataclass(frozen=True)
class Problem:
    """One problem (Dynatrace, ServiceNow or any source). `services` are keys or aliases; times naive UTC."""

    id: str
    services: tuple[str, ...]
    priority: str
    state: str
    started_at: datetime
    resolved_at: datetime | None = None
    title: str = ""
    url: str = ""
    source: str = "api"
    root_cause: str = ""
    severity: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            {
                "id": self.id,
                "services": list(self.services),
                "priority": self.priority,
                "state": self.state,
                "startedAt": iso(self.started_at),
                "resolvedAt": iso(self.resolved_at),
                "title": self.title or None,
                "url": self.url or None,
                "source": self.source,
                "rootCause": self.root_cause or None,
                "severity": self.severity or None,
            }
        )
        return doc


# -- time --

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 timestamp with an offset (`Z` or `+02:00`) as naive UTC; ValueError says what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an ISO 8601 timestamp with offset, e.g. 2026-03-02T10:15:00Z")
    text = value.strip()
    if _DATE.match(text):
        raise ValueError(f"expected a timestamp with time and offset, got the date {text!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {text[:60]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text[:60]!r} has no offset: add Z or +hh:mm")
    return parsed.astimezone(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """Naive UTC datetime as ISO 8601 with `Z` (None stays None)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def utc(value: datetime) -> datetime:
    """Any datetime as naive UTC (aware ones converted, naive ones taken as UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


# -- parsing the contracts --


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, where: str, message: str) -> None:
        self.items.append({"field": where, "message": message})

    def raise_if_any(self, what: str) -> None:
        if self.items:
            shown = "; ".join(f"{e['field']}: {e['message']}" for e in self.items[:20])
            more = f" (and {len(self.items) - 20} more)" if len(self.items) > 20 else ""
            raise BadInputError(f"invalid {what}: {shown}{more}", errors=self.items)


def _items(doc: Any, what: str) -> tuple[list[Any], bool]:
    """(items, was_array): one object or an array of objects."""
    if isinstance(doc, dict):
        return [doc], False
    if isinstance(doc, list):
        if not doc:
            raise BadInputError(f"empty array: send one {what} object or an array of them")
        if len(doc) > MAX_ITEMS:
            raise BadInputError(f"{len(doc)} {what}s in one request; the limit is {MAX_ITEMS}")
        return doc, True
    raise BadInputError(f"expected a JSON object or an array of {what} objects, got {type(doc).__name__}")


def _text(
    item: dict[str, Any], name: str, where: str, errors: _Errors, *, required: bool, limit: int = MAX_TEXT
) -> str:
    value = item.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.add(f"{where}{name}", "required: a non-empty string")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.add(f"{where}{name}", f"must be a string, got {type(value).__name__}")
        return ""
    text = str(value).strip()
    if len(text) > limit:
        errors.add(f"{where}{name}", f"longer than {limit} characters")
        return ""
    return text


def _time(item: dict[str, Any], name: str, where: str, errors: _Errors, *, required: bool) -> datetime | None:
    value = item.get(name)
    if value is None:
        if required:
            errors.add(f"{where}{name}", "required: an ISO 8601 timestamp with offset")
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        errors.add(f"{where}{name}", str(exc))
        return None


def _choice(item: dict[str, Any], name: str, where: str, errors: _Errors, options: tuple[str, ...]) -> str:
    """One of `options`, matched case-insensitively and returned as the option is spelt."""
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        errors.add(f"{where}{name}", f"required: one of {', '.join(options)}")
        return ""
    text = value.strip()
    key = next((o for o in options if o.lower() == text.lower()), "")
    if not key:
        errors.add(f"{where}{name}", f"expected one of {', '.join(options)}; got {text[:40]!r}")
        return ""
    return key


def parse_deployments(doc: Any, *, source: str = "api") -> list[Deployment]:
    """The deployments of a `POST /api/dora/deployments` body (one object or an array)."""
    items, many = _items(doc, "deployment")
    errors = _Errors()
    out: list[Deployment] = []
    for i, item in enumerate(items):
        where = f"items[{i}]." if many else ""
        if not isinstance(item, dict):
            errors.add(where.rstrip(".") or "body", "must be a JSON object")
            continue
        before = len(errors.items)
        dep_id = _text(item, "id", where, errors, required=True, limit=MAX_ID)
        service = _text(item, "service", where, errors, required=True, limit=200)
        environment = _text(item, "environment", where, errors, required=True, limit=200)
        result = _choice(item, "result", where, errors, RESULTS)
        finished = _time(item, "finishedAt", where, errors, required=True)
        started = _time(item, "startedAt", where, errors, required=False)
        commit_time = _time(item, "commitTime", where, errors, required=False)
        commit_id = _text(item, "commitId", where, errors, required=False, limit=200)
        pipeline = _text(item, "pipeline", where, errors, required=False, limit=400)
        run_id = _text(item, "runId", where, errors, required=False, limit=200)
        url = _url(item, where, errors)
        requested_by = _text(item, "requestedBy", where, errors, required=False, limit=400)
        if started and finished and started > finished:
            errors.add(f"{where}startedAt", "is after finishedAt")
        if len(errors.items) > before or finished is None:
            continue
        extra = {k: v for k, v in item.items() if k not in DEPLOYMENT_FIELDS}
        out.append(
            Deployment(
                id=dep_id,
                service=service,
                environment=environment,
                result=result,
                finished_at=finished,
                started_at=started,
                commit_id=commit_id,
                commit_time=commit_time,
                pipeline=pipeline,
                run_id=run_id,
                url=url,
                requested_by=requested_by,
                source=str(item.get("source") or source)[:100],
                extra=extra,
            )
        )
    errors.raise_if_any("deployment" + ("s" if many else ""))
    return out


def parse_problems(doc: Any, *, source: str = "api") -> list[Problem]:
    """The problems of a `POST /api/dora/problems` body in the generic contract (one object or an array)."""
    items, many = _items(doc, "problem")
    errors = _Errors()
    out: list[Problem] = []
    for i, item in enumerate(items):
        where = f"items[{i}]." if many else ""
        if not isinstance(item, dict):
            errors.add(where.rstrip(".") or "body", "must be a JSON object")
            continue
        problem = problem_from_generic(item, where, errors, source=source)
        if problem is not None:
            out.append(problem)
    errors.raise_if_any("problem" + ("s" if many else ""))
    return out


def problem_from_generic(item: dict[str, Any], where: str, errors: _Errors, *, source: str) -> Problem | None:
    before = len(errors.items)
    problem_id = _text(item, "id", where, errors, required=True, limit=MAX_ID)
    services = _services(item.get("services"), f"{where}services", errors)
    priority = _choice(item, "priority", where, errors, PRIORITIES)
    state = _choice(item, "state", where, errors, STATES)
    started = _time(item, "startedAt", where, errors, required=True)
    resolved = _time(item, "resolvedAt", where, errors, required=False)
    title = _text(item, "title", where, errors, required=False)
    url = _url(item, where, errors)
    if started and resolved and resolved < started:
        errors.add(f"{where}resolvedAt", "is before startedAt")
    if len(errors.items) > before or started is None:
        return None
    return Problem(
        id=problem_id,
        services=services,
        priority=priority,
        state=state,
        started_at=started,
        resolved_at=resolved if state == "resolved" else None,
        title=title,
        url=url,
        source=str(item.get("source") or source)[:100],
        extra={k: v for k, v in item.items() if k not in PROBLEM_FIELDS},
    )


def _services(value: Any, where: str, errors: _Errors) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        errors.add(where, "required: a non-empty array of service names")
        return ()
    out: list[str] = []
    for j, name in enumerate(value):
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            errors.add(f"{where}[{j}]", "must be a non-empty string of at most 200 characters")
            continue
        if name.strip() not in out:
            out.append(name.strip())
    return tuple(out)


def _url(item: dict[str, Any], where: str, errors: _Errors) -> str:
    url = _text(item, "url", where, errors, required=False)
    if url and not (url.startswith("https://") or url.startswith("http://")):
        errors.add(f"{where}url", "must start with https:// or http://")
        return ""
    return url
