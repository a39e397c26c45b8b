"""The Logic App's unsubscribe: a run that timed out or was cancelled stops waiting, and the app knows."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.approvals import service
from shared.approvals.models import ApprovalCreateIn, DecisionIn, UnsubscribeIn
from shared.approvals.workflow import CANCELLED, PENDING
from shared.errors import ConflictError
from tests.fixtures.approvals.seed import load, seed_episode

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.fixture
def episode_id(runtime):
    # Azurite lives for the whole session: each test gets its own episode (and approval)
    runtime.settings = replace(runtime.settings, callback_allowed_hosts=("*.logic.azure.com",))
    episode = {**load("episode-critical-vm.json"), "EPISODE_ID": "ce-" + uuid.uuid4().hex[:20]}
    seed_episode(runtime, episode)
    return episode["EPISODE_ID"]


def _subscribe(runtime, episode_id: str, run: str) -> dict:
    body = ApprovalCreateIn(
        **{
            **load("logic-app-subscribe.json"),
            "episodeId": episode_id,
            "runId": run,
            "callbackUrl": f"https://prod-01.westeurope.logic.azure.com/workflows/w/runs/{run}/cb?sig=not-a-real-sig",
        }
    )
    return service.subscribe(runtime, body, now=NOW)


def test_a_run_that_stops_waiting_cancels_the_approval_and_forgets_its_callback(runtime, episode_id):
    _subscribe(runtime, episode_id, "run-1")
    # WHEN the Logic App run times out and its webhook action unsubscribes
    answer = service.unsubscribe(runtime, episode_id, UnsubscribeIn(runId="run-1"), now=NOW)
    # THEN the approval is cancelled and no callback to the dead run remains
    assert answer["unsubscribed"] is True and answer["status"] == CANCELLED and answer["callbackRegistered"] is False
    approval, _ = service.load(runtime.storage, episode_id)
    assert approval.callback_url == "" and approval.cancelled_at == NOW.isoformat()
    # a decision now is refused: nobody waits for it
    with pytest.raises(ConflictError, match="new run must subscribe"):
        service.record_decision(runtime, episode_id, DecisionIn(decision="approve", approver="a@example.test"))
    # a second unsubscribe (a retry) changes nothing
    assert service.unsubscribe(runtime, episode_id, UnsubscribeIn(runId="run-1"))["unsubscribed"] is False


def test_a_new_run_reopens_a_cancelled_approval(runtime, episode_id):
    _subscribe(runtime, episode_id, "run-1")
    service.unsubscribe(runtime, episode_id, UnsubscribeIn(runId="run-1"), now=NOW)
    answer = _subscribe(runtime, episode_id, "run-2")
    assert answer["status"] == PENDING and answer["callbackRegistered"] is True and answer["cancelledAt"] is None
    decided = service.record_decision(runtime, episode_id, DecisionIn(decision="reject", approver="a@example.test"))
    assert decided["status"] == "rejected"


def test_another_runs_unsubscribe_and_the_one_after_a_decision_change_nothing(runtime, episode_id):
    _subscribe(runtime, episode_id, "run-1")
    # a stale run cannot cancel the wait of the run that subscribed last
    assert service.unsubscribe(runtime, episode_id, UnsubscribeIn(runId="run-0"))["unsubscribed"] is False
    service.record_decision(runtime, episode_id, DecisionIn(decision="approve", approver="a@example.test"))
    # Logic Apps also unsubscribes after the callback arrived: the decision stands
    answer = service.unsubscribe(runtime, episode_id, UnsubscribeIn(runId="run-1"))
    assert answer["unsubscribed"] is False and answer["status"] == "approved"
    approval, _ = service.load(runtime.storage, episode_id)
    assert approval.run_id == "run-1" and approval.callback_url


def test_the_workflow_unsubscribes_with_its_run_id():
    import json
    from pathlib import Path

    workflow = json.loads((Path(__file__).parents[2] / "infra/logicapp/approval-workflow.json").read_text())
    text = json.dumps(workflow)
    assert '"unsubscribe": {}' not in text
    wait = next(a for a in _actions(workflow) if a.get("type") == "HttpWebhook")
    unsubscribe = wait["inputs"]["unsubscribe"]
    assert unsubscribe["method"] == "POST" and unsubscribe["uri"].endswith("/unsubscribe")
    assert unsubscribe["body"] == {"runId": "@{workflow()?['run']?['name']}"}
    assert "x-functions-key" in unsubscribe["headers"]


def _actions(node):
    if isinstance(node, dict):
        if "type" in node and "inputs" in node:
            yield node
        for value in node.values():
            yield from _actions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _actions(value)
