"""`Idempotency.once`: typed outcomes, insert-first round trips, per-scope lease, hash-spread partitions;
one Retry-After parser and one backoff rule; pooled sessions that do not read the environment per request."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest
import requests

from shared.adapters.http import pooled_session
from shared.errors import ConflictError, TransientUpstreamError
from shared.idempotency import TABLE, Idempotency, OnceStatus, Scope, records
from shared.retry import backoff_delay, parse_retry_after, retry_after_from
from tests.unit.policy_memory import MemoryStore

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class CountingStore(MemoryStore):
    """The in-memory store, counting each call as one storage round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def insert(self, *a, **k):
        self.calls.append("insert")
        return super().insert(*a, **k)

    def get(self, *a, **k):
        self.calls.append("get")
        return super().get(*a, **k)

    def upsert(self, *a, **k):
        self.calls.append("upsert")
        return super().upsert(*a, **k)

    def delete(self, *a, **k):
        self.calls.append("delete")
        return super().delete(*a, **k)

    def replace_if_unchanged(self, *a, **k):
        self.calls.append("replace")
        return super().replace_if_unchanged(*a, **k)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


SCOPE = Scope("test-effects", lease=timedelta(minutes=2))


def test_first_run_costs_a_claim_and_a_completion_and_a_replay_returns_the_stored_result():
    # GIVEN an empty store
    store = CountingStore()
    idem = Idempotency(store)
    # WHEN an effect runs once, then the same key comes again
    first = idem.once(SCOPE, "k1", lambda: {"n": 1})
    calls_first = list(store.calls)
    store.calls.clear()
    again = idem.once(SCOPE, "k1", lambda: pytest.fail("ran twice"))
    # THEN the first is RAN with two round trips (insert, upsert: no read before the insert),
    # the replay is REPLAYED with the first result, for a failed insert and one read
    assert first.status is OnceStatus.RAN and first.result == {"n": 1}
    assert calls_first == ["insert", "upsert"]
    assert again.status is OnceStatus.REPLAYED and again.result == {"n": 1}
    assert store.calls == ["insert", "get"]


def test_a_failed_effect_releases_its_claim_so_the_retry_runs_at_once():
    store = CountingStore()
    idem = Idempotency(store)

    def boom() -> dict:
        raise TransientUpstreamError("peer down")

    with pytest.raises(TransientUpstreamError):
        idem.once(SCOPE, "k2", boom)
    assert idem.record(SCOPE, "k2") is None
    assert idem.once(SCOPE, "k2", lambda: {"ok": True}).ran


def test_a_key_held_by_a_live_worker_is_busy_until_its_lease_ends_then_taken_over():
    # GIVEN a worker that claimed a key and crashed (never completed nor released)
    clock = Clock()
    store = MemoryStore()
    idem = Idempotency(store, clock=clock)
    assert idem.claim(SCOPE, "k3").status == "new"
    # WHEN another worker comes 30 s later, THEN it is BUSY with the lease's remaining time
    clock.now = T0 + timedelta(seconds=30)
    busy = idem.once(SCOPE, "k3", lambda: pytest.fail("ran while held"))
    assert busy.status is OnceStatus.BUSY and busy.retry_after == pytest.approx(90)
    with pytest.raises(TransientUpstreamError) as raised:
        busy.raise_if_busy("the test effect")
    assert raised.value.retry_after == pytest.approx(90)
    # AND once the lease has run out the work is picked up, exactly once
    clock.now = T0 + timedelta(minutes=2, seconds=1)
    taken = idem.once(SCOPE, "k3", lambda: {"by": "second"})
    assert taken.ran and idem.once(SCOPE, "k3", lambda: {"by": "third"}).result == {"by": "second"}


def test_keep_false_does_not_store_the_result_and_a_reused_key_with_another_payload_is_a_conflict():
    store = MemoryStore()
    idem = Idempotency(store)
    first = idem.once(SCOPE, "k4", lambda: {"status": 500}, keep=lambda r: r["status"] < 300)
    assert first.ran and idem.record(SCOPE, "k4") is None
    idem.once(SCOPE, "k5", lambda: {"status": 200}, payload={"a": 1})
    with pytest.raises(ConflictError):
        idem.once(SCOPE, "k5", lambda: {"status": 200}, payload={"a": 2})


def test_records_spread_over_partitions_by_key_hash_and_are_still_listed_by_scope():
    store = MemoryStore()
    idem = Idempotency(store)
    scope = Scope("spread", spread=16)
    for i in range(200):
        idem.once(scope, f"key-{i:03d}", lambda: {})
    partitions = {p for (p, _r) in store.tables[TABLE]}
    assert len(partitions) == 16 and all(p.startswith("spread-") for p in partitions)
    listed = list(records(store, Scope("spread", spread=16)))
    assert len(listed) == 200  # one range query over spread-00..spread-0f


def test_claiming_completes_on_a_clean_exit_and_a_single_partition_scope_keeps_its_old_partition_name():
    # GIVEN a scope listed by `PartitionKey eq '<scope>'` (spread=1, the layout of the old claim API)
    store = CountingStore()
    idem = Idempotency(store)
    runs = Scope("cost-partition", spread=1)
    # WHEN a block of work holds the claim and sets its result
    with idem.claiming(runs, "2026-11-01..2026-11-07:1-of-2") as held:
        assert held.ran
        held.result = {"series": 3}
    # THEN it cost a claim and a completion, in the partition named after the scope
    assert store.calls == ["insert", "upsert"]
    [(partition, _row)] = list(store.tables[TABLE])
    assert partition == "cost-partition"
    # AND a later block is REPLAYED with the stored result, and the one-call form agrees
    with idem.claiming(runs, "2026-11-01..2026-11-07:1-of-2") as again:
        assert again.replayed and again.result == {"series": 3}
    assert idem.once(runs, "2026-11-01..2026-11-07:1-of-2", lambda: pytest.fail("ran twice")).replayed


def test_claiming_releases_on_an_exception_or_on_request_and_is_busy_while_held():
    clock = Clock()
    store = MemoryStore()
    idem = Idempotency(store, clock=clock)
    # an exception in the block frees the key for an immediate retry
    with pytest.raises(TransientUpstreamError), idem.claiming(SCOPE, "c1"):
        raise TransientUpstreamError("fan-out failed")
    assert idem.record(SCOPE, "c1") is None
    # release(): nothing was done (e.g. the input is not there yet), nothing is stored
    with idem.claiming(SCOPE, "c1") as held:
        held.release()
        held.result = {"ignored": True}
    assert idem.record(SCOPE, "c1") is None
    # a claim left by a crashed holder is BUSY with its lease's remaining time, then taken over
    assert idem.claim(SCOPE, "c2").status == "new"
    clock.now = T0 + timedelta(seconds=45)
    with idem.claiming(SCOPE, "c2") as busy:
        assert busy.busy and busy.retry_after == pytest.approx(75)
    assert idem.record(SCOPE, "c2")["Status"] == "INPROGRESS"  # a BUSY block leaves the holder's claim alone
    clock.now = T0 + timedelta(minutes=2, seconds=1)
    with idem.claiming(SCOPE, "c2") as taken:
        assert taken.ran
        taken.result = {"by": "second"}
    assert idem.once(SCOPE, "c2", lambda: {"by": "third"}).result == {"by": "second"}


def test_retry_after_reads_seconds_http_dates_and_azure_millisecond_headers():
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after("7") == 7
    assert parse_retry_after(date, now=now) == pytest.approx(42)
    assert parse_retry_after(email.utils.formatdate(now - 10, usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after(None) is None
    assert retry_after_from({"x-ms-retry-after-ms": "1500"}) == 1.5
    assert retry_after_from({"Retry-After": "2", "x-ms-retry-after-ms": "3500"}) == 3.5
    assert retry_after_from({}) is None


def test_backoff_doubles_up_to_its_cap_with_jitter_and_never_undercuts_retry_after():
    assert backoff_delay(1, base=1, cap=30, rng=lambda: 1.0) == 1
    assert backoff_delay(4, base=1, cap=30, rng=lambda: 1.0) == 8
    assert backoff_delay(10, base=1, cap=30, rng=lambda: 1.0) == 30
    assert backoff_delay(3, base=1, cap=30, jitter="equal", rng=lambda: 0.0) == 2  # never below half
    assert backoff_delay(1, base=1, cap=30, rng=lambda: 0.5, retry_after=12) == 12


def test_pooled_sessions_do_not_read_the_environment_or_netrc_per_request(monkeypatch):
    # GIVEN proxies in the environment
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,.internal.example")
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", lambda *a, **k: pytest.fail("netrc read per request"))
    session = pooled_session()
    # THEN trust_env is off, and proxies are resolved from what was read once, NO_PROXY honoured
    assert session.trust_env is False
    assert session.proxies_for("https://prod-01.westeurope.logic.azure.com/x") == {"https": "http://proxy.example:3128"}
    assert session.proxies_for("https://api.internal.example/x") == {}
    merged = session.merge_environment_settings("https://contoso.service-now.com/api", {}, None, True, None)
    assert merged["proxies"] == {"https": "http://proxy.example:3128"}


def test_an_insert_repeated_after_a_lost_answer_is_recognised_as_our_own_claim():
    # GIVEN a store whose first insert is applied but its answer lost, so the caller inserts again
    from azure.core.exceptions import ServiceResponseError

    from shared.adapters.storage import _once_more_on_reset

    store = MemoryStore()
    calls = []

    def insert_lost_answer():
        calls.append(1)
        applied = store.insert(TABLE, "p", "r", {"v": 1})
        if len(calls) == 1:
            raise ServiceResponseError("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))")
        return applied

    # WHEN the storage layer repeats it once, THEN the repeat reports "exists" (the first was applied)
    assert _once_more_on_reset(insert_lost_answer) is False and len(calls) == 2

    # AND a claim whose insert answered "exists" for that reason reads its own holder token: NEW, not BUSY
    class LostAnswerStore(MemoryStore):
        def insert(self, table, partition, row, fields):
            super().insert(table, partition, row, fields)
            return False  # applied, but reported as a conflict after the repeat

    claim = Idempotency(LostAnswerStore()).claim(SCOPE, "k-lost")
    assert claim.status == "new"


class EtagStore(CountingStore):
    """A store that tells the etag of what it inserts and replaces, as StateStore does."""

    def insert_etag(self, table, partition, row, fields):
        self.calls.append("insert")
        if not MemoryStore.insert(self, table, partition, row, fields):
            return None
        return str(MemoryStore.get(self, table, partition, row)["_etag"])

    def replace_if_unchanged(self, table, entity):
        self.calls.append("replace")
        entity = {**entity, "_etag": _etag_of(self, table, entity, entity["_etag"])}
        MemoryStore.replace_if_unchanged(self, table, entity)
        return str(MemoryStore.get(self, table, entity["PartitionKey"], entity["RowKey"])["_etag"])


def _etag_of(store, table, entity, token):
    current = MemoryStore.get(store, table, entity["PartitionKey"], entity["RowKey"])
    return current["_etag"] if current is not None and str(current["_etag"]) == str(token) else object()


def test_a_held_claim_is_resumed_by_its_retry_with_one_write_and_nobody_else_runs_it_meanwhile():
    store = EtagStore()
    idem = Idempotency(store)
    kept: list[str] = []

    def hold(exc, token):
        kept.append(token)
        return isinstance(exc, TransientUpstreamError)

    def failing():
        raise TransientUpstreamError("503")

    # GIVEN an effect that fails transiently while its caller holds the claim for its own retry
    with pytest.raises(TransientUpstreamError):
        idem.once(SCOPE, "held", failing, hold=hold)
    assert store.calls == ["insert"] and kept  # no release
    # WHEN another worker comes meanwhile, then the retry comes with the token
    other = idem.once(SCOPE, "held", lambda: pytest.fail("ran while held"))
    store.calls.clear()
    retried = idem.once(SCOPE, "held", lambda: "done", resume=kept[0])
    # THEN the other is BUSY, and the retry re-takes the claim with one write, then completes it
    assert other.status is OnceStatus.BUSY
    assert retried.status is OnceStatus.RAN and store.calls == ["replace", "upsert"]
    # AND a stale token (the record changed since) falls back to an ordinary claim: here, a replay
    store.calls.clear()
    again = idem.once(SCOPE, "held", lambda: pytest.fail("ran twice"), resume=kept[0])
    assert again.status is OnceStatus.REPLAYED and store.calls == ["replace", "insert", "get"]
