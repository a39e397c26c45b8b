"""`git.push` -> Backstage refresh: the handler the shared Azure DevOps hook dispatches pushes to.

For a push to the repository's default branch: list the push's commits (`GET git/repositories/
{repo}/commits?pushId=`, the payload's own list when that is not possible), ask each
commit's changes (`commits/{id}/changes`), keep the catalog-info.yaml files, read each one at the
pushed head (`items?path=&versionDescriptor.version=<head>&includeContent=true`), compute its entity
refs and ask Backstage to refresh them. A new file (or one whose entities Backstage does not know)
is registered as a location. Transient failures raise, so the `ado-events` queue retries a bounded
number of times (host.json maxDequeueCount, then `ado-events-poison`); permanent ones (credentials,
a TF error, a broken YAML file) are reported in the log and by an alert, never retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.catalog.entities import (
    CatalogFileError,
    FileChange,
    PushedBranch,
    catalog_changes,
    default_branch_update,
    entity_refs,
    location_target,
)
from shared.devops.hooks import HookEvent, register
from shared.errors import TransientUpstreamError, UpstreamError, ValueFlowError

if TYPE_CHECKING:
    from shared.adapters.azure_devops import AzureDevOpsClient
    from shared.catalog.backstage import BackstageCatalog
    from shared.runtime import Runtime

log = logging.getLogger(__name__)

MAX_COMMITS = 100


@dataclass
class RefreshOutcome:
    refreshed: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        parts = []
        for name in ("refreshed", "registered", "unknown", "deleted", "errors"):
            values = getattr(self, name)
            if values:
                parts.append(f"{name}: {', '.join(values)[:500]}")
        return "; ".join(parts) or "no catalog file changed"


def push_commits(client: AzureDevOpsClient, push: PushedBranch) -> list[str]:
    """The push's commit ids, oldest first."""
    repo = push.repository_id
    if push.push_id is not None:
        doc = client.request(
            "GET",
            client.project_path(f"_apis/git/repositories/{repo}/commits"),
            params={"pushId": push.push_id, "top": MAX_COMMITS},
        )
        ids = [str(c["commitId"]) for c in (doc or {}).get("value") or [] if isinstance(c, dict) and c.get("commitId")]
        if ids:
            return list(reversed(ids))
    return list(reversed(push.commit_ids))[-MAX_COMMITS:]


def commit_changes(client: AzureDevOpsClient, repository_id: str, commit_id: str) -> list[dict[str, Any]]:
    doc = client.request(
        "GET", client.project_path(f"_apis/git/repositories/{repository_id}/commits/{commit_id}/changes")
    )
    return [c for c in (doc or {}).get("changes") or [] if isinstance(c, dict)]


def read_file(client: AzureDevOpsClient, repository_id: str, path: str, version: str) -> str:
    doc = client.request(
        "GET",
        client.project_path(f"_apis/git/repositories/{repository_id}/items"),
        params={
            "path": path,
            "versionDescriptor.version": version,
            "versionDescriptor.versionType": "commit",
            "includeContent": "true",
        },
    )
    content = (doc or {}).get("content")
    if not isinstance(content, str):
        raise UpstreamError(f"Azure DevOps returned no content for {path} at {version[:12]}")
    return content


def refresh_push(client: AzureDevOpsClient, catalog: BackstageCatalog, push: PushedBranch) -> RefreshOutcome:
    """Refresh (or register) the entities of every catalog file the push changed. Transient errors
    raise; a file that cannot be used is recorded in `errors` and the others still go on."""
    outcome = RefreshOutcome()
    changes = catalog_changes(commit_changes(client, push.repository_id, c) for c in push_commits(client, push))
    for change in changes:
        if change.change == "delete":
            outcome.deleted.append(change.path)
            continue
        try:
            _refresh_file(client, catalog, push, change, outcome)
        except TransientUpstreamError:
            raise
        except (CatalogFileError, ValueFlowError) as err:
            detail = err.detail if isinstance(err, ValueFlowError) else str(err)
            outcome.errors.append(f"{push.repository_name}:{change.path}: {detail}")
    return outcome


def _refresh_file(
    client: AzureDevOpsClient,
    catalog: BackstageCatalog,
    push: PushedBranch,
    change: FileChange,
    outcome: RefreshOutcome,
) -> None:
    refs = entity_refs(read_file(client, push.repository_id, change.path, push.head))
    missing = []
    for ref in refs:
        if catalog.refresh(ref):
            outcome.refreshed.append(ref)
        else:
            missing.append(ref)
    if change.added or missing:
        if not push.web_url:
            raise UpstreamError("the push names no repository URL to register the location from")
        target = location_target(push.web_url, change.path)
        result = catalog.register_location(target)
        outcome.registered.append(f"{target} ({result})")
        outcome.unknown.extend(r for r in missing if result == "exists")


@register("git.push")
def on_git_push(event: HookEvent, runtime: Runtime) -> str:
    settings = runtime.settings
    if not settings.backstage_url:
        return "ignored: BACKSTAGE_URL is not set"
    push = default_branch_update(event.resource)
    if push is None:
        return "ignored: not a push to the default branch"
    from shared.adapters.azure_devops import AzureDevOpsClient
    from shared.catalog.backstage import BackstageCatalog

    try:
        outcome = refresh_push(
            AzureDevOpsClient.from_settings(settings), BackstageCatalog.from_settings(settings), push
        )
    except TransientUpstreamError:
        raise  # the ado-events queue retries a few times, then poisons
    except ValueFlowError as err:
        outcome = RefreshOutcome(errors=[err.detail])
    if outcome.errors:
        log.error("catalog refresh failed for part of a push", extra={"event_id": event.id, "errors": outcome.errors})
        _alert(runtime, push, outcome.errors)
    return outcome.text()


def _alert(runtime: Runtime, push: PushedBranch, errors: list[str]) -> None:
    from shared.alerts.delivery import enqueue_alert
    from shared.alerts.model import Alert

    day = datetime.now(UTC).date().isoformat()
    try:
        enqueue_alert(
            runtime.storage,
            Alert(
                kind="delivery_failing",
                severity="warning",
                title=f"Backstage catalog refresh failed for {push.repository_name or push.repository_id}"[:300],
                resource_id=f"valueflow/catalog-refresh/{push.repository_id}",
                owner="",
                facts=tuple((f"Error {i + 1}", e[:500]) for i, e in enumerate(errors[:10])),
                links=(),
                dedupe_key=f"catalog-refresh-failing:{push.repository_id}:{day}",
                summary="The push was not retried: fix the file or the setting, then push again "
                "(or refresh the entity in Backstage).",
            ),
        )
    except ValueFlowError as err:
        log.error("could not raise the catalog-refresh alert: %s", err.detail)
