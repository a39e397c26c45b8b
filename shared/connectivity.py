"""Read-only connectivity checks for `doctor`: each one talks to the real service and changes nothing.

- storage: the tables endpoint answers (and, on the local emulator, the ports are open: else "start Azurite
  with `make run`");
- warehouse: connect, `SELECT 1`, and which migrations are applied or pending;
- ServiceNow: an authenticated `GET /api/now/table/incident?sysparm_limit=1` (the integration user's read);
- ARM: acquire a token and read one subscription;
- Teams: webhook URLs' shape and allow-list only (never posts: a test card would land in a channel);
- review links: whether a secret signs them.

Each returns a `DependencyCheck` (shared.health); details never carry secrets.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ValueFlowError
from shared.health import DependencyCheck
from shared.settings import Settings, is_loopback_host


def local_storage_endpoints(settings: Settings) -> list[tuple[str, int]] | None:
    """(host, port) of each local emulator endpoint the connection string names; None when not local."""
    if settings.storage_identity_based():
        return None
    conn = settings.azure_web_jobs_storage.replace(" ", "")
    if conn.lower() == "usedevelopmentstorage=true":
        return [("127.0.0.1", int(p)) for p in settings.azurite_ports]
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    out = []
    for key in ("BlobEndpoint", "QueueEndpoint", "TableEndpoint"):
        url = urlsplit(parts.get(key, ""))
        if url.hostname and is_loopback_host(url.hostname):
            out.append((url.hostname, url.port or 80))
    return out or None


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_storage_live(runtime: Any) -> DependencyCheck:
    endpoints = local_storage_endpoints(runtime.settings)
    if endpoints:
        down = [f"{h}:{p}" for h, p in endpoints if not port_answers(h, p)]
        if down:
            return DependencyCheck(
                "storage",
                "fail",
                f"the local emulator is down (nothing on {', '.join(down)}): start Azurite with `make run`",
            )
    try:
        runtime.storage.ping()
    except ValueFlowError as err:
        return DependencyCheck("storage", "fail", err.detail)
    where = (
        "Azurite (local emulator)"
        if endpoints
        else (
            f"account {runtime.settings.azure_web_jobs_storage_account_name} (managed identity)"
            if runtime.settings.storage_identity_based()
            else "connection string"
        )
    )
    return DependencyCheck("storage", "ok", f"tables, queues and blobs reachable via {where}")


def check_warehouse_live(runtime: Any) -> DependencyCheck:
    from shared.adapters.warehouse import MIGRATIONS_DIR

    wh = runtime.warehouse_unmigrated
    try:
        with wh.session() as session:
            rows = session.query("SELECT 1 AS OK")
            if not rows or rows[0].get("OK") != 1:
                return DependencyCheck("warehouse", "fail", f"{wh.describe()}: SELECT 1 gave {rows!r}")
            try:
                done = {r["NAME"] for r in session.query("SELECT NAME FROM VALUEFLOW_MIGRATIONS")}
            except ValueFlowError:
                done = set()
    except ValueFlowError as err:
        return DependencyCheck("warehouse", "fail", err.detail)
    files = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    pending = [f for f in files if f not in done]
    if pending:
        return DependencyCheck(
            "warehouse",
            "warn",
            f"{wh.describe()}: SELECT 1 ok; {len(pending)} migration(s) pending ({', '.join(pending)}): they run at "
            "the next start and need CREATE TABLE on the schema",
        )
    return DependencyCheck("warehouse", "ok", f"{wh.describe()}: SELECT 1 ok; all {len(files)} migrations applied")


def check_servicenow_live(runtime: Any) -> DependencyCheck:
    s = runtime.settings
    if not s.servicenow_instance_url:
        return DependencyCheck("servicenow", "warn", f"not configured: incidents go to the outbox {s.outbox_dir}")
    from shared.adapters.servicenow import INCIDENT_PATH, ServiceNowClient

    client = ServiceNowClient.from_settings(s)
    host = urlsplit(s.servicenow_instance_url).hostname
    auth = "OAuth client credentials" if client.uses_oauth else "basic auth"
    try:
        doc = client._request("GET", INCIDENT_PATH, params={"sysparm_limit": "1", "sysparm_fields": "sys_id"})
    except ValueFlowError as err:
        return DependencyCheck("servicenow", "fail", f"instance {host} with {auth}: {err.detail}")
    if not isinstance(doc.get("result"), list):
        return DependencyCheck("servicenow", "fail", f"instance {host}: the incident table answered without `result`")
    return DependencyCheck("servicenow", "ok", f"instance {host} with {auth}: incident table readable")


def check_arm_live(runtime: Any, arm_factory: Callable[[Settings], Any] | None = None) -> DependencyCheck:
    from shared.adapters.arm import Arm

    s = runtime.settings
    if s.arm_dev_fake:
        return DependencyCheck(
            "arm", "ok", "VALUEFLOW_FAKE_ARM=true: `make run` answers ARM calls with the dev fake ARM"
        )
    loopback = is_loopback_host(urlsplit(s.arm_endpoint).hostname)
    cred = "static dev credential (loopback)" if loopback else "DefaultAzureCredential"
    arm = (arm_factory or (lambda st: Arm.from_settings(st, max_attempts=1, max_wait=0.0, timeout=10.0)))(s)
    subscription = next(
        (scope.split("/")[2] for scope in s.cost_query_scopes if scope.lower().startswith("/subscriptions/")), ""
    )
    try:
        detail = arm.check_access(subscription)
    except ValueFlowError as err:
        # on a developer machine the policy path is optional: say how to run it, do not fail the whole doctor
        status = "warn" if local_storage_endpoints(s) and not loopback else "fail"
        return DependencyCheck("arm", status, f"{s.arm_endpoint} with {cred}: {err.detail}")
    return DependencyCheck("arm", "ok", f"{s.arm_endpoint} with {cred}: {detail}")


def check_teams_shape(runtime: Any) -> DependencyCheck:
    from shared.alerts.cards import is_legacy_webhook
    from shared.alerts.routing import load_routes

    s = runtime.settings
    try:
        routes = load_routes(s)  # parses ALERT_ROUTES and checks every URL against TEAMS_WEBHOOK_ALLOWED_HOSTS
    except ValueFlowError as err:
        return DependencyCheck("teams", "fail", err.detail)
    urls = [r.teams_webhook_url for r in (routes.default, *routes.squads.values()) if r.teams_webhook_url]
    if not urls:
        return DependencyCheck("teams", "warn", f"no webhook configured: cards go to the outbox {s.outbox_dir}")
    legacy = sum(1 for u in urls if is_legacy_webhook(u))
    detail = (
        f"{len(urls)} webhook URL(s) well formed and allowed, {len(routes.squads)} squad route(s); "
        "not posted to (a test card would reach a channel)"
    )
    if legacy:
        return DependencyCheck(
            "teams", "warn", f"{detail}; {legacy} are retired Office 365 connector URLs: create Workflows webhooks"
        )
    return DependencyCheck("teams", "ok", detail)


def check_review_links(runtime: Any) -> DependencyCheck:
    from shared.review.service import base_url, is_local_emulator

    s = runtime.settings
    if s.review_link_secret:
        return DependencyCheck("review", "ok", f"signed review links on cost cards, base {base_url(s)}")
    if is_local_emulator(s):
        return DependencyCheck("review", "ok", f"review links signed with a generated local secret, base {base_url(s)}")
    return DependencyCheck("review", "warn", "REVIEW_LINK_SECRET is not set: cost cards have no Review button")


def check_policy_queue(runtime: Any) -> DependencyCheck:
    """Remediation mode and work items parked or poisoned in policy-work-poison (shared with /api/health)."""
    from shared.health import check_policy_remediation

    return check_policy_remediation(runtime)


DOCTOR_CHECKS: list[Callable[[Any], DependencyCheck]] = [
    check_storage_live,
    check_warehouse_live,
    check_servicenow_live,
    check_arm_live,
    check_teams_shape,
    check_review_links,
    check_policy_queue,
]


def run_doctor_checks(runtime: Any) -> list[DependencyCheck]:
    out = []
    for check in DOCTOR_CHECKS:
        try:
            out.append(check(runtime))
        except Exception as exc:  # one broken check must not hide the others
            out.append(DependencyCheck(check.__name__.removeprefix("check_"), "fail", f"{type(exc).__name__}: {exc}"))
    return out
