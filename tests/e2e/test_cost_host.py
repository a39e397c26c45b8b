"""Cost anomalies through the local host: BlobCreated event -> ingest; admin invoke of the timer -> alerts queued."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from devhost.demo_costs import EXPORT_CONTAINER, blob_created_event, demo_costs, export_runs
from shared.adapters.storage import StateStore
from shared.idempotency import TABLE as IDEMPOTENCY
from tests.conftest import start_host, stop_host

pytestmark = pytest.mark.e2e


@pytest.fixture
def cost_host(env, tmp_path):
    store = StateStore.from_connection_string(env["AzureWebJobsStorage"])
    for scope in ("cost-scan", "cost-alerts", "cost-partition", "cost-export"):
        for row in list(store.query(IDEMPOTENCY, "PartitionKey eq @pk", pk=scope)):
            store.delete(IDEMPOTENCY, scope, row["RowKey"])
    for queue in ("alerts", "cost-ingest"):
        _drain(store, queue)
    # no schedules: the queue poller would deliver (and remove) the alerts this test wants to read
    host = start_host(env, tmp_path / "host.log", extra=["--no-schedules"])
    yield host, store
    stop_host(host)


def _drain(store, queue):
    out = []
    while batch := store.receive(queue, max_messages=32, visibility_timeout=1):
        for message in batch:
            out.append(message.text())
            store.ack(queue, message)
    return out


def test_blob_created_event_loads_the_export_and_the_timer_queues_alerts(cost_host):
    host, store = cost_host
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    frame, injected = demo_costs(n_resources=40, days=70, end=yesterday, seed=5)
    runs = export_runs(frame)
    blob_base = store._blobs.url.rstrip("/")
    for run in runs:
        for name, data in run.blobs:
            store.put_blob(EXPORT_CONTAINER, name, data)
    # WHEN Event Grid announces each manifest (a data part's event is ignored)
    part_event = blob_created_event(f"{blob_base}/{EXPORT_CONTAINER}/{runs[-1].blobs[0][0]}")
    events = [part_event] + [blob_created_event(f"{blob_base}/{EXPORT_CONTAINER}/{r.manifest_blob}") for r in runs]
    status, _, body = host.request(
        "POST",
        "/runtime/webhooks/eventgrid?functionName=cost_export_ingest",
        events,
        headers={"aeg-event-type": "Notification"},
    )
    assert status == 200, (body, host.log()[-2000:])
    # a redelivery of the same event is acknowledged and loads nothing twice
    status, _, _ = host.request("POST", "/runtime/webhooks/eventgrid?functionName=cost_export_ingest", events[-1:])
    assert status == 200
    # THEN each manifest is queued for the ingest worker (the data part is not), which loads it once
    queued = _drain(store, "cost-ingest")
    assert len(queued) == len(runs) + 1
    for body_text in queued:
        status, _, body = host.request("POST", "/admin/functions/cost_ingest_worker", {"input": body_text})
        assert status == 202, host.log()[-3000:]
    # THEN the timer, invoked through the admin API, scores yesterday and queues the alerts
    status, _, body = host.request("POST", "/admin/functions/cost_daily_scan", {"input": ""})
    assert status == 202 and body["status"] == "completed", host.log()[-3000:]
    alerts = [json.loads(m.text())["alert"] for m in store.peek("alerts", max_messages=32)]
    assert alerts, host.log()[-3000:]
    assert {a["kind"] for a in alerts} == {"cost_anomaly"}
    assert any(a["resource_id"] in injected for a in alerts)
    # a second invocation re-alerts nothing
    host.request("POST", "/admin/functions/cost_daily_scan", {"input": ""})
    assert len(store.peek("alerts", max_messages=32)) == len(alerts)
