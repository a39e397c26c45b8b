"""The local Functions host: runs `function_app.app` on 127.0.0.1 with Core Tools' URL semantics.

A development tool for machines without Azure Functions Core Tools (`func start` works the same
where they are installed). It serves:
- HTTP functions at `/api/<route>` with their auth level (`x-functions-key` header or `?code=`);
- Event Grid functions at `POST /runtime/webhooks/eventgrid?functionName=<name>`: Event Grid schema
  and CloudEvents 1.0, one invocation per array element, the SubscriptionValidation handshake and
  the CloudEvents OPTIONS handshake;
- any non-HTTP function at `POST /admin/functions/<name>` with `{"input": "..."}` (key required);
- timers on their NCRONTAB schedule and queue triggers polling Azure Storage (Azurite), with
  host.json's `maxDequeueCount` and a `<queue>-poison` queue.
Every error reaches the client as a JSON problem body; the host never prints a traceback to it.

Hardening (docs/security.md): every request body is read (or the connection closed) before the
answer, so a rejected request's body is never parsed as the next request; a listen backlog, a
bounded number of handler threads (503 when all are busy), a per-read timeout and a deadline for
reading a whole request; `code`, `sig`, `sv` and the other key/SAS query parameters are masked in
every access log line.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from devhost.index import FunctionInfo, find_function, index_app
from devhost.triggers import QueueOptions, QueuePoller, TimerRunner, resolve_binding_expression
from shared.errors import (
    BadInputError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValueFlowError,
    problem,
)
from shared.observability import invocation
from shared.settings import Settings
from shared.urls import host_problem, mask_secrets

log = logging.getLogger("devhost")

MAX_BODY_BYTES = 1024 * 1024
DRAIN_LIMIT_BYTES = 16 * MAX_BODY_BYTES  # a larger body is not read at all: the connection is closed
LISTEN_BACKLOG = 128
MAX_HANDLER_THREADS = 64
READ_TIMEOUT_SECONDS = 10.0  # one recv on a connection (idle keep-alive included)
REQUEST_READ_DEADLINE_SECONDS = 30.0  # the request line, headers and body of one request, in total
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


class FunctionFailed(ValueFlowError):
    status = 500
    kind = "function-failed"
    title = "Function invocation failed"


class RequestTimeoutError(BadInputError):
    status = 408
    kind = "request-timeout"
    title = "Request timeout"


class ReadWatchdog:
    """Shuts the reading side of connections whose current request is not fully read by its deadline
    (slow headers or bodies, one byte at a time): the handler thread gets EOF and is freed."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[float, socket.socket]] = {}

    def arm(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines[id(sock)] = (time.monotonic() + self.limit, sock)

    def disarm(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(id(sock), None)

    def sweep(self) -> int:
        """Shut the reading side of every connection past its deadline; how many."""
        now = time.monotonic()
        with self._lock:
            expired = [(k, s) for k, (d, s) in self._deadlines.items() if d <= now]
            for k, _ in expired:
                del self._deadlines[k]
        for _, sock in expired:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        return len(expired)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(0.25):
            self.sweep()


class BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog and at most `max_threads` handler threads; when all
    are busy for `busy_wait` seconds a new connection gets 503 with Retry-After instead of a thread."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, *, max_threads: int, busy_wait: float = 2.0) -> None:
        self._slots = threading.BoundedSemaphore(max_threads)
        self.busy_wait = busy_wait
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(timeout=self.busy_wait):
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _answer_busy(sock: socket.socket) -> None:
    body = json.dumps(problem(ValueFlowError("the local host is busy; retry"))).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    try:
        sock.settimeout(1.0)
        sock.sendall(head.encode() + body)
    except OSError:
        pass


@dataclass
class InvocationContext:
    """The parts of `func.Context` our functions use."""

    invocation_id: str
    function_name: str
    function_directory: str = ""
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: Any = None


def function_key(settings: Settings) -> tuple[str, bool]:
    """LOCAL_FUNCTION_KEY, or a key generated once and kept in <state_dir>/function-key. (key, generated?)"""
    if settings.local_function_key:
        return settings.local_function_key, False
    path = Path(settings.state_dir) / "function-key"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key, True


class LocalHost:
    """Indexes an app and runs its functions; `start()` serves in background threads."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        *,
        key: str,
        port: int | None = None,
        host_json: Path | None = None,
        storage: Any = None,
        queue_options: QueueOptions | None = None,
        run_schedules: bool = True,
        max_threads: int = MAX_HANDLER_THREADS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        read_deadline: float = REQUEST_READ_DEADLINE_SECONDS,
    ) -> None:
        self.settings = settings
        self.functions = index_app(app)
        self.key = key
        self.port = settings.valueflow_port if port is None else port
        self.queue_options = queue_options or QueueOptions.from_host_json(host_json or Path("host.json"))
        self._storage = storage
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.run_schedules = run_schedules
        self.max_threads = max_threads
        self.read_timeout = read_timeout
        self.watchdog = ReadWatchdog(read_deadline)
        self.timers = [
            TimerRunner(info, resolve_binding_expression(str(info.binding.get("schedule", ""))), self)
            for info in self.functions.values()
            if info.trigger_type == "timerTrigger"
        ]

    # -- invoking --

    def invoke(self, info: FunctionInfo, trigger_value: Any, correlation: str | None = None) -> Any:
        """Run one function with its trigger value; returns what it returned."""
        fn = info.user_function
        kwargs: dict[str, Any] = {info.arg_name: trigger_value}
        params = inspect.signature(fn).parameters
        invocation_id = str(uuid.uuid4())
        if "context" in params:
            kwargs["context"] = InvocationContext(invocation_id, info.name)
        with invocation(info.name, correlation or invocation_id):
            log.info("invoking", extra={"invocation_id": invocation_id, "trigger": info.trigger_type})
            result = fn(**kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
            return result

    def storage(self) -> Any:
        if self._storage is None:
            from shared.adapters.storage import StateStore

            self._storage = StateStore.from_settings(self.settings)
        return self._storage

    # -- serving --

    def start(self) -> None:
        handler = type("BoundHandler", (_Handler,), {"host": self, "timeout": self.read_timeout})
        self._server = BoundedHTTPServer(("127.0.0.1", self.port), handler, max_threads=self.max_threads)
        self.port = self._server.server_address[1]
        self._spawn(self._server.serve_forever, "http")
        self._spawn(lambda: self.watchdog.run(self._stop), "read-watchdog")
        if self.run_schedules:
            for timer in self.timers:
                self._spawn(lambda t=timer: t.run(self._stop), f"timer-{timer.info.name}")
            for info in self.functions.values():
                if info.trigger_type == "queueTrigger":
                    queue = resolve_binding_expression(str(info.binding.get("queue_name", "")))
                    poller = QueuePoller(info, queue, self, self.queue_options)
                    self._spawn(lambda p=poller: p.run(self._stop), f"queue-{queue}")

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def describe(self) -> list[str]:
        base = f"http://127.0.0.1:{self.port}"
        lines = []
        for info in sorted(self.functions.values(), key=lambda i: i.name):
            if info.is_http and info.route:
                lines.append(f"{info.name}: [{','.join(info.methods)}] {base}/api/{info.route.template}")
            elif info.trigger_type == "eventGridTrigger":
                lines.append(
                    f"{info.name}: eventGridTrigger POST {base}/runtime/webhooks/eventgrid?functionName={info.name}"
                )
            elif info.trigger_type == "timerTrigger":
                sched = next((t.schedule for t in self.timers if t.info is info), "")
                lines.append(f"{info.name}: timerTrigger ({sched}) POST {base}/admin/functions/{info.name}")
            else:
                lines.append(f"{info.name}: {info.trigger_type} POST {base}/admin/functions/{info.name}")
        return lines


async def _await(value: Any) -> Any:
    return await value


class _Handler(BaseHTTPRequestHandler):
    host: LocalHost
    server_version = "ValueFlowLocalHost/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # route access logs to our logger, keys masked
        log.info("http %s", mask_secrets(format % args))

    def handle_one_request(self) -> None:
        # the deadline covers reading the request line, the headers and the body (see _dispatch)
        self.host.watchdog.arm(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.host.watchdog.disarm(self.connection)

    # every verb goes through one dispatcher
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        self._raw_body = b""
        try:
            try:
                # read the whole body first: whatever the answer, the next request on a kept-alive
                # connection starts where this one ends (or the connection is closed)
                self._raw_body = self._read_body()
            finally:
                self.host.watchdog.disarm(self.connection)
            self._route()
        except ValueFlowError as err:
            self._send_json(err.status, problem(err))
        except RecursionError:
            self._send_json(400, problem(BadInputError("the JSON document is nested too deeply")))
        except Exception:
            log.exception("local host error")
            self._send_json(500, problem(ValueFlowError("the local host failed; see its log")))

    def _route(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if path.startswith("/api/") or path == "/api":
            self._http_function(path[len("/api") :], query)
        elif path.rstrip("/") == "/runtime/webhooks/eventgrid":
            self._event_grid(query)
        elif path.startswith("/admin/functions"):
            self._admin(path, query)
        elif path.rstrip("/") == "/admin/host/status":
            self._require_key(query)
            self._send_json(200, {"state": "Running", "functions": sorted(self.host.functions)})
        elif path in ("/", ""):
            self._send_json(200, {"name": "ValueFlow local host", "functions": self.host.describe()})
        else:
            raise NotFoundError(
                f"no endpoint at {path}; functions are under /api/, /admin/functions/ and /runtime/webhooks/eventgrid"
            )

    # -- helpers --

    def _body(self) -> bytes:
        return self._raw_body

    def _read_body(self) -> bytes:
        """The request body (Content-Length bytes), read to the end; on any problem the connection is
        closed after the answer, so unread bytes can never be taken for the next request."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise BadInputError("chunked (Transfer-Encoding) request bodies are not supported; send Content-Length")
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if len(lengths) > 1:
            self.close_connection = True
            raise BadInputError("conflicting Content-Length headers")
        raw = lengths.pop() if lengths else "0"
        if not raw.isdigit() or len(raw) > 12:
            self.close_connection = True
            raise BadInputError("Content-Length is not a non-negative number")
        length = int(raw)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            if length <= DRAIN_LIMIT_BYTES:  # read and drop it, so the client is reading when the 413 comes
                self._read_exactly(length, keep=False)
            raise PayloadTooLargeError(f"request body is {length} bytes; the limit is {MAX_BODY_BYTES} (1 MiB)")
        return self._read_exactly(length, keep=True)

    def _read_exactly(self, length: int, *, keep: bool) -> bytes:
        chunks: list[bytes] = []
        remaining = length
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    break
                if keep:
                    chunks.append(chunk)
                remaining -= len(chunk)
        except (TimeoutError, OSError):
            remaining = remaining or 1
        if remaining > 0:
            self.close_connection = True
            raise RequestTimeoutError(
                f"the request body ended or stalled after {length - remaining} of {length} bytes; connection closed"
            )
        return b"".join(chunks)

    def _json_body(self, *, allowed_types: tuple[str, ...]) -> Any:
        body = self._body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype and ctype not in allowed_types:
            raise UnsupportedMediaTypeError(f"Content-Type {ctype!r} is not accepted here; send {allowed_types[0]}")
        if not body.strip():
            raise BadInputError("the request body is empty; a JSON document is expected")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadInputError("the request body is nested too deeply") from None

    def _has_key(self, query: dict[str, str]) -> bool:
        given = self.headers.get("x-functions-key") or query.get("code") or ""
        return bool(given) and hmac.compare_digest(given.encode(), self.host.key.encode())

    def _require_key(self, query: dict[str, str]) -> None:
        if not self._has_key(query):
            raise UnauthorizedError("a function key is required: send it as the x-functions-key header or ?code=")

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if self.close_connection and not any(k.lower() == "connection" for k in headers):
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, status: int, doc: Any) -> None:
        ctype = "application/problem+json" if status >= 400 else "application/json"
        self._send(status, json.dumps(doc).encode(), {"Content-Type": ctype})

    # -- /api/<route> --

    def _http_function(self, subpath: str, query: dict[str, str]) -> None:
        candidates = []
        for info in self.host.functions.values():
            if info.is_http and info.route is not None:
                params = info.route.match(subpath)
                if params is not None:
                    candidates.append((info, params))
        if not candidates:
            raise NotFoundError(f"no HTTP function has the route /api{subpath}")
        method = self.command.upper()
        chosen = next(((i, p) for i, p in candidates if method in i.methods), None)
        if chosen is None:
            allowed = sorted({m for i, _ in candidates for m in i.methods})
            raise MethodNotAllowedError(f"{method} is not allowed on /api{subpath}; allowed: {', '.join(allowed)}")
        info, route_params = chosen
        if info.auth_level != "anonymous":
            self._require_key(query)
        body = self._body()
        url = f"http://127.0.0.1:{self.host.port}{self.path}"
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = func.HttpRequest(method, url, headers=headers, params=query, route_params=route_params, body=body)
        try:
            resp = self.host.invoke(info, req, headers.get("x-correlation-id"))
        except ValueFlowError as err:
            self._send_json(err.status, problem(err))
            return
        except Exception as exc:
            log.exception("function %s raised", info.name)
            raise FunctionFailed(f"function {info.name} raised {type(exc).__name__}; see the host log") from None
        if not isinstance(resp, func.HttpResponse):
            raise FunctionFailed(f"function {info.name} returned {type(resp).__name__}, not an HttpResponse")
        out_headers = {k: v for k, v in resp.headers.items()}
        if resp.mimetype and not any(k.lower() == "content-type" for k in out_headers):
            out_headers["Content-Type"] = f"{resp.mimetype}; charset={resp.charset or 'utf-8'}"
        self._send(resp.status_code, resp.get_body() or b"", out_headers)

    # -- /runtime/webhooks/eventgrid --

    def _event_grid(self, query: dict[str, str]) -> None:
        if self.command == "OPTIONS":  # CloudEvents 1.0 abuse-protection handshake
            origins = self.headers.get_all("WebHook-Request-Origin") or []
            if not origins:
                raise BadInputError("OPTIONS needs a WebHook-Request-Origin header (CloudEvents webhook validation)")
            origin = origins[0].strip().lower()
            # reflected into a response header: a plain host name only (no folding, CR/LF, lists or ports)
            if len(origins) > 1 or host_problem(origin) or origin.replace(".", "").isdigit():
                raise BadInputError("WebHook-Request-Origin must be one host name (like eventgrid.azure.net)")
            self._send(
                200, b"", {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST, OPTIONS"}
            )
            return
        if self.command != "POST":
            raise MethodNotAllowedError("the Event Grid webhook accepts POST and OPTIONS")
        name = query.get("functionName") or ""
        if not name:
            raise BadInputError("the functionName query parameter is required")
        info = find_function(self.host.functions, name)
        if info is None:
            raise NotFoundError(f"no function named {name!r}")
        if info.trigger_type != "eventGridTrigger":
            raise BadInputError(f"function {info.name} is a {info.trigger_type}, not an Event Grid function")
        self._require_key(query)
        doc = self._json_body(
            allowed_types=(
                "application/json",
                "application/cloudevents+json",
                "application/cloudevents-batch+json",
                "text/plain",
            )
        )
        events = doc if isinstance(doc, list) else [doc]
        if not events or not all(isinstance(e, dict) for e in events):
            raise BadInputError("the body must be an event object or a non-empty array of event objects")
        kind = (self.headers.get("aeg-event-type") or "").lower()
        first_type = events[0].get("eventType") or events[0].get("type")
        if kind == "subscriptionvalidation" or first_type == VALIDATION_EVENT:
            data = events[0].get("data")
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str) or not code or len(code) > 256:
                raise BadInputError("a SubscriptionValidation event must carry data.validationCode (a string)")
            log.info("event grid subscription validated", extra={"function_name": info.name})
            self._send_json(200, {"validationResponse": code})
            return
        if kind == "subscriptiondeletion":
            self._send(200, b"", {})
            return
        triggers = [to_event_grid_event(e, i) for i, e in enumerate(events)]
        failures = []
        permanent = 0
        for i, ev in enumerate(triggers):
            try:
                self.host.invoke(info, ev, ev.id)
            except (BadInputError, RecursionError) as exc:  # the event itself is wrong: a retry cannot help
                log.warning("function %s rejected event %s: %s", info.name, ev.id, getattr(exc, "detail", "too deep"))
                failures.append({"index": i, "id": ev.id, "error": type(exc).__name__})
                permanent += 1
            except Exception as exc:
                log.exception("function %s failed on event %s", info.name, ev.id)
                failures.append({"index": i, "id": ev.id, "error": type(exc).__name__})
        if failures and permanent == len(failures):
            # Event Grid does not retry 400: every failure was the event's fault
            rejected = BadInputError(f"{len(failures)} of {len(triggers)} event(s) were rejected", errors=failures)
            self._send_json(400, problem(rejected))
            return
        if failures:
            # Event Grid retries the delivery when the endpoint does not answer 2xx
            err = FunctionFailed(f"{len(failures)} of {len(triggers)} event(s) failed", errors=failures)
            self._send_json(500, problem(err))
            return
        self._send(200, b"", {})

    # -- /admin/functions/<name> --

    def _admin(self, path: str, query: dict[str, str]) -> None:
        self._require_key(query)
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2:  # /admin/functions
            self._send_json(200, [{"name": i.name, "trigger": i.trigger_type} for i in self.host.functions.values()])
            return
        name = parts[2]
        info = find_function(self.host.functions, name)
        if info is None:
            raise NotFoundError(f"no function named {name!r}")
        if self.command != "POST":
            self._send_json(200, {"name": info.name, "trigger": info.trigger_type})
            return
        if info.is_http:
            raise BadInputError(
                f"{info.name} is an HTTP function: call it at /api/{info.route.template if info.route else ''}"
            )
        doc = self._json_body(allowed_types=("application/json",))
        if not isinstance(doc, dict) or not isinstance(doc.get("input", ""), str):
            raise BadInputError('the body must be {"input": "<string>"}')
        value = admin_trigger_value(info, doc.get("input", ""))
        try:
            self.host.invoke(info, value)
        except Exception as exc:
            log.exception("function %s failed", info.name)
            raise FunctionFailed(f"function {info.name} raised {type(exc).__name__}; see the host log") from None
        self._send_json(202, {"function": info.name, "status": "completed"})


def to_event_grid_event(event: dict[str, Any], index: int) -> func.EventGridEvent:
    """An Event Grid or CloudEvents 1.0 event as the trigger's EventGridEvent (one per element)."""
    if "specversion" in event:
        required: tuple[str, ...] = ("id", "source", "type", "specversion")
        topic_key, type_key, time_key = "source", "type", "time"
    else:
        required = ("id", "eventType", "subject", "eventTime", "data")
        topic_key, type_key, time_key = "topic", "eventType", "eventTime"
    missing = [f for f in required if event.get(f) in (None, "") and not (f == "subject" and f in event)]
    if missing:
        raise BadInputError(f"event [{index}] is missing {', '.join(missing)}")
    data: Any = event.get("data")
    if data is None and "data_base64" in event:
        data = event["data_base64"]
        if not isinstance(data, str):
            raise BadInputError(f"event [{index}].data_base64 must be a base64 string")
    elif data is not None and not isinstance(data, dict):
        # our functions read data as an object; anything else would fail them and Event Grid would retry for 24 h
        raise BadInputError(f"event [{index}].data must be a JSON object, not {type(data).__name__}")
    return func.EventGridEvent(
        id=str(event["id"]),
        data=data if data is not None else {},
        topic=str(event.get(topic_key) or ""),
        subject=str(event.get("subject") or ""),
        event_type=str(event[type_key]),
        event_time=_parse_time(event.get(time_key)),
        data_version=str(event.get("dataVersion") or ""),
    )


def admin_trigger_value(info: FunctionInfo, text: str) -> Any:
    if info.trigger_type == "timerTrigger":
        return TimerRequest(past_due=False)
    if info.trigger_type == "queueTrigger":
        now = datetime.now(UTC)
        return QueueMessage(
            id=str(uuid.uuid4()), body=text.encode(), dequeue_count=1, insertion_time=now, pop_receipt=""
        )
    if info.trigger_type == "eventGridTrigger":
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"input must be a JSON event: {exc}") from None
        if not isinstance(event, dict):
            raise BadInputError("input must be one JSON event object")
        return to_event_grid_event(event, 0)
    raise BadInputError(f"the local host cannot invoke a {info.trigger_type} function")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    # Event Grid sends 7 fractional digits; Python takes 6
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{rest}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
