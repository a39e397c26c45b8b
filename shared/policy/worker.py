"""Receive fast, work later: the trigger side (`accept_event`) and the queue worker (`PolicyWorker`).

`accept_event` only parses and checks an event and enqueues a work item on `policy-work` (a few
milliseconds); bad events are acknowledged, logged with their reason and counted, never raised,
so Event Grid does not retry them for 24 hours. `PolicyWorker.process` does the rest for one
work item: dedupe, the policy's effect, then either a pending violation for the next remediation
plan (deployIfNotExists/modify) or an alert to the owner squad (everything else); a Compliant or
deleted state resolves the open alert and drops the pending violation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.alerts.delivery import enqueue_alert
from shared.alerts.model import Alert
from shared.alerts.routing import owner_from_tags
from shared.errors import ConflictError, UpstreamAuthError, ValueFlowError
from shared.policy.dedupe import PARTITION as LEDGER_PARTITION
from shared.policy.dedupe import TABLE as STATE_TABLE
from shared.policy.dedupe import Admission, PolicyStateLedger, state_partition, state_row_key
from shared.policy.effects import (
    ESCALATE,
    EffectCache,
    EffectLookup,
    path_for_effect,
    resolved_alert_fields,
    violation_alert_fields,
    violation_key,
    wants_incident,
)
from shared.policy.events import BadPolicyEvent, PolicyStateEvent, parse_policy_event
from shared.settings import Settings

log = logging.getLogger(__name__)

WORK_QUEUE = "policy-work"
POISON_QUEUE = "policy-work-poison"
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount (a unit test keeps them equal)
REMEDIATIONS_TABLE = "remediations"
PENDING_PARTITION = "pending"  # prefix: rows live in `pending-00`..`pending-0f` (by row hash)
OPEN_ALERT_PARTITION = "open-alert"  # prefix, likewise
SPREAD = 16
OWNER_PARTITION = "owner"
COUNTER_PARTITION = "counter"
CONFIG_ALERT_PARTITION = "config-alert"
OWNER_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Accepted:
    """What the trigger did with one event: `queued` (with the message id) or `rejected` (with why)."""

    status: str
    reason: str = ""
    message_id: str = ""


def count(store: Any, name: str, *, attempts: int = 4) -> None:
    """Add one to the counter `name` (table `policystate`, partition `counter`) and log it as a metric.

    Best effort: a counter that keeps conflicting is logged, never raised."""
    log.info("policy counter %s +1", name, extra={"metric": f"policy.{name}", "value": 1})
    for _ in range(attempts):
        try:
            current = store.get(STATE_TABLE, COUNTER_PARTITION, name)
            if current is None:
                if store.insert(STATE_TABLE, COUNTER_PARTITION, name, {"Count": 1}):
                    return
                continue
            store.replace_if_unchanged(STATE_TABLE, {**current, "Count": int(current.get("Count", 0)) + 1})
            return
        except ConflictError:
            continue
        except ValueFlowError as exc:
            log.warning("counter %s not written: %s", name, exc.detail)
            return
    log.warning("counter %s not written: kept conflicting", name)


def read_counters(store: Any) -> dict[str, int]:
    """Every policy counter: rejected events by reason, poison work items, ..."""
    return {
        str(row["RowKey"]): int(row.get("Count", 0))
        for row in store.query(STATE_TABLE, "PartitionKey eq @pk", pk=COUNTER_PARTITION)
    }


def accept_event(store: Any, raw: Any, *, received_at: datetime) -> Accepted:
    """Trigger side. In: one raw event (either schema). Out: Accepted; enqueues a work item when valid.

    Raises only when the work item cannot be enqueued (storage down): then Event Grid must retry."""
    try:
        event = parse_policy_event(raw)
    except BadPolicyEvent as bad:
        log.warning(
            "policy event rejected: %s",
            bad.detail,
            extra={"reason": bad.reason, "event_id": bad.event_id},
        )
        count(store, f"rejected-{bad.reason}")
        return Accepted("rejected", bad.reason)
    item = {"v": 1, "event": event.as_dict(), "received_at": received_at.astimezone(UTC).isoformat()}
    return Accepted("queued", message_id=store.send(WORK_QUEUE, item))


@dataclass(frozen=True)
class WorkOutcome:
    """What the worker did: `pending-remediation`, `alerted`, `already-alerted`, `resolved`,
    `nothing-to-resolve`, `duplicate`, `stale`, `rejected`, `ignored`."""

    status: str
    detail: str = ""


class PolicyWorker:
    """Processes `policy-work` items. Needs the state store, the settings and an `Arm` (or a fake)."""

    def __init__(self, store: Any, settings: Settings, arm: Any) -> None:
        self.store = store
        self.settings = settings
        self.arm = arm
        self.ledger = PolicyStateLedger(store)
        self.effects = EffectCache(
            store, lambda q: str(arm.policy_effect(q.resource_id, q.assignment_id, q.definition_reference_id))
        )
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()
        self._upgraded = False

    # -- one work item --

    def process(self, body: bytes | str, *, dequeue_count: int = 1, message_id: str = "") -> WorkOutcome:
        """In: the queue message body. Out: WorkOutcome. A malformed item is counted and dropped;
        any other failure is raised so the host retries it, and on the last attempt an alert says
        that it is going to `policy-work-poison`."""
        outcome = self.process_batch([(body, dequeue_count, message_id)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def process_batch(self, messages: list[tuple[bytes | str, int, str]]) -> list[WorkOutcome | Exception]:
        """A received batch of (body, dequeue count, message id): the outcome of each, or the exception
        that must leave that message on the queue for a retry (the others are done: acknowledge them).
        The ledger admits the whole batch with one transaction per partition."""
        self._move_unspread_rows_once()
        results: list[WorkOutcome | Exception | None] = [None] * len(messages)
        parsed: list[tuple[int, PolicyStateEvent, datetime]] = []
        for i, (body, _, _) in enumerate(messages):
            item = _parse_item(body)
            if item is None:
                count(self.store, "rejected-malformed-work-item")
                results[i] = WorkOutcome("rejected", "malformed work item")
            else:
                parsed.append((i, *item))
        try:
            admissions = self.ledger.admit_many(
                [event for _, event, _ in parsed], [messages[i][2] for i, _, _ in parsed]
            )
        except Exception as exc:
            admissions = [exc] * len(parsed)  # type: ignore[list-item]
        for (i, event, received_at), admission in zip(parsed, admissions, strict=True):
            try:
                if isinstance(admission, Exception):
                    raise admission
                results[i] = self._process(event, received_at, admission, messages[i][2])
            except UpstreamAuthError as exc:
                # a missing or refused credential is configuration, not a blip: no retries, park, alert once
                results[i] = self._park(messages[i][0], event, messages[i][2], exc)
            except Exception as exc:
                if messages[i][1] >= MAX_DEQUEUE_COUNT:
                    self._poison_alert(event, messages[i][2], exc)
                results[i] = exc
        return [r for r in results if r is not None]

    def _move_unspread_rows_once(self) -> None:
        """Before this process's first batch: rows written before the spread are moved (see below)."""
        with self._lock:
            if self._upgraded:
                return
            move_unspread_rows(self.store)  # raises (the batch is retried) until it has run through once
            self._upgraded = True

    def _process(
        self, event: PolicyStateEvent, received_at: datetime, admission: Admission, delivery: str = ""
    ) -> WorkOutcome:
        if not admission.admitted:
            log.info(
                "policy event dropped: %s",
                admission.outcome,
                extra={"metric": f"policy.dropped-{admission.outcome}", "event_id": event.event_id},
            )
            return WorkOutcome(admission.outcome)
        try:
            if event.is_compliant or event.is_deleted:
                return self._close(event)
            if not event.is_non_compliant:
                return WorkOutcome("ignored", f"compliance state {event.compliance_state}")
            return self._violation(event, received_at, delivery)
        except Exception:
            self._forget(event)  # so that the retry of this item is not dropped as a duplicate
            raise

    def _violation(self, event: PolicyStateEvent, received_at: datetime, delivery: str = "") -> WorkOutcome:
        effect = self.effects.effect(
            EffectLookup(event.resource_id, event.assignment_id, event.definition_id, event.definition_reference_id)
        )
        if path_for_effect(effect) == ESCALATE:
            return self._escalate(event, effect, delivery)
        window = int(received_at.timestamp()) // self.settings.remediation_window_seconds
        row = pending_row_key(event.assignment_id, event.definition_reference_id, event.resource_id)
        self.store.upsert(
            REMEDIATIONS_TABLE,
            spread_partition(PENDING_PARTITION, row),
            row,
            {
                "AssignmentId": event.assignment_id,
                "DefinitionReferenceId": event.definition_reference_id,
                "ResourceId": event.resource_id,
                "Window": window,
                "Effect": effect,
                "EventTimestamp": event.timestamp,
            },
        )
        return WorkOutcome("pending-remediation", f"window {window}")

    def _escalate(self, event: PolicyStateEvent, effect: str, delivery: str = "") -> WorkOutcome:
        key = violation_key(event.assignment_id, event.definition_reference_id, event.resource_id)
        row = _hash(key)
        owner = self.owner_of(event.resource_id)
        incident = wants_incident(event.assignment_id, self.settings.policy_incident_assignments)
        partition = spread_partition(OPEN_ALERT_PARTITION, row)
        fields = {"DedupeKey": key, "Owner": owner, "ResourceId": event.resource_id, "Incident": incident}
        if not self.store.insert(STATE_TABLE, partition, row, {**fields, "Delivery": delivery}):
            # open already: by another event (done), or by this message's own earlier attempt whose
            # answer was lost and whose alert may not be queued yet (one read, only for an open alert)
            opened = self.store.get(STATE_TABLE, partition, row) if delivery else None
            if opened is None or opened.get("Delivery") != delivery:
                return WorkOutcome("already-alerted", key)
        try:
            enqueue_alert(self.store, Alert(**violation_alert_fields(event, effect, owner, incident)))
        except Exception:
            self.store.delete(STATE_TABLE, partition, row)  # the retry must send it
            raise
        log.info("policy violation escalated", extra={"dedupe_key": key, "owner": owner, "incident": incident})
        return WorkOutcome("alerted", key)

    def _close(self, event: PolicyStateEvent) -> WorkOutcome:
        pending = pending_row_key(event.assignment_id, event.definition_reference_id, event.resource_id)
        self.store.delete(REMEDIATIONS_TABLE, spread_partition(PENDING_PARTITION, pending), pending)
        key = violation_key(event.assignment_id, event.definition_reference_id, event.resource_id)
        row = _hash(key)
        partition = spread_partition(OPEN_ALERT_PARTITION, row)
        opened = self.store.get(STATE_TABLE, partition, row)
        if opened is None:
            return WorkOutcome("nothing-to-resolve")
        enqueue_alert(self.store, Alert(**resolved_alert_fields(event, str(opened.get("Owner", "")))))
        self.store.delete(STATE_TABLE, partition, row)
        return WorkOutcome("resolved", key)

    def _forget(self, event: PolicyStateEvent) -> None:
        self.ledger.forget(event)
        row = state_row_key(event)
        try:
            current = self.store.get(STATE_TABLE, state_partition(row), row)
            if current is not None and current.get("Timestamp_") == event.timestamp:
                self.store.delete(STATE_TABLE, state_partition(row), row)
        except ValueFlowError:
            log.warning(
                "could not roll back policy state %s: this message's retries still run, but a replay of it as a "
                "new message (from the poison queue) would be dropped as a duplicate",
                row,
            )

    def _park(self, body: bytes | str, event: PolicyStateEvent, message_id: str, exc: UpstreamAuthError) -> WorkOutcome:
        """Move the item to policy-work-poison at once (replayable once the credential is fixed) and raise
        one alert per day for the configuration problem, however many items hit it."""
        self.store.send(POISON_QUEUE, body if isinstance(body, (str, bytes)) else json.dumps(body))
        count(self.store, "parked-credential")
        day = datetime.now(UTC).date().isoformat()
        first = self.store.insert(
            STATE_TABLE, CONFIG_ALERT_PARTITION, f"{exc.kind}-{day}", {"Detail": exc.detail[:1000]}
        )
        if first:
            log.error("policy remediation cannot reach ARM: %s", exc.detail, extra={"error_kind": exc.kind})
            try:
                enqueue_alert(
                    self.store,
                    Alert(
                        kind="remediation_result",
                        severity="warning",
                        title="Policy remediation is stopped: Azure Resource Manager refused our credential",
                        resource_id=event.resource_id,
                        owner="",
                        facts=(
                            ("Problem", exc.detail[:600]),
                            ("Work items", f"parked in {POISON_QUEUE} (not retried)"),
                        ),
                        links=(),
                        dedupe_key=f"policy-config:{exc.kind}:{day}",
                        correlation_id=event.event_id,
                        summary="Fix the identity or its roles, then replay the parked items from the poison queue.",
                    ),
                )
            except Exception:
                log.exception("could not alert about the ARM credential problem")
        else:
            log.warning("policy work item parked (ARM credential problem already reported today)")
        return WorkOutcome("parked", exc.kind)

    def _poison_alert(self, event: PolicyStateEvent, message_id: str, exc: BaseException) -> None:
        count(self.store, "poison-work-items")
        detail = exc.detail if isinstance(exc, ValueFlowError) else type(exc).__name__
        try:
            enqueue_alert(
                self.store,
                Alert(
                    kind="remediation_result",
                    severity="warning",
                    title=f"Policy work item failed {MAX_DEQUEUE_COUNT} times and moved to {POISON_QUEUE}",
                    resource_id=event.resource_id,
                    owner="",
                    facts=(
                        ("Queue", POISON_QUEUE),
                        ("Message", message_id or "-"),
                        ("Assignment", event.assignment_id),
                        ("Last error", detail[:300]),
                    ),
                    links=(),
                    dedupe_key=f"policy-work-poison:{message_id or event.event_id}",
                    correlation_id=event.event_id,
                    summary="Replay it from the poison queue once the cause is fixed.",
                ),
            )
        except Exception:
            log.exception("could not alert about the poison work item %s", message_id)

    # -- owners --

    def owner_of(self, resource_id: str) -> str:
        """The owner squad from the resource's tags (OWNER_TAG_KEYS), cached in memory and the table."""
        row = _hash(resource_id.lower())
        with self._lock:
            if row in self._owners:
                return self._owners[row]
        now = datetime.now(UTC)
        cached = self.store.get(STATE_TABLE, OWNER_PARTITION, row)
        if cached and str(cached.get("ExpiresAt", "")) > now.isoformat():
            owner = str(cached.get("Owner", ""))
        else:
            try:
                owner = owner_from_tags(self.arm.resource_tags(resource_id), self.settings.owner_tag_keys)
            except ValueFlowError as exc:
                log.warning("owner of %s unknown: %s", resource_id, exc.detail)
                return ""  # not cached: ask again next time
            self.store.upsert(
                STATE_TABLE,
                OWNER_PARTITION,
                row,
                {"Owner": owner, "ResourceId": resource_id, "ExpiresAt": (now + OWNER_TTL).isoformat()},
            )
        with self._lock:
            self._owners[row] = owner
        return owner


def _parse_item(body: bytes | str) -> tuple[PolicyStateEvent, datetime] | None:
    try:
        doc = json.loads(body)
        event = PolicyStateEvent.from_dict(doc["event"])
        received_at = datetime.fromisoformat(doc["received_at"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("policy work item dropped: not a work item (%s)", type(exc).__name__)
        return None
    if not event.resource_id or not event.assignment_id or not event.timestamp:
        log.warning("policy work item dropped: not a work item (event fields missing)")
        return None
    return event, received_at


def spread_partition(prefix: str, row: str) -> str:
    """`<prefix>-<hex>`: one of SPREAD partitions by the row key's hash (a sha256 hex), so no partition is hot."""
    return f"{prefix}-{int(row[:2], 16) % SPREAD:02x}"


def spread_rows(store: Any, table: str, prefix: str) -> list[dict[str, Any]]:
    """Every row of a spread family: one partition-range query that also takes the unspread `<prefix>`
    partition written before the rows were spread (so nothing pending before an upgrade is left behind)."""
    return list(store.query(table, "PartitionKey ge @lo and PartitionKey lt @hi", lo=prefix, hi=prefix + "."))


def move_unspread_rows(store: Any) -> dict[str, int]:
    """Move rows written before the records were spread (versions before issue 17: the ledger in
    `state`, open escalations in `open-alert`, pending violations in `pending`) to the partition their
    key hashes to; the number moved, by old partition. Without the move they would be invisible: a
    compliance event would not resolve an alert opened before the upgrade, and a new non-compliance
    event would raise a second one. Safe to run concurrently and again: a row the new code has
    written meanwhile wins (the old one is only inserted where nothing exists), deleting a gone row
    is a no-op. Three queries when nothing is left."""
    families = (
        (STATE_TABLE, LEDGER_PARTITION, state_partition),
        (STATE_TABLE, OPEN_ALERT_PARTITION, lambda row: spread_partition(OPEN_ALERT_PARTITION, row)),
        (REMEDIATIONS_TABLE, PENDING_PARTITION, lambda row: spread_partition(PENDING_PARTITION, row)),
    )
    moved: dict[str, int] = {}
    for table, partition, target in families:
        for row in list(store.query(table, "PartitionKey eq @pk", pk=partition)):
            key = str(row["RowKey"])
            fields = {k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey") and not k.startswith("_")}
            store.insert(table, target(key), key, fields)
            store.delete(table, partition, key)
            moved[partition] = moved.get(partition, 0) + 1
    if moved:
        log.warning("policy rows written before the partition spread moved: %s", moved)
    return moved


def pending_rows(store: Any) -> list[dict[str, Any]]:
    """The pending remediable violations (table `remediations`)."""
    return spread_rows(store, REMEDIATIONS_TABLE, PENDING_PARTITION)


def open_alert_rows(store: Any) -> list[dict[str, Any]]:
    """The escalated violations with an open alert (table `policystate`)."""
    return spread_rows(store, STATE_TABLE, OPEN_ALERT_PARTITION)


def pending_row_key(assignment_id: str, definition_reference_id: str, resource_id: str) -> str:
    return _hash("|".join(p.lower() for p in (assignment_id, definition_reference_id, resource_id)))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
