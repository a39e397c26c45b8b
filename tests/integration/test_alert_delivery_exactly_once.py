"""Delivery against fake Teams and ServiceNow over HTTP: replays, redeliveries and failures change nothing.

The 500 x 3 replay runs on the in-memory store (Azurite's table API costs ~7 ms of SDK CPU per
operation here, which would make it a minute-long test); the same scenario, smaller, runs on
Azurite to prove the real conditional inserts, and the benchmark runs 10,000 alerts through the
real queue on Azurite.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.adapters.servicenow import ServiceNowClient
from shared.adapters.teams import TeamsWebhook
from shared.alerts.delivery import POISON, QUEUE, AlertDelivery, alert_message
from shared.alerts.model import Alert
from shared.alerts.routing import parse_routes
from shared.settings import load_settings
from tests.fixtures.alerts.fakes import FakeServiceNow, FakeTeams, start_server
from tests.fixtures.alerts.memory import MemoryStore

SQUADS = 50


@pytest.fixture
def peers():
    teams_server, sn_server = start_server(), start_server()
    yield FakeTeams(teams_server).install(), FakeServiceNow(sn_server).install()
    teams_server.stop()
    sn_server.stop()


def _delivery(env, tmp_path, teams: FakeTeams, sn: FakeServiceNow, store, **extra) -> AlertDelivery:
    settings = load_settings(
        {**env, "ALERT_RETRY_BASE_SECONDS": "0", "ALERT_STORM_THRESHOLD": "0", "ALERT_MAX_ATTEMPTS": "5", **extra},
        local_settings=tmp_path / "none.json",
    )
    routes = parse_routes(
        {"routes": {f"squad-{i}": {"teams_webhook_url": teams.url(f"/hook/{i}")} for i in range(SQUADS)}},
        default_webhook_url=teams.url("/hook/default"),
        allowed_hosts=(),
    )
    client = ServiceNowClient(sn.url, username=sn.username, password=sn.password, timeout=5)
    return AlertDelivery(settings, store, routes, teams=TeamsWebhook((), timeout=5), servicenow=client)


def _alerts(n: int) -> list[Alert]:
    run = uuid.uuid4().hex[:8]  # Azurite lives for the whole session: keys must not meet earlier tests' records
    return [
        Alert(
            kind="policy_violation",
            severity="critical" if i % 2 == 0 else "warning",
            title=f"violation {i}",
            resource_id=f"/subscriptions/s/resourceGroups/rg/providers/x/{i}",
            owner=f"squad-{i % SQUADS}",
            facts=(("n", str(i)),),
            links=(),
            dedupe_key=f"policy-{run}:{i}",
            incident=True,
        )
        for i in range(n)
    ]


def _drain_memory(delivery: AlertDelivery, store: MemoryStore) -> None:
    for _ in range(100):
        batch = [m for m, _ in store.take(QUEUE)]
        if not batch:
            return
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(delivery.handle, batch))
    raise AssertionError("the alerts queue did not drain")


def _drain(delivery: AlertDelivery, store) -> int:
    """Process what delivery re-enqueued (visibility 0) until the queue is empty, like the queue trigger."""
    handled = 0
    deadline = time.monotonic() + 60  # retries come back after their (>= 1 s) visibility delay
    while time.monotonic() < deadline:
        batch = store.receive(QUEUE, max_messages=32, visibility_timeout=30)
        if not batch:
            if store.queue_length(QUEUE) == 0:
                return handled
            time.sleep(0.2)
            continue
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda m: delivery.handle(m.body), batch))
        for m in batch:
            store.ack(QUEUE, m)
        handled += len(batch)
    raise AssertionError("the alerts queue did not drain")


def _replay_three_times(delivery, alerts, drain) -> None:
    for _ in range(3):
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda a: delivery.handle(alert_message(a)), alerts))
    drain()


def _flaky(teams: FakeTeams, sn: FakeServiceNow) -> None:
    """One first attempt in three fails with 503 on each peer: retries must not duplicate anything."""
    teams.fail_first = lambda body: _number(body) % 3 == 0
    sn.fail_first_create = lambda body: int(body["correlation_id"].split(":")[1]) % 3 == 1


def _number(card) -> int:
    return int(json.dumps(card).split("violation ")[1].split('"')[0])


def _assert_each_delivered_once(teams: FakeTeams, sn: FakeServiceNow, n: int) -> None:
    per_alert = Counter(_number(c) for c in teams.cards())
    assert len(per_alert) == n and set(per_alert.values()) == {1}, "a card is missing or was posted twice"
    per_key = sn.by_correlation()
    assert len(per_key) == n and all(len(v) == 1 for v in per_key.values()), "duplicate or missing incident"
    assert all(not journal for journal in sn.journal.values())  # no replay became a work note


def test_replaying_500_alerts_three_times_delivers_each_once_per_channel_with_no_duplicate_incident(
    base_env, tmp_path, peers
):
    teams, sn = peers
    _flaky(teams, sn)
    store = MemoryStore()
    delivery = _delivery(base_env, tmp_path, teams, sn, store)
    # WHEN the same 500 alerts arrive three times, concurrently, while a third of first attempts fail
    _replay_three_times(delivery, _alerts(500), lambda: _drain_memory(delivery, store))
    # THEN every alert is one card and one incident, and nothing is left failing
    _assert_each_delivered_once(teams, sn, 500)
    assert store.take(POISON) == []


def test_on_azurite_replays_and_redeliveries_deliver_each_alert_once(env, tmp_path, runtime, peers):
    teams, sn = peers
    _flaky(teams, sn)
    store = runtime.storage
    delivery = _delivery(env, tmp_path, teams, sn, store)
    _replay_three_times(delivery, _alerts(30), lambda: _drain(delivery, store))
    _assert_each_delivered_once(teams, sn, 30)
    assert store.queue_length(POISON) == 0


def test_a_webhook_that_keeps_failing_ends_in_poison_and_servicenow_hears_about_it(env, tmp_path, runtime, peers):
    teams, sn = peers
    teams.default = "unavailable"
    store = runtime.storage
    delivery = _delivery(env, tmp_path, teams, sn, store, ALERT_MAX_ATTEMPTS="3")
    alert = _alerts(1)[0]
    delivery.handle(alert_message(alert))
    _drain(delivery, store)
    poison = [json.loads(m.text()) for m in store.peek(POISON)]
    mine = [p for p in poison if p.get("alert", {}).get("dedupe_key") == alert.dedupe_key]
    assert len(mine) == 1 and mine[0]["attempt"] == 3 and mine[0]["channels"] == ["teams"]
    assert "503" in mine[0]["errors"]["teams"]
    reports = [r for r in sn.incidents.values() if "Teams is failing" in r["short_description"]]
    assert len(reports) == 1 and reports[0]["correlation_id"].startswith("delivery-failing:teams")
    assert len(sn.by_correlation()[alert.dedupe_key]) == 1  # the alert's own incident was delivered once
