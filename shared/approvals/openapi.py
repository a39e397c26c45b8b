"""The OpenAPI 3.0 document of the Logic Apps functions, generated from the same pydantic models.

Importable as a Logic Apps custom connector: every operation has an `operationId` (the function
name), a `summary` and `description`, request fields carry `x-ms-summary`, the function key is an
`apiKey` security scheme in the `x-functions-key` header, and the approval subscription marks its
`callbackUrl` with `x-ms-notification-url` (the connector's webhook convention). Pydantic emits
JSON Schema 2020-12; `_to_oas30()` rewrites the few constructs OpenAPI 3.0 does not have
(`anyOf` with null -> `nullable`, `const` -> `enum`).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from shared.approvals import models
from shared.approvals.http import KEY_HEADERS
from shared.dora.openapi import dora_paths
from shared.review.openapi import review_paths
from shared.settings import is_loopback_host

REF = "#/components/schemas/{model}"

_MODELS: list[type[Any]] = [
    models.Problem,
    models.AnomalyList,
    models.FeedbackIn,
    models.FeedbackOut,
    models.ApprovalCreateIn,
    models.ApprovalOut,
    models.DecisionIn,
    models.UnsubscribeIn,
    models.UnsubscribeOut,
    models.IncidentIn,
    models.IncidentAccepted,
    models.HealthOut,
]


def _to_oas30(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_oas30(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_oas30(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and any(o == {"type": "null"} for o in options):
            rest = [o for o in options if o != {"type": "null"}]
            out.pop(key)
            if len(rest) == 1 and "$ref" not in rest[0]:
                out.update(rest[0])
            elif len(rest) == 1:
                out["allOf"] = rest  # OAS 3.0: siblings of $ref are ignored, allOf keeps nullable
            else:
                out[key] = rest
            out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in _MODELS], ref_template=REF)
    defs = top.get("$defs", {})
    return {name: _to_oas30(schema) for name, schema in sorted(defs.items())}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _queued(*string_fields: str) -> dict[str, Any]:
    """A 202 answer: `accepted` (true) and the named string fields that identify what was queued."""
    properties = {"accepted": {"type": "boolean"}, **{name: {"type": "string"} for name in string_fields}}
    return {
        "description": "Queued.",
        "content": {"application/json": {"schema": {"type": "object", "properties": properties}}},
    }


def _problems(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad input: malformed JSON, wrong types, missing fields, unknown action (field errors in `errors`).",
        401: "Missing or wrong function key.",
        404: "Unknown id.",
        409: "Already decided (with `earlierDecision`), or the Idempotency-Key was used for another body.",
        413: "Body over 256 KiB.",
        415: "Content-Type is not application/json.",
    }
    return {
        str(c): {"description": text[c], "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for c in codes
    }


def _idempotency_params() -> list[dict[str, Any]]:
    return [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Same key, same answer, nothing done twice. The Logic App run id "
            f"({KEY_HEADERS[1]}) is used when this header is absent.",
            "schema": {"type": "string", "maxLength": 200},
            "x-ms-summary": "Idempotency key",
            "x-ms-visibility": "advanced",
        }
    ]


def _id_param(what: str) -> dict[str, Any]:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": f"The {what} id.",
        "schema": {"type": "string", "pattern": models.ID_PATTERN},
        "x-ms-summary": f"{what.capitalize()} ID",
    }


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def paths() -> dict[str, Any]:
    """Operations keyed by path (relative to the /api server URL); operationId = function name."""
    query = models.AnomalyQuery.model_json_schema()["properties"]
    return {
        "/anomalies": {
            "get": {
                "operationId": "anomalies_list",
                "summary": "List cost anomalies",
                "description": "Cost anomaly episodes with impact, severity and top causes, biggest excess first.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": _to_oas30({k: v for k, v in query["status"].items() if k != "title"}),
                        "x-ms-summary": "Status",
                    },
                    {
                        "name": "owner",
                        "in": "query",
                        "required": False,
                        "schema": _to_oas30({k: v for k, v in query["owner"].items() if k != "title"}),
                        "x-ms-summary": "Owner squad",
                    },
                ],
                "responses": {"200": _json("AnomalyList", "The episodes."), **_problems(400, 401)},
            }
        },
        "/anomalies/{id}/feedback": {
            "post": {
                "operationId": "anomaly_feedback",
                "summary": "Give feedback on a cost anomaly",
                "description": "planned / not_anomaly suppress the episode; confirmed keeps it.",
                "parameters": [_id_param("episode"), *_idempotency_params()],
                "requestBody": _body("FeedbackIn"),
                "responses": {
                    "200": _json("FeedbackOut", "Feedback recorded."),
                    **_problems(400, 401, 404, 409, 413, 415),
                },
            }
        },
        "/approvals": {
            "post": {
                "operationId": "approvals_create",
                "summary": "Wait for an approval decision",
                "description": "Subscribe (HTTP Webhook action): stores the pending approval and the callbackUrl, "
                "answers 202 at once; the decision is POSTed to callbackUrl later. Once decided, only the run "
                "that was waiting may subscribe again: another run gets 409 with the earlier decision.",
                "parameters": _idempotency_params(),
                "requestBody": _body("ApprovalCreateIn"),
                "responses": {
                    "202": _json("ApprovalOut", "Pending (or already decided) approval."),
                    **_problems(400, 401, 404, 409, 413, 415),
                },
            }
        },
        "/approvals/{id}/decision": {
            "post": {
                "operationId": "approval_decision",
                "summary": "Decide an approval",
                "description": "approve / reject / escalate, exactly once; an approved action runs (enforce mode) "
                "or is recorded as a dry run, in the background.",
                "parameters": [_id_param("approval"), *_idempotency_params()],
                "requestBody": _body("DecisionIn"),
                "responses": {
                    "202": _json("ApprovalOut", "Decision recorded; the action is queued."),
                    **_problems(400, 401, 404, 409, 413, 415),
                },
            }
        },
        "/approvals/{id}/unsubscribe": {
            "post": {
                "operationId": "approval_unsubscribe",
                "summary": "Stop waiting for an approval",
                "description": "Called by the Logic App's HTTP Webhook action when its run is cancelled, times out "
                "or finishes: a pending approval that this run waits for is cancelled (no callback to a run that "
                "is gone); otherwise nothing changes. A new run's subscription reopens it.",
                "parameters": [_id_param("approval")],
                "requestBody": _body("UnsubscribeIn"),
                "responses": {
                    "200": _json("UnsubscribeOut", "The approval, and whether this call cancelled it."),
                    **_problems(400, 401, 404, 409, 413, 415),
                },
            }
        },
        "/incidents": {
            "post": {
                "operationId": "incidents_create",
                "summary": "Create or update an incident",
                "description": "A ServiceNow incident through the alert pipeline (same dedupeKey, same incident).",
                "parameters": _idempotency_params(),
                "requestBody": _body("IncidentIn"),
                "responses": {
                    "202": _json("IncidentAccepted", "Queued for delivery."),
                    **_problems(400, 401, 413, 415),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Health",
                "description": "Liveness and the status of each dependency (no secrets).",
                "responses": {
                    "200": _json("HealthOut", "Healthy or degraded."),
                    "503": _json("HealthOut", "A dependency is down."),
                    **_problems(401),
                },
            }
        },
        "/hooks/azure-devops": {
            "post": {
                "operationId": "ado_hook",
                "summary": "Azure DevOps service hook",
                "description": "The one endpoint for every Azure DevOps service hook (Web Hooks consumer, any eventType): "
                "basic auth (ADO_HOOK_USERNAME/ADO_HOOK_PASSWORD) and/or the X-Hook-Secret header when configured, "
                "plus the function key; queued on ado-events and dispatched by eventType.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["id", "eventType", "resource"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "eventType": {"type": "string"},
                                    "publisherId": {"type": "string"},
                                    "resource": {"type": "object"},
                                    "resourceContainers": {"type": "object"},
                                    "createdDate": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _queued("id", "eventType"),
                    **_problems(400, 401, 413, 415),
                },
            }
        },
        "/demands": {
            "post": {
                "operationId": "demand_intake",
                "summary": "Approved ServiceNow demand",
                "description": "Called by a ServiceNow Business Rule or Flow Designer REST step when a demand is "
                "approved: validated, acknowledged at once (202) and queued; the worker creates or updates the "
                "Azure Boards work item and writes its id and URL back. Idempotent per sysId (docs/demands.md).",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["sysId", "number", "title"],
                                "properties": {
                                    "sysId": {"type": "string", "pattern": "^[0-9a-f]{32}$", "x-ms-summary": "sys_id"},
                                    "number": {"type": "string", "maxLength": 40, "x-ms-summary": "Number"},
                                    "title": {"type": "string", "maxLength": 4000, "x-ms-summary": "Title"},
                                    "description": {"type": "string", "maxLength": 30000},
                                    "priority": {
                                        "oneOf": [
                                            {"type": "integer", "minimum": 1, "maximum": 5},
                                            {"type": "string", "pattern": "^[1-5]"},
                                        ],
                                        "description": 'ServiceNow priority 1-5 (a number, "2" or "2 - High")',
                                    },
                                    "costCenter": {"type": "string", "maxLength": 200},
                                    "acceptanceCriteria": {"type": "string", "maxLength": 15000},
                                    "requestedBy": {"type": "string", "maxLength": 200},
                                    "portfolio": {"type": "string", "maxLength": 200},
                                    "url": {"type": "string", "description": "the demand record's URL"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _queued("sysId", "number"),
                    **_problems(400, 401, 413, 415),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "OpenAPI document",
                "description": "This document; with format=swagger2 the same API as Swagger 2.0 (custom connector import).",
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["openapi3", "swagger2"]},
                        "x-ms-summary": "Format",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.0 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_problems(400, 401),
                },
            }
        },
        **dora_paths(),
    }


def openapi_document(server_host: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0.3 document; `server_host` (the request's Host) becomes the server URL."""
    host = server_host or "localhost:7071"
    scheme = (
        "http" if is_loopback_host(host.rsplit(":", 1)[0] if "]" not in host else host.split("]")[0] + "]") else "https"
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ValueFlow Automations for Logic Apps",
            "version": "1.0.0",
            "description": "Approvals for critical cost anomalies, guarded cost actions, feedback and incidents.",
        },
        "servers": [{"url": f"{scheme}://{host}/api"}],
        "security": [{"functionKey": []}],
        "paths": {**paths(), **review_paths()},
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
            },
        },
    }


_PARAM_KEYS = ("type", "format", "pattern", "enum", "maxLength", "minLength", "maximum", "minimum", "items", "default")


def _to_swagger_schema(node: Any) -> Any:
    """An OAS 3.0 schema as a Swagger 2.0 one: refs to #/definitions, `nullable` as `x-nullable`."""
    if isinstance(node, list):
        return [_to_swagger_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key == "nullable":
            out["x-nullable"] = value
        elif key in ("oneOf", "anyOf"):  # Swagger 2.0 has neither: keep the first alternative
            out.update(_to_swagger_schema(value[0]))
        else:
            out[key] = _to_swagger_schema(value)
    return out


def _swagger_operation(op: dict[str, Any]) -> dict[str, Any]:
    params = []
    for p in op.get("parameters", []):
        schema = p.get("schema", {})
        param = {k: v for k, v in p.items() if k != "schema"}
        param.update({k: schema[k] for k in _PARAM_KEYS if k in schema})
        param.setdefault("type", "string")
        params.append(param)
    consumes: list[str] = []
    if "requestBody" in op:
        content = op["requestBody"]["content"]
        consumes = list(content)
        params.append({
            "name": "body",
            "in": "body",
            "required": op["requestBody"].get("required", False),
            "schema": _to_swagger_schema(next(iter(content.values()))["schema"]),
        })  # fmt: skip
    produces: list[str] = []
    responses = {}
    for code, resp in op["responses"].items():
        content = resp.get("content", {})
        produces += [c for c in content if c not in produces]
        responses[code] = {"description": resp["description"]}
        if content:
            responses[code]["schema"] = _to_swagger_schema(next(iter(content.values()))["schema"])
    out = {k: v for k, v in op.items() if k not in ("parameters", "requestBody", "responses")}
    out.update({"parameters": params, "responses": responses, "produces": produces})
    if consumes:
        out["consumes"] = consumes
    return out


def swagger2_document(server_host: str = "") -> dict[str, Any]:
    """The same API as Swagger 2.0: what the Logic Apps / Power Automate custom connector wizard imports."""
    oas3 = openapi_document(server_host)
    scheme, _, rest = oas3["servers"][0]["url"].partition("://")
    host, _, base = rest.partition("/")
    return {
        "swagger": "2.0",
        "info": oas3["info"],
        "host": host,
        "basePath": "/" + base,
        "schemes": [scheme],
        "securityDefinitions": oas3["components"]["securitySchemes"],
        "security": oas3["security"],
        "paths": {
            path: {method: _swagger_operation(op) for method, op in item.items()}
            for path, item in oas3["paths"].items()
        },
        "definitions": _to_swagger_schema(oas3["components"]["schemas"]),
    }
