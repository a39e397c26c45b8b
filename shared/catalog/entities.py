"""Pure: which catalog files a push changed, and the entity refs a catalog-info.yaml declares. No I/O.

Entity refs follow Backstage's canonical form `kind:namespace/name`, all lower case, namespace
`default` when the document has none (what `stringifyEntityRef` produces).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

CATALOG_FILE_NAMES = ("catalog-info.yaml", "catalog-info.yml")
ZERO_OBJECT = "0" * 40


class CatalogFileError(ValueError):
    """A catalog file that cannot be read as Backstage entities (the message names the document)."""


@dataclass(frozen=True)
class FileChange:
    path: str
    change: str  # "add", "edit", "delete" (renames count as add of the new path)

    @property
    def added(self) -> bool:
        return self.change == "add"


def is_catalog_file(path: str) -> bool:
    return posixpath.basename(path).lower() in CATALOG_FILE_NAMES


def catalog_changes(changes_per_commit: Iterable[Iterable[Mapping[str, Any]]]) -> list[FileChange]:
    """Net change per catalog file over a push's commits (oldest first), from the `changes` of
    `GET git/repositories/{repo}/commits/{id}/changes`."""
    net: dict[str, str] = {}
    for changes in changes_per_commit:
        for change in changes:
            item = change.get("item") or {}
            path = str(item.get("path") or "")
            if not path or item.get("isFolder") or item.get("gitObjectType") == "tree" or not is_catalog_file(path):
                continue
            kinds = {k.strip().lower() for k in str(change.get("changeType") or "edit").split(",")}
            before = net.get(path)
            if "delete" in kinds:
                net[path] = "delete" if before != "add" else "gone"
            elif "add" in kinds or "rename" in kinds or "undelete" in kinds:
                net[path] = "add" if before in (None, "add") else "edit"
            else:
                net[path] = before if before in ("add",) else "edit"
    return [FileChange(p, c) for p, c in sorted(net.items()) if c != "gone"]


def entity_refs(text: str) -> list[str]:
    """The entity refs of every document of a catalog file, in order, without duplicates."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CatalogFileError(f"not valid YAML{where}") from None
    refs: list[str] = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise CatalogFileError(f"document {index}: expected a mapping with kind and metadata")
        kind = doc.get("kind")
        raw_metadata = doc.get("metadata")
        metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        name = metadata.get("name")
        namespace = metadata.get("namespace") or "default"
        if not isinstance(kind, str) or not kind.strip():
            raise CatalogFileError(f"document {index}: kind is missing")
        if not isinstance(name, str) or not name.strip():
            raise CatalogFileError(f"document {index} ({kind}): metadata.name is missing")
        if not isinstance(namespace, str):
            raise CatalogFileError(f"document {index} ({kind}:{name}): metadata.namespace must be a string")
        ref = f"{kind.strip().lower()}:{namespace.strip().lower()}/{name.strip().lower()}"
        if ref not in refs:
            refs.append(ref)
    return refs


@dataclass(frozen=True)
class PushedBranch:
    repository_id: str
    repository_name: str
    web_url: str
    branch: str
    head: str
    push_id: int | None
    commit_ids: tuple[str, ...]


def default_branch_update(resource: Mapping[str, Any]) -> PushedBranch | None:
    """The push's update of the repository's default branch (what Backstage reads), or None."""
    repo = resource.get("repository")
    updates = resource.get("refUpdates")
    if not isinstance(repo, dict) or not isinstance(updates, list):
        return None
    default = str(repo.get("defaultBranch") or "")
    for update in updates:
        if not isinstance(update, dict):
            continue
        name = str(update.get("name") or "")
        head = str(update.get("newObjectId") or "")
        if not name.startswith("refs/heads/") or not head or head == ZERO_OBJECT:
            continue
        if default and name != default:
            continue
        listed = resource.get("commits")
        commits = tuple(
            str(c["commitId"])
            for c in (listed if isinstance(listed, list) else [])
            if isinstance(c, dict) and c.get("commitId")
        )
        push_id = resource.get("pushId")
        return PushedBranch(
            repository_id=str(repo.get("id") or ""),
            repository_name=str(repo.get("name") or ""),
            web_url=_web_url(repo),
            branch=name[len("refs/heads/") :],
            head=head,
            push_id=push_id if isinstance(push_id, int) else None,
            commit_ids=commits,
        )
    return None


def _web_url(repo: Mapping[str, Any]) -> str:
    url = str(repo.get("webUrl") or repo.get("remoteUrl") or "")
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def location_target(web_url: str, path: str) -> str:
    """The URL Backstage's Azure DevOps integration reads a file from (default branch)."""
    return f"{web_url}?path={quote(path, safe='/')}"
