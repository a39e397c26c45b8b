"""`POST /api/hooks/azure-devops` (every Azure DevOps service hook) and its queue worker `ado_events_worker`.

The HTTP function authenticates, checks the envelope and queues it (Azure DevOps waits ~20 s and
retries); the worker dispatches by `eventType` to the handlers capabilities register in
`shared.devops`. A handler error propagates: the host retries, then moves the message to
`ado-events-poison`.
"""

import logging

import azure.functions as func

from functions.http_common import http_errors, json_response
from shared.devops.hooks import EVENTS_QUEUE, authenticate, enqueue_event, parse_event, process_message
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("ado_hook")
@bp.route(route="hooks/azure-devops", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def ado_hook(req: func.HttpRequest) -> func.HttpResponse:
    runtime = get_runtime()
    authenticate(req.headers, runtime.settings)
    body = req.get_body() or b""
    event = parse_event(body)
    enqueue_event(runtime.storage, event, body)
    log.info("azure devops event queued", extra={"event_id": event.id, "event_type": event.event_type})
    return json_response({"accepted": True, "id": event.id, "eventType": event.event_type}, status=202)


@bp.function_name("ado_events_worker")
@bp.queue_trigger(arg_name="msg", queue_name=EVENTS_QUEUE, connection="AzureWebJobsStorage")
def ado_events_worker(msg: func.QueueMessage) -> None:
    outcome = process_message(
        get_runtime(), msg.get_body(), dequeue_count=msg.dequeue_count or 1, message_id=msg.id or ""
    )
    if outcome is None:
        log.error("azure devops message unreadable: moved to ado-events-poison", extra={"message_id": msg.id})
        return
    log.info("azure devops event dispatched", extra={"message_id": msg.id, **outcome.summary()})
