"""OpenAPI 3.0 paths of the DORA and scorecard routes (merged into /api/openapi.json by
shared/approvals/openapi.py). Schemas inline: the contracts of docs/dora.md."""

from __future__ import annotations

from typing import Any

_TS = {"type": "string", "format": "date-time"}
_NTS = {"type": "string", "format": "date-time", "nullable": True}
_NSTR = {"type": "string", "nullable": True}
_NNUM = {"type": "number", "nullable": True}

DEPLOYMENT = {
    "type": "object",
    "required": ["id", "service", "environment", "result", "finishedAt"],
    "properties": {
        "id": {"type": "string", "description": "Idempotency key of the deployment."},
        "service": {"type": "string", "description": "Service key or any alias (pipeline, repository)."},
        "environment": {"type": "string", "description": "Counted when one of DORA_PRODUCTION_ENVIRONMENTS."},
        "result": {"type": "string", "enum": ["succeeded", "failed", "canceled"]},
        "finishedAt": _TS,
        "startedAt": _TS,
        "commitId": {"type": "string"},
        "commitTime": _TS,
        "pipeline": {"type": "string"},
        "runId": {"type": "string"},
        "url": {"type": "string"},
    },
    "additionalProperties": True,
}
PROBLEM = {
    "type": "object",
    "description": "The generic contract; a Dynatrace problem (Problems API v2 shape or webhook placeholders) or a "
    "ServiceNow incident is accepted too (docs/dora.md).",
    "required": ["id", "services", "priority", "state", "startedAt"],
    "properties": {
        "id": {"type": "string"},
        "services": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "priority": {"type": "string", "enum": ["P1", "P2", "P3", "P4", "P5"]},
        "state": {"type": "string", "enum": ["open", "resolved"]},
        "startedAt": _TS,
        "resolvedAt": _TS,
        "title": {"type": "string"},
        "url": {"type": "string"},
    },
    "additionalProperties": True,
}
SERVICE_METRICS = {
    "type": "object",
    "properties": {
        "service": {"type": "string"},
        "deployments": {"type": "integer", "description": "Succeeded production deployments in the window."},
        "failedDeployments": {"type": "integer", "description": "Those followed by a P1 on the service within 60 min."},
        "changeFailureRate": {
            **_NNUM,
            "description": "failedDeployments / deployments (0-1); null without deployments.",
        },
        "deploymentsPerDay": _NNUM,
        "leadTimeHours": {"type": "object", "properties": {"median": _NNUM, "p90": _NNUM}},
        "timeToRestoreHours": {"type": "object", "properties": {"median": _NNUM}},
        "level": {"type": "string", "enum": ["elite", "high", "medium", "low"], "nullable": True},
    },
}
METRICS = {
    "type": "object",
    "properties": {"from": _NSTR, "to": _NSTR, "services": {"type": "array", "items": SERVICE_METRICS}},
}


def _q(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": "string"}, "description": description}


def _problems(*codes: int) -> dict[str, Any]:
    text = {400: "Bad input.", 401: "Unauthorized.", 404: "Not found.", 413: "Too large.", 503: "Try again later."}
    return {
        str(c): {
            "description": text.get(c, "Error."),
            "content": {"application/problem+json": {"schema": {"type": "object"}}},
        }
        for c in codes
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_WINDOW = [
    _q("from", "First day YYYY-MM-DD (inclusive) or an ISO 8601 timestamp."),
    _q("to", "Last day YYYY-MM-DD (inclusive) or an ISO 8601 timestamp."),
]
_ACCEPTED = {"type": "object", "properties": {"accepted": {"type": "integer"}}, "additionalProperties": True}


def dora_paths() -> dict[str, Any]:
    """Paths relative to the /api server URL; operationId = function name."""
    return {
        "/dora/deployments": {
            "post": {
                "operationId": "dora_deployments",
                "summary": "Record deployments",
                "description": "One deployment or an array; validated whole (400 names each bad field, nothing kept), "
                "202 at once, written idempotently per id.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"oneOf": [DEPLOYMENT, {"type": "array", "items": DEPLOYMENT}]}}
                    },
                },
                "responses": {"202": _json("Queued.", _ACCEPTED), **_problems(400, 401, 413)},
            }
        },
        "/dora/problems": {
            "post": {
                "operationId": "dora_problems",
                "summary": "Record problems (Dynatrace, ServiceNow or generic)",
                "description": "Header X-Webhook-Secret when DYNATRACE_WEBHOOK_SECRET is set. A later message for the "
                "same id updates it; a problem stays resolved once resolved.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"oneOf": [PROBLEM, {"type": "array", "items": PROBLEM}]}}
                    },
                },
                "responses": {"202": _json("Queued.", _ACCEPTED), **_problems(400, 401, 413)},
            }
        },
        "/dora/metrics": {
            "get": {
                "operationId": "dora_metrics",
                "summary": "DORA metrics per service",
                "parameters": [_q("service", "Service key or alias."), _q("squad", "Squad."), *_WINDOW],
                "responses": {"200": _json("Metrics.", METRICS), **_problems(400, 401)},
            }
        },
        "/dora/failed-deploys": {
            "get": {
                "operationId": "dora_failed_deploys",
                "summary": "Failed deployments with the problem that failed each",
                "parameters": [_q("service", "Service key or alias."), _q("squad", "Squad."), *_WINDOW],
                "responses": {
                    "200": _json(
                        "Failed deployments.",
                        {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}}}},
                    ),
                    **_problems(400, 401),
                },
            }
        },
        "/dora/leaderboard": {
            "get": {
                "operationId": "dora_leaderboard",
                "summary": "Squads ranked by DORA level, with badges",
                "parameters": _WINDOW,
                "responses": {"200": _json("Leaderboard.", {"type": "object"}), **_problems(400, 401)},
            }
        },
        "/catalog/scorecard": {
            "get": {
                "operationId": "catalog_scorecard",
                "summary": "Scorecard of a Backstage component",
                "description": "DORA metrics of the component's services, open policy violations and open cost "
                "anomalies of its tagged resources, and month-to-date cost. For a Backstage proxy or plugin.",
                "parameters": [_q("entityRef", "component:default/<name>", required=True), *_WINDOW],
                "responses": {"200": _json("Scorecard.", {"type": "object"}), **_problems(400, 401, 404)},
            }
        },
    }
