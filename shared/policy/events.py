"""Azure Policy state events (Event Grid schema and CloudEvents 1.0) as one `PolicyStateEvent`.

Both schemas are read through the SDK models (`azure.eventgrid.EventGridEvent`,
`azure.core.messaging.CloudEvent`), then checked: the event type must be one of the three
`Microsoft.PolicyInsights.PolicyState*` types, the topic a subscription or a management group,
the subject an ARM resource id inside a subscription, and `data` must carry the fields the
worker needs. Anything else raises `BadPolicyEvent` whose `reason` is a short, countable code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from shared.errors import BadInputError

EVENT_TYPES = (
    "Microsoft.PolicyInsights.PolicyStateCreated",
    "Microsoft.PolicyInsights.PolicyStateChanged",
    "Microsoft.PolicyInsights.PolicyStateDeleted",
)
DELETED = "Microsoft.PolicyInsights.PolicyStateDeleted"

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SUBSCRIPTION_TOPIC = re.compile(rf"^/subscriptions/({_GUID})$")
_MANAGEMENT_GROUP_TOPIC = re.compile(
    rf"^/tenants/{_GUID}/providers/Microsoft\.Management/managementGroups/[A-Za-z0-9_.()\-]{{1,90}}$", re.IGNORECASE
)
# a resource inside a subscription: /subscriptions/<guid>[/resourceGroups/<rg>]/providers/<ns>/<type>/<name>...
_RESOURCE_SUBJECT = re.compile(
    rf"^/subscriptions/({_GUID})(/resourceGroups/[^/]+)?(/providers/[^/]+/[^/]+/[^/]+(/[^/]+/[^/]+)*)?$",
    re.IGNORECASE,
)
_ASSIGNMENT_ID = re.compile(r"^/.+/providers/Microsoft\.Authorization/policyAssignments/[^/]+$", re.IGNORECASE)
_REQUIRED_DATA = ("timestamp", "policyAssignmentId", "policyDefinitionId", "complianceState")


class BadPolicyEvent(BadInputError):
    """An event the app cannot use. `reason` is a short code for counters; `detail` says what and where."""

    def __init__(self, reason: str, detail: str, *, event_id: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.event_id = event_id


@dataclass(frozen=True)
class PolicyStateEvent:
    """One policy state change of one resource for one assignment (and definition of an initiative)."""

    event_id: str
    event_type: str
    topic: str
    resource_id: str
    subscription_id: str
    timestamp: str  # data.timestamp, normalised to 7 fractional digits so that strings sort as times
    assignment_id: str
    definition_id: str
    definition_reference_id: str  # "" for a single policy assignment
    compliance_state: str
    compliance_reason_code: str = ""
    schema: str = "eventgrid"

    @property
    def key(self) -> tuple[str, str, str]:
        """The dedupe key: (resource, assignment, definition reference), case-insensitive as ARM ids are."""
        return (self.resource_id.lower(), self.assignment_id.lower(), self.definition_reference_id.lower())

    @property
    def is_deleted(self) -> bool:
        return self.event_type == DELETED

    @property
    def is_compliant(self) -> bool:
        return self.compliance_state.lower() == "compliant"

    @property
    def is_non_compliant(self) -> bool:
        return self.compliance_state.lower() == "noncompliant" and not self.is_deleted

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PolicyStateEvent:
        """The inverse of `as_dict()` (work items carry the parsed event)."""
        return cls(**{k: str(doc.get(k, "")) for k in cls.__dataclass_fields__})


def parse_policy_event(raw: Any) -> PolicyStateEvent:
    """A raw event dict (either schema) -> PolicyStateEvent, or BadPolicyEvent naming what is wrong."""
    if not isinstance(raw, dict):
        raise BadPolicyEvent("not-an-object", f"an event must be a JSON object, got {type(raw).__name__}")
    event_id = str(raw.get("id") or "")
    if "specversion" in raw:
        topic, event_type, subject, data, schema = _from_cloud_event(raw, event_id)
    else:
        topic, event_type, subject, data, schema = _from_event_grid(raw, event_id)
    if event_type not in EVENT_TYPES:
        raise BadPolicyEvent(
            "unknown-event-type",
            f"event {event_id}: type {event_type!r} is not a policy state event",
            event_id=event_id,
        )
    if not (_SUBSCRIPTION_TOPIC.match(topic) or _MANAGEMENT_GROUP_TOPIC.match(topic)):
        raise BadPolicyEvent(
            "other-topic",
            f"event {event_id}: topic {topic!r} is neither a subscription nor a management group",
            event_id=event_id,
        )
    subject_match = _RESOURCE_SUBJECT.match(subject)
    if not subject_match:
        raise BadPolicyEvent(
            "malformed-subject", f"event {event_id}: subject {subject!r} is not an ARM resource id", event_id=event_id
        )
    if not isinstance(data, dict):
        raise BadPolicyEvent("missing-data", f"event {event_id}: data is not an object", event_id=event_id)
    missing = [f for f in _REQUIRED_DATA if not isinstance(data.get(f), str) or not data[f].strip()]
    if missing:
        raise BadPolicyEvent("missing-fields", f"event {event_id}: data lacks {', '.join(missing)}", event_id=event_id)
    assignment_id = data["policyAssignmentId"].strip()
    if not _ASSIGNMENT_ID.match(assignment_id):
        raise BadPolicyEvent(
            "malformed-assignment",
            f"event {event_id}: data.policyAssignmentId {assignment_id!r} is not a policy assignment id",
            event_id=event_id,
        )
    subscription_id = subject_match.group(1).lower()
    given_sub = str(data.get("subscriptionId") or "").lower()
    if given_sub and given_sub != subscription_id:
        raise BadPolicyEvent(
            "malformed-subject",
            f"event {event_id}: subject is in subscription {subscription_id}, data.subscriptionId says {given_sub}",
            event_id=event_id,
        )
    topic_sub = _SUBSCRIPTION_TOPIC.match(topic)
    if topic_sub and topic_sub.group(1).lower() != subscription_id:
        raise BadPolicyEvent(
            "other-topic",
            f"event {event_id}: resource of subscription {subscription_id} published on topic {topic}",
            event_id=event_id,
        )
    try:
        timestamp = normalise_timestamp(data["timestamp"])
    except ValueError:
        raise BadPolicyEvent(
            "malformed-timestamp",
            f"event {event_id}: data.timestamp {data['timestamp']!r} is not a time",
            event_id=event_id,
        ) from None
    return PolicyStateEvent(
        event_id=event_id,
        event_type=event_type,
        topic=topic,
        resource_id=subject,
        subscription_id=subscription_id,
        timestamp=timestamp,
        assignment_id=assignment_id,
        definition_id=data["policyDefinitionId"].strip(),
        definition_reference_id=str(data.get("policyDefinitionReferenceId") or "").strip(),
        compliance_state=data["complianceState"].strip(),
        compliance_reason_code=str(data.get("complianceReasonCode") or ""),
        schema=schema,
    )


def _from_event_grid(raw: dict[str, Any], event_id: str) -> tuple[str, str, str, Any, str]:
    missing = [f for f in ("id", "eventType", "subject", "eventTime", "data") if raw.get(f) in (None, "")]
    if missing:
        raise BadPolicyEvent(
            "missing-fields", f"event {event_id or '(no id)'}: lacks {', '.join(missing)}", event_id=event_id
        )
    try:
        event = EventGridEvent.from_dict(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadPolicyEvent("malformed-event", f"event {event_id}: {exc}", event_id=event_id) from None
    return str(event.topic or ""), str(event.event_type), str(event.subject), event.data, "eventgrid"


def _from_cloud_event(raw: dict[str, Any], event_id: str) -> tuple[str, str, str, Any, str]:
    missing = [f for f in ("id", "source", "type", "subject", "data") if raw.get(f) in (None, "")]
    if missing:
        raise BadPolicyEvent(
            "missing-fields", f"event {event_id or '(no id)'}: lacks {', '.join(missing)}", event_id=event_id
        )
    try:
        event: CloudEvent[Any] = CloudEvent.from_dict(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadPolicyEvent("malformed-event", f"event {event_id}: {exc}", event_id=event_id) from None
    return str(event.source), str(event.type), str(event.subject or ""), event.data, "cloudevents"


_TS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$")


def normalise_timestamp(value: str) -> str:
    """`2026-11-20T14:02:58.1197132Z` -> UTC with exactly 7 fractional digits (sortable as text)."""
    m = _TS.match(value.strip())
    if not m:
        raise ValueError(value)
    base, frac, zone = m.group(1), (m.group(2) or ""), m.group(3) or "Z"
    parsed = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).astimezone(UTC)
    return f"{parsed:%Y-%m-%dT%H:%M:%S}.{(frac + '0000000')[:7]}Z"


def event_from_trigger(
    *, event_id: str, topic: str, subject: str, event_type: str, event_time: Any, data: Any, data_version: str = ""
) -> dict[str, Any]:
    """The fields of a Functions `EventGridEvent` binding as an Event Grid schema dict for parse_policy_event."""
    when = event_time.isoformat() if isinstance(event_time, datetime) else str(event_time or "")
    return {
        "id": event_id,
        "topic": topic,
        "subject": subject,
        "eventType": event_type,
        "eventTime": when,
        "data": data,
        "dataVersion": data_version,
    }
