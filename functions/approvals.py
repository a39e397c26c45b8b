"""HTTP functions the Logic Apps call (function key), and the queue worker that finishes decisions.

Thin: parse and validate with the typed models, call one function of shared/approvals, answer JSON.
Slow work (ARM, audit, alerts, calling the Logic App back) runs in `approval_actions` off the queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps

import azure.functions as func

from functions.http_common import http_errors, json_response
from shared.approvals import models, service
from shared.approvals.anomalies import give_feedback, list_anomalies
from shared.approvals.arm_client import arm_for
from shared.approvals.http import Answer, answer_once, request_key
from shared.approvals.notify import enqueue, incident_alert
from shared.approvals.openapi import openapi_document, swagger2_document
from shared.approvals.workflow import AlreadyDecidedError
from shared.errors import BadInputError, problem
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)
Handler = Callable[[func.HttpRequest], func.HttpResponse]


def logic_app_http(handler: Handler) -> Handler:
    """http_errors, plus 409 bodies that carry the earlier decision."""

    @wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except AlreadyDecidedError as err:
            body = {**problem(err), "earlierDecision": err.earlier}
            return func.HttpResponse(json.dumps(body), status_code=409, mimetype="application/problem+json")

    return http_errors(wrapper)


def _answer(req: func.HttpRequest, operation: str, ids: tuple[str, ...], payload: object, run: Callable[[], Answer]):
    answer = answer_once(get_runtime().storage, operation, ids, request_key(req.headers), payload, run)
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return json_response(answer.body, status=answer.status, headers=headers)


def _body(req: func.HttpRequest, model: type[models.M]) -> models.M:
    return models.parse_body(req.get_body() or b"", req.headers.get("content-type"), model)


@bp.function_name("anomalies_list")
@bp.route(route="anomalies", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@logic_app_http
def anomalies_list(req: func.HttpRequest) -> func.HttpResponse:
    query = models.validate(dict(req.params), models.AnomalyQuery)
    items = [e.as_wire() for e in list_anomalies(get_runtime(), query.status, query.owner)]
    return json_response({"count": len(items), "items": items})


@bp.function_name("anomaly_feedback")
@bp.route(route="anomalies/{id}/feedback", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@logic_app_http
def anomaly_feedback(req: func.HttpRequest) -> func.HttpResponse:
    episode_id = models.path_id(req.route_params.get("id"), "episode")
    body = _body(req, models.FeedbackIn)

    def run() -> Answer:
        episode = give_feedback(get_runtime(), episode_id, body.verdict, body.by, body.why)
        return Answer(200, {"episodeId": episode_id, "verdict": body.verdict, "by": body.by, "status": episode.status})

    return _answer(req, "anomaly_feedback", (episode_id,), body.model_dump(), run)


@bp.function_name("approvals_create")
@bp.route(route="approvals", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@logic_app_http
def approvals_create(req: func.HttpRequest) -> func.HttpResponse:
    body = _body(req, models.ApprovalCreateIn)
    return _answer(
        req, "approvals_create", (), body.model_dump(), lambda: Answer(202, service.subscribe(get_runtime(), body))
    )


@bp.function_name("approval_decision")
@bp.route(route="approvals/{id}/decision", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@logic_app_http
def approval_decision(req: func.HttpRequest) -> func.HttpResponse:
    approval_id = models.path_id(req.route_params.get("id"), "approval")
    body = _body(req, models.DecisionIn)
    run = lambda: Answer(202, service.record_decision(get_runtime(), approval_id, body))  # noqa: E731
    return _answer(req, "approval_decision", (approval_id,), body.model_dump(), run)


@bp.function_name("approval_unsubscribe")
@bp.route(route="approvals/{id}/unsubscribe", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@logic_app_http
def approval_unsubscribe(req: func.HttpRequest) -> func.HttpResponse:
    # idempotent by nature: a second call finds nothing to cancel
    approval_id = models.path_id(req.route_params.get("id"), "approval")
    body = _body(req, models.UnsubscribeIn)
    return json_response(service.unsubscribe(get_runtime(), approval_id, body))


@bp.function_name("incidents_create")
@bp.route(route="incidents", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@logic_app_http
def incidents_create(req: func.HttpRequest) -> func.HttpResponse:
    body = _body(req, models.IncidentIn)

    def run() -> Answer:
        alert = incident_alert(
            title=body.title,
            severity=body.severity,
            resource_id=body.resourceId,
            owner=body.owner,
            summary=body.summary,
            dedupe_key=body.dedupeKey,
            action=body.action,
            facts=body.facts,
            correlation_id=req.headers.get("x-correlation-id", ""),
        )
        message_id = enqueue(get_runtime().storage, alert)
        return Answer(202, {"status": "queued", "dedupeKey": alert.dedupe_key, "messageId": message_id})

    return _answer(req, "incidents_create", (), body.model_dump(), run)


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@logic_app_http
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    host = req.headers.get("host") or ""
    if len(host) > 255 or not all(c.isalnum() or c in ".-:[]" for c in host):
        raise BadInputError("the Host header is not a host name")
    # ?format=swagger2: the same API as Swagger 2.0, which the custom connector import wizard takes
    if req.params.get("format") == "swagger2":
        return json_response(swagger2_document(server_host=host))
    return json_response(openapi_document(server_host=host))


@bp.function_name("approval_actions")
@bp.queue_trigger(arg_name="msg", queue_name="approval-actions", connection="AzureWebJobsStorage")
def approval_actions(msg: func.QueueMessage) -> None:
    doc = json.loads(msg.get_body() or b"{}")
    runtime = get_runtime()
    approval = service.finish(
        runtime,
        str(doc.get("approvalId", "")),
        arm_factory=lambda: arm_for(runtime),
        correlation_id=msg.id or "",
    )
    outcome = approval.outcome.state if approval.outcome else "-"
    log.info("approval finished", extra={"approval_id": approval.approval_id, "outcome": outcome})
