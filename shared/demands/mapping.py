"""Pure mapping between a ServiceNow demand and an Azure Boards work item, both ways. No I/O.

- demand -> JSON Patch of the work item (create, and the smallest update when a demand is re-sent);
- `workitem.updated` notification -> `WorkItemChange` -> the demand state to set and the work note;
- build / release notifications -> the audit work note.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.demands.model import Demand

TITLE = "System.Title"
DESCRIPTION = "System.Description"
TAGS = "System.Tags"
STATE = "System.State"
PRIORITY = "Microsoft.VSTS.Common.Priority"
SN_TAG_PREFIX = "SN:"
CC_TAG_PREFIX = "CC:"
HYPERLINK = "Hyperlink"


def sn_tag(number: str) -> str:
    return f"{SN_TAG_PREFIX}{number}"


def _tag_text(value: str) -> str:
    # Azure Boards splits tags on ';' and refuses ','; keep a cost center readable without them
    return re.sub(r"[;,]+", " ", value).strip()[:100]


def demand_tags(demand: Demand) -> list[str]:
    tags = [sn_tag(demand.number)]
    if demand.cost_center:
        tags.append(f"{CC_TAG_PREFIX}{_tag_text(demand.cost_center)}")
    return tags


def split_tags(value: Any) -> list[str]:
    """`System.Tags` ("a; b") as a list."""
    if not isinstance(value, str):
        return []
    return [t.strip() for t in value.split(";") if t.strip()]


def merge_tags(current: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """Keep people's tags; replace our SN:/CC: tags by the wanted ones."""
    wanted = list(wanted)
    ours = {t.split(":", 1)[0].upper() + ":" for t in wanted}
    kept = [t for t in current if not any(t.upper().startswith(p) for p in ours)]
    return kept + wanted


def boards_priority(priority: int | None) -> int | None:
    """ServiceNow 1 (critical) .. 5 (planning) -> Azure Boards 1 .. 4."""
    if priority is None:
        return None
    return min(priority, 4)


def as_html(text: str) -> str:
    """Plain text from ServiceNow as the HTML that Boards' rich-text fields hold."""
    return "<br>".join(html.escape(line) for line in text.splitlines())


def record_url(instance_url: str, table: str, sys_id: str) -> str:
    """The demand's form in ServiceNow (empty when the instance is not configured)."""
    if not instance_url:
        return ""
    return f"{instance_url.rstrip('/')}/nav_to.do?uri={table}.do%3Fsys_id%3D{sys_id}"


def _description(demand: Demand, criteria_field: str) -> str:
    parts = [as_html(demand.description)] if demand.description else []
    facts = [
        ("ServiceNow demand", demand.number),
        ("Requested by", demand.requested_by),
        ("Portfolio", demand.portfolio),
        ("Cost center", demand.cost_center),
    ]
    parts.append("<br>".join(f"<b>{k}:</b> {html.escape(v)}" for k, v in facts if v))
    if demand.acceptance_criteria and not criteria_field:
        parts.append("<b>Acceptance criteria</b><br>" + as_html(demand.acceptance_criteria))
    return "<br><br>".join(p for p in parts if p)


def desired_fields(demand: Demand, *, criteria_field: str) -> dict[str, Any]:
    """The work item fields a demand determines (tags apart)."""
    fields: dict[str, Any] = {TITLE: demand.title, DESCRIPTION: _description(demand, criteria_field)}
    priority = boards_priority(demand.priority)
    if priority is not None:
        fields[PRIORITY] = priority
    if criteria_field and demand.acceptance_criteria:
        fields[criteria_field] = as_html(demand.acceptance_criteria)
    return fields


def create_patch(demand: Demand, *, record_link: str, criteria_field: str) -> list[dict[str, Any]]:
    """JSON Patch for `POST wit/workitems/$<type>`: fields, tags and the hyperlink to the demand."""
    ops = [
        {"op": "add", "path": f"/fields/{k}", "value": v}
        for k, v in desired_fields(demand, criteria_field=criteria_field).items()
    ]
    ops.append({"op": "add", "path": f"/fields/{TAGS}", "value": "; ".join(demand_tags(demand))})
    if record_link:
        ops.append(_hyperlink(demand, record_link))
    return ops


def update_patch(
    demand: Demand, current: Mapping[str, Any], *, record_link: str, criteria_field: str
) -> list[dict[str, Any]]:
    """The smallest JSON Patch bringing an existing work item (`GET ...?$expand=relations`) in line with
    the demand; [] when nothing differs (no new revision, nothing for the hook to echo)."""
    fields = current.get("fields") or {}
    ops: list[dict[str, Any]] = []
    for name, value in desired_fields(demand, criteria_field=criteria_field).items():
        if fields.get(name) != value:
            ops.append({"op": "add", "path": f"/fields/{name}", "value": value})
    tags = merge_tags(split_tags(fields.get(TAGS)), demand_tags(demand))
    if sorted(t.lower() for t in tags) != sorted(t.lower() for t in split_tags(fields.get(TAGS))):
        ops.append({"op": "add", "path": f"/fields/{TAGS}", "value": "; ".join(tags)})
    relations = current.get("relations") or []
    if record_link and not any(r.get("rel") == HYPERLINK and r.get("url") == record_link for r in relations):
        ops.append(_hyperlink(demand, record_link))
    return ops


def _hyperlink(demand: Demand, url: str) -> dict[str, Any]:
    return {
        "op": "add",
        "path": "/relations/-",
        "value": {"rel": HYPERLINK, "url": url, "attributes": {"comment": f"ServiceNow demand {demand.number}"}},
    }


def work_item_web_url(org_url: str, project: str, work_item_id: int) -> str:
    from urllib.parse import quote

    return f"{org_url.rstrip('/')}/{quote(project, safe='')}/_workitems/edit/{work_item_id}"


def writeback_fields(
    demand: Demand, work_item_id: int, web_url: str, *, id_field: str, url_field: str, updated: bool
) -> dict[str, Any]:
    """The PATCH of the demand after a create or an update: id/URL fields (when configured) and a work note."""
    verb = "updated" if updated else "created"
    note = f"Azure Boards work item {work_item_id} {verb} for {demand.number}: {web_url}"
    fields: dict[str, Any] = {"work_notes": note}
    if id_field:
        fields[id_field] = str(work_item_id)
    if url_field:
        fields[url_field] = web_url
    return fields


# -- Azure DevOps -> ServiceNow --


@dataclass(frozen=True)
class WorkItemChange:
    """What one `workitem.updated` notification says (https://learn.microsoft.com/azure/devops/service-hooks/events#workitem.updated)."""

    work_item_id: int
    rev: int
    changed_by: str
    old_state: str
    new_state: str
    tags: tuple[str, ...]
    title: str
    work_item_type: str
    changed_fields: tuple[str, ...]

    @property
    def state_changed(self) -> bool:
        return bool(self.new_state) and self.new_state != self.old_state

    @property
    def demand_number(self) -> str:
        """The ServiceNow number of the `SN:` tag, or ''."""
        for tag in self.tags:
            if tag.upper().startswith(SN_TAG_PREFIX):
                return tag[len(SN_TAG_PREFIX) :].strip()
        return ""


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def work_item_change(resource: Mapping[str, Any]) -> WorkItemChange:
    """Read the `resource` of a `workitem.updated` event; ValueError names what is missing."""
    revision = _dict(resource.get("revision"))
    work_item_id = resource.get("workItemId") or revision.get("id")
    if not isinstance(work_item_id, int) or isinstance(work_item_id, bool):
        raise ValueError("resource.workItemId: missing (not a work item update)")
    rev = resource.get("rev") or revision.get("rev") or 0
    fields = _dict(resource.get("fields"))
    state = _dict(fields.get(STATE))
    current = _dict(revision.get("fields"))
    who = resource.get("revisedBy") or {}
    changed_by = (
        str(who.get("displayName") or who.get("uniqueName") or "someone") if isinstance(who, dict) else str(who)
    )
    return WorkItemChange(
        work_item_id=work_item_id,
        rev=int(rev) if isinstance(rev, int) else 0,
        changed_by=changed_by,
        old_state=str(state.get("oldValue") or ""),
        new_state=str(state.get("newValue") or current.get(STATE) or "") if state else "",
        tags=tuple(split_tags(current.get(TAGS))),
        title=str(current.get(TITLE) or ""),
        work_item_type=str(current.get("System.WorkItemType") or "Work item"),
        changed_fields=tuple(sorted(fields)),
    )


def map_state(state: str, state_map: Iterable[tuple[str, str]]) -> str | None:
    """The demand state for a work item state (case-insensitive), or None when the map has none."""
    for source, target in state_map:
        if source.lower() == state.lower():
            return target
    return None


def state_update(change: WorkItemChange, state_map: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The demand PATCH for a work item state change: `state` when mapped, always a work note."""
    target = map_state(change.new_state, state_map)
    note = (
        f"Azure Boards: {change.changed_by} moved {change.work_item_type} {change.work_item_id} "
        f"from {change.old_state or '(new)'} to {change.new_state}"
    )
    fields: dict[str, Any] = {}
    if target:
        fields["state"] = target
        note += f"; demand state set to {target}"
    else:
        note += " (no demand state is mapped to it)"
    fields["work_notes"] = note + "."
    return fields


def reconcile_state_update(work_item_id: int, boards_state: str, target: str) -> dict[str, Any]:
    return {
        "state": target,
        "work_notes": f"Reconciliation: Azure Boards work item {work_item_id} is {boards_state}; "
        f"demand state set to {target} (a notification was missed).",
    }


WORK_ITEM_PLACEHOLDER = "{work_item}"


def audit_note(event_type: str, resource: Mapping[str, Any], message: str) -> str:
    """The work note for a completed build or release deployment; the worker fills in the linked
    work item where `{work_item}` stands."""
    if event_type == "build.complete":
        definition = _dict(resource.get("definition")).get("name") or "build"
        what = f"Build {definition} {resource.get('buildNumber') or resource.get('id')}: {resource.get('result') or resource.get('status') or 'completed'}"
    else:
        deployment = _dict(resource.get("deployment"))
        environment = _dict(resource.get("environment") or deployment.get("releaseEnvironment"))
        release = _dict(resource.get("release") or deployment.get("release"))
        status = environment.get("status") or deployment.get("deploymentStatus") or "completed"
        what = f"Release {release.get('name') or '?'} to {environment.get('name') or '?'}: {status}"
    text = f"Azure DevOps audit (work item {WORK_ITEM_PLACEHOLDER}): {what}."
    if message:
        text += f" {message[:300]}"
    return text


def build_ids_of_release(resource: Mapping[str, Any]) -> list[int]:
    """Build ids among a release deployment's artifacts (their work items are the release's)."""
    release = _dict(resource.get("release") or _dict(resource.get("deployment")).get("release"))
    ids = []
    for artifact in _list(release.get("artifacts")):
        if not isinstance(artifact, dict) or artifact.get("type") != "Build":
            continue
        version = _dict(_dict(artifact.get("definitionReference")).get("version")).get("id")
        if isinstance(version, str) and version.isdigit():
            ids.append(int(version))
        elif isinstance(version, int):
            ids.append(version)
    return ids
