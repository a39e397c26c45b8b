"""Typed app settings: the only module that reads the environment.

Resolution order is the Functions host's: the process environment first, then the `Values` of
`local.settings.json` (in the app root), then the default declared here. Every setting is one
field of `Settings` whose metadata names the app setting, how to parse it and whether it is a
secret; `load_settings()` validates all of them at once and raises `SettingsError` naming each
bad setting and what is wrong with it (never echoing a secret's value).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shared.errors import SettingsError

Parser = Callable[[str], Any]

LOCAL_SETTINGS_FILE = "local.settings.json"


def _setting(
    name: str, default: Any, parse: Parser, doc: str, *, secret: bool = False, sample: str | None = None
) -> Any:
    """Declare one app setting as a dataclass field.

    `sample` is the value written in local.settings.sample.json (defaults to the default)."""
    meta = {"name": name, "parse": parse, "doc": doc, "secret": secret, "sample": sample}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for list defaults")
    return field(default=default, metadata=meta)


# -- parsers: take the raw string, return the typed value or raise ValueError(what is expected) --


def _str(raw: str) -> str:
    return raw.strip()


def _int_range(lo: int, hi: int) -> Parser:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if value < 0 or value != value:
        raise ValueError("expected a number >= 0")
    return value


def _fraction(raw: str) -> float:
    value = _positive_float(raw)
    if value > 1:
        raise ValueError("expected a number from 0 to 1")
    return value


def _choice(*options: str) -> Parser:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _url(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("expected an http(s) URL")
    if parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
        raise ValueError("plain http is allowed only for loopback hosts (127.0.0.1, localhost, ::1)")
    return value.rstrip("/")


_NCRONTAB = re.compile(r"^\S+(\s+\S+){5}$")


def _schedule(raw: str) -> str:
    value = raw.strip()
    if not _NCRONTAB.match(value):
        raise ValueError("expected a 6-field NCRONTAB expression like '0 30 6 * * *'")
    return value


def _currency(raw: str) -> str:
    value = raw.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise ValueError("expected an ISO 4217 currency code like USD or EUR")
    return value


def _rates(raw: str) -> tuple[tuple[str, float], ...]:
    out = []
    for part in _csv(raw):
        code, sep, rate = part.partition("=")
        try:
            value = float(rate) if sep else 0.0
        except ValueError:
            value = 0.0
        if not re.fullmatch(r"[A-Za-z]{3}", code.strip()) or not value > 0:
            raise ValueError("expected CUR=rate pairs like EUR=1.08,GBP=1.27 (rate > 0)")
        out.append((code.strip().upper(), value))
    return tuple(out)


def is_loopback_host(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: hosts where plain http and dev credentials are allowed."""
    if not host:
        return False
    host = host.strip("[]").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")


@dataclass(frozen=True)
class Settings:
    """Every app setting the code reads. Attribute names are the setting names in snake case."""

    # -- warehouse --
    warehouse: str = _setting(
        "WAREHOUSE",
        "embedded",
        _choice("embedded", "snowflake"),
        "`embedded` (fakesnow over DuckDB under WAREHOUSE_PATH) or `snowflake`.",
    )
    warehouse_path: str = _setting(
        "WAREHOUSE_PATH",
        ".valueflow/warehouse",
        _str,
        "Folder of the embedded warehouse (one DuckDB file per database).",
    )
    snowflake_account: str = _setting("SNOWFLAKE_ACCOUNT", "", _str, "Snowflake account identifier.")
    snowflake_user: str = _setting("SNOWFLAKE_USER", "", _str, "Snowflake user (service user).")
    snowflake_private_key: str = _setting(
        "SNOWFLAKE_PRIVATE_KEY", "", _str, "PEM private key for key-pair auth (Key Vault reference).", secret=True
    )
    snowflake_password: str = _setting(
        "SNOWFLAKE_PASSWORD", "", _str, "Password, when key-pair auth is not used.", secret=True
    )
    snowflake_role: str = _setting("SNOWFLAKE_ROLE", "", _str, "Role to use.")
    snowflake_warehouse: str = _setting("SNOWFLAKE_WAREHOUSE", "", _str, "Virtual warehouse to run queries on.")
    snowflake_database: str = _setting("SNOWFLAKE_DATABASE", "VALUEFLOW", _str, "Database of the ValueFlow tables.")
    snowflake_schema: str = _setting("SNOWFLAKE_SCHEMA", "CORE", _str, "Schema of the ValueFlow tables.")

    # -- operational storage --
    azure_web_jobs_storage: str = _setting(
        "AzureWebJobsStorage",
        "UseDevelopmentStorage=true",
        _str,
        "Storage connection string (Azurite locally); empty when identity-based access is used.",
        secret=True,
    )
    azure_web_jobs_storage_account_name: str = _setting(
        "AzureWebJobsStorage__accountName",
        "",
        _str,
        "Storage account name for identity-based access (managed identity); wins over the connection string.",
    )
    state_dir: str = _setting(
        "VALUEFLOW_STATE_DIR",
        ".valueflow",
        _str,
        "Local state folder (Azurite data, generated key, reports). Dev only.",
    )

    # -- ServiceNow --
    servicenow_instance_url: str = _setting(
        "SERVICENOW_INSTANCE_URL", "", _url, "https://<instance>.service-now.com; empty = local outbox."
    )
    servicenow_username: str = _setting("SERVICENOW_USERNAME", "", _str, "Basic-auth user.")
    servicenow_password: str = _setting("SERVICENOW_PASSWORD", "", _str, "Basic-auth password.", secret=True)
    servicenow_client_id: str = _setting("SERVICENOW_CLIENT_ID", "", _str, "OAuth client id (client credentials).")
    servicenow_client_secret: str = _setting("SERVICENOW_CLIENT_SECRET", "", _str, "OAuth client secret.", secret=True)
    servicenow_resolve_mode: str = _setting(
        "SERVICENOW_RESOLVE_MODE",
        "resolve",
        _choice("resolve", "note"),
        "When an alert clears: `resolve` the incident (state Resolved + close notes) or only add a `note`.",
    )
    servicenow_close_code: str = _setting(
        "SERVICENOW_CLOSE_CODE", "Resolved by caller", _str, "close_code set when ValueFlow resolves an incident."
    )

    # -- alert routing and Teams --
    alert_routes: str = _setting(
        "ALERT_ROUTES", "", _str, "Squad routes: JSON, or a path to a JSON/YAML file.", secret=True
    )
    teams_default_webhook_url: str = _setting(
        "TEAMS_DEFAULT_WEBHOOK_URL",
        "",
        _url,
        "Workflows webhook for unrouted alerts; empty = local outbox.",
        secret=True,
    )
    teams_webhook_allowed_hosts: tuple[str, ...] = _setting(
        "TEAMS_WEBHOOK_ALLOWED_HOSTS",
        ("*.logic.azure.com", "*.environment.api.powerplatform.com", "*.webhook.office.com"),
        _csv,
        "Host patterns a Teams webhook may point to (comma-separated).",
        sample="*.logic.azure.com,*.environment.api.powerplatform.com,*.webhook.office.com",
    )
    owner_tag_keys: tuple[str, ...] = _setting(
        "OWNER_TAG_KEYS",
        ("owner", "squad", "team"),
        _csv,
        "Tag keys naming the owner squad, first match wins (case-insensitive).",
        sample="owner,squad,team",
    )
    alert_storm_threshold: int = _setting(
        "ALERT_STORM_THRESHOLD",
        10,
        _int_range(0, 100000),
        "More alerts than this for one squad within the window become one digest card (0 = no storm control).",
    )
    alert_storm_window_minutes: int = _setting(
        "ALERT_STORM_WINDOW_MINUTES", 10, _int_range(1, 1440), "Length of the storm-control window in minutes."
    )
    alert_max_attempts: int = _setting(
        "ALERT_MAX_ATTEMPTS",
        5,
        _int_range(1, 100),
        "Delivery attempts per channel before the alert goes to alerts-poison (host.json maxDequeueCount is 5).",
    )
    alert_retry_base_seconds: float = _setting(
        "ALERT_RETRY_BASE_SECONDS", 5.0, _positive_float, "First retry delay; doubles per attempt, with full jitter."
    )
    alert_retry_max_seconds: float = _setting(
        "ALERT_RETRY_MAX_SECONDS", 300.0, _positive_float, "Cap of the retry delay (a longer Retry-After still wins)."
    )
    alert_http_timeout_seconds: float = _setting(
        "ALERT_HTTP_TIMEOUT_SECONDS", 10.0, _positive_float, "Timeout of each Teams and ServiceNow request."
    )

    # -- cost anomalies --
    cost_critical_usd_per_hour: float = _setting(
        "COST_CRITICAL_USD_PER_HOUR",
        1000.0,
        _positive_float,
        "Excess per hour above which an anomaly is critical, in COST_THRESHOLD_CURRENCY (the name keeps USD).",
    )
    cost_min_impact_usd_per_day: float = _setting(
        "COST_MIN_IMPACT_USD_PER_DAY",
        10.0,
        _positive_float,
        "No alert under this excess per day, in COST_THRESHOLD_CURRENCY (the name keeps USD).",
    )
    cost_threshold_currency: str = _setting(
        "COST_THRESHOLD_CURRENCY",
        "USD",
        _currency,
        "Currency the two cost thresholds are stated in; series in it are scored with them as they are.",
    )
    cost_currency_rates: tuple[tuple[str, float], ...] = _setting(
        "COST_CURRENCY_RATES",
        (),
        _rates,
        "Explicit rates CUR=units of COST_THRESHOLD_CURRENCY per 1 CUR (EUR=1.08,GBP=1.27): the thresholds of a "
        "series in CUR are divided by its rate; series in a currency without a rate are not scored (reported).",
        sample="",
    )
    warehouse_embedded_memory_mb: int = _setting(
        "WAREHOUSE_EMBEDDED_MEMORY_MB",
        256,
        _int_range(64, 65536),
        "Memory the embedded warehouse (DuckDB) may use before it spills to disk; ingest and scans stay under it.",
    )
    cost_ingest_block_mb: int = _setting(
        "COST_INGEST_BLOCK_MB",
        8,
        _int_range(1, 256),
        "Size of the blocks an export file is read in (MB of CSV); with COST_INGEST_FLUSH_ROWS it bounds memory.",
    )
    cost_ingest_flush_rows: int = _setting(
        "COST_INGEST_FLUSH_ROWS",
        100000,
        _int_range(1000, 10_000_000),
        "Normalised rows buffered before they are staged in the warehouse (bounds ingest memory).",
    )
    cost_scan_schedule: str = _setting(
        "COST_SCAN_SCHEDULE", "0 30 6 * * *", _schedule, "NCRONTAB of the daily cost scan (UTC)."
    )
    cost_export_storage: str = _setting(
        "COST_EXPORT_STORAGE",
        "",
        _str,
        "Connection string of the storage account Cost Management exports land in; empty = the app's storage.",
        secret=True,
    )
    cost_export_storage_account_name: str = _setting(
        "COST_EXPORT_STORAGE__accountName",
        "",
        _str,
        "Account name of the cost export storage for identity-based access; wins over COST_EXPORT_STORAGE.",
    )
    cost_center_tag_keys: tuple[str, ...] = _setting(
        "COST_CENTER_TAG_KEYS",
        ("cost-center", "costcenter", "cost_center"),
        _csv,
        "Tag keys naming the cost center, first match wins (case-insensitive).",
        sample="cost-center,costcenter,cost_center",
    )
    environment_tag_keys: tuple[str, ...] = _setting(
        "ENVIRONMENT_TAG_KEYS",
        ("env", "environment", "stage"),
        _csv,
        "Tag keys naming the environment, first match wins (case-insensitive).",
        sample="env,environment,stage",
    )
    cost_feedback_suppress_days: int = _setting(
        "COST_FEEDBACK_SUPPRESS_DAYS",
        14,
        _int_range(0, 365),
        "Days an anomaly marked planned or not_anomaly silences alerts for its series.",
    )
    cost_partition_size: int = _setting(
        "COST_PARTITION_SIZE",
        15000,
        _int_range(10, 10_000_000),
        "Series per scoring partition; above it the daily scan fans out on queue cost-partitions.",
    )
    cost_query_scopes: tuple[str, ...] = _setting(
        "COST_QUERY_SCOPES",
        (),
        _csv,
        "Scopes (/subscriptions/<id>) whose daily cost the scan pulls from the Cost Management Query API first.",
        sample="",
    )

    # -- policy remediation --
    remediation_mode: str = _setting(
        "REMEDIATION_MODE",
        "dry-run",
        _choice("dry-run", "enforce"),
        "`dry-run` decides and reports only; `enforce` creates remediation tasks and runs approved actions.",
    )
    remediation_allowed_assignments: tuple[str, ...] = _setting(
        "REMEDIATION_ALLOWED_ASSIGNMENTS",
        ("*",),
        _csv,
        "Assignment id patterns that may be remediated.",
        sample="*",
    )
    remediation_denied_assignments: tuple[str, ...] = _setting(
        "REMEDIATION_DENIED_ASSIGNMENTS", (), _csv, "Assignment id patterns never remediated (wins).", sample=""
    )
    remediation_watch_schedule: str = _setting(
        "REMEDIATION_WATCH_SCHEDULE",
        "0 */5 * * * *",
        _schedule,
        "NCRONTAB of the remediation watch: plans closed coalescing windows, follows running tasks (UTC).",
    )
    remediation_window_seconds: int = _setting(
        "REMEDIATION_WINDOW_SECONDS",
        300,
        _int_range(1, 86400),
        "Coalescing window: violations received in one window become one task per assignment/definition/scope.",
    )
    remediation_max_concurrent_tasks: int = _setting(
        "REMEDIATION_MAX_CONCURRENT_TASKS",
        100,
        _int_range(1, 100),
        "Remediation tasks running at once (Azure allows 100 per tenant); the rest wait for the next watch.",
    )
    remediation_resource_count: int = _setting(
        "REMEDIATION_RESOURCE_COUNT",
        500,
        _int_range(1, 50000),
        "resourceCount of a remediation task: most resources one task remediates.",
    )
    remediation_parallel_deployments: int = _setting(
        "REMEDIATION_PARALLEL_DEPLOYMENTS",
        10,
        _int_range(1, 30),
        "parallelDeployments of a remediation task: resources remediated at the same time.",
    )
    remediation_failure_threshold: float = _setting(
        "REMEDIATION_FAILURE_THRESHOLD",
        0.1,
        _fraction,
        "failureThreshold.percentage of a remediation task (0-1): fail the task above this share of failures.",
    )
    policy_incident_assignments: tuple[str, ...] = _setting(
        "POLICY_INCIDENT_ASSIGNMENTS",
        (),
        _csv,
        "Assignment id patterns whose unremediable violations also open a ServiceNow incident.",
        sample="",
    )
    arm_writes_per_second: float = _setting(
        "ARM_WRITES_PER_SECOND",
        10.0,
        _positive_float,
        "Write budget per subscription (token bucket refill, ARM refills ~10 writes/s).",
    )
    arm_endpoint: str = _setting(
        "ARM_ENDPOINT",
        "https://management.azure.com",
        _url,
        "Azure Resource Manager endpoint; a loopback URL uses a static dev credential.",
    )

    # -- Logic Apps and actions --
    approval_logic_app_url: str = _setting(
        "APPROVAL_LOGIC_APP_URL",
        "",
        _url,
        "HTTP trigger URL of the approval Logic App (has a SAS: secret).",
        secret=True,
    )
    callback_allowed_hosts: tuple[str, ...] = _setting(
        "CALLBACK_ALLOWED_HOSTS",
        ("*.logic.azure.com",),
        _csv,
        "Host patterns a callbackUrl may point to.",
        sample="*.logic.azure.com",
    )
    actions_protected_subscriptions: tuple[str, ...] = _setting(
        "ACTIONS_PROTECTED_SUBSCRIPTIONS", (), _csv, "Subscription ids never acted on.", sample=""
    )
    actions_protected_tag: str = _setting(
        "ACTIONS_PROTECTED_TAG",
        "valueflow:protected",
        _str,
        "Tag key that protects a resource (or its resource group) from cost actions when its value is `true`.",
    )

    # -- runtime --
    applicationinsights_connection_string: str = _setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "",
        _str,
        "When set, logs and traces go to Application Insights through OpenTelemetry.",
        secret=True,
    )
    log_format: str = _setting(
        "VALUEFLOW_LOG_FORMAT", "json", _choice("json", "text"), "Structured JSON logs or plain text."
    )
    valueflow_port: int = _setting("VALUEFLOW_PORT", 7071, _int_range(1, 65535), "Port of the local host.")
    local_function_key: str = _setting(
        "LOCAL_FUNCTION_KEY",
        "",
        _str,
        "Function/admin key of the local host; generated under .valueflow/ when empty.",
        secret=True,
    )
    outbox_dir: str = _setting(
        "OUTBOX_DIR", ".valueflow/outbox", _str, "Where alerts go when Teams/ServiceNow are not configured."
    )

    def storage_identity_based(self) -> bool:
        return bool(self.azure_web_jobs_storage_account_name)


@dataclass(frozen=True)
class SettingSpec:
    attr: str
    name: str
    default: Any
    parse: Parser
    doc: str
    secret: bool
    sample: str | None

    def sample_value(self) -> str:
        if self.sample is not None:
            return self.sample
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        return str(self.default)


def specs() -> list[SettingSpec]:
    """Every declared setting, in declaration order (used by doctor, docs and tests)."""
    out = []
    for f in fields(Settings):
        m = f.metadata
        default = f.default if f.default is not MISSING else None
        out.append(SettingSpec(f.name, m["name"], default, m["parse"], m["doc"], m["secret"], m["sample"]))
    return out


def read_local_settings(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json, or {} when there is none."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"{path}: not valid JSON ({exc})") from None
    values = doc.get("Values", {}) if isinstance(doc, dict) else None
    if not isinstance(values, dict):
        raise SettingsError(f"{path}: 'Values' must be an object of setting names to strings")
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def raw_values(environ: Mapping[str, str] | None = None, local_settings: Path | None = None) -> dict[str, str]:
    """Raw string values: environment first, then local.settings.json, as the Functions host does."""
    env = os.environ if environ is None else environ
    merged = read_local_settings(local_settings or Path(LOCAL_SETTINGS_FILE))
    merged.update({k: v for k, v in env.items()})
    return merged


def load_settings(environ: Mapping[str, str] | None = None, local_settings: Path | None = None) -> Settings:
    """Parse and validate every setting; raise SettingsError listing every bad one."""
    raw = raw_values(environ, local_settings)
    values: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for spec in specs():
        text = raw.get(spec.name)
        if text is None or (text.strip() == "" and spec.default not in ("", ())):
            values[spec.attr] = spec.default
            continue
        try:
            values[spec.attr] = spec.parse(text)
        except ValueError as exc:
            shown = "(value hidden)" if spec.secret else repr(text)
            problems.append({"setting": spec.name, "problem": f"{exc}; got {shown}"})
    settings = Settings(**values) if not problems else None
    if settings is not None:
        problems.extend(_cross_checks(settings))
    if problems:
        lines = "; ".join(f"{p['setting']}: {p['problem']}" for p in problems)
        raise SettingsError(f"invalid app settings: {lines}", errors=problems)
    assert settings is not None
    return settings


def _cross_checks(s: Settings) -> list[dict[str, Any]]:
    out = []
    if s.warehouse == "snowflake":
        for spec_name, value in (("SNOWFLAKE_ACCOUNT", s.snowflake_account), ("SNOWFLAKE_USER", s.snowflake_user)):
            if not value:
                out.append({"setting": spec_name, "problem": "required when WAREHOUSE=snowflake"})
        if not (s.snowflake_private_key or s.snowflake_password):
            out.append(
                {
                    "setting": "SNOWFLAKE_PRIVATE_KEY",
                    "problem": "WAREHOUSE=snowflake needs SNOWFLAKE_PRIVATE_KEY or SNOWFLAKE_PASSWORD",
                }
            )
    if s.servicenow_instance_url:
        basic = bool(s.servicenow_username and s.servicenow_password)
        oauth = bool(s.servicenow_client_id and s.servicenow_client_secret)
        if not (basic or oauth):
            out.append(
                {
                    "setting": "SERVICENOW_INSTANCE_URL",
                    "problem": "set SERVICENOW_USERNAME/SERVICENOW_PASSWORD or SERVICENOW_CLIENT_ID/SERVICENOW_CLIENT_SECRET",
                }
            )
    if not s.azure_web_jobs_storage and not s.azure_web_jobs_storage_account_name:
        out.append(
            {
                "setting": "AzureWebJobsStorage",
                "problem": "set a connection string or AzureWebJobsStorage__accountName",
            }
        )
    return out


def lookup(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Resolve a `%NAME%` binding expression: the raw setting, or its declared default."""
    raw = raw_values(environ).get(name)
    if raw:
        return raw
    for spec in specs():
        if spec.name == name:
            return spec.sample_value()
    return None


_lock = threading.Lock()
_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, loaded once (call `reset_settings()` after changing the environment)."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = load_settings()
        return _cached


def reset_settings() -> None:
    global _cached
    with _lock:
        _cached = None
