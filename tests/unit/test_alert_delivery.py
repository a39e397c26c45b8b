"""Delivery decisions with in-memory storage and peers: idempotency, retries, poison, storm digests, outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.alerts.delivery import POISON, QUEUE, AlertDelivery, alert_message, enqueue_alert
from shared.alerts.model import Alert
from shared.alerts.routing import parse_routes
from shared.errors import BadInputError, TransientUpstreamError, UpstreamAuthError
from shared.settings import load_settings
from tests.conftest import load_fixture
from tests.fixtures.alerts.memory import MemoryStore

HOOK = "https://prod-01.westeurope.logic.azure.com/workflows/test-hook"


class RecordingTeams:
    def __init__(self, outcomes=None):
        self.posts: list[tuple[str, dict]] = []
        self.outcomes = list(outcomes or [])

    def check_allowed(self, url):
        pass

    def post(self, url, payload):
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome is not None:
                raise outcome
        self.posts.append((url, payload))
        return 202


class RecordingServiceNow:
    def __init__(self, outcomes=None):
        self.incidents: dict[str, dict] = {}
        self.patches: list[tuple[str, dict]] = []
        self.outcomes = list(outcomes or [])

    def _maybe_fail(self):
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome is not None:
                raise outcome

    def find_active(self, cid):
        self._maybe_fail()
        return next((i for i in self.incidents.values() if i["correlation_id"] == cid and i["active"]), None)

    def create(self, fields):
        self._maybe_fail()
        sys_id = f"s{len(self.incidents)}"
        self.incidents[sys_id] = {**fields, "sys_id": sys_id, "number": f"INC{len(self.incidents)}", "active": True}
        return self.incidents[sys_id]

    def update(self, sys_id, fields):
        self._maybe_fail()
        self.patches.append((sys_id, fields))
        if fields.get("state") == "6":
            self.incidents[sys_id]["active"] = False
        return self.incidents[sys_id]


@pytest.fixture
def make(tmp_path):
    def build(env=None, teams=None, servicenow=None, now=datetime(2025, 1, 31, 6, 31, tzinfo=UTC)):
        settings = load_settings(
            {"OUTBOX_DIR": str(tmp_path / "outbox"), "ALERT_RETRY_BASE_SECONDS": "4", **(env or {})},
            local_settings=tmp_path / "none.json",
        )
        routes = parse_routes(
            {"routes": {"squad-payments": {"teams_webhook_url": HOOK, "servicenow_assignment_group": "Payments"}}},
            default_webhook_url="",
            allowed_hosts=("*.logic.azure.com",),
        )
        store = MemoryStore()
        clock = {"now": now}
        delivery = AlertDelivery(
            settings,
            store,
            routes,
            teams=teams or RecordingTeams(),
            servicenow=servicenow,
            clock=lambda: clock["now"],
            rng=lambda: 0.5,
        )
        delivery.clock_state = clock  # type: ignore[attr-defined]
        return delivery, store

    return build


def _alert(**over) -> Alert:
    return Alert.from_dict({**load_fixture("alerts/cost_anomaly.json"), **over})


def test_a_redelivered_message_posts_once_and_opens_one_incident(make):
    teams, sn = RecordingTeams(), RecordingServiceNow()
    delivery, store = make(teams=teams, servicenow=sn)
    message = alert_message(_alert())
    for _ in range(3):
        delivery.handle(json.dumps(message))
    assert len(teams.posts) == 1 and len(sn.incidents) == 1
    assert store.take(QUEUE) == [] and store.take(POISON) == []


def test_a_repeat_of_an_open_condition_appends_a_work_note_instead_of_a_second_incident(make):
    sn = RecordingServiceNow()
    delivery, _ = make(servicenow=sn)
    delivery.handle(alert_message(_alert()))
    delivery.handle(alert_message(_alert(facts=[["Actual per day", "$700"]], action="update")))
    delivery.handle(alert_message(_alert(action="resolve")))
    assert len(sn.incidents) == 1
    assert "work_notes" in sn.patches[0][1]
    assert sn.patches[1][1]["state"] == "6" and sn.patches[1][1]["close_notes"]


def test_resolve_mode_note_only_adds_a_work_note(make):
    sn = RecordingServiceNow()
    delivery, _ = make(env={"SERVICENOW_RESOLVE_MODE": "note"}, servicenow=sn)
    delivery.handle(alert_message(_alert()))
    delivery.handle(alert_message(_alert(action="resolve")))
    assert list(sn.patches[-1][1]) == ["work_notes"]


def test_transient_failure_requeues_only_the_failed_channel_with_backoff_and_retry_after(make):
    teams = RecordingTeams([TransientUpstreamError("429", retry_after=30)])
    sn = RecordingServiceNow()
    delivery, store = make(teams=teams, servicenow=sn)
    outcome = delivery.handle(alert_message(_alert()))
    assert outcome.requeued == ["teams"] and len(sn.incidents) == 1
    [(again, delay)] = store.take(QUEUE)
    assert again["channels"] == ["teams"] and again["attempt"] == 2 and delay == 30  # Retry-After wins
    delivery.handle(again)
    assert len(teams.posts) == 1 and len(sn.incidents) == 1


def test_backoff_grows_exponentially_with_jitter_and_is_capped(make):
    delivery, _ = make(env={"ALERT_RETRY_BASE_SECONDS": "2", "ALERT_RETRY_MAX_SECONDS": "20"})
    assert [delivery.backoff_seconds(a, None) for a in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


def test_after_max_attempts_the_message_is_poisoned_and_the_other_channel_reports_it(make):
    teams = RecordingTeams([TransientUpstreamError("503")] * 10)
    delivery, store = make(env={"ALERT_MAX_ATTEMPTS": "2"}, teams=teams, servicenow=RecordingServiceNow())
    delivery.handle(alert_message(_alert()))
    [(again, _)] = store.take(QUEUE)
    outcome = delivery.handle(again)
    assert outcome.poisoned == ["teams"]
    [(poison, _)] = store.take(POISON)
    assert poison["channels"] == ["teams"] and "503" in poison["errors"]["teams"]
    [(report, _)] = store.take(QUEUE)
    assert report["channels"] == ["servicenow"]
    assert report["alert"]["kind"] == "delivery_failing" and report["alert"]["owner"] == ""
    assert report["alert"]["incident"] is True


def test_auth_errors_are_not_retried_and_are_reported_once_a_day(make):
    sn = RecordingServiceNow([UpstreamAuthError("ServiceNow refused our credentials (401)")] * 5)
    delivery, store = make(servicenow=sn)
    for i in range(3):
        delivery.handle(alert_message(_alert(dedupe_key=f"k{i}")))
    assert len(store.take(POISON)) == 3
    reports = [m for m, _ in store.take(QUEUE)]
    assert all(r["channels"] == ["teams"] for r in reports)
    # the three reports are the same alert: the default route (the outbox here) gets it once
    for r in reports:
        delivery.handle(r)
    written = list(delivery.outbox.folder.glob("teams-open-*.json"))
    assert len(written) == 1 and "Alert delivery to ServiceNow is failing" in written[0].read_text()


def test_unconfigured_channels_write_the_exact_payload_to_the_outbox_once(make, tmp_path):
    delivery, _ = make()  # no ServiceNow; squad-data has no webhook
    alert = _alert(owner="squad-data")
    delivery.handle(alert_message(alert))
    delivery.handle(alert_message(alert))
    files = sorted(p.name for p in (tmp_path / "outbox").glob("*.json"))
    assert [f.split("-")[0] for f in files] == ["servicenow", "teams"]
    incident = json.loads((tmp_path / "outbox" / files[0]).read_text())
    assert incident["correlation_id"] == alert.dedupe_key and "priority" not in incident
    card = json.loads((tmp_path / "outbox" / files[1]).read_text())
    assert card["attachments"][0]["content"]["version"] == "1.4"


def test_a_storm_becomes_one_digest_at_the_end_of_the_window(make):
    teams = RecordingTeams()
    delivery, store = make(env={"ALERT_STORM_THRESHOLD": "3"}, teams=teams)
    for i in range(8):
        delivery.handle(alert_message(_alert(dedupe_key=f"storm-{i}", severity="warning", title=f"alert {i}")))
    assert len(teams.posts) == 3
    scheduled = store.take(QUEUE)
    assert len(scheduled) == 1 and scheduled[0][0]["type"] == "digest" and scheduled[0][1] > 0
    assert scheduled[0][0]["webhook"].startswith("webhook-")  # the window's rows sit in its webhook's partition
    # replays of held-back alerts neither count again nor schedule another digest
    delivery.handle(alert_message(_alert(dedupe_key="storm-5", severity="warning", title="alert 5")))
    assert store.take(QUEUE) == []
    delivery.clock_state["now"] += timedelta(minutes=10)
    delivery.handle(scheduled[0][0])
    delivery.handle(scheduled[0][0])  # a redelivered digest posts once
    assert len(teams.posts) == 4
    digest = json.dumps(teams.posts[-1][1])
    assert "5 more alerts for squad squad-payments" in digest
    assert all(f"alert {i}" in digest for i in range(3, 8))


def test_a_malformed_message_goes_straight_to_poison_with_the_reason(make):
    delivery, store = make()
    outcome = delivery.handle(b"{not json")
    assert outcome.poisoned == ["message"]
    delivery.handle(json.dumps({"type": "alert", "alert": {"kind": "cost_anomaly"}}))
    reasons = [m["error"] for m, _ in store.take(POISON)]
    assert "not valid JSON" in reasons[0] and "title: missing" in reasons[1]


def test_enqueue_alert_validates_at_the_producer():
    store = MemoryStore()
    enqueue_alert(store, _alert())
    [(message, _)] = store.take(QUEUE)
    assert message["alert"]["dedupe_key"] == "cost:vm-payments-01:2025-01-31"
    with pytest.raises(BadInputError):
        enqueue_alert(store, {"kind": "cost_anomaly"})  # type: ignore[arg-type]


def test_unreachable_state_storage_raises_so_the_host_redelivers_instead_of_poisoning(make):
    from shared.errors import StorageError

    delivery, store = make()

    def broken(*args, **kwargs):
        raise StorageError("storage unreachable")

    for name in ("get", "insert", "transact"):  # unreachable: every table operation fails
        setattr(store, name, broken)
    with pytest.raises(StorageError):
        delivery.handle(alert_message(_alert()))
    assert store.take(POISON) == []


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in ("insert", "get", "upsert", "delete", "replace_if_unchanged", "transact", "send", "query"):
            calls = super().__getattribute__("calls")

            def counted(*a, **k):
                calls.append(name)
                return attr(*a, **k)

            return counted
        return attr


def test_a_teams_only_alert_below_the_storm_threshold_costs_a_claim_and_a_completion_and_a_replay_two(tmp_path):
    # GIVEN delivery on a counting store, storm control on (the default threshold)
    settings = load_settings({"OUTBOX_DIR": str(tmp_path / "outbox")}, local_settings=tmp_path / "none.json")
    routes = parse_routes(
        {"routes": {"squad-payments": {"teams_webhook_url": HOOK}}},
        default_webhook_url="",
        allowed_hosts=("*.logic.azure.com",),
    )
    store = CountingStore()
    teams = RecordingTeams()
    delivery = AlertDelivery(settings, store, routes, teams=teams)
    delivery.handle(alert_message(_alert(severity="warning", dedupe_key="cost:other"), channels=["teams"]))
    assert store.calls.count("transact") == 1  # the squad's first alert in a window leases a block of permits
    store.calls.clear()
    alert = _alert(severity="warning")
    # WHEN an alert is delivered, then the same message comes again
    delivery.handle(alert_message(alert, channels=["teams"]))
    first = list(store.calls)
    store.calls.clear()
    replay = delivery.handle(alert_message(alert, channels=["teams"]))
    # THEN it costs two table round trips (no read before the claim, the storm permit from the leased
    # block), the replay two, and one card
    assert first == ["insert", "upsert"]
    assert store.calls == ["insert", "get"] and replay.results[0].status == "duplicate"
    assert len(teams.posts) == 2


def test_the_channels_of_an_alert_run_side_by_side_and_a_storage_failure_in_one_still_raises(make):
    import threading

    # GIVEN a Teams post that only returns once ServiceNow has been called (it would hang if run in turn)
    sn_called = threading.Event()

    class WaitingTeams(RecordingTeams):
        def post(self, url, payload):
            assert sn_called.wait(5), "ServiceNow was not called while Teams was posting"
            return super().post(url, payload)

    class SignallingServiceNow(RecordingServiceNow):
        def find_active(self, cid):
            sn_called.set()
            return super().find_active(cid)

    teams, sn = WaitingTeams(), SignallingServiceNow()
    delivery, store = make(teams=teams, servicenow=sn)
    # WHEN an alert with an incident is delivered
    outcome = delivery.handle(alert_message(_alert()))
    # THEN both channels delivered, the second while the first was waiting
    assert {r.channel: r.status for r in outcome.results} == {"teams": "delivered", "servicenow": "delivered"}
    assert [r.channel for r in outcome.results] == ["teams", "servicenow"]
    assert len(teams.posts) == 1 and len(sn.incidents) == 1
    # AND when our storage fails under the second channel, the message is not acknowledged
    from shared.errors import StorageError

    class BrokenServiceNow(RecordingServiceNow):
        def find_active(self, cid):
            raise StorageError("storage unreachable")

    delivery, store = make(servicenow=BrokenServiceNow())
    with pytest.raises(StorageError):
        delivery.handle(alert_message(_alert(dedupe_key="other")))


def test_an_alert_with_one_channel_to_do_runs_on_the_calling_thread_without_the_channel_pool(make):
    import threading

    # GIVEN a warning (no incident wanted) and a Teams peer that notes the thread it is called on
    threads: list[str] = []

    class ThreadNotingTeams(RecordingTeams):
        def post(self, url, payload):
            threads.append(threading.current_thread().name)
            return super().post(url, payload)

    delivery, _ = make(teams=ThreadNotingTeams(), servicenow=RecordingServiceNow())
    # WHEN it is delivered on both channels
    outcome = delivery.handle(alert_message(_alert(severity="warning", incident=None, dedupe_key="warn-1")))
    # THEN Teams ran here, ServiceNow was skipped without a thread, and no channel pool was built
    assert {r.channel: r.status for r in outcome.results} == {"teams": "delivered", "servicenow": "skipped"}
    assert [r.channel for r in outcome.results] == ["teams", "servicenow"]
    assert threads == [threading.current_thread().name]
    assert delivery._pool is None
