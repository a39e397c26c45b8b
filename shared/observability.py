"""Structured logs with a correlation id per invocation; one telemetry path (docs/operations.md).

`configure()` is called once, on first use of the runtime (functions) or at start (CLI, local
host). Under the Functions host it adds nothing: the host is the telemetry path. Inside an
invocation, `invocation(name, correlation_id)` binds the function name and a correlation id that
every log record of that invocation carries, in JSON (`VALUEFLOW_LOG_FORMAT=json`) or text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from shared.errors import SettingsError
from shared.settings import Settings, running_in_azure

_correlation: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")
_function: contextvars.ContextVar[str] = contextvars.ContextVar("function_name", default="")
_configured = False

# attributes every LogRecord has; anything else passed in `extra=` is a structured field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def correlation_id() -> str:
    return _correlation.get()


@contextmanager
def invocation(function_name: str, correlation: str | None = None) -> Iterator[str]:
    """Bind a function name and correlation id to every log line inside the block."""
    cid = correlation or uuid.uuid4().hex
    t1 = _correlation.set(cid)
    t2 = _function.set(function_name)
    try:
        yield cid
    finally:
        _correlation.reset(t1)
        _function.reset(t2)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation.get()
        record.function = _function.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and value not in ("", None):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{datetime.fromtimestamp(record.created, UTC):%H:%M:%S} {record.levelname:<7} {record.getMessage()}"
        extras = {
            k: v
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_") and v not in ("", None)
        }
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            base += "\n" + (record.exc_text or self.formatException(record.exc_info))
        return base


def wants_json(log_format: str, stream: Any) -> bool:
    """`json`/`text` as asked; `auto`: text for a person at a terminal, JSON for Azure, pipes and files."""
    if log_format in ("json", "text"):
        return log_format == "json"
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


# modules of the Azure Functions Python worker (by worker generation); loaded only under the real host
_WORKER_MODULES = ("azure_functions_worker", "azure_functions_worker_v2", "proxy_worker")


def under_functions_host() -> bool:
    """True inside the Azure Functions Python worker (in Azure, or under Core Tools' `func start`)."""
    return running_in_azure() or any(name in sys.modules for name in _WORKER_MODULES)


def configure(settings: Settings, *, level: int = logging.INFO, under_host: bool | None = None) -> None:
    """Set up logging once, with one telemetry path.

    Under the Functions host the worker already forwards every log record to the host, which writes
    them to its log stream and to Application Insights (with the invocation's operation id, and the
    `requests` table from the host itself): adding a stderr handler or a second exporter would
    duplicate every line, so only levels are set. Elsewhere (local host, CLI) a structured stderr
    handler, plus OpenTelemetry export when APPLICATIONINSIGHTS_CONNECTION_STRING is set."""
    global _configured
    if _configured:
        return
    _configured = True
    root = logging.getLogger()
    root.setLevel(level)
    for noisy in ("azure", "urllib3", "snowflake", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if under_host if under_host is not None else under_functions_host():
        return
    try:
        as_json = wants_json(settings.log_format, sys.stderr)
    except SettingsError:
        as_json = True  # a bad VALUEFLOW_LOG_FORMAT must not stop logging; health reports it
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(_ContextFilter())
    from shared.urls import SecretMaskingFilter

    handler.addFilter(SecretMaskingFilter())  # `?code=`, `sig=`, ... never reach a log line
    root.addHandler(handler)
    try:
        connection_string = settings.applicationinsights_connection_string
    except SettingsError as err:
        logging.getLogger(__name__).error("no OpenTelemetry export: %s", err.detail)
        return
    if connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        options = {}
        if settings.storage_identity_based():
            # Application Insights with Entra-only ingestion: authenticate as the app's managed identity
            from azure.identity import DefaultAzureCredential

            options["credential"] = DefaultAzureCredential()
        configure_azure_monitor(connection_string=connection_string, **options)
        logging.getLogger(__name__).info("OpenTelemetry export to Application Insights enabled")
