"""The shared Azure DevOps service-hook endpoint: parse, authenticate, queue, dispatch by `eventType`.

Every Azure DevOps service hook (Web Hooks consumer) posts to `POST /api/hooks/azure-devops`. The
HTTP function only authenticates, checks the envelope and queues it on `ado-events`; the queue
worker dispatches the event to the handlers that capabilities register here:

    @register("workitem.updated")          # exact event type
    def on_work_item(event: HookEvent, runtime: Runtime) -> str: ...

    @register("ms.vss-pipelines.*")        # prefix
    def on_pipeline(event: HookEvent, runtime: Runtime) -> str: ...

A handler returns a short outcome for the log, raises `TransientUpstreamError`/`StorageError` to
have the host retry the message (and move it to `ado-events-poison` after maxDequeueCount), and must
be idempotent per event: Azure DevOps retries a delivery it thinks failed, and the queue is at
least once. Capabilities add their handler module to `HANDLER_MODULES` (shared/devops/handlers.py).

The envelope (https://learn.microsoft.com/azure/devops/service-hooks/events): `id` (event id),
`eventType`, `publisherId`, `resource` (the work item, push, run...), `resourceContainers`
(`collection`/`account`/`project` ids), `createdDate`, `message`/`detailedMessage` (text for people).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.errors import BadInputError, UnauthorizedError, ValueFlowError

if TYPE_CHECKING:
    from shared.adapters.storage import StateStore
    from shared.runtime import Runtime
    from shared.settings import Settings

log = logging.getLogger(__name__)

EVENTS_QUEUE = "ado-events"
POISON_QUEUE = "ado-events-poison"
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount (a test keeps them equal)
# payloads larger than this go to a blob (a queue message holds 64 KiB of base64, ~48 KiB of text)
PAYLOAD_CONTAINER = "ado-events"
INLINE_LIMIT = 40_000
SECRET_HEADER = "X-Hook-Secret"
_MAX_EVENT_TYPE = 200


@dataclass(frozen=True)
class HookEvent:
    """One service-hook notification, as Azure DevOps sent it (`raw` keeps every field)."""

    id: str
    event_type: str
    publisher_id: str
    resource: dict[str, Any]
    created_date: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def project_id(self) -> str:
        project = (self.raw.get("resourceContainers") or {}).get("project") or {}
        return str(project.get("id") or "")


Handler = Callable[[HookEvent, "Runtime"], str | None]


@dataclass(frozen=True)
class Registration:
    pattern: str
    handler: Handler

    @property
    def name(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"

    def matches(self, event_type: str) -> bool:
        if self.pattern.endswith("*"):
            return event_type.startswith(self.pattern[:-1])
        return event_type == self.pattern


_registry: list[Registration] = []
_registry_lock = threading.Lock()


def register(pattern: str) -> Callable[[Handler], Handler]:
    """Decorator: run `handler` for events whose `eventType` is `pattern` (or starts with it, `x.*`)."""
    if not pattern or "*" in pattern[:-1]:
        raise ValueError(f"event type pattern {pattern!r}: an exact type, or a prefix ending in '*'")

    def add(handler: Handler) -> Handler:
        with _registry_lock:
            if not any(r.pattern == pattern and r.handler is handler for r in _registry):
                _registry.append(Registration(pattern, handler))
        return handler

    return add


def handlers_for(event_type: str) -> list[Registration]:
    from shared.devops.handlers import load_handlers

    load_handlers()
    with _registry_lock:
        return [r for r in _registry if r.matches(event_type)]


def registered_patterns() -> list[str]:
    from shared.devops.handlers import load_handlers

    load_handlers()
    with _registry_lock:
        return sorted({r.pattern for r in _registry})


# -- the HTTP side: authenticate, parse, queue --


def authenticate(headers: Mapping[str, str], settings: Settings) -> None:
    """Check the credentials the subscription was set up with; raise UnauthorizedError otherwise.

    Basic auth (`ADO_HOOK_USERNAME`/`ADO_HOOK_PASSWORD`) and/or a header secret (`ADO_HOOK_SECRET`
    in `X-Hook-Secret`); each one configured is required. With neither, the function key alone
    guards the endpoint (the host checked it before this runs). Comparisons are constant-time."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if settings.ado_hook_username or settings.ado_hook_password:
        user, password = _basic_credentials(lowered.get("authorization", ""))
        ok_user = hmac.compare_digest(user.encode(), settings.ado_hook_username.encode())
        ok_password = hmac.compare_digest(password.encode(), settings.ado_hook_password.encode())
        if not (ok_user and ok_password):
            raise UnauthorizedError(
                "service hook credentials missing or wrong: set the subscription's basic authentication "
                "to ADO_HOOK_USERNAME / ADO_HOOK_PASSWORD"
            )
    if settings.ado_hook_secret:
        sent = lowered.get(SECRET_HEADER.lower(), "")
        if not hmac.compare_digest(sent.encode(), settings.ado_hook_secret.encode()):
            raise UnauthorizedError(
                f"service hook secret missing or wrong: add the HTTP header '{SECRET_HEADER}: <ADO_HOOK_SECRET>' "
                "to the subscription"
            )


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return "", ""
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def parse_event(body: bytes) -> HookEvent:
    """The envelope of one notification; BadInputError names the field that is wrong."""
    if not body:
        raise BadInputError("empty body: expected the service hook's JSON notification")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadInputError(f"body is not valid JSON ({str(exc)[:120]})") from None
    return event_from_dict(doc)


def event_from_dict(doc: Any) -> HookEvent:
    if not isinstance(doc, dict):
        raise BadInputError("expected a JSON object (one service hook notification)")
    errors = []
    event_id, event_type = doc.get("id"), doc.get("eventType")
    if not isinstance(event_id, str) or not event_id.strip():
        errors.append({"field": "id", "message": "required: the event id (a string)"})
    if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > _MAX_EVENT_TYPE:
        errors.append({"field": "eventType", "message": "required: a string such as 'workitem.updated'"})
    resource = doc.get("resource")
    if not isinstance(resource, dict):
        errors.append({"field": "resource", "message": "required: an object (the work item, push or run)"})
    containers = doc.get("resourceContainers")
    if containers is not None and not isinstance(containers, dict):
        errors.append({"field": "resourceContainers", "message": "must be an object"})
    if errors:
        raise BadInputError(
            "not an Azure DevOps service hook notification: "
            + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            errors=errors,
        )
    return HookEvent(
        id=str(event_id).strip(),
        event_type=str(event_type).strip(),
        publisher_id=str(doc.get("publisherId") or ""),
        resource=resource,  # type: ignore[arg-type]
        created_date=str(doc.get("createdDate") or ""),
        raw=doc,
    )


def enqueue_event(storage: StateStore, event: HookEvent, body: bytes, *, received_at: datetime | None = None) -> str:
    """Queue one notification on `ado-events`; a large payload goes to a blob, its name in the message."""
    message: dict[str, Any] = {
        "id": event.id,
        "eventType": event.event_type,
        "receivedAt": (received_at or datetime.now(UTC)).isoformat(),
    }
    if len(body) <= INLINE_LIMIT:
        message["payload"] = event.raw
    else:
        blob = f"{event.event_type}/{_safe(event.id)}.json"
        storage.put_blob(PAYLOAD_CONTAINER, blob, body, overwrite=True)
        message["payloadBlob"] = blob
    return storage.send(EVENTS_QUEUE, message)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:200]


# -- the queue side: load, dispatch --


@dataclass(frozen=True)
class DispatchOutcome:
    event_id: str
    event_type: str
    handled: dict[str, str | None]

    def summary(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "event_type": self.event_type, "handlers": self.handled}


def load_queued(storage: StateStore, body: bytes | str) -> HookEvent:
    """The HookEvent of one `ado-events` message (BadInputError for a message we did not write)."""
    try:
        message = json.loads(body)
    except ValueError:
        raise BadInputError("ado-events message is not JSON") from None
    if not isinstance(message, dict):
        raise BadInputError("ado-events message is not a JSON object")
    if "payload" in message:
        return event_from_dict(message["payload"])
    blob = message.get("payloadBlob")
    if not isinstance(blob, str):
        raise BadInputError("ado-events message has neither 'payload' nor 'payloadBlob'")
    data = storage.get_blob(PAYLOAD_CONTAINER, blob)
    if data is None:
        raise BadInputError(f"ado-events message points to blob {PAYLOAD_CONTAINER}/{blob}, which does not exist")
    return parse_event(data)


def dispatch(event: HookEvent, runtime: Runtime) -> DispatchOutcome:
    """Run every handler registered for the event's type; none registered is an acknowledged no-op."""
    handled: dict[str, str | None] = {}
    for registration in handlers_for(event.event_type):
        handled[registration.name] = registration.handler(event, runtime)
    return DispatchOutcome(event.id, event.event_type, handled)


def process_message(
    runtime: Runtime, body: bytes | str, *, dequeue_count: int, message_id: str
) -> DispatchOutcome | None:
    """The `ado-events` worker: load and dispatch one message.

    A message that cannot be read (not ours, blob gone) will never succeed: it is moved to
    `ado-events-poison` at once and the platform team is alerted. A handler failure propagates so
    that the host retries it; on the last attempt the alert is raised before the host moves it to
    `ado-events-poison`."""
    storage = runtime.storage
    try:
        event = load_queued(storage, body)
    except BadInputError as err:
        storage.send(POISON_QUEUE, body if isinstance(body, str) else body.decode("utf-8", "replace"))
        _poison_alert(storage, message_id, "", err.detail)
        return None
    try:
        return dispatch(event, runtime)
    except Exception as exc:
        if dequeue_count >= MAX_DEQUEUE_COUNT:
            detail = exc.detail if isinstance(exc, ValueFlowError) else type(exc).__name__
            _poison_alert(storage, message_id, event.event_type, detail)
        raise


def _poison_alert(storage: StateStore, message_id: str, event_type: str, detail: str) -> None:
    from shared.alerts.delivery import enqueue_alert
    from shared.alerts.model import Alert

    try:
        enqueue_alert(
            storage,
            Alert(
                kind="delivery_failing",
                severity="warning",
                title=f"An Azure DevOps service hook event could not be processed and is in {POISON_QUEUE}",
                resource_id="azure-devops/service-hooks",
                owner="",
                facts=(
                    ("Queue", POISON_QUEUE),
                    ("Message", message_id or "-"),
                    ("Event type", event_type or "-"),
                    ("Last error", detail[:300]),
                ),
                links=(),
                dedupe_key=f"ado-events-poison:{message_id}",
                correlation_id=message_id,
                summary="Fix the cause, then move the message back to ado-events.",
            ),
        )
    except Exception:
        log.exception("could not alert about the poison hook message %s", message_id)
