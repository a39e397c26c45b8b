"""What every HTTP function shares: JSON responses and the one mapping of errors to status codes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

import azure.functions as func

from shared.errors import BadInputError, ValueFlowError, problem

log = logging.getLogger(__name__)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(doc, default=str), status_code=status, mimetype="application/json", headers=headers or {}
    )


def problem_response(err: ValueFlowError) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(problem(err)), status_code=err.status, mimetype="application/problem+json")


def http_errors(
    handler: Callable[[func.HttpRequest], func.HttpResponse],
) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Turn project errors into problem+json; anything else into a 500 that hides the traceback."""

    @wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except ValueFlowError as err:
            if err.status >= 500:
                log.error("request failed: %s", err.detail)
            return problem_response(err)
        except RecursionError:  # json.loads of a deeply nested body: the input's fault, not ours
            return problem_response(BadInputError("the request body is nested too deeply"))
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return problem_response(ValueFlowError("internal error; the function log has the details"))

    return wrapper
