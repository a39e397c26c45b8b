"""Demo step: alerts of several kinds and squads through the queue on the demo's local host, a storm
becoming one digest, then the outbox summary (Teams and ServiceNow are not configured in the demo)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from shared.alerts.delivery import QUEUE, AlertDelivery, enqueue_alert
from shared.alerts.model import Alert
from shared.alerts.outbox import Outbox
from shared.alerts.storm import window_of


def _alerts() -> list[Alert]:
    base = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups"
    return [
        Alert(
            kind="cost_anomaly",
            severity="critical",
            title="Cost of vm-payments-01 is 4.2x its usual level",
            resource_id=f"{base}/rg-payments/providers/Microsoft.Compute/virtualMachines/vm-payments-01",
            owner="squad-payments",
            facts=(("Expected per day", "$120.00"), ("Actual per day", "$504.10")),
            links=(("Cost Management", "https://portal.azure.com/#view/Microsoft_Azure_CostManagement"),),
            dedupe_key="demo:cost:vm-payments-01",
        ),
        Alert(
            kind="policy_violation",
            severity="warning",
            title="Storage account allows public blob access",
            resource_id=f"{base}/rg-data/providers/Microsoft.Storage/storageAccounts/stdata01",
            owner="squad-data",
            facts=(("Policy", "Storage accounts should prevent public access"),),
            links=(),
            dedupe_key="demo:policy:stdata01",
        ),
        Alert(
            kind="remediation_result",
            severity="info",
            title="Diagnostic settings deployed on kv-shared",
            resource_id=f"{base}/rg-shared/providers/Microsoft.KeyVault/vaults/kv-shared",
            owner="",
            facts=(("Remediation task", "demo-task-1"),),
            links=(),
            dedupe_key="demo:remediation:kv-shared",
        ),
    ]


def step_alerts(ctx: Any) -> None:
    store = ctx.runtime.storage
    settings = ctx.runtime.settings
    alerts = _alerts()
    threshold = settings.alert_storm_threshold
    storm = [
        replace(alerts[1], title=f"Policy violation {i} in rg-data", dedupe_key=f"demo:storm:{i}")
        for i in range(threshold + 3)
    ]
    for alert in alerts + storm:
        enqueue_alert(store, alert)
    ctx.summary.append(
        f"enqueued {len(alerts)} alerts and a storm of {len(storm)} for squad-data (threshold {threshold})"
    )
    outbox = Outbox(settings.outbox_dir)
    # cards for squad-payments, the default route and the first `threshold` of squad-data, plus one incident
    expected = 3 + threshold
    deadline = time.monotonic() + 60
    # done when the cards are out and only the scheduled (still invisible) digest message is left
    while time.monotonic() < deadline and (len(outbox.entries()) < expected or store.queue_length(QUEUE) > 1):
        time.sleep(0.5)
    # the digest waits for the end of its window; the demo delivers it now rather than waiting minutes
    window = window_of("squad-data", _now(), settings.alert_storm_window_minutes)
    digest = AlertDelivery.from_settings(settings, store).handle(
        {"type": "digest", "squad": "squad-data", "window_start": window.start.isoformat()}
    )
    ctx.summary.append(f"storm digest for squad-data: {digest.results[0].status if digest.results else '-'}")
    counts: dict[str, int] = {}
    for entry in outbox.entries():
        counts[f"{entry.channel} {entry.action}"] = counts.get(f"{entry.channel} {entry.action}", 0) + 1
    ctx.summary.append(f"outbox {settings.outbox_dir}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    ctx.summary.append(
        f"pending on queue {QUEUE}: {store.queue_length(QUEUE)} (the scheduled digest message waits for its window)"
    )


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
