"""The review capability's operations in the app's OpenAPI document (`/api/openapi.json`)."""

from __future__ import annotations

from typing import Any

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The episode id (ce-...).",
    "schema": {"type": "string", "pattern": "^ce-[0-9a-f]{20}$"},
    "x-ms-summary": "Episode ID",
}
_TOKEN = {
    "name": "t",
    "in": "query",
    "required": True,
    "description": "The signed, expiring, episode-scoped token of the review link (from the Teams card).",
    "schema": {"type": "string", "maxLength": 1024},
    "x-ms-summary": "Review token",
}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _html_errors(*codes: int) -> dict[str, Any]:
    text = {
        303: "Recorded: back to the page (post/redirect/get).",
        400: "Bad input (unknown verdict, unreadable form, no squad).",
        401: "Missing, malformed, forged or expired token.",
        403: "The token opens another episode or squad.",
        404: "Unknown episode.",
        413: "Form over 8 KiB.",
        415: "The form is not application/x-www-form-urlencoded.",
    }
    return {str(code): _html(text[code]) for code in codes}


def review_paths() -> dict[str, Any]:
    """Operations keyed by path (relative to /api); operationId = function name."""
    return {
        "/anomalies/{id}": {
            "get": {
                "operationId": "anomaly_get",
                "summary": "Get a cost anomaly",
                "description": "The episode, its explanation (why it was flagged) and its feedback history.",
                "parameters": [_ID],
                "responses": {
                    "200": {
                        "description": "The episode.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": {"description": "Missing or wrong function key."},
                    "404": {
                        "description": "Unknown id.",
                        "content": {"application/problem+json": {"schema": {"type": "object"}}},
                    },
                },
            }
        },
        "/review/anomalies/{id}": {
            "get": {
                "operationId": "review_episode",
                "summary": "Review page of a cost anomaly (HTML)",
                "description": "For people, from the Teams card's Review button: chart, explanation, feedback buttons.",
                "security": [],
                "parameters": [_ID, _TOKEN],
                "responses": {"200": _html("The page."), **_html_errors(401, 403, 404)},
            }
        },
        "/review/anomalies/{id}/feedback": {
            "post": {
                "operationId": "review_feedback",
                "summary": "Feedback from the review page (HTML form)",
                "description": "verdict planned | not_anomaly | confirmed, optional why and by; kept in the history.",
                "security": [],
                "parameters": [_ID, _TOKEN],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["verdict"],
                                "properties": {
                                    "verdict": {"type": "string", "enum": ["planned", "not_anomaly", "confirmed"]},
                                    "why": {"type": "string", "maxLength": 1000},
                                    "by": {"type": "string", "maxLength": 120},
                                },
                            }
                        }
                    },
                },
                "responses": {**_html_errors(303, 400, 401, 403, 404, 413, 415)},
            }
        },
        "/review": {
            "get": {
                "operationId": "review_squad",
                "summary": "A squad's cost anomalies (HTML)",
                "description": "Linked from an episode's page; the token is scoped to the squad.",
                "security": [],
                "parameters": [
                    {
                        "name": "squad",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "maxLength": 200},
                        "x-ms-summary": "Squad",
                    },
                    _TOKEN,
                ],
                "responses": {"200": _html("The list."), **_html_errors(400, 401, 403)},
            }
        },
    }
