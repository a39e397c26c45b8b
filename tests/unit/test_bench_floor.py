"""The alert benchmark's bounds on what any exactly-once delivery could gain (the latency floor, the
CPU ceiling), and the latency option."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from bench._harness import (
    AZURITE_PGID_ENV,
    AzuriteMeter,
    add_side_by_side_args,
    group_cpu_seconds,
    latency_args,
    projection_table,
)
from bench.bench_alerts import _ceiling_rows, _floor_rows
from bench.bench_policy import _ceiling_rows as _policy_ceiling_rows
from bench.bench_policy import _floor_rows as _policy_floor_rows


def _run(workers: int, *, seconds: float, table_ops: int, table_s: float, peers_s: float, ack_s: float) -> dict:
    return {
        "alerts": 100,
        "workers": workers,
        "seconds": seconds,
        "enqueue_seconds": 0.5,
        "handle_seconds": 1.0,
        "ack_seconds": ack_s,
        "storage_latency_ms": 10.0,
        "peer_seconds": {"teams": peers_s},
        "ops": {"table.insert": table_ops, "queue.put": 100, "queue.delete": 100},
        "ops_seconds": {"table.insert": table_s, "queue.put": 9.0, "queue.delete": 9.0},
    }


def test_the_floor_is_the_peers_and_a_claim_a_completion_and_the_delete_at_the_added_latency():
    # GIVEN before at 8 workers: 10.5 s run, 0.5 s enqueue -> 80 s of worker time for 100 alerts (800 ms each)
    before = _run(8, seconds=10.5, table_ops=500, table_s=10.0, peers_s=1.0, ack_s=1.0)
    # AND today with 10 ms added to every storage request: 2 s waiting on the peers, a 3 s run
    today = _run(8, seconds=3.0, table_ops=120, table_s=1.8, peers_s=2.0, ack_s=1.0)
    rows = _floor_rows([("before (c9e90f0)", before), ("today", today)])
    # THEN per alert: peers 20 ms + 3 x 10 ms = 50 ms; 800 / 50 = 16.0x; today 800 / 200 = 4.0x
    assert rows == [(8, "800", "20", "3 x 10", "50", "16.0x", "4.0x")]


def test_no_floor_without_both_implementations_at_a_worker_count():
    today = _run(32, seconds=3.0, table_ops=120, table_s=1.8, peers_s=2.0, ack_s=1.0)
    before = _run(8, seconds=10.5, table_ops=500, table_s=10.0, peers_s=1.0, ack_s=1.0)
    assert _floor_rows([("before (c9e90f0)", before), ("today", today)]) == []


def test_the_cpu_ceiling_of_today_and_of_any_design_from_azurites_cost_per_operation(monkeypatch):
    monkeypatch.setattr("bench.bench_alerts.os.cpu_count", lambda: 2)
    before = {"workers": 8, "alerts_per_s": 50.0, "ops_slowest": {}}
    # GIVEN today: 100 alerts, 20 of them with an incident, 30 failed first attempts (130 puts), 6 ops per
    # alert, Azurite spending 0.48 s (0.36 s of it on its main thread)
    today = {
        "alerts": 100,
        "workers": 8,
        "cpu_seconds": 0.5,
        "azurite_cpu_seconds": 0.48,
        "azurite_main_thread_cpu_seconds": 0.36,
        "peer_cpu_seconds": 0.02,
        "ops_per_alert": 6.0,
        "ops": {"queue.put": 130},
        "ops_slowest": {},
    }
    rows = _ceiling_rows([("before (c9e90f0)", before), ("today", today)])
    # THEN today costs 10 ms of CPU an alert: 2 cores -> 200/s. Azurite: 0.8 ms an operation, 0.6 on its main
    # thread; the fewest operations are put + delete + 2 x 1.2 channels + 3 x 0.3 retries = 5.3, so no design
    # passes 1000 / (0.6 x 5.3) = 314/s. At 5x (250/s) the 2 cores give 8 ms an alert: Azurite takes 0.8 x 5.3
    # = 4.24, the peers 0.2, which leaves 3.56 ms for this process (today: 5.0)
    assert rows == [(8, "50.0", "250", "10.0", "200", "0.80 / 0.60", "5.30", "314", "3.6", "5.0")]
    today["ops_slowest"] = {"table.insert": 20.0}  # a stalled run's CPU figures say nothing
    assert _ceiling_rows([("before (c9e90f0)", before), ("today", today)])[0][2] == "(a run stalled)"


def test_storage_latency_reaches_child_runs_only_when_set():
    parser = argparse.ArgumentParser()
    add_side_by_side_args(parser, budget=60.0)
    assert latency_args(parser.parse_args([])) == []
    assert latency_args(parser.parse_args(["--storage-latency-ms", "10"])) == ["--storage-latency-ms", "10"]


def test_the_policy_floor_is_the_admitting_write_and_the_delete():
    # GIVEN before at 8 workers handling 128 deliveries/s: 62.5 ms of worker time per delivery
    before = {"workers": 8, "worker_deliveries_per_s": 128.0}
    today = {"workers": 8, "worker_deliveries_per_s": 134.0}
    rows = _policy_floor_rows([("before (c9e90f0)", before), ("today", today)], 10.0)
    # THEN with 10 ms per request the floor is 20 ms and no design gets past 3.1x
    assert rows == [(8, "62.5", "2 x 10", "3.1x")]
    assert _policy_floor_rows([("before (c9e90f0)", before)], 0.0) == []


def test_the_policy_ceiling_of_any_design_from_azurites_cost_per_operation(monkeypatch):
    monkeypatch.setattr("bench.bench_policy.os.cpu_count", lambda: 2)
    before = {"workers": 8, "deliveries_per_s": 100.0, "ops_slowest": {}}
    # GIVEN today: 20 assignments x 10 resources = 200 events, each delivered twice; 4 ops a delivery
    # and Azurite spending 2.4 s (1.2 s on its main thread): 1.5 ms an operation (0.75 on the main thread)
    today = {"workers": 8, "deliveries": 400, "resources": 10, "ops_per_delivery": 4.0, "azurite_cpu_seconds": 2.4}
    today.update(azurite_main_thread_cpu_seconds=1.2, ops_slowest={})
    rows = _policy_ceiling_rows([("before (c9e90f0)", before), ("today", today)])
    # THEN the fewest operations: 3 a delivery, plus 1 per remediable and 2 per escalated event (100 each):
    # 3 + 300 / 400 = 3.75; 1000 / (0.75 x 3.75) = 356 deliveries/s; at 5x (500/s) the 2 cores give 4 ms a
    # delivery, and Azurite alone needs 1.5 x 3.75 = 5.625: -1.6 left
    assert rows == [(8, "100.0", "500", "1.50 / 0.75", "3.75", "356", "-1.6")]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")
def test_a_process_groups_cpu_and_its_main_threads_share():
    # GIVEN a process in its own group that spins ~0.4 s on a second thread, its main thread idle
    code = (
        "import threading, time\n"
        "def spin():\n"
        "    end = time.process_time() + 0.4\n"
        "    while time.process_time() < end: pass\n"
        "t = threading.Thread(target=spin); t.start(); t.join()\n"
        "print('done', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        total = group_cpu_seconds(proc.pid)
        main = group_cpu_seconds(proc.pid, main_threads=True)
        # THEN the group's CPU holds the spin, and its main thread's share leaves it out
        assert total is not None and main is not None
        assert total >= 0.35 and main < total - 0.3
    finally:
        proc.kill()
        proc.wait()
    assert group_cpu_seconds(None) is None


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")
def test_a_child_reads_azurites_cpu_over_its_window_alone(monkeypatch):
    # GIVEN a stand-in for Azurite in its own group that spins ~0.3 s, then waits for a line, then spins again
    code = (
        "import sys, time\n"
        "def spin():\n"
        "    end = time.process_time() + 0.3\n"
        "    while time.process_time() < end: pass\n"
        "spin(); print('one', flush=True)\n"
        "sys.stdin.readline(); spin(); print('two', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "one"
        # WHEN a child told its group measures a window around the second spin only
        monkeypatch.setenv(AZURITE_PGID_ENV, str(proc.pid))
        meter = AzuriteMeter()
        meter.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "two"
        window = meter.stop()
        # THEN it holds the second spin and not the first; one thread, so the main thread's is the same
        assert 0.25 <= window["azurite_cpu_seconds"] < 0.5
        assert abs(window["azurite_main_thread_cpu_seconds"] - window["azurite_cpu_seconds"]) < 0.05
    finally:
        proc.kill()
        proc.wait()
    # AND a child that is not told (no Azurite of its own) reports nothing rather than zero
    monkeypatch.delenv(AZURITE_PGID_ENV)
    untold = AzuriteMeter()
    untold.start()
    assert untold.stop() == {}


def test_the_projection_takes_the_lower_of_waiting_and_one_vcpus_cpu():
    # GIVEN 5 storage operations an alert at 10 ms: 20 alerts/s a thread, 640/s for 32 threads
    text = projection_table([("today", 5.0, 1 / 16, 4.0), ("before", 10.0, 1.0, None)], "alert", "alerts", "hot")
    rows = [line.split(" | ") for line in text.splitlines()[2:]]
    # THEN 4 ms of CPU an alert bounds a 1-vCPU instance at 250/s, below the 640 waiting allows
    assert rows[0][1:6] == ["5.00", "20.0", "640", "250", "250"]
    # AND without a CPU figure (a stalled run) the instance is bound by waiting alone
    assert rows[1][1:6] == ["10.00", "10.0", "320", "-", "320"]
