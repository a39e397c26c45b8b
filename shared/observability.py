"""Structured logs with a correlation id per invocation, and OpenTelemetry export to App Insights.

`configure()` is called once at start (by `functions/__init__.py` and the CLI). Inside an
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

from shared.settings import Settings

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
            doc["exc"] = self.formatException(record.exc_info)
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
            base += "\n" + self.formatException(record.exc_info)
        return base


def wants_json(log_format: str, stream: Any) -> bool:
    """`json`/`text` as asked; `auto`: text for a person at a terminal, JSON for Azure, pipes and files."""
    if log_format in ("json", "text"):
        return log_format == "json"
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def configure(settings: Settings, *, level: int = logging.INFO) -> None:
    """Install the structured handler once; start OpenTelemetry export when a connection string is set."""
    global _configured
    if _configured:
        return
    _configured = True
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if wants_json(settings.log_format, sys.stderr) else TextFormatter())
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("azure", "urllib3", "snowflake", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if settings.applicationinsights_connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        options = {}
        if settings.storage_identity_based():
            # Application Insights with Entra-only ingestion: authenticate as the app's managed identity
            from azure.identity import DefaultAzureCredential

            options["credential"] = DefaultAzureCredential()
        configure_azure_monitor(connection_string=settings.applicationinsights_connection_string, **options)
        logging.getLogger(__name__).info("OpenTelemetry export to Application Insights enabled")
