"""At-least-once, out-of-order delivery made safe: keep the newest state per violation key.

The `policystate` table holds one row per (resource, assignment, definition reference) with the
newest `data.timestamp` seen. An event older than the row is stale, one with the same timestamp
is a duplicate; both are dropped. The first write is a conditional insert and later ones an
optimistic replace, so two workers racing on the same key cannot both win.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import ConflictError
from shared.policy.events import PolicyStateEvent

TABLE = "policystate"
PARTITION = "state"
NEW = "new"
DUPLICATE = "duplicate"
STALE = "stale"


class LedgerStore(Protocol):
    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool: ...
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Admission:
    """`new`: act on the event; `duplicate`/`stale`: drop it. `previous_state` is the compliance before."""

    outcome: str
    previous_state: str = ""

    @property
    def admitted(self) -> bool:
        return self.outcome == NEW


def state_row_key(event: PolicyStateEvent) -> str:
    return hashlib.sha256("|".join(event.key).encode()).hexdigest()


def _fields(event: PolicyStateEvent) -> dict[str, Any]:
    return {
        "Timestamp_": event.timestamp,  # `Timestamp` is reserved by Table Storage
        "ComplianceState": event.compliance_state,
        "EventType": event.event_type,
        "EventId": event.event_id,
        "ResourceId": event.resource_id,
        "AssignmentId": event.assignment_id,
        "DefinitionReferenceId": event.definition_reference_id,
    }


class PolicyStateLedger:
    """The table is the truth; `_seen` remembers what this process committed, so the redeliveries of a
    storm are dropped without a storage round trip (the ledger only moves forward, except `forget`)."""

    def __init__(self, store: LedgerStore, *, attempts: int = 5, memory: int = 200_000) -> None:
        self.store = store
        self.attempts = attempts
        self.memory = memory
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def admit(self, event: PolicyStateEvent) -> Admission:
        """Record the event if it is the newest for its key. In: a parsed event. Out: the Admission."""
        row = state_row_key(event)
        with self._lock:
            known = self._seen.get(row)
        if known is not None and event.timestamp <= known:
            return Admission(DUPLICATE if event.timestamp == known else STALE)
        admission = self._admit(event, row)
        if admission.admitted:
            with self._lock:
                if len(self._seen) >= self.memory:
                    self._seen.clear()  # a bounded cache: forgetting only costs a storage read
                self._seen[row] = event.timestamp
        return admission

    def forget(self, event: PolicyStateEvent) -> None:
        """Drop the process memory of the event's key (after a failed attempt the row is rolled back)."""
        with self._lock:
            self._seen.pop(state_row_key(event), None)

    def _admit(self, event: PolicyStateEvent, row: str) -> Admission:
        for _ in range(self.attempts):
            if self.store.insert(TABLE, PARTITION, row, _fields(event)):
                return Admission(NEW)
            current = self.store.get(TABLE, PARTITION, row)
            if current is None:
                continue  # deleted meanwhile: insert again
            seen = str(current.get("Timestamp_", ""))
            if event.timestamp < seen:
                return Admission(STALE, str(current.get("ComplianceState", "")))
            if event.timestamp == seen:
                return Admission(DUPLICATE, str(current.get("ComplianceState", "")))
            try:
                self.store.replace_if_unchanged(TABLE, {**current, **_fields(event)})
            except ConflictError:
                continue  # another worker wrote the key: compare again with its timestamp
            return Admission(NEW, str(current.get("ComplianceState", "")))
        raise ConflictError(f"policy state {row} kept changing under {self.attempts} attempts; retry later")
