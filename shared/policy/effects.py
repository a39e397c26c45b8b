"""What a policy's effect means for a violation: remediate it, or escalate it to people.

`deployIfNotExists` and `modify` can be remediated by a remediation task; `audit`,
`auditIfNotExists`, `deny` and every other effect cannot, so the owner squad gets an alert (and a
ServiceNow incident when the assignment matches POLICY_INCIDENT_ASSIGNMENTS), keyed by
(assignment, definition reference, resource) so that redeliveries never open a second one.
The effect comes from the resource's latest policy state (ARM), cached in the `policystate`
table: one lookup per assignment and definition, not one per event.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Protocol

from shared.policy.events import PolicyStateEvent

REMEDIABLE_EFFECTS = frozenset({"deployifnotexists", "modify"})
REMEDIATE = "remediate"
ESCALATE = "escalate"
EFFECT_TABLE = "policystate"
EFFECT_PARTITION = "effect"
EFFECT_TTL = timedelta(hours=24)  # an assignment's effect parameter rarely changes; a day bounds staleness


def path_for_effect(effect: str) -> str:
    """`remediate` for deployIfNotExists/modify (any case), `escalate` for everything else."""
    return REMEDIATE if effect.strip().lower() in REMEDIABLE_EFFECTS else ESCALATE


def wants_incident(assignment_id: str, patterns: tuple[str, ...]) -> bool:
    """True when the assignment matches one of POLICY_INCIDENT_ASSIGNMENTS (fnmatch, case-insensitive)."""
    lowered = assignment_id.lower()
    return any(fnmatchcase(lowered, p.lower()) for p in patterns)


def violation_key(assignment_id: str, definition_reference_id: str, resource_id: str) -> str:
    """The alert/incident dedupe key of one violation: stable across deliveries and processes."""
    raw = "|".join(p.lower() for p in (assignment_id, definition_reference_id, resource_id))
    return "policy-violation:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def _name(resource_id: str) -> str:
    return resource_id.rstrip("/").split("/")[-1]


def violation_alert_fields(event: PolicyStateEvent, effect: str, owner: str, incident: bool) -> dict[str, Any]:
    """The fields of the `policy_violation` Alert for a NonCompliant resource the app cannot remediate."""
    assignment = _name(event.assignment_id)
    facts = [
        ("Resource", event.resource_id),
        ("Assignment", event.assignment_id),
        ("Definition", event.definition_id),
        ("Effect", effect or "unknown"),
        ("Compliance", event.compliance_state),
        ("Evaluated at", event.timestamp),
    ]
    if event.definition_reference_id:
        facts.insert(3, ("Definition reference", event.definition_reference_id))
    return {
        "kind": "policy_violation",
        "severity": "warning",
        "title": f"Policy {assignment}: {_name(event.resource_id)} is non-compliant ({effect or 'unknown effect'})",
        "resource_id": event.resource_id,
        "owner": owner,
        "facts": tuple(facts),
        "links": (("Policy compliance", _portal_compliance_link(event.assignment_id)),),
        "dedupe_key": violation_key(event.assignment_id, event.definition_reference_id, event.resource_id),
        "correlation_id": event.event_id,
        "action": "open",
        "incident": incident,
        "summary": f"Azure Policy cannot fix this automatically (effect {effect or 'unknown'}); the owner must act.",
    }


def resolved_alert_fields(event: PolicyStateEvent, owner: str) -> dict[str, Any]:
    """The fields of the Alert that resolves an open violation (Compliant, or the state was deleted)."""
    why = "the policy state was deleted" if event.is_deleted else "the resource is compliant again"
    return {
        "kind": "policy_violation",
        "severity": "info",
        "title": f"Policy {_name(event.assignment_id)}: {_name(event.resource_id)} resolved",
        "resource_id": event.resource_id,
        "owner": owner,
        "facts": (
            ("Resource", event.resource_id),
            ("Assignment", event.assignment_id),
            ("Evaluated at", event.timestamp),
        ),
        "links": (),
        "dedupe_key": violation_key(event.assignment_id, event.definition_reference_id, event.resource_id),
        "correlation_id": event.event_id,
        "action": "resolve",
        "incident": None,
        "summary": f"Closed: {why}.",
    }


def _portal_compliance_link(assignment_id: str) -> str:
    return "https://portal.azure.com/#view/Microsoft_Azure_Policy/PolicyDetailBlade/id/" + assignment_id.replace(
        "/", "%2F"
    )


class EffectStore(Protocol):
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class EffectLookup:
    resource_id: str
    assignment_id: str
    definition_id: str
    definition_reference_id: str


class EffectCache:
    """Effect per (assignment, definition, reference): memory, then the table, then `fetch` (ARM).

    `fetch(lookup) -> str` returns the effect ("" when ARM has no state for it); empty answers are
    not cached so that a state ARM has not indexed yet is asked for again."""

    def __init__(
        self,
        store: EffectStore,
        fetch: Callable[[EffectLookup], str],
        *,
        ttl: timedelta = EFFECT_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.fetch = fetch
        self.ttl = ttl
        self.clock = clock
        self._memory: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def row_key(lookup: EffectLookup) -> str:
        raw = "|".join(p.lower() for p in (lookup.assignment_id, lookup.definition_id, lookup.definition_reference_id))
        return hashlib.sha256(raw.encode()).hexdigest()

    def effect(self, lookup: EffectLookup) -> str:
        now = self.clock()
        row = self.row_key(lookup)
        with self._lock:
            hit = self._memory.get(row)
        if hit and hit[1] > now:
            return hit[0]
        stored = self.store.get(EFFECT_TABLE, EFFECT_PARTITION, row)
        if stored and str(stored.get("ExpiresAt", "")) > now.isoformat():
            effect = str(stored.get("Effect", ""))
            with self._lock:
                self._memory[row] = (effect, datetime.fromisoformat(str(stored["ExpiresAt"])))
            return effect
        effect = self.fetch(lookup)
        if effect:
            expires = now + self.ttl
            self.store.upsert(
                EFFECT_TABLE,
                EFFECT_PARTITION,
                row,
                {"Effect": effect, "AssignmentId": lookup.assignment_id, "ExpiresAt": expires.isoformat()},
            )
            with self._lock:
                self._memory[row] = (effect, expires)
        return effect
