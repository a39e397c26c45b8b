"""GET /api/health: liveness plus the status of each dependency (no secrets)."""

import azure.functions as func

from functions.http_common import http_errors, json_response
from shared.health import overall, run_checks
from shared.runtime import get_runtime

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_errors
def health(req: func.HttpRequest) -> func.HttpResponse:
    checks = run_checks(get_runtime())
    status = overall(checks)
    body = {"status": status, "dependencies": [c.as_dict() for c in checks]}
    return json_response(body, status=503 if status == "unhealthy" else 200)
