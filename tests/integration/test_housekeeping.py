"""Housekeeping on Azurite: expired idempotency records and ended storm windows go; what is live
(a record still valid, a claim taken over at the moment of the purge, the Teams rate shares) stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.adapters.storage import StateStore
from shared.alerts import storm
from shared.housekeeping import purge
from shared.idempotency import TABLE, Idempotency, OnceStatus, Scope


def test_expired_records_and_ended_storm_windows_are_deleted_and_live_ones_kept(env):
    store = StateStore.from_connection_string(env["AzureWebJobsStorage"])
    now = datetime.now(UTC)
    short = Scope("hk-short", lease=timedelta(seconds=30), expires_after=timedelta(minutes=1), spread=1)
    long = Scope("hk-long", expires_after=timedelta(days=30), spread=1)
    old = Idempotency(store, clock=lambda: now - timedelta(hours=1))  # wrote an hour ago: expired
    for i in range(130):  # more than one transaction's worth in one partition
        assert old.once(short, f"done-{i}", lambda: {"n": 1}).status is OnceStatus.RAN
    fresh = Idempotency(store, clock=lambda: now)
    assert fresh.once(long, "live", lambda: {"n": 2}).status is OnceStatus.RAN
    store.upsert(storm.TABLE, "hk-window", "counter", {"Count": 3})
    store.upsert(storm.WEBHOOK_TABLE, "webhook-hk", "storm-hk-counter", {"Count": 3})
    store.upsert(storm.WEBHOOK_TABLE, "webhook-hk", "share-0", {"Holder": "x", "LeaseUntil": 0.0})

    # the storm rows are minutes old: kept today, deleted once STORM_KEEP has passed
    first = purge(store, now)
    assert first[TABLE] >= 130
    assert list(store.query(TABLE, "PartitionKey eq @pk", pk="hk-short")) == []
    assert fresh.once(long, "live", lambda: {"n": 3}).result == {"n": 2}  # still answers its replay
    assert store.get(storm.TABLE, "hk-window", "counter") is not None

    later = purge(store, now + timedelta(days=3))
    assert later[storm.TABLE] >= 1 and later[storm.WEBHOOK_TABLE] >= 1
    assert store.get(storm.TABLE, "hk-window", "counter") is None
    assert store.get(storm.WEBHOOK_TABLE, "webhook-hk", "storm-hk-counter") is None
    assert store.get(storm.WEBHOOK_TABLE, "webhook-hk", "share-0") is not None  # rate shares are kept
    assert purge(store, now)[TABLE] == 0  # nothing left to do: safe to run again


def test_a_record_taken_over_between_the_read_and_the_delete_is_kept(env):
    store = StateStore.from_connection_string(env["AzureWebJobsStorage"])
    now = datetime.now(UTC)
    scope = Scope("hk-race", lease=timedelta(seconds=30), expires_after=timedelta(minutes=1), spread=1)
    Idempotency(store, clock=lambda: now - timedelta(hours=1)).claim(scope, "k")  # crashed holder, expired
    expired = list(store.query_etags(TABLE, "PartitionKey eq @pk", pk="hk-race"))
    taken = Idempotency(store, clock=lambda: now).claim(scope, "k")  # a worker takes it over now
    assert taken.status.name == "NEW"

    class StaleRead:  # the purge read the row just before the takeover
        def __getattr__(self, name):
            return getattr(store, name)

        def query_etags(self, table, filter, **params):
            return iter(expired) if table == TABLE else store.query_etags(table, filter, **params)

    assert purge(StaleRead(), now)[TABLE] == 0
    row = store.get(TABLE, expired[0]["PartitionKey"], expired[0]["RowKey"])
    assert row is not None and row["Status"] != "completed"  # the fresh claim is still there
