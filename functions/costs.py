"""Cost anomalies: export ingestion (Event Grid, then a queue worker), the daily scan (timer) and its
partition worker (queue).

The cost stack (pandas, numpy, pyarrow) is imported inside the functions that use it, never at
import: it would add seconds to every cold start of the alert, policy and HTTP functions.
"""

import json
import logging

import azure.functions as func

from shared.errors import BadInputError
from shared.observability import invocation
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)

# literal copies of shared.costs.loader.INGEST_QUEUE / fanout.PARTITION_QUEUE (a test keeps them equal)
INGEST_QUEUE = "cost-ingest"
PARTITION_QUEUE = "cost-partitions"


@bp.function_name("cost_export_ingest")
@bp.event_grid_trigger(arg_name="event")
def cost_export_ingest(event: func.EventGridEvent) -> None:
    # BlobCreated of a Cost Management export manifest: queue it (Event Grid waits 30 s at most)
    from shared.costs.loader import accept_export_event

    with invocation("cost_export_ingest", event.id):
        result = accept_export_event(get_runtime(), event.event_type, event.get_json() or {})
        log.info("cost export event handled", extra={"event_id": event.id, "result": result})


@bp.function_name("cost_ingest_worker")
@bp.queue_trigger(arg_name="msg", queue_name=INGEST_QUEUE, connection="AzureWebJobsStorage")
def cost_ingest_worker(msg: func.QueueMessage) -> None:
    # load the run the manifest describes: idempotent per manifest, all-or-nothing per run
    from shared.costs.loader import handle_export_event

    with invocation("cost_ingest_worker", msg.id):
        try:
            body = json.loads(msg.get_body())
        except ValueError as exc:
            raise BadInputError(f"cost ingest message {msg.id} is not JSON") from exc
        result = handle_export_event(get_runtime(), body.get("event_type", ""), body.get("data") or {})
        log.info("cost export run handled", extra={"message_id": msg.id, "result": result})


@bp.function_name("cost_daily_scan")
@bp.timer_trigger(arg_name="timer", schedule="%COST_SCAN_SCHEDULE%", run_on_startup=False)
def cost_daily_scan(timer: func.TimerRequest) -> None:
    from shared.costs.scan import run_daily_scan

    with invocation("cost_daily_scan"):
        report = run_daily_scan(get_runtime())
        log.info("cost daily scan finished", extra={"report": report.as_dict(), "past_due": timer.past_due})


@bp.function_name("cost_partition_worker")
@bp.queue_trigger(arg_name="msg", queue_name=PARTITION_QUEUE, connection="AzureWebJobsStorage")
def cost_partition_worker(msg: func.QueueMessage) -> None:
    from shared.costs.fanout import handle_partition_message

    with invocation("cost_partition_worker", msg.id):
        try:
            body = json.loads(msg.get_body())
        except ValueError as exc:
            raise BadInputError(f"cost partition message {msg.id} is not JSON") from exc
        report = handle_partition_message(get_runtime(), body)
        log.info("cost partition scored", extra={"message_id": msg.id, "report": report.as_dict()})
