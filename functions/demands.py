"""Demand sync: `POST /api/demands` (ServiceNow, on approval), the `demands` queue worker, the nightly reconciliation.

The HTTP function validates the demand and queues it (202 at once); `demand_sync_worker` runs each
step with backoff, `demands-poison` and an alert (shared/demands/sync.py); `demand_reconcile`
repairs what lost notifications missed and keeps a report in `reports/demands/`.
"""

import json
import logging
from datetime import UTC, datetime, timedelta

import azure.functions as func

from functions.http_common import http_errors, json_response
from shared.errors import BadInputError
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("demand_intake")
@bp.route(route="demands", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def demand_intake(req: func.HttpRequest) -> func.HttpResponse:
    from shared.demands.model import Demand
    from shared.demands.sync import enqueue_demand

    runtime = get_runtime()
    try:
        doc = json.loads(req.get_body() or b"")
    except ValueError:
        raise BadInputError("body is not valid JSON: expected one demand object") from None
    demand = Demand.from_payload(doc)
    message_id = enqueue_demand(runtime.storage, demand)
    log.info("demand queued", extra={"demand": demand.number, "message_id": message_id})
    return json_response({"accepted": True, "sysId": demand.sys_id, "number": demand.number}, status=202)


@bp.function_name("demand_sync_worker")
@bp.queue_trigger(arg_name="msg", queue_name="demands", connection="AzureWebJobsStorage")
def demand_sync_worker(msg: func.QueueMessage) -> None:
    from shared.demands.sync import sync_for

    outcome = sync_for(get_runtime()).handle(msg.get_body())
    log.info(
        "demand step processed", extra={"message_id": msg.id, "dequeue_count": msg.dequeue_count, **outcome.summary()}
    )


@bp.function_name("demand_reconcile")
@bp.timer_trigger(arg_name="timer", schedule="%DEMANDS_RECONCILE_SCHEDULE%", run_on_startup=False)
def demand_reconcile(timer: func.TimerRequest) -> None:
    from shared.demands.reconcile import reconcile, save_report
    from shared.demands.sync import sync_for

    runtime = get_runtime()
    if not runtime.settings.azure_devops_org_url or not runtime.settings.servicenow_instance_url:
        log.info("demand reconciliation skipped: Azure DevOps or ServiceNow is not configured")
        return
    since = datetime.now(UTC) - timedelta(days=runtime.settings.demands_reconcile_lookback_days)
    report = reconcile(sync_for(runtime), since)
    name = save_report(runtime.storage, report)
    log.info(
        "demand reconciliation report saved",
        extra={"report": name, "fixed": len(report.fixed), "failed": len(report.failed)},
    )
