"""Cost pipeline on Azurite + the embedded warehouse: loading runs, the daily scan, episodes, feedback, partitions."""

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from devhost.demo_costs import demo_costs, export_runs
from shared.costs import scan, store
from shared.costs.episode_state import load_suppressions
from shared.costs.explain import with_explanations
from shared.costs.fanout import PARTITION_QUEUE, PARTITION_SCOPE, handle_partition_message
from shared.costs.feedback import list_episodes, record_feedback
from shared.costs.ingest import CostExportError
from shared.costs.loader import ingest_paths
from shared.costs.scan import SCAN_SCOPE, run_daily_scan
from shared.errors import NotFoundError, StorageError, TransientUpstreamError
from shared.idempotency import TABLE as IDEMPOTENCY
from shared.idempotency import ClaimStatus, Idempotency
from shared.runtime import Runtime
from shared.settings import load_settings

COSTS = Path(__file__).resolve().parents[1] / "fixtures" / "costs"
FOCUS_RUN = COSTS / "cost-export-focus" / "20261101-20261130" / "6f2c1a9e-0b7d-4d3e-9a51-0c8e2b4f7a10"
HEADER = (FOCUS_RUN / "part_0_0001.csv").read_text().splitlines()[0]
VM = "/subscriptions/00000000-0000-4000-8000-000000000001/resourcegroups/rg-a/providers/microsoft.compute/virtualmachines/vm-a"


def _drain(runtime, queue):
    while batch := runtime.storage.receive(queue, max_messages=32, visibility_timeout=1):
        for message in batch:
            runtime.storage.ack(queue, message)


@pytest.fixture
def cost_runtime(runtime):
    """The runtime with the cost scopes of the shared Azurite emptied (each test has its own warehouse)."""
    for scope in ("cost-scan", "cost-alerts", "cost-partition", "cost-aggregates", "cost-export"):
        for row in list(runtime.storage.query(IDEMPOTENCY, "PartitionKey eq @pk", pk=scope)):
            runtime.storage.delete(IDEMPOTENCY, scope, row["RowKey"])
    for row in list(runtime.storage.query("episodes")):
        runtime.storage.delete("episodes", row["PartitionKey"], row["RowKey"])
    for queue in ("alerts", PARTITION_QUEUE):
        _drain(runtime, queue)
    return runtime


def _alerts(runtime):
    out = []
    while batch := runtime.storage.receive("alerts", max_messages=32, visibility_timeout=1):
        for message in batch:
            out.append(json.loads(message.text())["alert"])
            runtime.storage.ack("alerts", message)
    return out


def _row(day: date, cost: str) -> str:
    return (
        f"{cost},USD,Usage,{day + timedelta(days=1)}T00:00:00Z,{day}T00:00:00Z,{cost},{VM},vm-a,Virtual Machines,"
        '00000000-0000-4000-8000-000000000001,sub,"{""owner"":""squad-a""}",rg-a'
    )


def _write_run(root: Path, run_id: str, days: dict[date, str], submitted: str, extra_file: str | None = None) -> Path:
    folder = root / "focus" / "focus-daily" / "20261101-20261130" / run_id
    folder.mkdir(parents=True)
    (folder / "part_0_0001.csv").write_text("\n".join([HEADER] + [_row(d, c) for d, c in days.items()]) + "\n")
    blobs = [{"blobName": f"focus/focus-daily/20261101-20261130/{run_id}/part_0_0001.csv"}]
    if extra_file is not None:
        (folder / "part_0_0002.csv").write_text(extra_file)
        blobs.append({"blobName": f"focus/focus-daily/20261101-20261130/{run_id}/part_0_0002.csv"})
    manifest = {
        "exportConfig": {"resourceId": "/subscriptions/s/providers/Microsoft.CostManagement/exports/focus-daily"},
        "runInfo": {"runId": run_id, "submittedTime": submitted},
        "blobs": blobs,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _usage(runtime) -> dict[date, float]:
    with runtime.warehouse.session() as wh:
        rows = wh.query("SELECT USAGE_DATE, SUM(COST) AS C FROM COST_DAILY WHERE IS_USAGE GROUP BY USAGE_DATE")
    return {r["USAGE_DATE"]: round(float(r["C"]), 2) for r in rows}


NOV = [date(2026, 11, d) for d in range(1, 4)]


def test_a_run_is_loaded_once_per_run_id(cost_runtime, tmp_path):
    folder = _write_run(tmp_path, "run-a", {NOV[0]: "10.00", NOV[1]: "11.00"}, "2026-11-03T06:00:00Z")
    first = ingest_paths(cost_runtime, [str(folder)])
    again = ingest_paths(cost_runtime, [str(folder)])
    assert first[0].outcome.status == "loaded" and first[0].outcome.rows == 2
    assert again[0].outcome.status == "already_loaded"
    assert _usage(cost_runtime) == {NOV[0]: 10.0, NOV[1]: 11.0}


def test_month_to_date_re_export_replaces_the_period_and_never_double_counts(cost_runtime, tmp_path):
    ingest_paths(
        cost_runtime, [str(_write_run(tmp_path, "run-a", {NOV[0]: "10.00", NOV[1]: "11.00"}, "2026-11-03T06:00:00Z"))]
    )
    # the next day's export restates day 2 and adds day 3
    result = ingest_paths(
        cost_runtime,
        [
            str(
                _write_run(
                    tmp_path, "run-b", {NOV[0]: "10.00", NOV[1]: "12.50", NOV[2]: "9.00"}, "2026-11-04T06:00:00Z"
                )
            )
        ],
    )
    assert result[0].outcome.replaced_rows == 2
    assert _usage(cost_runtime) == {NOV[0]: 10.0, NOV[1]: 12.5, NOV[2]: 9.0}


def test_an_older_run_arriving_after_a_newer_one_changes_nothing(cost_runtime, tmp_path):
    newer = _write_run(tmp_path, "run-new", {NOV[0]: "10.00", NOV[1]: "12.00"}, "2026-11-04T06:00:00Z")
    older = _write_run(tmp_path, "run-old", {NOV[0]: "99.00"}, "2026-11-02T06:00:00Z")
    ingest_paths(cost_runtime, [str(newer)])
    outcome = ingest_paths(cost_runtime, [str(older)])[0].outcome
    assert outcome.status == "superseded"
    assert _usage(cost_runtime) == {NOV[0]: 10.0, NOV[1]: 12.0}


def test_a_broken_run_loads_nothing_and_keeps_the_earlier_data(cost_runtime, tmp_path):
    ingest_paths(cost_runtime, [str(_write_run(tmp_path, "run-a", {NOV[0]: "10.00"}, "2026-11-02T06:00:00Z"))])
    # GIVEN a newer run whose first part is fine and whose second part has a non-numeric cost on line 2
    bad = HEADER + "\n" + _row(NOV[1], "1.00").replace(",1.00,", ",n/a,", 1) + "\n"
    broken = _write_run(tmp_path, "run-b", {NOV[0]: "500.00", NOV[1]: "500.00"}, "2026-11-03T06:00:00Z", bad)
    with pytest.raises(CostExportError) as caught:
        ingest_paths(cost_runtime, [str(broken)])
    assert caught.value.errors[0]["file"].endswith("part_0_0002.csv") and caught.value.errors[0]["line"] == 2
    # THEN nothing of it is in the warehouse and the earlier run is intact
    assert _usage(cost_runtime) == {NOV[0]: 10.0}
    with cost_runtime.warehouse.session() as wh:
        assert [r["RUN_ID"] for r in store.export_runs(wh)] == ["run-a"]


# -- the daily job ---------------------------------------------------------------------------------------------

END = date(2026, 10, 20)


def _load_demo(runtime, root: Path, end: date = END, drop_last_day: bool = False):
    frame, injected = demo_costs(n_resources=60, days=70, end=end, seed=11)
    if drop_last_day:
        frame = frame[~frame["ChargePeriodStart"].str.startswith(str(end))]
    for run in export_runs(frame):
        for name, data in run.blobs:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    ingest_paths(runtime, [str(root)])
    return frame, injected


def test_daily_scan_alerts_each_anomaly_once_a_rerun_never_re_alerts_and_feedback_silences(cost_runtime, tmp_path):
    _, injected = _load_demo(cost_runtime, tmp_path / "export")
    report = run_daily_scan(cost_runtime, END)
    alerts = _alerts(cost_runtime)
    opened = {e["series_id"] for e in list_episodes(cost_runtime, "open") if e["series_kind"] == "resource"}
    # the injected spikes on the last day are found, each with its cause and owner
    assert set(injected) - opened == set() or len(set(injected) & opened) >= 3, (injected, opened)
    assert report.dates_scored == [END.isoformat()] and report.alerts_sent == len(alerts) >= 3
    critical = [
        a
        for a in alerts
        if a["severity"] == "critical"
        and a["resource_id"].startswith("/subscriptions/")
        and "/providers/" in a["resource_id"]
    ]
    assert critical and any(name == "Top cause" for name, _ in critical[0]["facts"])
    # every alert says why: the band, the reason and the data the decision was made on
    facts = dict(critical[0]["facts"])
    assert "above the expected band" in facts["Why flagged"] and "days of history" in facts["Decided on"]
    # the explanation is stored with the episode (warehouse column and operational mirror)
    mirrored = {e["episode_id"]: e for e in list_episodes(cost_runtime, "open")}
    with cost_runtime.warehouse.session() as wh:
        stored = with_explanations(wh, {i: store.get_episode(wh, i) for i in mirrored})
    for episode_id, doc in mirrored.items():
        explanation = stored[episode_id].explanation
        assert explanation["reason"] in ("spike", "shift", "drift") and explanation["historyDays"] >= 14
        assert explanation["upper"] < explanation["actual"] or explanation["reason"] == "drift"
        assert doc["explanation"]["reason"] == explanation["reason"]
        assert doc["explanation"]["episodeId"] == episode_id
    # WHEN the timer fires again, or catches up the same day
    again = run_daily_scan(cost_runtime, END)
    assert again.dates_already_done == [END.isoformat()] and again.alerts_sent == 0
    assert _alerts(cost_runtime) == []
    with cost_runtime.warehouse.session() as wh:
        runs = wh.query(
            "SELECT STATUS FROM JOB_RUNS WHERE JOB = 'cost_daily_scan' AND RUN_KEY = %s", (END.isoformat(),)
        )
    assert [r["STATUS"] for r in runs] == ["completed"]
    # feedback: planned silences the series and shows on the episode
    episode = next(e for e in list_episodes(cost_runtime, "open") if e["series_kind"] == "resource")
    result = record_feedback(cost_runtime, episode["episode_id"], "planned", "ana", "load test")
    assert result["verdict"] == "planned" and result["suppressed_until"]
    assert episode["series_id"] in load_suppressions(cost_runtime)
    owner = episode["owner"] or None
    shown = next(e for e in list_episodes(cost_runtime, owner=owner) if e["episode_id"] == episode["episode_id"])
    assert shown["verdict"] == "planned" and shown["verdict_by"] == "ana"
    with pytest.raises(NotFoundError, match="no cost anomaly episode"):
        record_feedback(cost_runtime, "ce-nope", "planned", "ana", "x")


def test_missing_day_raises_one_data_late_alert_then_scores_when_the_data_lands(cost_runtime, tmp_path):
    _load_demo(cost_runtime, tmp_path / "partial", drop_last_day=True)
    first = run_daily_scan(cost_runtime, END)
    second = run_daily_scan(cost_runtime, END)
    late = _alerts(cost_runtime)
    assert first.late.startswith(END.isoformat()) and second.late and not first.dates_scored
    assert [a["kind"] for a in late] == ["cost_data_late"]  # one alert, not one per timer run
    # the complete export arrives (a newer run of the same periods)
    _load_demo(cost_runtime, tmp_path / "complete")
    done = run_daily_scan(cost_runtime, END)
    assert done.dates_scored == [END.isoformat()] and done.series_scored > 0


def _episode_set(runtime):
    with runtime.warehouse.session() as wh:
        return {(e.series_id, e.start_date, e.status, e.severity) for e in store.query_episodes(wh)}


def test_partitioned_scoring_gives_the_same_episodes_as_one_invocation(cost_runtime, env, tmp_path):
    _load_demo(cost_runtime, tmp_path / "one")
    run_daily_scan(cost_runtime, END)
    single = _episode_set(cost_runtime)
    single_alerts = sorted(a["dedupe_key"] for a in _alerts(cost_runtime))
    # the same data in another warehouse, scored with partitions of 25 series (60 resources -> 3 partitions)
    for scope in ("cost-scan", "cost-alerts", "cost-partition", "cost-aggregates"):
        for row in list(cost_runtime.storage.query(IDEMPOTENCY, "PartitionKey eq @pk", pk=scope)):
            cost_runtime.storage.delete(IDEMPOTENCY, scope, row["RowKey"])
    settings = load_settings(
        {**env, "WAREHOUSE_PATH": str(tmp_path / "wh2"), "COST_PARTITION_SIZE": "25"},
        local_settings=tmp_path / "none.json",
    )
    partitioned = Runtime(settings)
    _load_demo(partitioned, tmp_path / "two")
    report = run_daily_scan(partitioned, END)
    assert report.partitions >= 2
    messages = partitioned.storage.receive(PARTITION_QUEUE, max_messages=32, visibility_timeout=5)
    assert len(messages) == report.partitions
    for message in messages:
        handle_partition_message(partitioned, json.loads(message.text()))
        handle_partition_message(partitioned, json.loads(message.text()))  # a redelivery is a no-op
        partitioned.storage.ack(PARTITION_QUEUE, message)
    assert _episode_set(partitioned) == single
    assert sorted(a["dedupe_key"] for a in _alerts(partitioned)) == single_alerts


def test_a_partition_held_by_a_crashed_worker_is_retried_then_scored_after_its_lease(cost_runtime, tmp_path):
    _load_demo(cost_runtime, tmp_path)
    body = {"dates": [END.isoformat()], "part": 0, "parts": 2}
    key = f"{END}..{END}:0-of-2"
    # another worker claimed the partition, then crashed before completing it
    assert Idempotency(cost_runtime.storage).claim(PARTITION_SCOPE, key).status is ClaimStatus.NEW
    with pytest.raises(TransientUpstreamError) as caught:
        handle_partition_message(cost_runtime, body)  # not acknowledged as done: the host redelivers it
    assert 0 < caught.value.retry_after <= PARTITION_SCOPE.lease.total_seconds()
    assert _episode_set(cost_runtime) == set()
    assert cost_runtime.storage.get(IDEMPOTENCY, PARTITION_SCOPE.name, key)["Status"] == "INPROGRESS"

    # the crashed holder's lease runs out: the redelivered message takes the partition over and scores it
    held = cost_runtime.storage.get(IDEMPOTENCY, PARTITION_SCOPE.name, key)
    expired = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    cost_runtime.storage.upsert(
        IDEMPOTENCY, PARTITION_SCOPE.name, key,
        {k: v for k, v in held.items() if k not in ("PartitionKey", "RowKey") and not k.startswith("odata")}
        | {"LeaseUntil": expired},
    )  # fmt: skip
    report = handle_partition_message(cost_runtime, body)
    assert report.series_scored > 0
    assert cost_runtime.storage.get(IDEMPOTENCY, PARTITION_SCOPE.name, key)["Status"] == "COMPLETED"
    assert handle_partition_message(cost_runtime, body).series_scored == 0  # a later redelivery is a no-op


def test_a_date_held_by_a_crashed_scan_stops_the_next_scan_then_is_taken_over_after_its_lease(cost_runtime, tmp_path):
    _load_demo(cost_runtime, tmp_path)
    started = datetime(2026, 10, 21, 6, 0, tzinfo=UTC)
    # GIVEN a scan claimed END at 06:00 and crashed before scoring it
    crashed = Idempotency(cost_runtime.storage, clock=lambda: started).claim(SCAN_SCOPE, END.isoformat())
    assert crashed.status is ClaimStatus.NEW
    # WHEN a run comes within its lease: it stops there, scores and alerts nothing, leaves the claim alone
    early = run_daily_scan(cost_runtime, END, now=started + timedelta(minutes=5))
    assert early.dates_scored == [] and early.series_scored == 0 and _alerts(cost_runtime) == []
    assert cost_runtime.storage.get(IDEMPOTENCY, SCAN_SCOPE.name, END.isoformat())["Status"] == "INPROGRESS"
    # THEN a run after the lease takes the date over and scores it, once
    later = run_daily_scan(cost_runtime, END, now=started + SCAN_SCOPE.lease + timedelta(seconds=1))
    assert later.dates_scored == [END.isoformat()] and later.series_scored > 0 and later.alerts_sent > 0
    assert cost_runtime.storage.get(IDEMPOTENCY, SCAN_SCOPE.name, END.isoformat())["Status"] == "COMPLETED"
    again = run_daily_scan(cost_runtime, END, now=started + timedelta(hours=1))
    assert again.dates_already_done == [END.isoformat()] and again.alerts_sent == 0


def test_a_failed_fan_out_frees_its_date_for_the_next_run(cost_runtime, env, tmp_path, monkeypatch):
    settings = load_settings(
        {**env, "WAREHOUSE_PATH": str(tmp_path / "wh2"), "COST_PARTITION_SIZE": "25"},
        local_settings=tmp_path / "none.json",
    )
    partitioned = Runtime(settings)
    _load_demo(partitioned, tmp_path / "export")
    real_fan_out = scan.fan_out

    def put_fails_after_the_first_message(runtime, dates, parts):
        real_fan_out(runtime, dates, 1)
        raise StorageError("queue cost-partitions: 503 Server Busy")  # what a failed put raises

    # GIVEN the fan-out fails after its first message
    monkeypatch.setattr(scan, "fan_out", put_fails_after_the_first_message)
    with pytest.raises(StorageError):
        run_daily_scan(partitioned, END)
    # THEN the date is free again (no claim left to wait for) and no run is recorded as done
    assert partitioned.storage.get(IDEMPOTENCY, SCAN_SCOPE.name, END.isoformat()) is None
    with partitioned.warehouse.session() as wh:
        assert store.last_completed_scan(wh, "cost_daily_scan") is None
    # AND the next run fans the date out at once
    monkeypatch.setattr(scan, "fan_out", real_fan_out)
    report = run_daily_scan(partitioned, END)
    assert report.dates_scored == [END.isoformat()] and report.partitions >= 2
    assert partitioned.storage.get(IDEMPOTENCY, SCAN_SCOPE.name, END.isoformat())["Status"] == "COMPLETED"
    _drain(partitioned, PARTITION_QUEUE)


# -- one cause, one alert ------------------------------------------------------------------------------------


def _steady_frame(end: date, squads: dict[str, list[float]], last_day: dict[str, float]) -> pd.DataFrame:
    """60 quiet days of FOCUS rows: squad -> daily cost of each of its resources; `last_day` overrides by name."""
    rng = np.random.default_rng(5)
    rows = []
    for squad, levels in squads.items():
        for n, level in enumerate(levels):
            name = f"{squad}-vm{n}"
            rid = f"/subscriptions/00000000-0000-4000-8000-000000000001/resourcegroups/rg-{squad}/providers/microsoft.compute/virtualmachines/{name}"
            for back in range(60):
                day = end - timedelta(days=back)
                cost = last_day.get(name, level) if back == 0 else level * (1 + rng.normal(0, 0.01))
                rows.append({
                    "BilledCost": round(cost, 4), "BillingCurrency": "USD", "ChargeCategory": "Usage",
                    "ChargePeriodEnd": f"{day + timedelta(days=1)}T00:00:00Z", "ChargePeriodStart": f"{day}T00:00:00Z",
                    "EffectiveCost": round(cost, 4), "ResourceId": rid, "ResourceName": name,
                    "ServiceName": "Virtual Machines", "SubAccountId": "00000000-0000-4000-8000-000000000001",
                    "SubAccountName": "sub", "Tags": json.dumps({"owner": squad}), "x_ResourceGroupName": f"rg-{squad}",
                })  # fmt: skip
    return pd.DataFrame(rows)


def test_one_resource_spike_raises_one_alert_not_one_per_total_it_moves(cost_runtime, tmp_path):
    # GIVEN squad-a whose vm0 jumps by $600/day, and squad-b whose ten VMs each grow $9 (under the $10
    # resource gate) so that only the squad total shows the $90 increase
    end = date(2026, 10, 20)
    frame = _steady_frame(
        end,
        {"squad-a": [100.0, 50.0], "squad-b": [40.0] * 10},
        {"squad-a-vm0": 700.0, **{f"squad-b-vm{n}": 49.0 for n in range(10)}},
    )
    root = tmp_path / "export"
    for run in export_runs(frame):
        for name, data in run.blobs:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    ingest_paths(cost_runtime, [str(root)])
    # WHEN the daily job scores the last day
    report = run_daily_scan(cost_runtime, end)
    alerts = _alerts(cost_runtime)
    # THEN squad-a gets the vm0 alert only: its squad, subscription and service totals moved because of
    # vm0 and say nothing new; squad-b gets its squad-total alert, which no resource alert explains
    subjects = sorted(a["resource_id"].rsplit("/", 1)[-1] for a in alerts)
    assert subjects == ["owner:squad-b", "squad-a-vm0"], alerts
    assert report.alerts_muted >= 2
    # and the held-back totals are still recorded as episodes for the API and the demo table
    kinds = {e["series_kind"] for e in list_episodes(cost_runtime, "open")}
    assert {"resource", "owner"} <= kinds


def test_a_rejected_export_run_from_event_grid_alerts_once_and_loads_nothing(cost_runtime, tmp_path):
    from shared.costs.loader import BLOB_CREATED, INGEST_QUEUE, accept_export_event, handle_export_event

    # GIVEN a run whose second part has a non-numeric cost, uploaded as Cost Management writes it
    folder = _write_run(
        tmp_path, "run-bad", {NOV[0]: "10.00"}, "2026-11-02T06:00:00Z", extra_file=f"{HEADER}\n{_row(NOV[1], 'abc')}\n"
    )
    base = cost_runtime.storage._blobs.url.rstrip("/")
    for path in folder.iterdir():
        cost_runtime.storage.put_blob("cost-exports", str(path.relative_to(tmp_path)), path.read_bytes())
    url = f"{base}/cost-exports/{(folder / 'manifest.json').relative_to(tmp_path)}"
    _drain(cost_runtime, INGEST_QUEUE)
    # WHEN Event Grid announces the manifest: the trigger only queues it
    assert accept_export_event(cost_runtime, BLOB_CREATED, {"url": url})["status"] == "queued"
    assert (
        accept_export_event(cost_runtime, BLOB_CREATED, {"url": url.replace("manifest.json", "part_0_0001.csv")})[
            "status"
        ]
        == "skipped"
    )
    queued = cost_runtime.storage.receive(INGEST_QUEUE, max_messages=8)
    assert len(queued) == 1
    # AND the worker loads it, twice (a redelivery)
    body = json.loads(queued[0].text())
    first = handle_export_event(cost_runtime, body["event_type"], body["data"])
    again = handle_export_event(cost_runtime, body["event_type"], body["data"])
    # THEN nothing is loaded, the platform team gets one alert naming file and line, the retry is a no-op
    assert first["status"] == "rejected" and again["status"] == "duplicate"
    assert _usage(cost_runtime) == {}
    alerts = _alerts(cost_runtime)
    assert [a["kind"] for a in alerts] == ["cost_data_late"]
    assert any("part_0_0002.csv:2" in name for name, _ in alerts[0]["facts"])


def test_an_export_run_being_loaded_elsewhere_is_retried_not_acknowledged(cost_runtime):
    from shared.costs.loader import BLOB_CREATED, EXPORT_SCOPE, handle_export_event
    from shared.idempotency import idempotency_key

    url = "http://127.0.0.1:10000/devstoreaccount1/cost-exports/held/manifest.json"
    key = idempotency_key("cost-export", url)
    assert Idempotency(cost_runtime.storage).claim(EXPORT_SCOPE, key).status is ClaimStatus.NEW
    with pytest.raises(TransientUpstreamError) as caught:
        handle_export_event(cost_runtime, BLOB_CREATED, {"url": url})
    assert 0 < caught.value.retry_after <= EXPORT_SCOPE.lease.total_seconds()
    assert cost_runtime.storage.get(IDEMPOTENCY, EXPORT_SCOPE.name, key)["Status"] == "INPROGRESS"
