"""Resource ids that would redirect ARM calls: dot and empty segments, separators inside names."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url
from werkzeug import Response

from shared.adapters.arm import Arm, StaticBearerPolicy
from shared.approvals.actions import ActionTarget, GuardRails, run_action
from shared.errors import BadInputError
from shared.resource_ids import encode_resource_path, resource_path_problem

VM = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-pay/providers/Microsoft.Compute/virtualMachines/vm-1"
PROVIDER = VM.rsplit("/virtualMachines/", 1)[0]

BAD_IDS = [
    PROVIDER
    + "/virtualMachines/..",  # the reported one: tag check on the provider, POST …/Microsoft.Compute/deallocate
    PROVIDER + "/virtualMachines/.",
    PROVIDER + "/virtualMachines/%2e%2e",
    PROVIDER + "/virtualMachines/%2E%2e",
    PROVIDER + "/virtualMachines/vm-1/..",
    PROVIDER + "/virtualMachines/../../../providers/Microsoft.Authorization/roleAssignments/x",
    PROVIDER + "//virtualMachines/vm-1",
    PROVIDER + "/virtualMachines/vm-1/",
    PROVIDER + "/virtualMachines/vm-1?api-version=1",
    PROVIDER + "/virtualMachines/vm-1#x",
    PROVIDER + "/virtualMachines/vm\\..\\x",
    PROVIDER + "/virtualMachines/vm-1\r\nX-Injected: 1",
    "subscriptions/x/resourceGroups/rg",
    "",
]


@pytest.mark.parametrize("resource_id", BAD_IDS)
def test_dot_empty_and_separator_segments_are_refused(resource_id):
    assert resource_path_problem(resource_id) is not None
    with pytest.raises(BadInputError, match="resource id"):
        encode_resource_path(resource_id)


def test_names_are_percent_encoded_per_segment():
    assert encode_resource_path(VM) == VM
    assert (
        encode_resource_path("/subscriptions/s/resourceGroups/my rg%/x")
        == "/subscriptions/s/resourceGroups/my%20rg%25/x"
    )


_SEGMENT = st.lists(
    st.sampled_from(list("ab.-_~%2eE/ ?#;:@!$&'()*+,=\\") + ["..", "%2e", "%2E", "é"]), min_size=0, max_size=6
).map("".join)


@settings(max_examples=500, deadline=None)
@given(segments=st.lists(_SEGMENT, min_size=1, max_size=6))
def test_an_accepted_path_reaches_arm_with_exactly_its_own_segments(segments):
    path = "/" + "/".join(segments)
    try:
        encoded = encode_resource_path(path)
    except BadInputError:
        return
    # what urllib3 (under requests, under azure-core) sends: no segment removed, added or merged
    sent = parse_url("https://management.azure.com" + encoded).path or ""
    assert [unquote(s) for s in sent[1:].split("/")] == path[1:].split("/")


class RecordingArm:
    """An in-memory ArmClient recording every call (the contract of shared.approvals.actions.ArmClient)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def request(self, method, path, api_version, body=None):
        self.calls.append((method, path))
        return {"tags": {}}


@pytest.mark.parametrize("resource_id", BAD_IDS[:6])
def test_an_action_on_a_dot_segment_id_is_refused_before_any_arm_call(resource_id):
    arm = RecordingArm()
    rails = GuardRails("enforce", (), "valueflow:protected")
    outcome = run_action("deallocate_vm", ActionTarget(resource_id), rails, lambda: arm)
    assert outcome.state == "refused" and "resource id" in outcome.detail
    assert arm.calls == []


def test_the_arm_client_refuses_a_dot_segment_path_and_sends_nothing(httpserver):
    httpserver.expect_request(PROVIDER, method="GET").respond_with_json({"tags": {}})
    httpserver.expect_request(PROVIDER + "/deallocate", method="POST").respond_with_response(Response(status=202))
    arm = Arm(f"http://127.0.0.1:{httpserver.port}", auth_policy=StaticBearerPolicy(), max_attempts=1)
    with pytest.raises(BadInputError):
        arm.request("GET", PROVIDER + "/virtualMachines/..", "2024-07-01")
    with pytest.raises(BadInputError):
        arm.request("POST", PROVIDER + "/virtualMachines/../deallocate", "2024-07-01")
    assert httpserver.log == []


def test_the_arm_client_sends_an_encoded_name_as_one_segment(httpserver):
    odd = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/a;b c"
    httpserver.expect_request(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/a;b c"
    ).respond_with_json({"ok": True})
    arm = Arm(f"http://127.0.0.1:{httpserver.port}", auth_policy=StaticBearerPolicy(), max_attempts=1)
    assert arm.request("GET", odd, "2024-04-01") == {"ok": True}
    (request, _), *_ = httpserver.log
    assert request.path == "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/a;b c"
