"""Housekeeping: delete the storage records whose purpose has ended, so tables do not grow forever.

- `idempotency`: records past their scope's `ExpiresAt` (a completed record then no longer answers a
  replay, an in-progress one has long lost its lease: `Idempotency` already treats both as absent).
  Each is deleted only if unchanged since it was read, so a worker that takes an expired key over at
  that moment keeps its fresh claim.
- storm control: a window's counter and member rows (`alertstorms`, and `storm-*` rows beside the
  Teams rate shares in `teamsbudget`) untouched for `STORM_KEEP` (windows last minutes; their digest
  is sent at the window's end). The rate shares themselves (4 rows per webhook) are kept.

Deletes go by entity-group transactions of up to 100 rows of one partition; a transaction refused
because a row changed falls back to row-by-row conditional deletes (the changed row is kept).
Runs daily from the `housekeeping` timer (`HOUSEKEEPING_SCHEDULE`); safe to run twice or concurrently.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from shared.alerts import storm
from shared.errors import BatchRejected, ConflictError
from shared.idempotency import TABLE as IDEMPOTENCY_TABLE

log = logging.getLogger(__name__)

STORM_KEEP = timedelta(days=2)
BATCH = 100  # Azure Tables: at most 100 operations per entity-group transaction


def purge(store: Any, now: datetime) -> dict[str, int]:
    """Delete what has expired as of `now`; the number of rows deleted, by table."""
    expired = store.query_etags(IDEMPOTENCY_TABLE, "ExpiresAt lt @now", now=now.isoformat())
    stale = {"t": now - STORM_KEEP}
    report = {
        IDEMPOTENCY_TABLE: _delete(store, IDEMPOTENCY_TABLE, expired),
        storm.TABLE: _delete(store, storm.TABLE, store.query_etags(storm.TABLE, "Timestamp lt @t", **stale)),
        storm.WEBHOOK_TABLE: _delete(
            store,
            storm.WEBHOOK_TABLE,
            store.query_etags(
                storm.WEBHOOK_TABLE, "RowKey ge 'storm-' and RowKey lt 'storm.' and Timestamp lt @t", **stale
            ),
        ),
    }
    log.info("housekeeping: expired records deleted", extra={"deleted": report})
    return report


def _delete(store: Any, table: str, rows: Iterable[dict[str, Any]]) -> int:
    by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    deleted = 0
    for row in rows:
        group = by_partition[row["PartitionKey"]]
        group.append(row)
        if len(group) == BATCH:
            deleted += _delete_group(store, table, group)
            group.clear()
    for group in by_partition.values():
        if group:
            deleted += _delete_group(store, table, group)
    return deleted


def _delete_group(store: Any, table: str, group: list[dict[str, Any]]) -> int:
    ops = [("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]}, {"etag": r["_etag"]}) for r in group]
    try:
        store.transact(table, ops)
        return len(group)
    except BatchRejected:  # a row changed (taken over) or went meanwhile: row by row, keeping changed ones
        deleted = 0
        for row in group:
            try:
                store.delete(table, row["PartitionKey"], row["RowKey"], etag=row["_etag"])
                deleted += 1
            except ConflictError:
                continue
        return deleted
