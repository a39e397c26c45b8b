"""Demand-sync handlers of the shared Azure DevOps service hook (`POST /api/hooks/azure-devops`).

They only read the notification and queue a step on `demands` (where backoff, poison and the alert
live); the worker does the ServiceNow side exactly once.
- `workitem.updated` with a `System.State` change -> `workitem-state`;
- `build.complete` and `ms.vss-release.deployment-completed-event` -> `audit` (the worker asks Azure
  DevOps which work items the builds are linked to, and notes the linked demands).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from shared.demands import mapping
from shared.demands.sync import QUEUE
from shared.devops.hooks import HookEvent, register

if TYPE_CHECKING:
    from shared.runtime import Runtime

RELEASE_COMPLETED = "ms.vss-release.deployment-completed-event"


def _text(event: HookEvent) -> str:
    message = event.raw.get("message")
    return str(message.get("text") or "") if isinstance(message, dict) else ""


@register("workitem.updated")
def on_work_item_updated(event: HookEvent, runtime: Runtime) -> str:
    try:
        change = mapping.work_item_change(event.resource)
    except ValueError as err:
        return f"ignored: {err}"
    if not change.state_changed:
        return "ignored: no state change"
    runtime.storage.send(QUEUE, {"type": "workitem-state", "eventId": event.id, "change": asdict(change), "attempt": 1})
    return f"queued: work item {change.work_item_id} {change.old_state or '(new)'} -> {change.new_state}"


@register("build.complete")
def on_build_complete(event: HookEvent, runtime: Runtime) -> str:
    build_id = event.resource.get("id")
    if not isinstance(build_id, int) or isinstance(build_id, bool):
        return "ignored: resource.id is not a build id"
    note = mapping.audit_note(event.event_type, event.resource, _text(event))
    runtime.storage.send(
        QUEUE, {"type": "audit", "eventId": event.id, "buildIds": [build_id], "note": note, "attempt": 1}
    )
    return f"queued: audit of build {build_id}"


@register(RELEASE_COMPLETED)
def on_release_deployment_completed(event: HookEvent, runtime: Runtime) -> str:
    build_ids = mapping.build_ids_of_release(event.resource)
    if not build_ids:
        return "ignored: the release has no build artifact"
    note = mapping.audit_note(event.event_type, event.resource, _text(event))
    runtime.storage.send(
        QUEUE, {"type": "audit", "eventId": event.id, "buildIds": build_ids, "note": note, "attempt": 1}
    )
    return f"queued: audit of release builds {build_ids}"
