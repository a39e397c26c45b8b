"""`make demo` step: a ServiceNow demand approved -> Azure Boards work item -> moved to Done -> demand completed.

Local fake Azure DevOps and ServiceNow peers (devhost/fake_demand_peers.py) play the two services;
the local host runs the real functions: `POST /api/demands`, the `demands` queue worker and the
Azure DevOps service hook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from devhost.fake_demand_peers import FakeAzureDevOps, FakeServiceNow

DEMAND = {
    "sysId": "5f3c0a7e1b2d4c6e8f9a0b1c2d3e4f50",
    "number": "DMND0001234",
    "title": "Self-service sandbox subscriptions for squads",
    "description": "Squads wait two weeks for a sandbox.",
    "priority": "2 - High",
    "costCenter": "CC-4711",
    "acceptanceCriteria": "A squad gets a sandbox in under an hour.",
    "requestedBy": "Alex Example",
    "portfolio": "Platform Engineering",
}


def _wait(condition: Callable[[], Any], seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def step_demands(ctx: Any) -> None:
    from shared.runtime import Runtime, set_runtime

    ado = FakeAzureDevOps(pat="demo-pat")
    servicenow = FakeServiceNow(username="svc-demo", password="demo-password")
    ado_url, sn_url = ado.serve(), servicenow.serve()
    settings = replace(
        ctx.runtime.settings,
        azure_devops_org_url=f"{ado_url}/example-org",
        azure_devops_project="Platform Team",
        azure_devops_pat="demo-pat",
        servicenow_instance_url=sn_url,
        servicenow_username="svc-demo",
        servicenow_password="demo-password",
        ado_hook_username="",
        ado_hook_password="",
        ado_hook_secret="",
    )
    set_runtime(Runtime(settings))
    try:
        sys_id = DEMAND["sysId"]
        servicenow.add_demand(sys_id, DEMAND["number"], DEMAND["title"])
        status, body = ctx.call("POST", "/api/demands", DEMAND)
        ctx.summary.append(f"demand {DEMAND['number']} approved -> POST /api/demands: HTTP {status} {body}")
        if not _wait(lambda: servicenow.records[sys_id].get("u_azure_devops_work_item")):
            raise RuntimeError("the work item was not written back to the demand within 60s")
        ctx.call("POST", "/api/demands", DEMAND)  # the Flow retries: still one work item
        [work_item_id] = ado.work_items
        fields = ado.work_items[work_item_id]["fields"]
        ctx.summary.append(
            f"  work item created: {fields['System.WorkItemType']} {work_item_id} '{fields['System.Title']}' "
            f"tags [{fields['System.Tags']}]"
        )
        ctx.summary.append(f"  written back: {servicenow.records[sys_id]['u_azure_devops_url']}")
        event = ado.move(work_item_id, "Done", by="Dana Example")
        status, _ = ctx.call("POST", "/api/hooks/azure-devops", event)
        if not _wait(lambda: servicenow.records[sys_id].get("state") == "Completed"):
            raise RuntimeError("the demand did not reach Completed within 60s")
        ctx.summary.append(f"  moved to Done in Azure Boards -> service hook HTTP {status} -> demand state Completed")
        _wait(lambda: ctx.runtime.storage.queue_length("demands") == 0, 30)
        ctx.summary.append(f"  the Flow re-sent the approval: still {len(ado.work_items)} work item")
        for note in servicenow.notes(sys_id):
            ctx.summary.append(f"  work note: {note}")
    finally:
        set_runtime(ctx.runtime)
        ado.stop()
        servicenow.stop()
