"""The one error hierarchy of ValueFlow.

Every adapter wraps the failures of its outside system in one of these; HTTP functions and the
local host turn them into a JSON problem body (RFC 9457) with `problem()`.
"""

from __future__ import annotations

from typing import Any


class ValueFlowError(Exception):
    """Base of every error the project raises on purpose."""

    status = 500
    kind = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class SettingsError(ValueFlowError):
    """An app setting is missing or invalid: the app must not start."""

    kind = "configuration-error"
    title = "Invalid configuration"


class BadInputError(ValueFlowError):
    """The caller sent something we cannot accept (malformed JSON, wrong type, missing field)."""

    status = 400
    kind = "bad-input"
    title = "Bad input"


class UnsupportedMediaTypeError(BadInputError):
    status = 415
    kind = "unsupported-media-type"
    title = "Unsupported media type"


class PayloadTooLargeError(BadInputError):
    status = 413
    kind = "payload-too-large"
    title = "Payload too large"


class NotFoundError(ValueFlowError):
    status = 404
    kind = "not-found"
    title = "Not found"


class MethodNotAllowedError(ValueFlowError):
    status = 405
    kind = "method-not-allowed"
    title = "Method not allowed"


class UnauthorizedError(ValueFlowError):
    status = 401
    kind = "unauthorized"
    title = "Unauthorized"


class ConflictError(ValueFlowError):
    status = 409
    kind = "conflict"
    title = "Conflict"


class BatchRejected(ConflictError):
    """A storage transaction refused as a whole; `index` is the operation that caused it (-1 if unknown)."""

    def __init__(self, detail: str, index: int = -1) -> None:
        super().__init__(detail)
        self.index = index


class ForbiddenActionError(ValueFlowError):
    """A guard rail refused the request (protected resource, host not in an allow-list...)."""

    status = 403
    kind = "forbidden"
    title = "Refused by a guard rail"


class UpstreamError(ValueFlowError):
    """An outside system (ARM, ServiceNow, Teams, Snowflake, Storage) failed."""

    status = 502
    kind = "upstream-error"
    title = "Upstream service failed"


class TransientUpstreamError(UpstreamError):
    """Worth retrying later: timeouts, 429, 5xx. `retry_after` is in seconds when the peer said."""

    status = 503
    kind = "upstream-unavailable"
    title = "Upstream service temporarily unavailable"

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UpstreamAuthError(UpstreamError):
    """401/403 from a peer: a configuration problem, never retried blindly."""

    kind = "upstream-auth"
    title = "Upstream service refused our credentials"


class StorageError(UpstreamError):
    kind = "storage-error"
    title = "Operational storage failed"


class WarehouseError(UpstreamError):
    kind = "warehouse-error"
    title = "Warehouse failed"


def problem(err: ValueFlowError) -> dict[str, Any]:
    """The JSON problem body for an error: type, title, status, detail and field errors."""
    body: dict[str, Any] = {
        "type": f"https://valueflow.dev/problems/{err.kind}",
        "title": err.title,
        "status": err.status,
        "detail": err.detail,
    }
    if err.errors:
        body["errors"] = err.errors
    return body
