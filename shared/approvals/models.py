"""Typed request and response bodies of the Logic Apps HTTP functions (pydantic v2).

The same models validate the requests (`parse_body`) and generate the OpenAPI document
(`shared/approvals/openapi.py`), so the document cannot drift from what the functions accept.
Field names are camelCase on the wire, as Logic Apps expressions read them (`body('x')?['approvalId']`).
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import BadInputError, NotFoundError, PayloadTooLargeError, UnsupportedMediaTypeError

MAX_BODY_BYTES = 256 * 1024

# ids end up as Table Storage row keys and in URLs: no '/', '\', '#', '?' nor control characters
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"

Verdict = Literal["planned", "not_anomaly", "confirmed"]
DecisionKind = Literal["approve", "reject", "escalate"]
Severity = Literal["info", "warning", "critical"]


class _In(BaseModel):
    """Request bodies: strict types (no "1" for 1), unknown fields ignored (Logic Apps add their own)."""

    model_config = ConfigDict(strict=True, extra="ignore", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors --


class FieldProblem(_Out):
    field: str = Field(description="Where: a dotted path into the body, or `header:<name>` / `query:<name>`.")
    problem: str = Field(description="What is wrong there.")


class Problem(_Out):
    """RFC 9457 problem body of every 4xx/5xx answer."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)
    earlierDecision: DecisionRecord | None = Field(
        default=None, description="On 409 for an approval already decided: that decision."
    )


# -- anomalies --


class AnomalyQuery(_In):
    """Query string of GET /api/anomalies (strings only, as query values are)."""

    status: str = Field(
        default="open",
        pattern=r"^[a-z_]{0,32}$",
        description="Episode status to list; `any` or empty lists every status.",
        json_schema_extra={"x-ms-summary": "Status"},
    )
    owner: str = Field(default="", max_length=200, description="Owner squad; empty = every squad.")


class AnomalyOut(_Out):
    id: str = Field(description="Episode id.", json_schema_extra={"x-ms-summary": "Episode ID"})
    status: str = Field(json_schema_extra={"x-ms-summary": "Status"})
    severity: str = Field(json_schema_extra={"x-ms-summary": "Severity"})
    owner: str = Field(json_schema_extra={"x-ms-summary": "Owner squad"})
    seriesId: str = Field(description="The scored series: a resource id, squad, subscription or service.")
    seriesKind: str
    subscriptionId: str
    startDate: str
    lastFlaggedDate: str
    impactUsdPerHour: float = Field(json_schema_extra={"x-ms-summary": "Excess $/hour"})
    impactUsdPerDay: float = Field(json_schema_extra={"x-ms-summary": "Excess $/day"})
    totalExcessUsd: float
    topCauses: list[str] = Field(description="Largest contributors to the excess, biggest first.")
    verdict: str = ""


class AnomalyList(_Out):
    count: int
    items: list[AnomalyOut]


class FeedbackIn(_In):
    verdict: Verdict = Field(
        description="`planned` (expected: suppress), `not_anomaly` (suppress, teaches the model) or `confirmed`.",
        json_schema_extra={"x-ms-summary": "Verdict"},
    )
    by: str = Field(min_length=1, max_length=200, json_schema_extra={"x-ms-summary": "Given by"})
    why: str = Field(default="", max_length=2000, json_schema_extra={"x-ms-summary": "Why"})


class FeedbackOut(_Out):
    episodeId: str
    verdict: Verdict
    by: str
    status: str = Field(description="The episode's status after the feedback.")


# -- approvals --


class ApprovalCreateIn(_In):
    """What the Logic App's HTTP Webhook action sends when it subscribes."""

    callbackUrl: str = Field(
        min_length=8,
        max_length=4096,
        description="listCallbackUrl() of the waiting action; called once with the decision. Its host must be "
        "in CALLBACK_ALLOWED_HOSTS.",
        json_schema_extra={
            "x-ms-summary": "Callback URL",
            "x-ms-visibility": "internal",
            "x-ms-notification-url": True,
        },
    )
    episodeId: str = Field(pattern=ID_PATTERN, json_schema_extra={"x-ms-summary": "Episode ID"})
    action: str = Field(
        min_length=1,
        max_length=64,
        description="Proposed action: stop, scale_down, apply_budget, escalate, or a registered action name.",
        json_schema_extra={"x-ms-summary": "Proposed action"},
    )
    runId: str = Field(default="", max_length=200, json_schema_extra={"x-ms-summary": "Logic App run id"})


class DecisionRecord(_Out):
    decision: DecisionKind
    approver: str
    reason: str
    decidedAt: str


class ActionOutcomeOut(_Out):
    action: str
    state: str = Field(description="queued, dry_run, executed, refused, failed or skipped.")
    mode: str = Field(description="REMEDIATION_MODE when it ran: dry-run or enforce.")
    detail: str
    armStatus: int | None = None


class ApprovalOut(_Out):
    approvalId: str = Field(json_schema_extra={"x-ms-summary": "Approval ID"})
    episodeId: str
    status: Literal["pending", "approved", "rejected", "escalated", "cancelled"] = Field(
        json_schema_extra={"x-ms-summary": "Status"}
    )
    action: str
    resourceId: str
    owner: str
    severity: str
    impactUsdPerHour: float
    requestedAt: str
    callbackRegistered: bool = Field(description="True once a Logic App run waits for this decision.")
    cancelledAt: str | None = Field(
        default=None, description="When the waiting Logic App run unsubscribed (status cancelled)."
    )
    decision: DecisionRecord | None = None
    outcome: ActionOutcomeOut | None = None


class UnsubscribeIn(_In):
    """What the Logic App's HTTP Webhook action sends when it stops waiting (run cancelled or timed out)."""

    runId: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="workflow()['run']['name'] of the run that subscribed.",
        json_schema_extra={"x-ms-summary": "Run ID", "x-ms-visibility": "internal"},
    )


class UnsubscribeOut(ApprovalOut):
    unsubscribed: bool = Field(description="True when this run was waiting and the approval is now cancelled.")


class DecisionIn(_In):
    decision: DecisionKind = Field(json_schema_extra={"x-ms-summary": "Decision"})
    approver: str = Field(min_length=1, max_length=200, json_schema_extra={"x-ms-summary": "Approver"})
    reason: str = Field(default="", max_length=2000, json_schema_extra={"x-ms-summary": "Reason"})


# -- incidents --


class IncidentIn(_In):
    title: str = Field(min_length=1, max_length=160, json_schema_extra={"x-ms-summary": "Title"})
    severity: Severity = Field(default="warning", json_schema_extra={"x-ms-summary": "Severity"})
    resourceId: str = Field(default="", max_length=1024, json_schema_extra={"x-ms-summary": "Resource ID"})
    owner: str = Field(default="", max_length=200, json_schema_extra={"x-ms-summary": "Owner squad"})
    summary: str = Field(default="", max_length=4000, json_schema_extra={"x-ms-summary": "Summary"})
    dedupeKey: str = Field(
        default="",
        max_length=200,
        description="Same key, same incident: a second call updates it. Empty = derived from title and resource.",
        json_schema_extra={"x-ms-summary": "Dedupe key"},
    )
    action: Literal["open", "update", "resolve"] = Field(default="open", json_schema_extra={"x-ms-summary": "Action"})
    facts: dict[str, str] = Field(default_factory=dict, max_length=30)


class IncidentAccepted(_Out):
    status: Literal["queued"]
    dedupeKey: str
    messageId: str = Field(description="Id of the message on the alerts queue.")


class HealthDependency(_Out):
    name: str
    status: str
    detail: str


class HealthOut(_Out):
    status: Literal["healthy", "degraded", "unhealthy"]
    dependencies: list[HealthDependency]


Problem.model_rebuild()

M = TypeVar("M", bound=BaseModel)


def parse_body(raw: bytes, content_type: str | None, model: type[M]) -> M:
    """Validate a JSON request body against a model; BadInputError (400/413/415) says what and where."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES} (256 KiB)")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaTypeError(f"Content-Type {ctype!r} is not accepted; send application/json")
    if not raw.strip():
        raise BadInputError("the request body is empty; a JSON object is expected")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadInputError("the request body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadInputError(f"the request body must be a JSON object, not {type(doc).__name__}")
    return validate(doc, model)


def validate(doc: Any, model: type[M]) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]} for e in exc.errors()]
        fields_ = ", ".join(e["field"] for e in errors)
        raise BadInputError(
            f"the request body does not match {model.__name__}: check {fields_}", errors=errors
        ) from None


def path_id(value: Any, what: str) -> str:
    """A route id (`{id}`) that can exist; NotFoundError names it otherwise."""
    import re

    text = value if isinstance(value, str) else ""
    if not re.match(ID_PATTERN, text):
        raise NotFoundError(f"no {what} {text[:80]!r}: ids are 1-200 letters, digits and ._:@- characters")
    return text
