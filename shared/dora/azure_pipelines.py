"""Deployments from Azure Pipelines: service-hook events and past runs (backfill) as `Deployment`s.

Events (https://learn.microsoft.com/azure/devops/service-hooks/events), read defensively:
- `ms.vss-pipelines.stage-state-changed-event` (YAML): a completed stage named after a production
  environment (`Production`, `Deploy_Prod`...) or with `deploy`/`release` in its name is a deployment to
  the environment the stage names; build and test stages are skipped;
- `ms.vss-pipelines.run-state-changed-event` (YAML): a completed run is a deployment only when the run
  declares its environment (template parameter or variable `environment`); stage events carry the rest;
- `ms.vss-release.deployment-completed-event` (classic release): the release environment's deployment.
Ids are stable across event, retry and backfill: `ado:<project>:run:<runId>:stage:<stage>`,
`ado:<project>:run:<runId>`, `ado:<project>:release-deployment:<deploymentId>` (or
`release-environment:<id>` when the payload has no `deployment`).

The mapping is pure; `commit_time()` and `backfill_deployments()` call Azure DevOps through
`AzureDevOpsClient.request()` (commits API, builds API, build timeline).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from shared.adapters.azure_devops import AzureDevOpsClient
from shared.dora.model import Deployment, parse_instant, utc
from shared.errors import UpstreamAuthError, UpstreamError

log = logging.getLogger(__name__)

# a stage that is a deployment: named after a production environment, or `deploy`/`release` in its name
_DEPLOY_STAGE = re.compile(r"deploy|release", re.IGNORECASE)

STAGE_EVENT = "ms.vss-pipelines.stage-state-changed-event"
RUN_EVENT = "ms.vss-pipelines.run-state-changed-event"
RELEASE_EVENT = "ms.vss-release.deployment-completed-event"

_RESULTS = {
    "succeeded": "succeeded",
    "partiallysucceeded": "succeeded",
    "succeededwithissues": "succeeded",
    "failed": "failed",
    "rejected": "failed",
    "canceled": "canceled",
    "cancelled": "canceled",
    "notdeployed": "canceled",
}


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


def _result(value: Any) -> str:
    return _RESULTS.get(str(value or "").replace(" ", "").lower(), "")


def _environment(names: Iterable[Any], production: Iterable[str]) -> str:
    """The first name that is a production environment, else the first name (lower-case)."""
    clean = [str(n).strip() for n in names if isinstance(n, str) and n.strip()]
    prod = {p.strip().lower() for p in production}
    for name in clean:
        lowered = name.lower()
        if lowered in prod:
            return lowered
        for p in prod:  # `Deploy_Production`, `prod-westeurope`: a stage named after the environment
            if lowered.replace("-", "_").split("_").count(p):
                return p
    return clean[0].lower() if clean else ""


def _repository(resource: dict[str, Any]) -> tuple[str, str, datetime | None]:
    """(repository id or name, commit id, commit time) of the run's own repository, as far as the event says.

    `run.resources.repositories.self` names the repository and commit; `repositories[].change` (the
    pipeline events' list, first Git repository = the pipeline's own) carries the committer date."""
    self_repo = _get(resource, "run", "resources", "repositories", "self") or {}
    repo_id = str(_get(self_repo, "repository", "id") or "")
    commit = str(self_repo.get("version") or "")
    committed: datetime | None = None
    for repo in resource.get("repositories") or []:
        if not isinstance(repo, dict):
            continue
        change = repo.get("change") or {}
        commit = commit or str(change.get("version") or "")
        committed = _time(_get(change, "committer", "date")) or _time(_get(change, "author", "date"))
        url = str(repo.get("url") or "")
        if not repo_id and "/_git/" in url:
            repo_id = url.rsplit("/_git/", 1)[1].split("/")[0].split("?")[0]
        repo_id = repo_id or str(repo.get("id") or "")
        break
    return repo_id, commit, committed


def deployment_from_event(
    event_type: str, event_id: str, created: str, resource: dict[str, Any], project_id: str, production: Iterable[str]
) -> Deployment | None:
    """The deployment an Azure DevOps event reports, or None when it is not a finished deployment."""
    production = tuple(production)
    if event_type == STAGE_EVENT:
        return _from_stage(event_id, created, resource, project_id, production)
    if event_type == RUN_EVENT:
        return _from_run(event_id, created, resource, project_id, production)
    if event_type == RELEASE_EVENT:
        return _from_release(event_id, created, resource, project_id)
    return None


def _pipeline(resource: dict[str, Any]) -> tuple[str, str]:
    pipeline = resource.get("pipeline") or _get(resource, "run", "pipeline") or {}
    return str(pipeline.get("name") or ""), str(pipeline.get("id") or "")


def _project(resource: dict[str, Any], project_id: str) -> str:
    return project_id or str(_get(resource, "project", "id") or _get(resource, "run", "project", "id") or "")


def _from_stage(
    event_id: str, created: str, resource: dict[str, Any], project_id: str, production: tuple[str, ...]
) -> Deployment | None:
    stage = resource.get("stage") or {}
    run = resource.get("run") or {}
    if str(stage.get("state", "")).lower() != "completed":
        return None
    result = _result(stage.get("result"))
    name = str(stage.get("name") or stage.get("displayName") or "")
    environment = _environment([stage.get("name"), stage.get("displayName")], production)
    if environment not in {p.lower() for p in production} and not _DEPLOY_STAGE.search(name):
        return None  # build and test stages are not deployments
    run_id = str(run.get("id") or resource.get("runId") or "")
    finished = _time(stage.get("finishTime")) or _time(created)
    if not (result and name and run_id and finished):
        return None
    pipeline, pipeline_id = _pipeline(resource)
    repo, commit, committed = _repository(resource)
    project = _project(resource, project_id)
    return Deployment(
        id=f"ado:{project}:run:{run_id}:stage:{name}",
        service=pipeline or pipeline_id or "unknown",
        environment=environment,
        result=result,
        finished_at=finished,
        started_at=_time(stage.get("startTime")) or _time(run.get("createdDate")),
        commit_id=commit,
        commit_time=committed,
        pipeline=pipeline,
        run_id=run_id,
        url=str(_get(run, "_links", "web", "href") or resource.get("stageUrl") or resource.get("runUrl") or ""),
        requested_by=str(_get(run, "requestedFor", "displayName") or ""),
        source="azure-pipelines",
        extra={"adoEventId": event_id, "projectId": project, "repositoryId": repo, "stage": name},
    )


def _from_run(
    event_id: str, created: str, resource: dict[str, Any], project_id: str, production: tuple[str, ...]
) -> Deployment | None:
    run = resource.get("run") or {}
    if str(run.get("state", "")).lower() != "completed":
        return None
    declared = _get(run, "templateParameters", "environment") or _get(run, "variables", "environment", "value")
    result = _result(run.get("result"))
    run_id = str(run.get("id") or "")
    finished = _time(run.get("finishedDate")) or _time(created)
    if not (declared and result and run_id and finished):
        return None
    pipeline, pipeline_id = _pipeline(resource)
    repo, commit, committed = _repository(resource)
    project = _project(resource, project_id)
    return Deployment(
        id=f"ado:{project}:run:{run_id}",
        service=pipeline or pipeline_id or "unknown",
        environment=_environment([declared], production),
        result=result,
        finished_at=finished,
        started_at=_time(run.get("createdDate")),
        commit_id=commit,
        commit_time=committed,
        pipeline=pipeline,
        run_id=run_id,
        url=str(_get(run, "_links", "web", "href") or run.get("url") or ""),
        requested_by=str(_get(run, "requestedFor", "displayName") or ""),
        source="azure-pipelines",
        extra={"adoEventId": event_id, "projectId": project, "repositoryId": repo},
    )


def _from_release(event_id: str, created: str, resource: dict[str, Any], project_id: str) -> Deployment | None:
    """`deployment` (id, status, times, artifacts) when the payload has it; the documented minimal payload has
    only `environment` (the release environment: id, name, status, modifiedOn, release)."""
    deployment = resource.get("deployment") or {}
    environment = resource.get("environment") or {}
    result = _result(deployment.get("deploymentStatus") or environment.get("status"))
    if deployment.get("id"):
        deploy_key = f"release-deployment:{deployment['id']}"
    elif environment.get("id"):
        deploy_key = f"release-environment:{environment['id']}"  # one per release and stage; a redeploy updates it
    else:
        deploy_key = ""
    finished = _time(deployment.get("completedOn")) or _time(environment.get("modifiedOn")) or _time(created)
    env_name = str(_get(deployment, "releaseEnvironment", "name") or environment.get("name") or "")
    if not (result and deploy_key and finished and env_name):
        return None
    definition = str(
        _get(deployment, "releaseDefinition", "name")
        or _get(environment, "releaseDefinition", "name")
        or _get(resource, "release", "releaseDefinition", "name")
        or ""
    )
    release = deployment.get("release") or resource.get("release") or environment.get("release") or {}
    commit, repo = "", ""
    for artifact in release.get("artifacts") or []:
        ref = (artifact or {}).get("definitionReference") or {}
        commit = str(_get(ref, "sourceVersion", "id") or "")
        repo = str(_get(ref, "repository", "id") or "")
        if commit and (artifact or {}).get("isPrimary", True):
            break
    project = _project(resource, project_id)
    return Deployment(
        id=f"ado:{project}:{deploy_key}",
        service=definition or "unknown",
        environment=env_name.lower(),
        result=result,
        finished_at=finished,
        started_at=_time(deployment.get("startedOn")) or _time(deployment.get("queuedOn")),
        commit_id=commit,
        pipeline=definition,
        run_id=str(release.get("name") or release.get("id") or ""),
        url=str(release.get("webAccessUri") or _get(release, "_links", "web", "href") or ""),
        requested_by=str(_get(deployment, "requestedFor", "displayName") or ""),
        source="azure-pipelines-release",
        extra={"adoEventId": event_id, "projectId": project, "repositoryId": repo},
    )


# -- REST: commit time and past runs --


def commit_time(client: AzureDevOpsClient, repository: str, commit_id: str, project: str = "") -> datetime | None:
    """The committer date of a commit (Azure Repos commits API); None when Azure DevOps does not know it."""
    if not repository or not commit_id:
        return None
    path = f"/{quote(project, safe='')}/_apis/git/repositories/{quote(repository, safe='')}/commits/{quote(commit_id, safe='')}"
    if not project:
        path = client.project_path(
            f"_apis/git/repositories/{quote(repository, safe='')}/commits/{quote(commit_id, safe='')}"
        )
    try:
        doc = client.request("GET", path)
    except UpstreamAuthError:
        raise
    except UpstreamError as exc:  # 404 / TF401... : the commit or repository is not there (deleted, renamed)
        if "answered 4" in exc.detail:
            log.warning("commit time unknown: %s", exc.detail)
            return None
        raise
    stamp = _get(doc, "committer", "date") or _get(doc, "author", "date")
    return _time(stamp)


def with_commit_time(client: AzureDevOpsClient | None, deploy: Deployment) -> Deployment:
    """The deployment with `commit_time` looked up when the event did not carry it."""
    if client is None or deploy.commit_time is not None or not deploy.commit_id:
        return deploy
    repo = str(deploy.extra.get("repositoryId") or "")
    project = str(deploy.extra.get("projectId") or "")
    found = commit_time(client, repo, deploy.commit_id, project)
    return replace(deploy, commit_time=found) if found else deploy


def _paged(client: AzureDevOpsClient, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every `value` item of a list API, following `continuationToken` (builds list puts it in the body too)."""
    token = ""
    for _ in range(1000):
        query = dict(params)
        if token:
            query["continuationToken"] = token
        doc = client.request("GET", path, params=query) or {}
        yield from doc.get("value") or []
        token = str(doc.get("continuationToken") or "")
        if not token:
            return


def backfill_deployments(
    client: AzureDevOpsClient, since: datetime, production: Iterable[str], *, limit: int = 100_000
) -> Iterator[Deployment]:
    """Deployments of past pipeline runs finished since `since`: completed builds, then their stage
    records (build timeline). Ids match the stage events', so a backfill and the hooks never double count."""
    production = tuple(production)
    params = {
        "minTime": utc(since).isoformat() + "Z",
        "statusFilter": "completed",
        "queryOrder": "finishTimeAscending",
        "$top": 500,
    }
    seen = 0
    for build in _paged(client, client.project_path("_apis/build/builds"), params):
        seen += 1
        if seen > limit:
            return
        build_id = str(build.get("id") or "")
        project = str(_get(build, "project", "id") or "")
        timeline = client.request("GET", client.project_path(f"_apis/build/builds/{build_id}/timeline")) or {}
        for record in timeline.get("records") or []:
            if not isinstance(record, dict) or str(record.get("type", "")).lower() != "stage":
                continue
            name = str(record.get("identifier") or record.get("name") or "")
            resource = {
                "stage": {
                    "name": name,
                    "displayName": record.get("name"),
                    "state": record.get("state"),
                    "result": record.get("result"),
                    "startTime": record.get("startTime"),
                    "finishTime": record.get("finishTime"),
                },
                "run": {
                    "id": build.get("id"),
                    "createdDate": build.get("startTime"),
                    "resources": {
                        "repositories": {
                            "self": {
                                "repository": {"id": _get(build, "repository", "id")},
                                "version": build.get("sourceVersion"),
                            }
                        }
                    },
                    "_links": build.get("_links") or {},
                    "requestedFor": build.get("requestedFor") or {},
                },
                "pipeline": {"id": _get(build, "definition", "id"), "name": _get(build, "definition", "name")},
            }
            deploy = _from_stage(
                f"backfill:{build_id}", str(build.get("finishTime") or ""), resource, project, production
            )
            if deploy is not None:
                yield replace(deploy, source="azure-pipelines-backfill")
