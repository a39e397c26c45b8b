"""The anomaly review pages (HTML for people, opened from Teams cards) and the episode API.

Review routes are anonymous at the Functions level because a Teams link cannot carry a function key:
the signed, expiring, episode-scoped token in `?t=` is the credential, checked by `shared.review`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qs

import azure.functions as func

from functions.http_common import http_errors, json_response
from shared.errors import BadInputError, PayloadTooLargeError, UnsupportedMediaTypeError, ValueFlowError
from shared.review import page, service
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)

MAX_FORM_BYTES = 8 * 1024
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        body, status_code=status, mimetype="text/html", charset="utf-8", headers={**HTML_HEADERS, **(headers or {})}
    )


def _signed_in_as(req: func.HttpRequest) -> str:
    # App Service Authentication sets (and strips forged copies of) this header; trusted only when it is on
    if not get_runtime().settings.website_auth_enabled:
        return ""
    return (req.headers.get("x-ms-client-principal-name") or "").strip()[:200]


def _html_errors(req: func.HttpRequest, build: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    try:
        return build()
    except ValueFlowError as err:
        if err.status >= 500:
            log.error("review page failed: %s", err.detail)
        return _html(page.render_error(err.status, err.title, err.detail), status=err.status)
    except Exception:
        log.exception("review page failed")
        return _html(page.render_error(500, "Internal error", "the function log has the details"), status=500)


@bp.function_name("review_episode")
@bp.route(route="review/anomalies/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def review_episode(req: func.HttpRequest) -> func.HttpResponse:
    episode_id = req.route_params.get("id", "")
    done = req.params.get("done", "")
    notice = f"Thank you: “{page.VERDICT_LABELS[done]}” is recorded." if done in page.VERDICT_LABELS else ""
    return _html_errors(
        req,
        lambda: _html(
            service.render_episode_page(
                get_runtime(), episode_id, req.params.get("t", ""), signed_in_as=_signed_in_as(req), notice=notice
            )
        ),
    )


@bp.function_name("review_feedback")
@bp.route(route="review/anomalies/{id}/feedback", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def review_feedback(req: func.HttpRequest) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        body = req.get_body() or b""
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLargeError(f"the feedback form is over {MAX_FORM_BYTES} bytes")
        ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise UnsupportedMediaTypeError("send the feedback form as application/x-www-form-urlencoded")
        try:
            form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), max_num_fields=10).items()}
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadInputError(f"the feedback form is not readable: {exc}") from None
        target = service.submit_feedback(
            get_runtime(),
            req.route_params.get("id", ""),
            req.params.get("t", ""),
            form,
            signed_in_as=_signed_in_as(req),
        )
        # post/redirect/get: a reload of the page does not post the verdict again
        return _html("", status=303, headers={"Location": target})

    return _html_errors(req, run)


@bp.function_name("review_squad")
@bp.route(route="review", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def review_squad(req: func.HttpRequest) -> func.HttpResponse:
    return _html_errors(
        req,
        lambda: _html(service.render_squad_page(get_runtime(), req.params.get("squad", ""), req.params.get("t", ""))),
    )


@bp.function_name("anomaly_get")
@bp.route(route="anomalies/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def anomaly_get(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(service.episode_detail(get_runtime(), req.route_params.get("id", "")))
