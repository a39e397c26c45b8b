"""The demand sync worker: every step on queue `demands`, with backoff, a poison queue and an alert.

Messages (JSON, `attempt` counts from 1):
- `{"type": "demand", "demand": {...contract...}}` — create or update the demand's work item, then
  write the id/URL and a work note back to ServiceNow;
- `{"type": "workitem-state", "eventId", "change": {...}}` — a work item's state moved: map it to the
  demand's state and add a work note (our own revisions are ignored);
- `{"type": "audit", "eventId", "buildIds": [...], "note"}` — a build or release linked to the
  demand's work items completed: an audit work note.

Exactly once per (demand, action): each effect runs under `Idempotency.once` (scope `demands`)
keyed by what it does — create per sys_id, write-back per (sys_id, work item), state per (work
item, revision), audit per (event, demand). A step another worker holds is retried after what is
left of its lease, so a crashed worker's step is done once its lease has run out. A create whose
claim record is gone is still not repeated: the work item is looked up by its `SN:<number>` tag first.
Failures: timeouts, 429 (Retry-After honoured), 5xx and storage errors re-enqueue the message
with full-jitter exponential backoff; after `DEMANDS_MAX_ATTEMPTS`, or at once for a permanent
failure (401/403, a `TF` 4xx, bad input), it goes to `demands-poison` and an alert is raised
through the alert pipeline. `python -m shared.cli demands replay-poison` puts it back.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from shared.demands import mapping
from shared.demands.links import DemandLink, DemandLinks
from shared.demands.model import Demand
from shared.errors import (
    BadInputError,
    SettingsError,
    StorageError,
    TransientUpstreamError,
    UpstreamAuthError,
    UpstreamError,
    ValueFlowError,
)
from shared.idempotency import Idempotency, Scope, idempotency_key
from shared.settings import Settings

if TYPE_CHECKING:  # the adapters are imported when first used, not at module import
    from shared.demands.boards import AzureBoards
    from shared.demands.servicenow import ServiceNowDemands

log = logging.getLogger(__name__)

QUEUE = "demands"
POISON = "demands-poison"
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600
IDEMPOTENCY_SCOPE = "demands"
# one partition named after the scope, as the records written before `once` (a few demands a day: no hot
# partition); the lease covers one step's HTTP calls with their retries
DEMANDS_SCOPE = Scope(IDEMPOTENCY_SCOPE, lease=timedelta(minutes=5), expires_after=timedelta(days=14), spread=1)


class DemandStore(Protocol):
    """The part of `StateStore` the worker uses."""

    def send(
        self, queue: str, message: dict[str, Any] | str | bytes, *, visibility_timeout: int | None = None
    ) -> str: ...
    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool: ...
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> None: ...
    def delete(self, table: str, partition: str, row: str) -> None: ...
    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None: ...
    def query(self, table: str, filter: str | None = None, **params: Any) -> Any: ...


def demand_message(demand: Demand, attempt: int = 1) -> dict[str, Any]:
    return {"type": "demand", "demand": demand.to_payload(), "attempt": attempt}


def enqueue_demand(store: Any, demand: Demand) -> str:
    """Queue an approved demand (already validated); returns the message id."""
    return str(store.send(QUEUE, demand_message(demand)))


@dataclass
class StepOutcome:
    """What one message did: `done`, `skipped`, `retry` (re-enqueued) or `poisoned`."""

    kind: str
    status: str
    detail: str = ""
    effects: list[str] = field(default_factory=list)
    delay_seconds: int = 0

    def summary(self) -> dict[str, Any]:
        return asdict(self)


class DemandSync:
    """The worker and the sync steps, with their adapters (built lazily, once per runtime)."""

    def __init__(
        self,
        settings: Settings,
        store: DemandStore,
        *,
        boards: AzureBoards | None = None,
        servicenow: ServiceNowDemands | None = None,
        rng: Callable[[], float] = random.random,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._boards = boards
        self._servicenow = servicenow
        self.rng = rng
        self.links = DemandLinks(store)
        self.idempotency = idempotency or Idempotency(store)

    # -- adapters --

    @cached_property
    def boards(self) -> AzureBoards:
        if self._boards is not None:
            return self._boards
        from shared.adapters.azure_devops import AzureDevOpsClient
        from shared.demands.boards import AzureBoards

        return AzureBoards(AzureDevOpsClient.from_settings(self.settings))

    @cached_property
    def servicenow(self) -> ServiceNowDemands:
        if self._servicenow is not None:
            return self._servicenow
        from shared.demands.servicenow import ServiceNowDemands

        if not self.settings.servicenow_instance_url:
            raise SettingsError("SERVICENOW_INSTANCE_URL is empty: the demand sync cannot write back to ServiceNow")
        return ServiceNowDemands.from_settings(self.settings)

    # -- the queue message --

    def handle(self, body: bytes | str | dict[str, Any]) -> StepOutcome:
        """Run one message; never raises for a failure it can classify (retry or poison instead)."""
        try:
            message = body if isinstance(body, dict) else json.loads(body)
            if not isinstance(message, dict) or message.get("type") not in STEPS:
                raise BadInputError(f"not a demands message: expected a JSON object with type in {sorted(STEPS)}")
        except (ValueError, BadInputError) as err:
            raw = (
                body
                if isinstance(body, dict)
                else {"raw": body.decode(errors="replace") if isinstance(body, bytes) else body}
            )
            return self._poison({"type": "unknown", "message": raw, "attempt": 1}, BadInputError(str(err)), 1)
        raw_attempt = message.get("attempt")
        attempt = raw_attempt if isinstance(raw_attempt, int) and raw_attempt > 0 else 1
        kind = str(message["type"])
        try:
            status, detail, effects = STEPS[kind](self, message)
        except (TransientUpstreamError, StorageError) as err:
            if attempt >= self.settings.demands_max_attempts:
                return self._poison(message, err, attempt, exhausted=True)
            delay = self.backoff_seconds(attempt, getattr(err, "retry_after", None))
            self.store.send(QUEUE, {**message, "attempt": attempt + 1}, visibility_timeout=delay)
            log.warning(
                "demand step will be retried",
                extra={"kind": kind, "attempt": attempt, "delay": delay, "error": err.detail},
            )
            return StepOutcome(kind, "retry", err.detail, delay_seconds=delay)
        except (UpstreamError, SettingsError, BadInputError) as err:
            return self._poison(message, err, attempt)
        return StepOutcome(kind, status, detail, effects)

    def backoff_seconds(self, attempt: int, retry_after: float | None) -> int:
        """Full-jitter exponential backoff after `attempt`; never sooner than Retry-After."""
        base = self.settings.demands_retry_base_seconds
        ceiling = min(self.settings.demands_retry_max_seconds, base * 2 ** (attempt - 1))
        delay = max(ceiling * self.rng(), retry_after or 0.0, 1.0 if base else 0.0)
        return min(MAX_VISIBILITY_SECONDS, math.ceil(delay))

    def _poison(
        self, message: dict[str, Any], err: ValueFlowError, attempt: int, *, exhausted: bool = False
    ) -> StepOutcome:
        kind = str(message.get("type") or "unknown")
        reason = f"still failing after {attempt} attempts: {err.detail}" if exhausted else err.detail
        self.store.send(
            POISON, {**message, "attempt": attempt, "error": reason[:1000], "failedAt": datetime.now(UTC).isoformat()}
        )
        log.error("demand step failed; message sent to %s", POISON, extra={"kind": kind, "error": reason[:500]})
        self._alert(message, err, reason)
        return StepOutcome(kind, "poisoned", reason)

    def _alert(self, message: dict[str, Any], err: ValueFlowError, reason: str) -> None:
        """One alert per failing item (per day for credential problems), through the alert pipeline."""
        from shared.alerts.delivery import enqueue_alert
        from shared.alerts.model import Alert

        kind = str(message.get("type") or "unknown")
        raw_demand = message.get("demand")
        demand: dict[str, Any] = raw_demand if isinstance(raw_demand, dict) else {}
        item = str(demand.get("number") or message.get("eventId") or "message")
        day = datetime.now(UTC).date().isoformat()
        if isinstance(err, (UpstreamAuthError, SettingsError)):
            dedupe = f"demand-sync-failing:{type(err).__name__}:{day}"
        else:
            dedupe = f"demand-sync-failing:{kind}:{item}"[:200]
        facts = (("Step", kind), ("Item", item), ("Error", reason[:500]))
        try:
            enqueue_alert(
                self.store,
                Alert(
                    kind="delivery_failing",
                    severity="warning",
                    title=f"Demand sync failing ({kind}, {item})"[:300],
                    resource_id=f"valueflow/demand-sync/{kind}",
                    owner="",
                    facts=facts,
                    links=(),
                    dedupe_key=dedupe,
                    summary=f"The message waits in the {POISON} queue. Fix the cause, then run "
                    "`python -m shared.cli demands replay-poison`; the nightly reconciliation also repairs "
                    "approved demands without a work item.",
                ),
            )
        except ValueFlowError as alert_err:  # the poison message is kept either way
            log.error("could not raise the demand-sync alert: %s", alert_err.detail)

    # -- exactly once --

    def once(self, parts: tuple[Any, ...], effect: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Run `effect` once per key: (result, ran_now). A key another worker holds raises TransientUpstreamError
        with what is left of its lease, so the message is retried then (a crashed holder's step is taken over)."""
        outcome = self.idempotency.once(DEMANDS_SCOPE, idempotency_key(*parts), effect)
        outcome.raise_if_busy(f"{parts[0]} for {parts[1]}")
        return outcome.result or {}, outcome.ran

    # -- step: demand -> work item --

    def sync_demand(self, message: dict[str, Any]) -> tuple[str, str, list[str]]:
        demand = Demand.from_payload(message.get("demand"))
        return self.sync(demand)

    def sync(self, demand: Demand) -> tuple[str, str, list[str]]:
        """Create or update the demand's work item and write back; ("done", detail, effects)."""
        effects: list[str] = []
        criteria_field = self.settings.azure_devops_acceptance_criteria_field
        link_url = demand.url or mapping.record_url(
            self.settings.servicenow_instance_url, self.settings.servicenow_demand_table, demand.sys_id
        )
        known = self.links.of_demand(demand.sys_id)
        current = self.boards.get(known.work_item_id) if known else None
        if current is None:
            previous = known.work_item_id if known else 0  # a deleted work item is created again
            result, ran = self.once(
                ("create", demand.sys_id, previous), lambda: self._create_or_adopt(demand, link_url, criteria_field)
            )
            work_item_id = int(result["id"])
            self.links.save(DemandLink(demand.sys_id, demand.number, work_item_id, self.boards.web_url(work_item_id)))
            if ran:
                effects.append(f"{result['action']} work item {work_item_id}")
            if result["action"] == "adopted":
                current = self.boards.get(work_item_id)
        else:
            work_item_id = current.id
        updated = False
        if current is not None:
            patch = mapping.update_patch(
                demand, current.as_current(), record_link=link_url, criteria_field=criteria_field
            )
            if patch:
                after = self.boards.update(work_item_id, patch)
                self.links.mark_own_revision(work_item_id, after.rev)
                effects.append(f"updated work item {work_item_id} ({len(patch)} changes)")
                updated = True
        web_url = self.boards.web_url(work_item_id)
        fields = mapping.writeback_fields(
            demand,
            work_item_id,
            web_url,
            id_field=self.settings.servicenow_demand_work_item_field,
            url_field=self.settings.servicenow_demand_work_item_url_field,
            updated=False,
        )
        _, ran = self.once(("writeback", demand.sys_id, work_item_id), lambda: self.write_back(demand.sys_id, fields))
        if ran:
            effects.append(f"wrote work item {work_item_id} back to {demand.number}")
        if updated:
            note = {"work_notes": f"Azure Boards work item {work_item_id} updated from the re-sent demand: {web_url}"}
            _, ran = self.once(
                ("update-note", demand.sys_id, work_item_id, demand.fingerprint()),
                lambda: self.write_back(demand.sys_id, note),
            )
            if ran:
                effects.append(f"noted the update on {demand.number}")
        detail = f"{demand.number} -> work item {work_item_id}"
        return ("done" if effects else "skipped"), detail, effects

    def _create_or_adopt(self, demand: Demand, link_url: str, criteria_field: str) -> dict[str, Any]:
        # the fallback to the claim record: a work item already tagged SN:<number> is this demand's
        found = self.boards.find_by_demand(demand.number)
        if found:
            return {"id": min(found), "action": "adopted"}
        patch = mapping.create_patch(demand, record_link=link_url, criteria_field=criteria_field)
        created = self.boards.create(self.settings.azure_devops_work_item_type, patch)
        self.links.mark_own_revision(created.id, created.rev)
        log.info("work item created", extra={"demand": demand.number, "work_item": created.id})
        return {"id": created.id, "action": "created"}

    def write_back(self, sys_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        row = self.servicenow.update(sys_id, fields)
        return {"number": row.get("number", "")}

    # -- step: work item state -> demand --

    def apply_state(self, message: dict[str, Any]) -> tuple[str, str, list[str]]:
        change = _change(message.get("change"))
        if self.links.is_own_revision(change.work_item_id, change.rev):
            return "skipped", f"revision {change.rev} of work item {change.work_item_id} is the sync's own", []
        if not change.state_changed:
            return "skipped", "no state change", []
        link = self.links.of_work_item(change.work_item_id) or self._link_by_tag(change)
        if link is None:
            return "skipped", f"work item {change.work_item_id} is not linked to a demand", []
        fields = mapping.state_update(change, self.settings.demands_state_map)
        _, ran = self.once(("state", change.work_item_id, change.rev), lambda: self.write_back(link.sys_id, fields))
        effects = [f"{link.number}: {fields.get('state') or 'note only'}"] if ran else []
        return ("done" if ran else "skipped"), f"work item {change.work_item_id} is {change.new_state}", effects

    def _link_by_tag(self, change: mapping.WorkItemChange) -> DemandLink | None:
        number = change.demand_number
        if not number:
            return None
        row = self.servicenow.find_by_number(number)
        if row is None:
            return None
        from shared.demands.servicenow import display

        link = DemandLink(display(row, "sys_id"), number, change.work_item_id, self.boards.web_url(change.work_item_id))
        self.links.save(link)
        return link

    # -- step: build / release audit note --

    def audit(self, message: dict[str, Any]) -> tuple[str, str, list[str]]:
        event_id = str(message.get("eventId") or "")
        note = str(message.get("note") or "")
        build_ids = [b for b in message.get("buildIds") or [] if isinstance(b, int)]
        if not event_id or not note:
            raise BadInputError("audit message needs eventId and note")
        work_items: set[int] = set()
        for build_id in build_ids:
            work_items.update(self.boards.build_work_items(build_id))
        effects = []
        for work_item_id in sorted(work_items):
            link = self.links.of_work_item(work_item_id)
            if link is None:
                continue
            text = note.replace(mapping.WORK_ITEM_PLACEHOLDER, str(work_item_id))
            _, ran = self.once(
                ("audit", event_id, link.sys_id),
                lambda sys_id=link.sys_id, note_text=text: self.write_back(sys_id, {"work_notes": note_text}),  # type: ignore[misc]
            )
            if ran:
                effects.append(f"audit note on {link.number}")
        return ("done" if effects else "skipped"), f"{len(work_items)} linked work items", effects


def _change(doc: Any) -> mapping.WorkItemChange:
    if not isinstance(doc, dict):
        raise BadInputError("workitem-state message without a change")
    try:
        return mapping.WorkItemChange(
            work_item_id=int(doc["work_item_id"]),
            rev=int(doc["rev"]),
            changed_by=str(doc.get("changed_by") or ""),
            old_state=str(doc.get("old_state") or ""),
            new_state=str(doc.get("new_state") or ""),
            tags=tuple(doc.get("tags") or ()),
            title=str(doc.get("title") or ""),
            work_item_type=str(doc.get("work_item_type") or "Work item"),
            changed_fields=tuple(doc.get("changed_fields") or ()),
        )
    except (KeyError, TypeError, ValueError):
        raise BadInputError("workitem-state message: change needs work_item_id and rev") from None


STEPS: dict[str, Callable[[DemandSync, dict[str, Any]], tuple[str, str, list[str]]]] = {
    "demand": DemandSync.sync_demand,
    "workitem-state": DemandSync.apply_state,
    "audit": DemandSync.audit,
}


def sync_for(runtime: Any) -> DemandSync:
    """The runtime's `DemandSync` (adapters and their HTTP sessions built once per runtime)."""
    found = getattr(runtime, "_demand_sync", None)
    if found is None or found.settings is not runtime.settings:
        found = DemandSync(runtime.settings, runtime.storage, idempotency=runtime.idempotency)
        runtime._demand_sync = found
    return found
