"""Storm control: more than N alerts for one squad within a window become one digest card.

Windows are fixed buckets of `window_minutes` (UTC). In the `alertstorms` table each (squad,
window) partition holds a counter row and one row per alert with the decision taken for it the
first time it was seen, so a redelivered or replayed alert always gets the same answer. The
(N+1)-th alert schedules one digest message for the end of the window; the digest then lists
every alert that was held back. Storm control applies to Teams cards only: incidents are already
one per dedupe key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.alerts.model import Alert
from shared.errors import ConflictError, StorageError

TABLE = "alertstorms"
COUNTER = "counter"
DELIVER = "deliver"
DIGEST = "digest"


class StormStore(Protocol):
    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool: ...
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> None: ...
    def query(self, table: str, filter: str | None = None, **params: Any) -> Any: ...


@dataclass(frozen=True)
class StormWindow:
    squad: str
    start: datetime
    minutes: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)

    @property
    def partition(self) -> str:
        squad = hashlib.sha256(self.squad.lower().encode()).hexdigest()[:16]
        return f"{squad}-{self.start:%Y%m%dT%H%M}"


def window_of(squad: str, now: datetime, minutes: int) -> StormWindow:
    """The fixed window (UTC buckets of `minutes`) that `now` falls in."""
    epoch = int(now.timestamp()) // (minutes * 60) * (minutes * 60)
    return StormWindow(squad, datetime.fromtimestamp(epoch, UTC), minutes)


@dataclass(frozen=True)
class StormDecision:
    """`deliver` the card now, or hold it for the `digest`; `schedule_digest` asks the caller to enqueue
    the digest message for `window.end` (it may be asked more than once; the digest is idempotent)."""

    status: str
    window: StormWindow
    seq: int
    schedule_digest: bool = False


class StormGate:
    def __init__(self, store: StormStore, threshold: int, window_minutes: int) -> None:
        self.store = store
        self.threshold = threshold
        self.window_minutes = window_minutes

    def admit(self, alert: Alert, squad: str, identity: str, now: datetime) -> StormDecision:
        """Decide once per alert identity whether its card goes out now or into the window's digest."""
        window = window_of(squad, now, self.window_minutes)
        if self.threshold <= 0:
            return StormDecision(DELIVER, window, 0)
        seen = self.store.get(TABLE, window.partition, identity)
        if seen is None:
            seq, digest_scheduled = self._count(window)
            status = DELIVER if seq <= self.threshold else DIGEST
            member = {
                "Squad": squad,
                "Seq": seq,
                "Decision": status,
                "Alert": json.dumps(
                    {"kind": alert.kind, "severity": alert.severity, "title": alert.title[:300], "action": alert.action}
                ),
                "DedupeKey": alert.dedupe_key[:1000],
            }
            if not self.store.insert(TABLE, window.partition, identity, member):
                seen = self.store.get(TABLE, window.partition, identity)
        if seen is not None:
            status, seq = str(seen.get("Decision", DELIVER)), int(seen.get("Seq", 0))
            counter = self.store.get(TABLE, window.partition, COUNTER) or {}
            digest_scheduled = bool(counter.get("DigestScheduled"))
        return StormDecision(status, window, seq, schedule_digest=status == DIGEST and not digest_scheduled)

    def mark_digest_scheduled(self, window: StormWindow) -> None:
        """Remember that the digest message is on the queue (best effort: a second one is harmless)."""
        for _ in range(10):
            counter = self.store.get(TABLE, window.partition, COUNTER)
            if counter is None or counter.get("DigestScheduled"):
                return
            try:
                self.store.replace_if_unchanged(TABLE, {**counter, "DigestScheduled": True})
                return
            except ConflictError:
                continue

    def held_back(self, window: StormWindow) -> list[Alert]:
        """The alerts of a window that wait for its digest, in arrival order."""
        rows = self.store.query(TABLE, "PartitionKey eq @pk and Decision eq @d", pk=window.partition, d=DIGEST)
        out = []
        for row in sorted(rows, key=lambda r: int(r.get("Seq", 0))):
            doc = json.loads(row.get("Alert") or "{}")
            out.append(
                Alert(
                    kind=doc.get("kind", "digest"),
                    severity=doc.get("severity", "warning"),
                    title=doc.get("title") or "(untitled)",
                    resource_id="-",
                    owner=window.squad,
                    facts=(),
                    links=(),
                    dedupe_key=row.get("DedupeKey") or row["RowKey"],
                    action=doc.get("action", "open"),
                )
            )
        return out

    def _count(self, window: StormWindow) -> tuple[int, bool]:
        """Increment the window's counter with optimistic concurrency; (new count, digest scheduled?)."""
        for _ in range(50):
            counter = self.store.get(TABLE, window.partition, COUNTER)
            if counter is None:
                if self.store.insert(TABLE, window.partition, COUNTER, {"Count": 1, "DigestScheduled": False}):
                    return 1, False
                continue
            count = int(counter.get("Count", 0)) + 1
            try:
                self.store.replace_if_unchanged(TABLE, {**counter, "Count": count})
            except ConflictError:
                continue
            return count, bool(counter.get("DigestScheduled"))
        raise StorageError(f"storm counter {window.partition} is too contended; retry later")
