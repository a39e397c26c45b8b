"""Queue trigger `alert_delivery` on `alerts`: deliver one alert (or storm digest) to Teams and ServiceNow.

Delivery failures are handled inside (backoff re-enqueue, alerts-poison, delivery-failing alert);
anything unexpected propagates so that the host's maxDequeueCount moves the message to alerts-poison.
"""

import logging

import azure.functions as func

from shared.alerts.routing import load_routes
from shared.runtime import get_runtime
from shared.settings import get_settings

bp = func.Blueprint()
log = logging.getLogger(__name__)

# a routing file that does not validate stops start-up here, naming the squad and the field
load_routes(get_settings())


@bp.function_name("alert_delivery")
@bp.queue_trigger(arg_name="msg", queue_name="alerts", connection="AzureWebJobsStorage")
def alert_delivery(msg: func.QueueMessage) -> None:
    outcome = get_runtime().alert_delivery.handle(msg.get_body())
    log.info(
        "alert message processed",
        extra={"message_id": msg.id, "dequeue_count": msg.dequeue_count, **outcome.summary()},
    )
