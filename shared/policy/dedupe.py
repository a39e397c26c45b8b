"""At-least-once, out-of-order delivery made safe: keep the newest state per violation key.

The `policystate` table holds one row per (resource, assignment, definition reference) with the
newest `data.timestamp` seen. An event older than the row is stale, one with the same timestamp
is a duplicate; both are dropped. The first write is a conditional insert and later ones an
optimistic replace, so two workers racing on the same key cannot both win.

Round trips: a new key costs one insert; a duplicate one failed insert and one read (or nothing
when this process committed it).

A write whose answer was lost (a read timeout after the table committed it) must not turn the
retry of the same work item into a "duplicate": its effect would never run. So each row carries
the queue message id that wrote it (`Delivery`), and a row with the event's timestamp written by
the same message is that message's own earlier attempt: admitted again, at no extra round trip
(the read on conflict is there anyway). A redelivered event arrives as another message and stays
a duplicate; in a batch holding both, the retry is the copy admitted. Rows are spread over
`SPREAD` partitions `state-<hex>` by the key's hash (one partition caps at ~2,000 entities/s).
`admit_many` admits a received batch with one entity-group transaction per partition instead of
one insert per event.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import BatchRejected, ConflictError
from shared.policy.events import PolicyStateEvent

TABLE = "policystate"
PARTITION = "state"  # prefix: rows live in `state-00` .. `state-0f`
SPREAD = 16
NEW = "new"
DUPLICATE = "duplicate"
STALE = "stale"


class LedgerStore(Protocol):
    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool: ...
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> Any: ...
    def transact(self, table: str, operations: list[tuple[Any, ...]]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Admission:
    """`new`: act on the event; `duplicate`/`stale`: drop it. `previous_state` is the compliance before."""

    outcome: str
    previous_state: str = ""
    holder: str = ""  # a duplicate's: the message that wrote the row (its retry may be in the same batch)

    @property
    def admitted(self) -> bool:
        return self.outcome == NEW


def state_row_key(event: PolicyStateEvent) -> str:
    return hashlib.sha256("|".join(event.key).encode()).hexdigest()


def state_partition(row: str) -> str:
    """The ledger partition of a row key (a sha256 hex): `state-<int(row[:2], 16) % SPREAD as 2 hex>`."""
    return f"{PARTITION}-{int(row[:2], 16) % SPREAD:02x}"


def _fields(event: PolicyStateEvent, delivery: str = "") -> dict[str, Any]:
    return {
        "Delivery": delivery,  # the queue message that wrote the row ("" when unknown)
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

    def admit(self, event: PolicyStateEvent, delivery: str = "") -> Admission:
        """Record the event if it is the newest for its key. In: a parsed event and the id of the
        queue message carrying it (see the module doc). Out: the Admission."""
        return self.admit_many([event], [delivery])[0]

    def admit_many(self, events: list[PolicyStateEvent], deliveries: list[str] | None = None) -> list[Admission]:
        """Admit a received batch: the Admission of each event, in order (`deliveries`: the message id of
        each, or none). Within the batch only the newest event of a key can be new; the new rows of one
        partition go in one transaction (a row that exists already fails it: that event is then
        admitted on its own, the rest retried)."""
        delivered = deliveries if deliveries is not None else [""] * len(events)
        out: list[Admission | None] = [None] * len(events)
        newest: dict[str, int] = {}
        for i, event in enumerate(events):
            row = state_row_key(event)
            with self._lock:
                known = self._seen.get(row)
            if known is not None and event.timestamp <= known:
                out[i] = Admission(DUPLICATE if event.timestamp == known else STALE)
                continue
            j = newest.get(row)
            if j is None or event.timestamp > events[j].timestamp:
                newest[row] = i
        groups: dict[str, list[int]] = {}
        for row, i in newest.items():
            groups.setdefault(state_partition(row), []).append(i)
        for partition, indexes in groups.items():
            admitted = self._admit_group(partition, [(events[i], delivered[i]) for i in indexes])
            for i, admission in zip(indexes, admitted, strict=True):
                out[i] = admission
        for i, event in enumerate(events):  # the older copies of a key within the batch
            if out[i] is None:
                chosen = newest[state_row_key(event)]
                first, decided = events[chosen], out[chosen]
                if event.timestamp != first.timestamp:
                    out[i] = Admission(STALE)
                elif decided is not None and not decided.admitted and delivered[i] and decided.holder == delivered[i]:
                    # the copy chosen was refused for a row this message wrote in an earlier attempt whose
                    # answer was lost: this message is that attempt's retry, so it is the one admitted
                    out[i] = Admission(NEW, decided.previous_state)
                else:
                    out[i] = Admission(DUPLICATE)
        return [a for a in out if a is not None]

    def _admit_group(self, partition: str, events: list[tuple[PolicyStateEvent, str]]) -> list[Admission]:
        """One partition's candidates (event, delivery): one transaction of inserts (up to 100 at a
        time). A row that exists already refuses it: that event and the rest of the chunk are then
        admitted one by one (insert, read on conflict), which is what a storm of duplicates costs anyway."""
        result: list[Admission] = []
        for start in range(0, len(events), 100):
            chunk = events[start : start + 100]
            if len(chunk) > 1:
                ops: list[tuple[Any, ...]] = [
                    ("create", {"PartitionKey": partition, "RowKey": state_row_key(e), **_fields(e, d)})
                    for e, d in chunk
                ]
                try:
                    self.store.transact(TABLE, ops)
                except BatchRejected:
                    pass
                else:
                    result.extend(Admission(NEW) for _ in chunk)
                    self._remember([e for e, _ in chunk])
                    continue
            for event, delivery in chunk:
                admission = self._admit(event, state_row_key(event), delivery)
                if admission.admitted:
                    self._remember([event])
                result.append(admission)
        return result

    def _remember(self, events: list[PolicyStateEvent]) -> None:
        with self._lock:
            for event in events:
                if len(self._seen) >= self.memory:
                    self._seen.clear()  # a bounded cache: forgetting only costs a storage read
                self._seen[state_row_key(event)] = event.timestamp

    def forget(self, event: PolicyStateEvent) -> None:
        """Drop the process memory of the event's key (after a failed attempt the row is rolled back)."""
        with self._lock:
            self._seen.pop(state_row_key(event), None)

    def _admit(self, event: PolicyStateEvent, row: str, delivery: str = "") -> Admission:
        partition = state_partition(row)
        for _ in range(self.attempts):
            if self.store.insert(TABLE, partition, row, _fields(event, delivery)):
                return Admission(NEW)
            current = self.store.get(TABLE, partition, row)
            if current is None:
                continue  # deleted meanwhile: insert again
            seen = str(current.get("Timestamp_", ""))
            if event.timestamp < seen:
                return Admission(STALE, str(current.get("ComplianceState", "")))
            if event.timestamp == seen:
                if delivery and current.get("Delivery") == delivery:
                    return Admission(NEW)  # this message's own earlier attempt wrote it (its answer was lost)
                return Admission(DUPLICATE, str(current.get("ComplianceState", "")), str(current.get("Delivery", "")))
            try:
                self.store.replace_if_unchanged(TABLE, {**current, **_fields(event, delivery)})
            except ConflictError:
                continue  # another worker wrote the key: compare again with its timestamp
            return Admission(NEW, str(current.get("ComplianceState", "")))
        raise ConflictError(f"policy state {row} kept changing under {self.attempts} attempts; retry later")
