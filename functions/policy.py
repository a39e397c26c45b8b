"""Policy remediation: Event Grid policy state events -> `policy-work` -> remediation tasks or alerts."""

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared.policy.events import event_from_trigger
from shared.policy.watch import remediation_cycle
from shared.policy.worker import WORK_QUEUE, accept_event
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("policy_events")
@bp.event_grid_trigger(arg_name="event")
def policy_events(event: func.EventGridEvent) -> None:
    # Event Grid waits at most 30 s: check and enqueue only; bad events are acknowledged and counted
    raw = event_from_trigger(
        event_id=event.id,
        topic=event.topic,
        subject=event.subject,
        event_type=event.event_type,
        event_time=event.event_time,
        data=event.get_json(),
        data_version=event.data_version,
    )
    accepted = accept_event(get_runtime().storage, raw, received_at=datetime.now(UTC))
    log.info("policy event %s", accepted.status, extra={"event_id": event.id, "reason": accepted.reason})


@bp.function_name("policy_worker")
@bp.queue_trigger(arg_name="msg", queue_name=WORK_QUEUE, connection="AzureWebJobsStorage")
def policy_worker(msg: func.QueueMessage) -> None:
    worker = get_runtime().policy_worker
    outcome = worker.process(msg.get_body(), dequeue_count=msg.dequeue_count or 1, message_id=msg.id or "")
    log.info("policy work item %s", outcome.status, extra={"detail": outcome.detail})


@bp.function_name("remediation_watch")
@bp.timer_trigger(arg_name="timer", schedule="%REMEDIATION_WATCH_SCHEDULE%", run_on_startup=False)
def remediation_watch(timer: func.TimerRequest) -> None:
    worker = get_runtime().policy_worker
    report = remediation_cycle(worker.store, worker.settings, worker.arm, owner_of=worker.owner_of)
    log.info("remediation watch done", extra={"report": report})
