"""Typed app settings: the only module that reads the environment.

Resolution order is the Functions host's: the process environment first, then the `Values` of
`local.settings.json` (in the app root), then the default declared here. Every setting is one
field of `Settings` whose metadata names the app setting, how to parse it and whether it is a
secret; `load_settings()` validates all of them at once and raises `SettingsError` naming each
bad setting and what is wrong with it (never echoing a secret's value).

Inside the Functions host nothing is validated at import: `get_settings()` loads leniently, the
first time a function needs its settings, and keeps each bad setting as an `InvalidSetting`.
Reading that attribute raises `SettingsError` naming the setting, so only the functions that use
it fail (a queue message is retried, then poisoned) while every other function keeps working;
`settings_problems()` lists them for `/api/health` and `doctor`. A Key Vault reference the
platform could not resolve (`@Microsoft.KeyVault(...)` reaching the code as text) is reported
as such, for every setting.
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


def _port_triple(raw: str) -> tuple[str, ...]:
    parts = _csv(raw)
    if len(parts) != 3 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts) or len(set(parts)) != 3:
        raise ValueError("expected three different ports blob,queue,table like 10000,10001,10002")
    return parts


def _url(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("expected an http(s) URL")
    if parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
        raise ValueError("plain http is allowed only for loopback hosts (127.0.0.1, localhost, ::1)")
    from shared.urls import url_shape_problem

    problem = url_shape_problem(value)  # what urllib3 would send must be what the URL says
    if problem:
        raise ValueError(f"the URL {problem}")
    return value.rstrip("/")


_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def _container_name(raw: str) -> str:
    value = raw.strip()
    if value.lower() == "none":
        return ""
    if value and not _CONTAINER.match(value):
        raise ValueError("expected a blob container name: 3-63 lowercase letters, digits and single hyphens")
    return value


_NCRONTAB = re.compile(r"^\S+(\s+\S+){5}$")


def _schedule(raw: str) -> str:
    value = raw.strip()
    if not _NCRONTAB.match(value):
        raise ValueError("expected a 6-field NCRONTAB expression like '0 30 6 * * *'")
    return value


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,79}$")


def _table_name(raw: str) -> str:
    value = raw.strip()
    if not _IDENTIFIER.match(value):
        raise ValueError("expected a ServiceNow table name such as dmn_demand")
    return value


def _field_name(raw: str) -> str:
    value = raw.strip()
    if value == "-":  # an empty setting means the default: '-' switches the field off
        return ""
    if not _IDENTIFIER.match(value):
        raise ValueError("expected a ServiceNow field name such as u_azure_devops_work_item, or '-' for none")
    return value


def _work_item_field(raw: str) -> str:
    value = raw.strip()
    if value == "-":
        return ""
    if not re.match(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$", value):
        raise ValueError(
            "expected a work item field reference name such as Microsoft.VSTS.Common.AcceptanceCriteria, or '-'"
        )
    return value


def _work_item_type(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 128 or any(c in value for c in "/\\?#%$"):
        raise ValueError("expected a work item type name such as Feature or Epic")
    return value


def _state_map(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in raw.split(","):
        if not part.strip():
            continue
        source, sep, target = part.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(
                f"expected 'Work item state=Demand state' pairs separated by commas; {part.strip()!r} is not one"
            )
        pairs.append((source.strip(), target.strip()))
    return tuple(pairs)


def _priority_rules(raw: str) -> str:
    from shared.dora.rules import parse_priority_rules

    parse_priority_rules(raw)
    return raw.strip()


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
    """True for `localhost` and literal 127.0.0.0/8 or ::1 addresses: where plain http and dev credentials
    are allowed (`127.attacker.example` is not loopback; see shared.urls)."""
    from shared.urls import is_loopback_host as _is_loopback

    return _is_loopback(host)


@dataclass(frozen=True)
class InvalidSetting:
    """Stands in for the value of a setting that did not validate (lenient loading)."""

    setting: str
    problem: str

    def error(self) -> SettingsError:
        return SettingsError(
            f"app setting {self.setting}: {self.problem}", errors=[{"setting": self.setting, "problem": self.problem}]
        )


@dataclass(frozen=True, repr=False)
class Settings:
    """Every app setting the code reads. Attribute names are the setting names in snake case.

    Reading a setting that did not validate raises `SettingsError` naming it (see `InvalidSetting`)."""

    def __getattribute__(self, attr: str) -> Any:
        value = object.__getattribute__(self, attr)
        if type(value) is InvalidSetting:
            raise value.error()
        return value

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = object.__getattribute__(self, f.name)
            if type(value) is InvalidSetting:
                shown.append(f"{f.name}=<invalid>")
            elif f.metadata.get("secret") and value:
                shown.append(f"{f.name}=[SENSITIVE]")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

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
    azure_web_jobs_storage_blob_service_uri: str = _setting(
        "AzureWebJobsStorage__blobServiceUri",
        "",
        _url,
        "Blob endpoint for identity-based access (wins over the one derived from the account name).",
    )
    azure_web_jobs_storage_queue_service_uri: str = _setting(
        "AzureWebJobsStorage__queueServiceUri",
        "",
        _url,
        "Queue endpoint for identity-based access (wins over the one derived from the account name).",
    )
    azure_web_jobs_storage_table_service_uri: str = _setting(
        "AzureWebJobsStorage__tableServiceUri",
        "",
        _url,
        "Table endpoint for identity-based access (wins over the one derived from the account name).",
    )
    azure_web_jobs_storage_credential: str = _setting(
        "AzureWebJobsStorage__credential",
        "",
        _choice("", "managedidentity"),
        "`managedidentity` to use the app's managed identity; empty = DefaultAzureCredential's chain.",
    )
    azure_web_jobs_storage_client_id: str = _setting(
        "AzureWebJobsStorage__clientId",
        "",
        _str,
        "Client id of the user-assigned managed identity used for storage.",
    )
    storage_endpoint_suffix: str = _setting(
        "AZURE_STORAGE_ENDPOINT_SUFFIX",
        "core.windows.net",
        _str,
        "DNS suffix of storage endpoints derived from an account name (sovereign clouds differ).",
    )
    state_dir: str = _setting(
        "VALUEFLOW_STATE_DIR",
        ".valueflow",
        _str,
        "Local state folder (Azurite data, generated key, reports). Dev only.",
    )

    # -- ServiceNow --
    servicenow_instance_url: str = _setting(
        "SERVICENOW_INSTANCE_URL",
        "",
        _url,
        "https://<instance>.service-now.com; empty = the outbox (OUTBOX_DIR locally, OUTBOX_CONTAINER in Azure).",
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
        "Workflows webhook for unrouted alerts; empty = the outbox (OUTBOX_DIR locally, OUTBOX_CONTAINER in Azure).",
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
    teams_rate_scope: str = _setting(
        "TEAMS_RATE_SCOPE",
        "storage",
        _choice("storage", "process"),
        "Where the 4 posts/s per Teams webhook are counted: `storage` (table `teamsbudget`, holds across "
        "scaled-out instances; one storage operation per post) or `process` (per instance only).",
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
    cost_export_storage_blob_service_uri: str = _setting(
        "COST_EXPORT_STORAGE__blobServiceUri",
        "",
        _url,
        "Blob endpoint of the cost export storage for identity-based access.",
    )
    cost_export_storage_credential: str = _setting(
        "COST_EXPORT_STORAGE__credential",
        "",
        _choice("", "managedidentity"),
        "`managedidentity` to read cost exports with the app's managed identity.",
    )
    cost_export_storage_client_id: str = _setting(
        "COST_EXPORT_STORAGE__clientId",
        "",
        _str,
        "Client id of the user-assigned managed identity used for the cost export storage.",
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
    arm_dev_fake: bool = _setting(
        "VALUEFLOW_FAKE_ARM",
        False,
        _bool,
        "Dev only: `make run` starts a local fake ARM and points ARM_ENDPOINT at it, so the policy path runs end to end.",
        sample="false",
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

    # -- Azure DevOps service hooks (POST /api/hooks/azure-devops) --
    ado_hook_username: str = _setting(
        "ADO_HOOK_USERNAME",
        "",
        _str,
        "Basic-auth user name the Azure DevOps service-hook subscription sends (empty: not checked).",
    )
    ado_hook_password: str = _setting(
        "ADO_HOOK_PASSWORD",
        "",
        _str,
        "Basic-auth password the service-hook subscription sends (with ADO_HOOK_USERNAME).",
        secret=True,
    )
    ado_hook_secret: str = _setting(
        "ADO_HOOK_SECRET",
        "",
        _str,
        "Shared secret the subscription sends in the `X-Hook-Secret` header (empty: not checked).",
        secret=True,
    )

    # -- Azure DevOps REST (work items, pipelines, repos) and Backstage --
    azure_devops_org_url: str = _setting(
        "AZURE_DEVOPS_ORG_URL",
        "",
        _url,
        "Azure DevOps organization URL, e.g. https://dev.azure.com/<org> (empty: Azure DevOps calls are off).",
    )
    azure_devops_project: str = _setting(
        "AZURE_DEVOPS_PROJECT", "", _str, "Azure DevOps project (name or id) the work items and pipelines live in."
    )
    azure_devops_pat: str = _setting(
        "AZURE_DEVOPS_PAT",
        "",
        _str,
        "Personal access token for Azure DevOps (empty: the managed identity's Entra token is used).",
        secret=True,
    )
    backstage_url: str = _setting(
        "BACKSTAGE_URL", "", _url, "Backstage backend base URL, e.g. https://backstage.example.com (empty: off)."
    )
    backstage_token: str = _setting(
        "BACKSTAGE_TOKEN",
        "",
        _str,
        "Static external-access token for the Backstage backend, sent as `Authorization: Bearer`.",
        secret=True,
    )

    # -- demand sync: ServiceNow demands <-> Azure Boards work items (shared/demands) --
    azure_devops_work_item_type: str = _setting(
        "AZURE_DEVOPS_WORK_ITEM_TYPE",
        "Feature",
        _work_item_type,
        "Work item type an approved ServiceNow demand becomes in Azure Boards (`Feature` or `Epic`, or another type).",
    )
    azure_devops_acceptance_criteria_field: str = _setting(
        "AZURE_DEVOPS_ACCEPTANCE_CRITERIA_FIELD",
        "Microsoft.VSTS.Common.AcceptanceCriteria",
        _work_item_field,
        "Work item field for a demand's acceptance criteria (`-`: appended to the description instead).",
    )
    servicenow_demand_table: str = _setting(
        "SERVICENOW_DEMAND_TABLE", "dmn_demand", _table_name, "ServiceNow table of the demands (Table API name)."
    )
    servicenow_demand_work_item_field: str = _setting(
        "SERVICENOW_DEMAND_WORK_ITEM_FIELD",
        "u_azure_devops_work_item",
        _field_name,
        "Demand field that receives the Azure Boards work item id (`-`: work note only).",
    )
    servicenow_demand_work_item_url_field: str = _setting(
        "SERVICENOW_DEMAND_WORK_ITEM_URL_FIELD",
        "u_azure_devops_url",
        _field_name,
        "Demand field that receives the work item URL (`-`: work note only).",
    )
    servicenow_demand_approved_query: str = _setting(
        "SERVICENOW_DEMAND_APPROVED_QUERY",
        "approval=approved",
        _str,
        "Encoded query selecting approved demands for reconciliation (`field=value` parts joined by `^`).",
    )
    demands_state_map: tuple[tuple[str, str], ...] = _setting(
        "DEMANDS_STATE_MAP",
        (("Doing", "In progress"), ("Active", "In progress"), ("Done", "Completed"), ("Closed", "Completed")),
        _state_map,
        "Work item state = demand state pairs (display values), comma-separated; other states add a work note only.",
        sample="Doing=In progress,Active=In progress,Done=Completed,Closed=Completed",
    )
    demands_reconcile_schedule: str = _setting(
        "DEMANDS_RECONCILE_SCHEDULE",
        "0 15 2 * * *",
        _schedule,
        "NCRONTAB of the nightly demand reconciliation (UTC).",
    )
    demands_reconcile_lookback_days: int = _setting(
        "DEMANDS_RECONCILE_LOOKBACK_DAYS",
        30,
        _int_range(1, 3650),
        "The nightly reconciliation checks demands updated in ServiceNow within this many days.",
    )
    demands_max_attempts: int = _setting(
        "DEMANDS_MAX_ATTEMPTS",
        8,
        _int_range(1, 100),
        "Attempts of one demand sync step before it goes to demands-poison and raises an alert.",
    )
    demands_retry_base_seconds: float = _setting(
        "DEMANDS_RETRY_BASE_SECONDS", 10.0, _positive_float, "First retry delay of a demand step; doubles per attempt."
    )
    demands_retry_max_seconds: float = _setting(
        "DEMANDS_RETRY_MAX_SECONDS",
        1800.0,
        _positive_float,
        "Cap of the demand retry delay (a longer Retry-After still wins).",
    )

    # -- DORA metrics (deployments, problems, digest, scorecard) --
    dynatrace_webhook_secret: str = _setting(
        "DYNATRACE_WEBHOOK_SECRET",
        "",
        _str,
        "Secret Dynatrace (and ServiceNow) send in the `X-Webhook-Secret` header to POST /api/dora/problems "
        "(empty: the function key alone).",
        secret=True,
    )
    dora_production_environments: tuple[str, ...] = _setting(
        "DORA_PRODUCTION_ENVIRONMENTS",
        ("production", "prod"),
        _csv,
        "Environment names (case-insensitive) whose deployments count for the DORA metrics.",
        sample="production,prod",
    )
    dora_priority_rules: str = _setting(
        "DORA_PRIORITY_RULES",
        "severity=AVAILABILITY|ERROR & env=production -> P1; env=production -> P2; * -> P3",
        _priority_rules,
        "Dynatrace problem priority: `conditions -> Pn` rules separated by `;`, first match wins (docs/dora.md).",
    )
    dora_service_map: str = _setting(
        "DORA_SERVICE_MAP",
        "",
        _str,
        "Service identity: JSON list of {service, squad, component, aliases}, or a path to a .json/.csv file.",
    )
    dora_component_tag: str = _setting(
        "DORA_COMPONENT_TAG",
        "backstage.io/component",
        _str,
        "Azure tag naming the Backstage component a resource belongs to (scorecard costs and violations).",
    )
    dora_digest_schedule: str = _setting(
        "DORA_DIGEST_SCHEDULE",
        "0 0 8 * * 1",
        _schedule,
        "NCRONTAB of the weekly DORA digest per squad to Teams (UTC; default Mondays 08:00).",
    )

    # -- housekeeping --
    housekeeping_schedule: str = _setting(
        "HOUSEKEEPING_SCHEDULE",
        "0 45 3 * * *",
        _schedule,
        "NCRONTAB of the daily deletion of expired idempotency records and ended storm windows (UTC).",
    )

    # -- anomaly review page --
    review_link_secret: str = _setting(
        "REVIEW_LINK_SECRET",
        "",
        _str,
        "HMAC key of the signed review links in cost cards (Key Vault); empty = generated under "
        "VALUEFLOW_STATE_DIR on a local emulator, review links off elsewhere.",
        secret=True,
    )
    review_link_days: int = _setting(
        "REVIEW_LINK_DAYS", 14, _int_range(1, 365), "Days a review link in a Teams card stays valid."
    )
    review_base_url: str = _setting(
        "REVIEW_BASE_URL",
        "",
        _url,
        "Public base URL of the app for review links; empty = https://WEBSITE_HOSTNAME in Azure, the local host here.",
    )
    website_auth_enabled: bool = _setting(
        "WEBSITE_AUTH_ENABLED",
        False,
        _bool,
        "Set by the platform when App Service Authentication is on: only then is X-MS-CLIENT-PRINCIPAL-NAME trusted.",
        sample="false",
    )
    website_hostname: str = _setting(
        "WEBSITE_HOSTNAME", "", _str, "Default host name of the Function App (set by the platform in Azure)."
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
        "VALUEFLOW_LOG_FORMAT",
        "auto",
        _choice("auto", "json", "text"),
        "`json` (structured), `text`, or `auto`: text on an interactive terminal, JSON otherwise (Azure, pipes).",
    )
    azurite_ports: tuple[str, ...] = _setting(
        "AZURITE_PORTS",
        ("10000", "10001", "10002"),
        _port_triple,
        "Dev only: blob,queue,table ports of the Azurite that `make run` starts or attaches to.",
        sample="10000,10001,10002",
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
        "OUTBOX_DIR",
        ".valueflow/outbox",
        _str,
        "Where alerts go when Teams/ServiceNow are not configured (local runs; never used in Azure).",
    )
    outbox_container: str = _setting(
        "OUTBOX_CONTAINER",
        "alerts-outbox",
        _container_name,
        "In Azure: blob container of the app's storage that receives the alerts of unconfigured channels "
        "(`none` = no outbox: such alerts are reported as not delivered).",
    )

    def storage_identity_based(self) -> bool:
        return bool(
            self.azure_web_jobs_storage_account_name
            or self.azure_web_jobs_storage_blob_service_uri
            or self.azure_web_jobs_storage_queue_service_uri
            or self.azure_web_jobs_storage_table_service_uri
        )

    def connection_values(self, connection: str) -> dict[str, str]:
        """The settings of one storage connection (`X` and `X__*`) by app setting name, for
        `shared.adapters.storage_connection` (raises SettingsError for a bad one)."""
        out = {}
        for f in fields(self):
            name = f.metadata["name"]
            if name == connection or name.startswith(connection + "__"):
                out[name] = str(getattr(self, f.name))
        return out

    def in_azure(self) -> bool:
        """True inside the Azure Functions service (not the local host, Core Tools or the CLI)."""
        return bool(object.__getattribute__(self, "__dict__").get("_in_azure", False))


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


AZURE_HOST_MARKERS = ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID")
# platform references that reach the code as text when the platform could not resolve them
_KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.(KeyVault|AppConfiguration)\(", re.IGNORECASE)


def running_in_azure(environ: Mapping[str, str] | None = None) -> bool:
    """True when the process runs inside the Azure Functions service: the platform sets these variables
    (the local host, Core Tools and the CLI do not)."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in AZURE_HOST_MARKERS)


def is_key_vault_reference(raw: str) -> bool:
    return bool(_KEY_VAULT_REFERENCE.match(raw))


def _reference_kind(raw: str) -> str:
    return "App Configuration" if "appconfiguration" in raw.lower()[:40] else "Key Vault"


def load_settings(
    environ: Mapping[str, str] | None = None, local_settings: Path | None = None, *, strict: bool = True
) -> Settings:
    """Parse and validate every setting.

    strict (the CLI, tests): raise SettingsError listing every bad one. Not strict (the Functions
    host): return the settings with each bad one replaced by an `InvalidSetting`, which raises
    SettingsError naming it when read; `settings_problems()` lists them."""
    env = os.environ if environ is None else environ
    problems: list[dict[str, Any]] = []
    try:
        raw = raw_values(env, local_settings)
    except SettingsError as err:
        if strict:
            raise
        problems.append({"setting": LOCAL_SETTINGS_FILE, "problem": err.detail})
        raw = dict(env)
    values: dict[str, Any] = {}
    for spec in specs():
        text = raw.get(spec.name)
        if text is None or (text.strip() == "" and spec.default not in ("", ())):
            values[spec.attr] = spec.default
            continue
        if is_key_vault_reference(text):
            problems.append(
                {
                    "setting": spec.name,
                    "problem": f"unresolved {_reference_kind(text)} reference: the platform could not read the value "
                    "(check that it exists and that the app's Key Vault reference identity may read it)",
                }
            )
            continue
        try:
            values[spec.attr] = spec.parse(text)
        except ValueError as exc:
            shown = "(value hidden)" if spec.secret else repr(text)
            problems.append({"setting": spec.name, "problem": f"{exc}; got {shown}"})
    in_azure = running_in_azure(env)
    problems.extend(_cross_checks(values, in_azure))
    if problems and strict:
        lines = "; ".join(f"{p['setting']}: {p['problem']}" for p in problems)
        raise SettingsError(f"invalid app settings: {lines}", errors=problems)
    attr_of = {spec.name: spec.attr for spec in specs()}
    for p in problems:
        attr = attr_of.get(p["setting"])
        if attr is not None and type(values.get(attr)) is not InvalidSetting:
            values[attr] = InvalidSetting(p["setting"], p["problem"])
    settings = Settings(**values)
    object.__setattr__(settings, "_problems", tuple(problems))
    object.__setattr__(settings, "_in_azure", in_azure)
    return settings


def settings_problems(settings: Settings) -> list[dict[str, Any]]:
    """Every bad setting of a leniently loaded Settings: [{"setting", "problem"}] (never a secret value)."""
    return list(object.__getattribute__(settings, "__dict__").get("_problems", ()))


def _cross_checks(v: Mapping[str, Any], in_azure: bool) -> list[dict[str, Any]]:
    """Rules that involve more than one setting, over the parsed values (a bad value is absent)."""
    out = []

    def missing(attr: str) -> bool:
        return attr in v and not v[attr]

    if v.get("warehouse") == "snowflake":
        for spec_name, attr in (("SNOWFLAKE_ACCOUNT", "snowflake_account"), ("SNOWFLAKE_USER", "snowflake_user")):
            if missing(attr):
                out.append({"setting": spec_name, "problem": "required when WAREHOUSE=snowflake"})
        if missing("snowflake_private_key") and missing("snowflake_password"):
            out.append(
                {
                    "setting": "SNOWFLAKE_PRIVATE_KEY",
                    "problem": "WAREHOUSE=snowflake needs SNOWFLAKE_PRIVATE_KEY or SNOWFLAKE_PASSWORD",
                }
            )
    elif v.get("warehouse") == "embedded" and in_azure:
        out.append(
            {
                "setting": "WAREHOUSE",
                "problem": "`embedded` is a local development warehouse (files on the instance disk, which is "
                "ephemeral in Azure): set WAREHOUSE=snowflake and the SNOWFLAKE_* settings",
            }
        )
    if v.get("servicenow_instance_url"):
        basic = bool(v.get("servicenow_username") and v.get("servicenow_password"))
        oauth = bool(v.get("servicenow_client_id") and v.get("servicenow_client_secret"))
        if not (basic or oauth):
            out.append(
                {
                    "setting": "SERVICENOW_INSTANCE_URL",
                    "problem": "set SERVICENOW_USERNAME/SERVICENOW_PASSWORD or SERVICENOW_CLIENT_ID/SERVICENOW_CLIENT_SECRET",
                }
            )
    identity = any(
        v.get(a)
        for a in (
            "azure_web_jobs_storage_account_name",
            "azure_web_jobs_storage_blob_service_uri",
            "azure_web_jobs_storage_queue_service_uri",
            "azure_web_jobs_storage_table_service_uri",
        )
    )
    conn = str(v.get("azure_web_jobs_storage", ""))
    if missing("azure_web_jobs_storage") and not identity:
        out.append(
            {"setting": "AzureWebJobsStorage", "problem": "set a connection string or AzureWebJobsStorage__accountName"}
        )
    elif in_azure and not identity and conn.replace(" ", "").lower() == "usedevelopmentstorage=true":
        out.append(
            {
                "setting": "AzureWebJobsStorage",
                "problem": "UseDevelopmentStorage=true (Azurite) in Azure: set AzureWebJobsStorage__accountName "
                "(identity-based) or a real connection string",
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
    """The process-wide settings, loaded once, leniently: never raises for a bad setting (reading that
    setting does, naming it). Call `reset_settings()` after changing the environment."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = load_settings(strict=False)
        return _cached


def reset_settings() -> None:
    global _cached
    with _lock:
        _cached = None
