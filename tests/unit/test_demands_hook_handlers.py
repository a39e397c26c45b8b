"""The demand and catalog hook handlers read any notification without crashing, and queue only what is theirs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.catalog.entities import default_branch_update
from shared.catalog.refresh import on_git_push
from shared.demands.ado_events import on_build_complete, on_release_deployment_completed, on_work_item_updated
from shared.devops.hooks import HookEvent
from tests.conftest import load_fixture


@dataclass
class MemoryQueue:
    sent: list[tuple[str, Any]] = field(default_factory=list)

    def send(self, queue: str, message: Any, *, visibility_timeout: int | None = None) -> str:
        self.sent.append((queue, message))
        return str(len(self.sent))


@dataclass
class StubRuntime:
    settings: Any
    storage: MemoryQueue = field(default_factory=MemoryQueue)


@dataclass
class NoBackstage:
    backstage_url: str = ""


def event(event_type: str, resource: dict[str, Any]) -> HookEvent:
    return HookEvent("e1", event_type, "tfs", resource, "", {"id": "e1", "eventType": event_type, "resource": resource})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
resources = st.dictionaries(
    st.sampled_from(
        [
            "workItemId",
            "rev",
            "fields",
            "revision",
            "revisedBy",
            "id",
            "release",
            "deployment",
            "refUpdates",
            "repository",
            "commits",
        ]
    ),
    json_values,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(resource=resources)
def test_any_resource_is_handled_or_ignored_never_a_crash(resource):
    rt = StubRuntime(NoBackstage())
    for handler, event_type in (
        (on_work_item_updated, "workitem.updated"),
        (on_build_complete, "build.complete"),
        (on_release_deployment_completed, "ms.vss-release.deployment-completed-event"),
        (on_git_push, "git.push"),
    ):
        assert isinstance(handler(event(event_type, resource), rt), str)  # type: ignore[arg-type]
    assert all(queue == "demands" for queue, _ in rt.storage.sent)
    default_branch_update(resource)  # the push parser, behind the BACKSTAGE_URL check above


def test_only_a_state_change_is_queued():
    rt = StubRuntime(NoBackstage())
    doc = load_fixture("devops/workitem-updated.json")
    assert on_work_item_updated(event("workitem.updated", doc["resource"]), rt).startswith("queued")  # type: ignore[arg-type]
    [(queue, message)] = rt.storage.sent
    assert message["type"] == "workitem-state" and message["change"]["new_state"] == "Doing"
    title_only = {**doc["resource"], "fields": {"System.Title": {"oldValue": "a", "newValue": "b"}}}
    assert on_work_item_updated(event("workitem.updated", title_only), rt) == "ignored: no state change"  # type: ignore[arg-type]
    assert len(rt.storage.sent) == 1
