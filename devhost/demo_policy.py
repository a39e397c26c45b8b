"""`make demo` step: a burst of policy events through the local host, in dry-run, against a local fake ARM.

Prints what would be remediated (one task per assignment/definition/scope, not one per event) and
who would be alerted for what the app cannot remediate.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from collections import Counter
from typing import Any

from devhost.fake_arm import FakeArm

SUB = "3b9e6c2a-1f0d-4c8e-9a57-2d4f6b8c0e11"
ASSIGNMENTS = {
    "storage-diagnostics": ("deployIfNotExists", ""),
    "aks-baseline": ("modify", "aksAzurePolicyAddon"),
    "storage-public-access-audit": ("audit", ""),
}
SQUADS = ("payments", "platform", "data")
WEBHOOK = "/runtime/webhooks/eventgrid?functionName=policy_events"
WINDOW = 15  # seconds: the whole burst lands in one coalescing window


def _event(assignment: str, reference: str, j: int) -> dict[str, Any]:
    rid = (
        f"/subscriptions/{SUB}/resourceGroups/rg-demo-{j % 4}/providers/Microsoft.Storage/storageAccounts/stdemo{j:02d}"
    )
    return {
        "id": f"demo-{assignment}-{j}",
        "topic": f"/subscriptions/{SUB}",
        "subject": rid,
        "eventType": "Microsoft.PolicyInsights.PolicyStateChanged",
        "eventTime": "2026-11-20T14:03:12.4475211Z",
        "data": {
            "timestamp": "2026-11-20T14:02:58.1197132Z",
            "policyAssignmentId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyAssignments/{assignment}",
            "policyDefinitionId": f"/providers/Microsoft.Authorization/policyDefinitions/{assignment}-def",
            "policyDefinitionReferenceId": reference,
            "complianceState": "NonCompliant",
            "subscriptionId": SUB,
        },
        "dataVersion": "1",
    }


def step_policy(ctx: Any) -> None:
    from shared.adapters.arm import Arm
    from shared.policy.remediation import decisions
    from shared.policy.worker import WORK_QUEUE, PolicyWorker, open_alert_rows, read_counters

    def effect_of(odata_filter: str) -> str:
        return next((e for name, (e, _) in ASSIGNMENTS.items() if f"/{name}'" in odata_filter), "audit")

    fake = FakeArm(effect_of, owner_of=lambda rid: SQUADS[int(rid[-2:]) % 3] if "stdemo" in rid else "").start()
    try:
        settings = dataclasses.replace(
            ctx.runtime.settings,
            arm_endpoint=fake.url,
            remediation_mode="dry-run",
            remediation_window_seconds=WINDOW,
            policy_incident_assignments=("*/storage-public-access-*",),
        )
        store = ctx.runtime.storage
        ctx.runtime.use(policy_worker=PolicyWorker(store, settings, Arm.from_settings(settings)))
        burst = [_event(a, ref, j) for a, (_, ref) in ASSIGNMENTS.items() for j in range(20)]
        deliveries = burst + [copy.deepcopy(e) for e in burst]  # Event Grid delivers at least once
        random.Random(5).shuffle(deliveries)
        bad = copy.deepcopy(burst[0])
        bad["eventType"] = "Microsoft.Resources.ResourceWriteSuccess"
        deliveries.append(bad)
        time.sleep(WINDOW - time.time() % WINDOW)  # start at the beginning of a window
        for i in range(0, len(deliveries), 25):
            status, _ = ctx.call("POST", WEBHOOK, deliveries[i : i + 25], headers={"aeg-event-type": "Notification"})
            assert status == 200, f"webhook answered {status}"
        deadline = time.monotonic() + 120
        while store.queue_length(WORK_QUEUE) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(WINDOW - time.time() % WINDOW + 0.5)  # let the coalescing window close
        ctx.call("POST", "/admin/functions/remediation_watch", {"input": ""})
        ctx.summary.append(
            f"{len(deliveries)} deliveries ({len(burst)} distinct NonCompliant events, each twice, 1 bad) "
            f"-> REMEDIATION_MODE=dry-run, ARM PUTs: {len(fake.puts)}"
        )
        for d in sorted(decisions(store), key=lambda r: str(r.get("AssignmentId"))):
            ref = f" [{d['DefinitionReferenceId']}]" if d.get("DefinitionReferenceId") else ""
            ctx.summary.append(
                f"  would remediate: {str(d['AssignmentId']).rsplit('/', 1)[-1]}{ref} at {d['Scope']} "
                f"({d['ResourceCount']} resources, one task {d['RowKey']})"
            )
        opened = open_alert_rows(store)
        by_owner = Counter((r.get("Owner") or "(default route)", bool(r.get("Incident"))) for r in opened)
        for (owner, incident), n in sorted(by_owner.items()):
            ctx.summary.append(
                f"  would alert squad {owner}: {n} violation(s) of an audit policy"
                + (" + ServiceNow incident each" if incident else "")
            )
        rejected = {k: v for k, v in read_counters(store).items() if k.startswith("rejected-")}
        ctx.summary.append(f"  rejected and acknowledged: {rejected or 'none'}")
    finally:
        fake.stop()
