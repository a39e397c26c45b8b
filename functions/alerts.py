"""Queue trigger `alert_delivery` on `alerts`: deliver one alert (or storm digest) to Teams and ServiceNow.

Delivery failures are handled inside (backoff re-enqueue, alerts-poison, delivery-failing alert);
anything unexpected propagates so that the host's maxDequeueCount moves the message to alerts-poison.
Routes (ALERT_ROUTES) are validated on first use, not at import: a bad routing file fails this
function's invocations with SettingsError naming the squad and field, and `/api/health` reports it.
"""

import logging

import azure.functions as func

from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("alert_delivery")
@bp.queue_trigger(arg_name="msg", queue_name="alerts", connection="AzureWebJobsStorage")
def alert_delivery(msg: func.QueueMessage) -> None:
    outcome = get_runtime().alert_delivery.handle(msg.get_body())
    log.info(
        "alert message processed",
        extra={"message_id": msg.id, "dequeue_count": msg.dequeue_count, **outcome.summary()},
    )
