"""`make run` (devhost.run) and `serve` as a newcomer meets them: one-line start-up failures, an honest
"attaching" note, AZURITE_PORTS, and the policy path end to end on the dev fake ARM (VALUEFLOW_FAKE_ARM)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from shared.adapters.storage import StateStore
from shared.policy.worker import pending_rows
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e
WEBHOOK = "/runtime/webhooks/eventgrid?functionName=policy_events"


def _run(args, env, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_serve_on_a_port_in_use_says_so_in_one_line(env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(["shared.cli", "serve"], {**env, "VALUEFLOW_PORT": str(port)})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert f"port {port} is in use" in done.stderr and "VALUEFLOW_PORT=" in done.stderr


def test_serve_with_azurite_down_says_to_start_it_in_one_line(base_env):
    ports = [free_port() for _ in range(3)]
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"BlobEndpoint=http://127.0.0.1:{ports[0]}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{ports[1]}/"
        f"devstoreaccount1;TableEndpoint=http://127.0.0.1:{ports[2]}/devstoreaccount1"
    )
    done = _run(["shared.cli", "serve"], {**base_env, "AzureWebJobsStorage": conn, "VALUEFLOW_PORT": str(free_port())})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "start Azurite with `make run`" in done.stderr


def test_make_run_refuses_azurite_ports_half_taken_by_another_program(base_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = f"{taken},{free_port()},{free_port()}"
        done = _run(["devhost.run"], {**base_env, "AZURITE_PORTS": ports, "VALUEFLOW_PORT": str(free_port())})
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert f"port(s) {taken}" in done.stderr and "AZURITE_PORTS=" in done.stderr


def test_make_run_attaches_to_a_running_azurite_says_so_and_runs_the_policy_path_on_the_fake_arm(
    base_env, azurite, tmp_path
):
    port = free_port()
    run_env = {
        **os.environ,
        **base_env,
        "AZURITE_PORTS": f"{azurite.blob_port},{azurite.queue_port},{azurite.table_port}",
        "VALUEFLOW_PORT": str(port),
        "VALUEFLOW_FAKE_ARM": "true",
        "REMEDIATION_MODE": "enforce",
        "REMEDIATION_WINDOW_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    store = StateStore.from_connection_string(azurite.connection_string)
    for table in ("policystate", "remediations"):
        for row in list(store.query(table)):
            store.delete(table, row["PartitionKey"], row["RowKey"])
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devhost.run"], cwd=ROOT, env=run_env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while "Function key" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        out = log_path.read_text()
        assert "Azurite: attaching to what already answers" in out and "Fake ARM (VALUEFLOW_FAKE_ARM=true)" in out
        # WHEN the README's sample policy event is posted to the Event Grid webhook
        body = (ROOT / "tests" / "fixtures" / "samples" / "policy-state-changed.eventgrid.json").read_bytes()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{WEBHOOK}",
            data=body,
            headers={"x-functions-key": base_env["LOCAL_FUNCTION_KEY"], "aeg-event-type": "Notification",
                     "Content-Type": "application/json"},
            method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        # THEN the worker asks the fake ARM and the watch creates the remediation task there, with no retries
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not pending_rows(store):
            time.sleep(0.3)
        assert pending_rows(store), log_path.read_text()[-3000:]
        time.sleep(1.2)
        admin = urllib.request.Request(
            f"http://127.0.0.1:{port}/admin/functions/remediation_watch",
            data=b'{"input": ""}',
            headers={"x-functions-key": base_env["LOCAL_FUNCTION_KEY"], "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(admin, timeout=60) as resp:
            assert resp.status == 202
        tasks = list(store.query("remediations", "PartitionKey eq @pk", pk="task"))
        assert tasks, log_path.read_text()[-3000:]
        text = log_path.read_text()
        assert "DefaultAzureCredential" not in text and "retrying" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
