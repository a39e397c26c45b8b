"""Dependency checks shared by `GET /api/health` and `python -m shared.cli doctor`.

Each check returns a `DependencyCheck`: `ok`, `warn` (works, but not as it would in production,
e.g. the local outbox instead of Teams), `fail` (broken) or `skipped`. Details never carry secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from shared.alerts.outbox import describe_outbox
from shared.errors import SettingsError, ValueFlowError
from shared.settings import Settings, is_loopback_host, settings_problems


@dataclass(frozen=True)
class DependencyCheck:
    name: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def check_storage(runtime: Any) -> DependencyCheck:
    try:
        runtime.storage.ping()
    except ValueFlowError as err:
        return DependencyCheck("storage", "fail", err.detail)
    where = (
        f"account {runtime.settings.azure_web_jobs_storage_account_name} (managed identity)"
        if runtime.settings.storage_identity_based()
        else "connection string"
    )
    return DependencyCheck("storage", "ok", f"tables, queues and blobs reachable via {where}")


def check_warehouse(runtime: Any) -> DependencyCheck:
    try:
        answer = runtime.warehouse.ping()
    except ValueFlowError as err:
        return DependencyCheck("warehouse", "fail", err.detail)
    return DependencyCheck("warehouse", "ok" if answer == "ok" else "fail", runtime.warehouse.describe())


def check_servicenow_config(settings: Settings) -> DependencyCheck:
    if not settings.servicenow_instance_url:
        return DependencyCheck(
            "servicenow",
            "warn",
            f"not configured (SERVICENOW_INSTANCE_URL empty): incidents {describe_outbox(settings)}",
        )
    auth = "OAuth client credentials" if settings.servicenow_client_id else "basic auth"
    host = urlparse(settings.servicenow_instance_url).hostname
    return DependencyCheck("servicenow", "ok", f"instance {host} with {auth}")


def check_teams_config(settings: Settings) -> DependencyCheck:
    if not settings.teams_default_webhook_url and not settings.alert_routes:
        return DependencyCheck(
            "teams",
            "warn",
            f"not configured (TEAMS_DEFAULT_WEBHOOK_URL and ALERT_ROUTES empty): cards {describe_outbox(settings)}",
        )
    if not settings.teams_default_webhook_url:
        return DependencyCheck(
            "teams",
            "warn",
            f"squad routes configured, no TEAMS_DEFAULT_WEBHOOK_URL: cards of unrouted alerts {describe_outbox(settings)}",
        )
    return DependencyCheck("teams", "ok", "default webhook configured, and squad routes if any (URLs not shown)")


def check_settings(settings: Settings) -> list[DependencyCheck]:
    """One `fail` per bad or unresolved app setting (named, value never shown), or one `ok`.

    The functions that read a bad setting fail their invocations naming it; the others work."""
    problems = settings_problems(settings)
    if not problems:
        where = "in Azure" if settings.in_azure() else "locally"
        return [DependencyCheck("settings", "ok", f"every app setting is valid (running {where})")]
    return [DependencyCheck(f"setting {p['setting']}", "fail", p["problem"]) for p in problems]


def _guarded(check: Callable[[Any], DependencyCheck], arg: Any) -> DependencyCheck:
    """A check that needs a bad setting reports it instead of failing the whole health answer."""
    try:
        return check(arg)
    except SettingsError as err:
        name = check.__name__.removeprefix("check_").removesuffix("_config").replace("_", " ")
        return DependencyCheck(name, "fail", err.detail)


# checks that need live services; capabilities append their own (name, function) pairs
LIVE_CHECKS: list[Callable[[Any], DependencyCheck]] = [check_storage, check_warehouse]
CONFIG_CHECKS: list[Callable[[Settings], DependencyCheck]] = [check_servicenow_config, check_teams_config]


def run_checks(runtime: Any) -> list[DependencyCheck]:
    out = check_settings(runtime.settings)
    out += [_guarded(check, runtime) for check in LIVE_CHECKS]
    out += [_guarded(check, runtime.settings) for check in CONFIG_CHECKS]
    return out


def overall(checks: list[DependencyCheck]) -> str:
    if any(c.status == "fail" for c in checks):
        return "unhealthy"
    if any(c.status == "warn" for c in checks):
        return "degraded"
    return "healthy"


def check_alert_routes(settings: Settings) -> DependencyCheck:
    """ALERT_ROUTES (+ TEAMS_DEFAULT_WEBHOOK_URL) parse and every webhook host is allowed (URLs never shown)."""
    from shared.alerts.routing import load_routes

    try:
        routes = load_routes(settings)
    except ValueFlowError as err:
        return DependencyCheck("alert routes", "fail", err.detail)
    return DependencyCheck("alert routes", "ok", f"{len(routes.squads)} squad route(s) and a default route")


CONFIG_CHECKS.append(check_alert_routes)


def check_policy_remediation(runtime: Any) -> DependencyCheck:
    """Policy remediation: mode, ARM credential, and work items stuck in policy-work-poison."""
    from shared.policy.worker import POISON_QUEUE

    s = runtime.settings
    loopback = is_loopback_host(urlparse(s.arm_endpoint).hostname)
    cred = "static dev credential (loopback)" if loopback else "DefaultAzureCredential"
    try:
        poisoned = runtime.storage.queue_length(POISON_QUEUE)
    except ValueFlowError as err:
        return DependencyCheck("policy", "fail", err.detail)
    detail = f"REMEDIATION_MODE={s.remediation_mode}, ARM {s.arm_endpoint} with {cred}, {poisoned} poison work item(s)"
    return DependencyCheck("policy", "warn" if poisoned else "ok", detail)


LIVE_CHECKS.append(check_policy_remediation)
