"""Storm control: more than N alerts for one squad within a window become one digest card.

Windows are fixed buckets of `window_minutes` (UTC). In the `alertstorms` table each (squad,
window) partition holds a counter row and one row per alert with the decision taken for it the
first time it was held back, so a redelivered or replayed alert gets the same answer; cards below
the threshold are handed out from permits leased in blocks (one write for several alerts; a replay
of a delivered card is stopped earlier, by its idempotency record). Partitions are spread by squad
and window. The
(N+1)-th alert schedules one digest message for the end of the window; the digest then lists
every alert that was held back. Storm control applies to Teams cards only: incidents are already
one per dedupe key.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.alerts.model import Alert
from shared.errors import BatchRejected, ConflictError, StorageError

TABLE = "alertstorms"
COUNTER = "counter"
DELIVER = "deliver"
DIGEST = "digest"


class StormStore(Protocol):
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> Any: ...
    def transact(self, table: str, operations: list[tuple[Any, ...]]) -> list[dict[str, Any]]: ...
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
    """Counts alerts per (squad, window), leasing card permits in blocks while a window is far below
    its threshold. One etag-checked write (or the counter's creation) moves the counter by a block of
    half the permits left, and this process hands them out without touching storage; once the window
    is at its threshold, each further alert costs one entity-group transaction that writes its member
    row (listed by the digest) and bumps the counter together. A process that leases permits and then
    gets no more alerts for that squad in the window leaves them unused: the window may then send a
    few cards fewer before its digest, never more (nothing is lost: held alerts go in the digest)."""

    def __init__(self, store: StormStore, threshold: int, window_minutes: int) -> None:
        self.store = store
        self.threshold = threshold
        self.window_minutes = window_minutes
        self._counters: dict[str, dict[str, Any]] = {}  # window partition -> last counter entity seen
        self._decided: dict[tuple[str, str], tuple[str, int]] = {}  # (partition, identity) -> (decision, seq)
        self._permits: dict[str, list[int]] = {}  # window partition -> card seqs leased and not used yet
        self._lock = threading.Lock()

    def admit(self, alert: Alert, squad: str, identity: str, now: datetime) -> StormDecision:
        """Decide once per alert identity whether its card goes out now or into the window's digest."""
        window = window_of(squad, now, self.window_minutes)
        if self.threshold <= 0:
            return StormDecision(DELIVER, window, 0)
        with self._lock:
            known = self._decided.get((window.partition, identity))
        if known is not None and known[0] == DELIVER:  # a retry of a card this process counted
            return StormDecision(DELIVER, window, known[1])
        seq = self._permit(window)
        if seq:
            self._remember(window.partition, identity, DELIVER, seq)
            return StormDecision(DELIVER, window, seq)
        return self._count_one(alert, squad, identity, window)

    def _permit(self, window: StormWindow) -> int:
        """A card seq from this process's leased block, leasing a new block when it is empty; 0 when
        the window has no permit left (the alert is then counted one by one, as a digest candidate)."""
        for _ in range(50):
            with self._lock:
                left = self._permits.get(window.partition)
                if left:
                    return left.pop(0)
                counter = self._counters.get(window.partition)
            if counter is not None and int(counter.get("Count", 0)) >= self.threshold:
                return 0
            if counter is None:
                block = max(1, self.threshold // 2)
                fresh = {"PartitionKey": window.partition, "RowKey": COUNTER, "Count": block, "DigestScheduled": False}
                try:
                    answers = self.store.transact(TABLE, [("create", fresh)])
                except BatchRejected:  # another process created it: read it and lease from it
                    with self._lock:
                        self._counters.pop(window.partition, None)
                    read = self.store.get(TABLE, window.partition, COUNTER)
                    if read is not None:
                        with self._lock:
                            self._counters[window.partition] = read
                    continue
                first = 1
            else:
                count = int(counter.get("Count", 0))
                block = max(1, (self.threshold - count) // 2)
                body = {k: v for k, v in counter.items() if k != "_etag"}
                fresh = {**body, "Count": count + block}
                try:
                    answers = self.store.transact(
                        TABLE, [("update", fresh, {"mode": "replace", "etag": counter["_etag"]})]
                    )
                except BatchRejected:  # another process moved it: read it and try again
                    read = self.store.get(TABLE, window.partition, COUNTER)
                    with self._lock:
                        if read is None:
                            self._counters.pop(window.partition, None)
                        else:
                            self._counters[window.partition] = read
                    continue
                first = count + 1
            etag = (answers[0] if answers else {}).get("etag")
            with self._lock:
                if etag:
                    self._counters[window.partition] = {**fresh, "_etag": etag}
                else:
                    self._counters.pop(window.partition, None)
                self._permits[window.partition] = list(range(first + 1, first + block))
            return first
        raise StorageError(f"storm counter {window.partition} is too contended; retry later")

    def _remember(self, partition: str, identity: str, status: str, seq: int) -> None:
        with self._lock:
            if len(self._counters) > 10_000 or len(self._decided) > 100_000 or len(self._permits) > 10_000:
                self._counters.clear()  # bounded memory: forgetting costs a read (and a few permits)
                self._decided.clear()
                self._permits.clear()
            self._decided[(partition, identity)] = (status, seq)

    def _count_one(self, alert: Alert, squad: str, identity: str, window: StormWindow) -> StormDecision:
        """At (or over) the threshold: write the alert's member row and bump the counter in one transaction."""
        summary = json.dumps(
            {"kind": alert.kind, "severity": alert.severity, "title": alert.title[:300], "action": alert.action}
        )
        for _ in range(50):
            with self._lock:
                counter = self._counters.get(window.partition)
            if counter is None:
                counter = self.store.get(TABLE, window.partition, COUNTER)
            seq = int(counter.get("Count", 0)) + 1 if counter else 1
            status = DELIVER if seq <= self.threshold else DIGEST
            member = {
                "PartitionKey": window.partition,
                "RowKey": identity,
                "Squad": squad,
                "Seq": seq,
                "Decision": status,
                "Alert": summary,
                "DedupeKey": alert.dedupe_key[:1000],
            }
            if counter is None:
                bump: tuple[Any, ...] = (
                    "create",
                    {"PartitionKey": window.partition, "RowKey": COUNTER, "Count": 1, "DigestScheduled": False},
                )
            else:
                body = {k: v for k, v in counter.items() if k != "_etag"}
                bump = ("update", {**body, "Count": seq}, {"mode": "replace", "etag": counter["_etag"]})
            try:
                answers = self.store.transact(TABLE, [("create", member), bump])
            except BatchRejected as rejected:
                if rejected.index == 0:  # this alert was counted before: the same answer again
                    seen = self.store.get(TABLE, window.partition, identity) or {}
                    status, seq = str(seen.get("Decision", DELIVER)), int(seen.get("Seq", 0))
                    scheduled = False
                    if status == DIGEST:
                        counter = self.store.get(TABLE, window.partition, COUNTER) or {}
                        scheduled = bool(counter.get("DigestScheduled"))
                    return StormDecision(status, window, seq, schedule_digest=status == DIGEST and not scheduled)
                with self._lock:
                    self._counters.pop(window.partition, None)
                continue  # the counter moved (another worker): read it and try again
            fresh = {**bump[1], "_etag": (answers[1] if len(answers) > 1 else {}).get("etag")}
            with self._lock:
                if fresh["_etag"]:
                    self._counters[window.partition] = fresh
            self._remember(window.partition, identity, status, seq)
            scheduled = bool(fresh.get("DigestScheduled"))
            return StormDecision(status, window, seq, schedule_digest=status == DIGEST and not scheduled)
        raise StorageError(f"storm counter {window.partition} is too contended; retry later")

    def mark_digest_scheduled(self, window: StormWindow) -> None:
        """Remember that the digest message is on the queue (best effort: a second one is harmless)."""
        for _ in range(10):
            counter = self.store.get(TABLE, window.partition, COUNTER)
            if counter is None or counter.get("DigestScheduled"):
                return
            try:
                self.store.replace_if_unchanged(TABLE, {**counter, "DigestScheduled": True})
                with self._lock:
                    self._counters.pop(window.partition, None)
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
