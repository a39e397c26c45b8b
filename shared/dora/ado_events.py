"""DORA's handlers on the shared Azure DevOps service-hook endpoint (loaded by shared/devops/handlers.py).

A finished stage, run or classic release deployment becomes a row of DEPLOYS (MERGE by a stable id,
so a retried or duplicated event rewrites the same row); the commit time is looked up in Azure Repos
when the event does not carry it and AZURE_DEVOPS_ORG_URL is set.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING

from shared.devops.hooks import HookEvent, register
from shared.dora.azure_pipelines import RELEASE_EVENT, RUN_EVENT, STAGE_EVENT, deployment_from_event, with_commit_time
from shared.errors import SettingsError, UpstreamAuthError

if TYPE_CHECKING:
    from shared.adapters.azure_devops import AzureDevOpsClient
    from shared.runtime import Runtime
    from shared.settings import Settings

log = logging.getLogger(__name__)
_clients: dict[str, AzureDevOpsClient] = {}
_clients_lock = threading.Lock()


def devops_client(settings: Settings) -> AzureDevOpsClient:
    """One client (and HTTP session, token cache) per process and organization settings."""
    from shared.adapters.azure_devops import AzureDevOpsClient

    key = hashlib.sha256(
        f"{settings.azure_devops_org_url}|{settings.azure_devops_project}|{settings.azure_devops_pat}".encode()
    ).hexdigest()
    with _clients_lock:
        if key not in _clients:
            _clients[key] = AzureDevOpsClient.from_settings(settings)
        return _clients[key]


@register(STAGE_EVENT)
@register(RUN_EVENT)
@register(RELEASE_EVENT)
def on_deployment_event(event: HookEvent, runtime: Runtime) -> str:
    from shared.dora.service import write

    settings = runtime.settings
    deploy = deployment_from_event(
        event.event_type,
        event.id,
        event.created_date,
        event.resource,
        event.project_id,
        settings.dora_production_environments,
    )
    if deploy is None:
        return "not a finished deployment"
    if settings.azure_devops_org_url:
        try:
            deploy = with_commit_time(devops_client(settings), deploy)
        except (UpstreamAuthError, SettingsError) as exc:
            # a configuration problem must not lose the deployment: kept without lead time, logged
            log.warning("commit time of %s not looked up: %s", deploy.id, exc.detail)
    write(runtime, deploys=[deploy])
    return f"deployment {deploy.id} ({deploy.environment}, {deploy.result})"
