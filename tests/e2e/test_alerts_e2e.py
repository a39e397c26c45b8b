"""Alerts through the real local host: queue -> alert_delivery -> Teams/ServiceNow fakes or the outbox."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from shared.adapters.storage import StateStore
from shared.alerts.delivery import QUEUE, enqueue_alert
from shared.alerts.model import Alert
from tests.conftest import ROOT, load_fixture, start_host, stop_host
from tests.fixtures.alerts.fakes import FakeServiceNow, FakeTeams, start_server

pytestmark = pytest.mark.e2e


def _alert(**over) -> Alert:
    return Alert.from_dict({**load_fixture("alerts/cost_anomaly.json"), **over})


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_queued_alerts_reach_the_squad_channel_and_servicenow_once(env, tmp_path):
    teams_server, sn_server = start_server(), start_server()
    teams, sn = FakeTeams(teams_server).install(), FakeServiceNow(sn_server).install()
    routes = {"routes": {"squad-payments": {"teams_webhook_url": teams.url("/payments"), "cmdb_ci": "payments-api"}}}
    host_env = {
        **env,
        "ALERT_ROUTES": json.dumps(routes),
        "TEAMS_DEFAULT_WEBHOOK_URL": teams.url("/default"),
        "SERVICENOW_INSTANCE_URL": sn.url,
        "SERVICENOW_USERNAME": sn.username,
        "SERVICENOW_PASSWORD": sn.password,
        "ALERT_RETRY_BASE_SECONDS": "0.5",
    }
    teams.plan["/payments"] = ["unavailable"]  # the first post fails with 503: delivered on retry
    host = start_host(host_env, tmp_path / "host.log")
    try:
        store = StateStore.from_connection_string(env["AzureWebJobsStorage"])
        key = f"cost:{uuid.uuid4().hex[:8]}"
        alert = _alert(dedupe_key=key)
        # WHEN a producer enqueues the alert twice (a replay) and an unrouted one
        enqueue_alert(store, alert)
        enqueue_alert(store, alert)
        enqueue_alert(store, _alert(owner="nobody", severity="warning", dedupe_key=key + "-b", title="unrouted"))
        # THEN the squad's channel gets one card, the default channel the unrouted one, and one incident exists
        assert _wait(lambda: len(teams.cards("/payments")) >= 1 and len(teams.cards("/default")) >= 1), host.log()[
            -3000:
        ]
        assert _wait(lambda: len(sn.incidents) >= 1)
        time.sleep(1.5)  # give a duplicate every chance to show up
        assert len(teams.cards("/payments")) == 1 and len(teams.cards("/default")) == 1
        [incident] = sn.incidents.values()
        assert incident["correlation_id"] == key and incident["cmdb_ci"] == "payments-api"
        assert "priority" not in [k for k in sn.requests[-1][2]]
        assert "test-password" not in host.log() and teams.url("/payments") not in host.log()
        # AND the queue drains: the second copy, which found the first one's claim kept for its
        # retry, looks again after a few seconds and finds it done (Azurite is shared with later tests)
        assert _wait(lambda: store.queue_length(QUEUE) == 0)
        assert len(teams.cards("/payments")) == 1
    finally:
        stop_host(host)
        teams_server.stop()
        sn_server.stop()


def test_without_teams_or_servicenow_the_outbox_gets_the_exact_payloads_and_the_cli_lists_them(env, tmp_path):
    host = start_host(env, tmp_path / "host.log")
    try:
        store = StateStore.from_connection_string(env["AzureWebJobsStorage"])
        enqueue_alert(store, _alert(dedupe_key=f"cost:{uuid.uuid4().hex[:8]}"))
        outbox = tmp_path / "outbox"
        assert _wait(lambda: len(list(outbox.glob("*.json"))) >= 2), host.log()[-3000:]
    finally:
        stop_host(host)
    names = sorted(p.name.split("-")[0] for p in outbox.glob("*.json"))
    assert names == ["servicenow", "teams"]
    cli = subprocess.run(
        [sys.executable, "-m", "shared.cli", "alerts", "outbox", "--json"],
        cwd=ROOT,
        env={**_os_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert sorted(e["channel"] for e in report["outbox"]) == ["servicenow", "teams"]
    assert report["pending"] == 0


def test_alerts_send_rejects_a_file_with_missing_fields_naming_them(env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(load_fixture("alerts/missing_fields.json")))
    cli = subprocess.run(
        [sys.executable, "-m", "shared.cli", "alerts", "send", "--file", str(bad)],
        cwd=ROOT,
        env={**_os_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2
    assert "title: missing" in cli.stderr and "severity: expected one of" in cli.stderr


def _os_env() -> dict[str, str]:
    import os

    return dict(os.environ)
