"""What held in the review, encoded so it keeps holding: injection through query parameters, YAML,
outbox file names, guard rails before writes, OData quoting, constant-time key checks."""

from __future__ import annotations

import ast
import inspect
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.alerts.outbox import Outbox
from shared.approvals.actions import ActionTarget, GuardRails, run_action
from shared.costs.feedback import list_episodes
from tests.fixtures.approvals.seed import load, seed_episode

ROOT = Path(__file__).resolve().parents[2]
EPISODE = load("episode-critical-vm.json")
VM = EPISODE["SERIES_ID"]


def _python_files():
    for folder in ("shared", "functions", "devhost"):
        yield from (ROOT / folder).rglob("*.py")
    yield ROOT / "function_app.py"


def test_yaml_is_only_ever_safe_loaded():
    unsafe = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("load", "load_all", "unsafe_load", "full_load")
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
            ):
                unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unsafe == []


def test_function_keys_are_compared_in_constant_time():
    from devhost.server import _Handler

    source = inspect.getsource(_Handler._has_key)
    assert "hmac.compare_digest" in source and "==" not in source


@pytest.mark.parametrize(
    "owner", ["' or '1' eq '1", "x' or Owner ne 'x", "squad-batch' or PartitionKey ne '", "*", "%"]
)
def test_odata_injection_through_the_owner_filter_matches_nothing(runtime, owner):
    from shared.costs.episode_state import EPISODE_PARTITION, EPISODES_TABLE

    # GIVEN an episode in operational state owned by a squad of this test
    squad = "squad-" + uuid.uuid4().hex[:8]
    doc = {"start_date": "2026-11-20", "series_id": VM, "episode_id": "ce-" + squad, "owner": squad}
    runtime.storage.insert(
        EPISODES_TABLE, EPISODE_PARTITION, "ce-" + squad, {"Doc": json.dumps(doc), "Status": "open", "Owner": squad}
    )
    # THEN the squad finds it, and no crafted owner finds anything
    assert [e["episode_id"] for e in list_episodes(runtime, None, squad)] == ["ce-" + squad]
    assert list_episodes(runtime, None, owner) == []


@pytest.mark.parametrize("owner", ["' OR '1'='1", "x' --", "squad-batch' OR OWNER IS NOT NULL --"])
def test_sql_injection_through_the_warehouse_owner_filter_matches_nothing(runtime, owner):
    seed_episode(runtime)
    with runtime.warehouse.session() as wh:
        rows = wh.query("SELECT EPISODE_ID FROM COST_ANOMALIES WHERE LOWER(OWNER) = LOWER(%s)", [owner])
        plain = wh.query("SELECT EPISODE_ID FROM COST_ANOMALIES WHERE LOWER(OWNER) = LOWER(%s)", [EPISODE["OWNER"]])
    assert rows == [] and len(plain) == 1


@given(key=st.text(min_size=1, max_size=80))
def test_outbox_file_names_never_carry_the_dedupe_key(tmp_path_factory, key):
    folder = tmp_path_factory.mktemp("outbox")
    path = Outbox(folder).write("teams", "post", key, "fp", {"x": 1})
    assert path.resolve().parent == folder.resolve()
    assert set(path.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class RecordingArm:
    def __init__(self, tags):
        self.calls = []
        self.tags = tags

    def request(self, method, path, api_version, body=None):
        self.calls.append((method, path))
        return {"tags": self.tags.get(path, {})}


@pytest.mark.parametrize("where", [VM, VM.split("/providers/")[0]])
def test_a_protected_tag_refuses_before_any_write(where):
    arm = RecordingArm({where: {"valueflow:protected": "true"}})
    outcome = run_action("stop", ActionTarget(VM), GuardRails("enforce", (), "valueflow:protected"), lambda: arm)
    assert outcome.state == "refused" and {m for m, _ in arm.calls} == {"GET"}


def test_a_protected_subscription_refuses_before_any_call():
    arm = RecordingArm({})
    sub = VM.split("/")[2]
    outcome = run_action("stop", ActionTarget(VM), GuardRails("enforce", (sub.upper(),), "x"), lambda: arm)
    assert outcome.state == "refused" and arm.calls == []


@given(value=st.text(max_size=40))
def test_odata_string_literals_cannot_be_closed_early(value):
    from shared.adapters.arm import _odata

    quoted = _odata(value)
    # inside '...', a lone quote would end the literal: every quote must come doubled
    assert quoted.replace("''", "").count("'") == 0
