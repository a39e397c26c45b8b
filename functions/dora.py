"""DORA metrics: deployments and problems in (HTTP, acknowledged at once, written off the `dora-events`
queue), metrics / failed deployments / leaderboard / Backstage scorecard out, and the weekly digest timer.

Thin: every function parses its trigger, calls one function of shared/dora and answers JSON.
"""

import logging

import azure.functions as func

from functions.http_common import http_errors, json_response
from shared.dora import service
from shared.observability import invocation
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


def _param(req: func.HttpRequest, name: str) -> str | None:
    value = req.params.get(name)
    return value if value and value.strip() else None


@bp.function_name("dora_deployments")
@bp.route(route="dora/deployments", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def dora_deployments(req: func.HttpRequest) -> func.HttpResponse:
    result = service.accept_deployments(get_runtime(), req.get_body() or b"")
    log.info("dora deployments queued", extra={"count": result["accepted"]})
    return json_response(result, status=202)


@bp.function_name("dora_problems")
@bp.route(route="dora/problems", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def dora_problems(req: func.HttpRequest) -> func.HttpResponse:
    result = service.accept_problems(get_runtime(), req.get_body() or b"", req.headers)
    log.info("dora problems queued", extra={"count": result["accepted"]})
    return json_response(result, status=202)


@bp.function_name("dora_metrics")
@bp.route(route="dora/metrics", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def dora_metrics(req: func.HttpRequest) -> func.HttpResponse:
    doc = service.metrics(
        get_runtime(),
        service=_param(req, "service"),
        squad=_param(req, "squad"),
        from_=_param(req, "from"),
        to=_param(req, "to"),
    )
    return json_response(doc)


@bp.function_name("dora_failed_deploys")
@bp.route(route="dora/failed-deploys", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def dora_failed_deploys(req: func.HttpRequest) -> func.HttpResponse:
    items = service.failed(
        get_runtime(),
        service=_param(req, "service"),
        squad=_param(req, "squad"),
        from_=_param(req, "from"),
        to=_param(req, "to"),
    )
    return json_response({"items": items})


@bp.function_name("dora_leaderboard")
@bp.route(route="dora/leaderboard", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def dora_leaderboard(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(service.leaderboard(get_runtime(), from_=_param(req, "from"), to=_param(req, "to")))


@bp.function_name("catalog_scorecard")
@bp.route(route="catalog/scorecard", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def catalog_scorecard(req: func.HttpRequest) -> func.HttpResponse:
    doc = service.scorecard(get_runtime(), _param(req, "entityRef"), from_=_param(req, "from"), to=_param(req, "to"))
    return json_response(doc)


@bp.function_name("dora_events_worker")
@bp.queue_trigger(arg_name="msg", queue_name=service.QUEUE, connection="AzureWebJobsStorage")
def dora_events_worker(msg: func.QueueMessage) -> None:
    # idempotent per id (MERGE): a redelivered message rewrites the same rows
    with invocation("dora_events_worker", msg.id):
        result = service.handle_queue_message(get_runtime(), msg.get_body())
        log.info("dora events written", extra={"message_id": msg.id, **result})


@bp.function_name("dora_weekly_digest")
@bp.timer_trigger(arg_name="timer", schedule="%DORA_DIGEST_SCHEDULE%", run_on_startup=False)
@bp.retry(strategy="fixed_delay", max_retry_count="3", delay_interval="00:02:30")  # > the digest lease (2 min)
def dora_weekly_digest(timer: func.TimerRequest) -> None:
    with invocation("dora_weekly_digest"):
        report = service.refresh_and_digest(get_runtime())
        log.info("dora weekly digest", extra={"report": report, "past_due": timer.past_due})
