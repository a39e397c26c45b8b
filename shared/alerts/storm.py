"""Storm control: more than N alerts for one squad within a window become one digest card.

Windows are fixed buckets of `window_minutes` (UTC). Each (squad, window) has a counter row and one
row per alert with the decision taken for it the first time it was held back, so a redelivered or
replayed alert gets the same answer; cards below the threshold are handed out from permits leased
in blocks (one write for several alerts; a replay of a delivered card is stopped earlier, by its
idempotency record). Where the rows live (`StormWindow.table`/`pk`/`row`):
- a squad whose cards go to a webhook: in the webhook's partition of the Teams budget table
  (`teamsbudget`, `webhook-<hash>`, rows `storm-<squad hash>-<window>-...`), beside the webhook's
  rate shares, so that the squad's first alert in a window leases its storm permits and a rate share
  in ONE entity-group transaction (`admit(share=...)`) instead of two writes;
- a squad without a webhook (the local outbox): table `alertstorms`, one partition per (squad, window).
The (N+1)-th alert schedules one digest message for the end of the window; the digest then lists
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
WEBHOOK_TABLE = "teamsbudget"  # = SharedRateBudget.TABLE: storm rows beside the webhook's rate shares
COUNTER = "counter"
DELIVER = "deliver"
DIGEST = "digest"


class StormStore(Protocol):
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> Any: ...
    def transact(self, table: str, operations: list[tuple[Any, ...]]) -> list[dict[str, Any]]: ...
    def query(self, table: str, filter: str | None = None, **params: Any) -> Any: ...


class ShareLease(Protocol):
    """A Teams rate share to lease in the same transaction as a storm counter write (one partition)."""

    table: str
    partition: str
    op: tuple[Any, ...]

    def commit(self, answer: dict[str, Any]) -> None: ...
    def reject(self) -> None: ...


@dataclass(frozen=True)
class StormWindow:
    """A squad's window; `webhook` (a `webhook-<hash>` partition, "" for none) says where its rows live."""

    squad: str
    start: datetime
    minutes: int
    webhook: str = ""

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)

    @property
    def partition(self) -> str:
        """The window's id (squad hash and start): names its digest, and its partition without a webhook."""
        squad = hashlib.sha256(self.squad.lower().encode()).hexdigest()[:16]
        return f"{squad}-{self.start:%Y%m%dT%H%M}"

    @property
    def table(self) -> str:
        return WEBHOOK_TABLE if self.webhook else TABLE

    @property
    def pk(self) -> str:
        return self.webhook or self.partition

    @property
    def prefix(self) -> str:
        return f"storm-{self.partition}-" if self.webhook else ""

    def row(self, name: str) -> str:
        """The row key of the counter (`COUNTER`) or of an alert's member row (its identity)."""
        return self.prefix + name

    @property
    def key(self) -> str:
        return f"{self.table}/{self.pk}/{self.prefix}"


def window_of(squad: str, now: datetime, minutes: int, webhook: str = "") -> StormWindow:
    """The fixed window (UTC buckets of `minutes`) that `now` falls in."""
    epoch = int(now.timestamp()) // (minutes * 60) * (minutes * 60)
    return StormWindow(squad, datetime.fromtimestamp(epoch, UTC), minutes, webhook)


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
    few cards fewer before its digest, never more (nothing is lost: held alerts go in the digest).
    A block write can carry a Teams rate-share lease of the same partition (`admit(share=...)`)."""

    def __init__(self, store: StormStore, threshold: int, window_minutes: int) -> None:
        self.store = store
        self.threshold = threshold
        self.window_minutes = window_minutes
        self._counters: dict[str, dict[str, Any]] = {}  # window key -> last counter entity seen
        self._decided: dict[tuple[str, str], tuple[str, int]] = {}  # (window key, identity) -> (decision, seq)
        self._permits: dict[str, list[int]] = {}  # window key -> card seqs leased and not used yet
        self._lock = threading.Lock()

    def admit(
        self,
        alert: Alert,
        squad: str,
        identity: str,
        now: datetime,
        *,
        webhook: str = "",
        share: ShareLease | None = None,
    ) -> StormDecision:
        """Decide once per alert identity whether its card goes out now or into the window's digest.
        `webhook`: the partition of the webhook the card goes to ("" for none); `share`: a rate-share
        lease of that partition to write with the counter, if the counter needs a write."""
        window = window_of(squad, now, self.window_minutes, webhook)
        if self.threshold <= 0:
            return StormDecision(DELIVER, window, 0)
        # reads of the process's maps take no lock (a dict get or a list pop is atomic in CPython): with
        # dozens of worker threads, a lock held while its thread waits for the GIL stalls them all
        known = self._decided.get((window.key, identity))
        if known is not None and known[0] == DELIVER:  # a retry of a card this process counted
            return StormDecision(DELIVER, window, known[1])
        if share is not None and (share.table != window.table or share.partition != window.pk):
            share = None
        seq = self._permit(window, share)
        if seq:
            self._remember(window.key, identity, DELIVER, seq)
            return StormDecision(DELIVER, window, seq)
        return self._count_one(alert, squad, identity, window)

    def _permit(self, window: StormWindow, share: ShareLease | None = None) -> int:
        """A card seq from this process's leased block, leasing a new block when it is empty; 0 when
        the window has no permit left (the alert is then counted one by one, as a digest candidate)."""
        for _ in range(50):
            left = self._permits.get(window.key)
            try:
                if left:
                    return left.pop(0)
            except IndexError:
                pass  # another thread took the last one between the check and the pop
            counter = self._counters.get(window.key)
            if counter is not None and int(counter.get("Count", 0)) >= self.threshold:
                return 0
            if counter is None:
                block = max(1, self.threshold // 2)
                fresh = {
                    "PartitionKey": window.pk,
                    "RowKey": window.row(COUNTER),
                    "Count": block,
                    "DigestScheduled": False,
                }
                op: tuple[Any, ...] = ("create", fresh)
                first = 1
            else:
                count = int(counter.get("Count", 0))
                block = max(1, (self.threshold - count) // 2)
                body = {k: v for k, v in counter.items() if k != "_etag"}
                fresh = {**body, "Count": count + block}
                op = ("update", fresh, {"mode": "replace", "etag": counter["_etag"]})
                first = count + 1
            try:
                answers = self.store.transact(window.table, [op, share.op] if share is not None else [op])
            except BatchRejected as rejected:
                if share is not None and rejected.index != 0:  # the share is not free: the counter alone
                    share.reject()
                    share = None
                    continue
                # another process created or moved the counter: read it and lease from it
                read = self.store.get(window.table, window.pk, window.row(COUNTER))
                with self._lock:
                    if read is None:
                        self._counters.pop(window.key, None)
                    else:
                        self._counters[window.key] = read
                continue
            if share is not None:
                share.commit(answers[1] if len(answers) > 1 else {})
            etag = (answers[0] if answers else {}).get("etag")
            with self._lock:
                if etag:
                    self._counters[window.key] = {**fresh, "_etag": etag}
                else:
                    self._counters.pop(window.key, None)
                self._permits[window.key] = list(range(first + 1, first + block))
            return first
        raise StorageError(f"storm counter {window.partition} is too contended; retry later")

    def _remember(self, key: str, identity: str, status: str, seq: int) -> None:
        with self._lock:
            if len(self._counters) > 10_000 or len(self._decided) > 100_000 or len(self._permits) > 10_000:
                self._counters.clear()  # bounded memory: forgetting costs a read (and a few permits)
                self._decided.clear()
                self._permits.clear()
            self._decided[(key, identity)] = (status, seq)

    def _count_one(self, alert: Alert, squad: str, identity: str, window: StormWindow) -> StormDecision:
        """At (or over) the threshold: write the alert's member row and bump the counter in one transaction."""
        summary = json.dumps(
            {"kind": alert.kind, "severity": alert.severity, "title": alert.title[:300], "action": alert.action}
        )
        for _ in range(50):
            counter = self._counters.get(window.key)
            if counter is None:
                counter = self.store.get(window.table, window.pk, window.row(COUNTER))
            seq = int(counter.get("Count", 0)) + 1 if counter else 1
            status = DELIVER if seq <= self.threshold else DIGEST
            member = {
                "PartitionKey": window.pk,
                "RowKey": window.row(identity),
                "Squad": squad,
                "Seq": seq,
                "Decision": status,
                "Alert": summary,
                "DedupeKey": alert.dedupe_key[:1000],
            }
            if counter is None:
                bump: tuple[Any, ...] = (
                    "create",
                    {"PartitionKey": window.pk, "RowKey": window.row(COUNTER), "Count": 1, "DigestScheduled": False},
                )
            else:
                body = {k: v for k, v in counter.items() if k != "_etag"}
                bump = ("update", {**body, "Count": seq}, {"mode": "replace", "etag": counter["_etag"]})
            try:
                answers = self.store.transact(window.table, [("create", member), bump])
            except BatchRejected as rejected:
                if rejected.index == 0:  # this alert was counted before: the same answer again
                    seen = self.store.get(window.table, window.pk, window.row(identity)) or {}
                    status, seq = str(seen.get("Decision", DELIVER)), int(seen.get("Seq", 0))
                    scheduled = False
                    if status == DIGEST:
                        counter = self.store.get(window.table, window.pk, window.row(COUNTER)) or {}
                        scheduled = bool(counter.get("DigestScheduled"))
                    return StormDecision(status, window, seq, schedule_digest=status == DIGEST and not scheduled)
                with self._lock:
                    self._counters.pop(window.key, None)
                continue  # the counter moved (another worker): read it and try again
            fresh = {**bump[1], "_etag": (answers[1] if len(answers) > 1 else {}).get("etag")}
            with self._lock:
                if fresh["_etag"]:
                    self._counters[window.key] = fresh
            self._remember(window.key, identity, status, seq)
            scheduled = bool(fresh.get("DigestScheduled"))
            return StormDecision(status, window, seq, schedule_digest=status == DIGEST and not scheduled)
        raise StorageError(f"storm counter {window.partition} is too contended; retry later")

    def mark_digest_scheduled(self, window: StormWindow) -> None:
        """Remember that the digest message is on the queue (best effort: a second one is harmless)."""
        for _ in range(10):
            counter = self.store.get(window.table, window.pk, window.row(COUNTER))
            if counter is None or counter.get("DigestScheduled"):
                return
            try:
                self.store.replace_if_unchanged(window.table, {**counter, "DigestScheduled": True})
                with self._lock:
                    self._counters.pop(window.key, None)
                return
            except ConflictError:
                continue

    def held_back(self, window: StormWindow) -> list[Alert]:
        """The alerts of a window that wait for its digest, in arrival order."""
        if window.prefix:
            rows = self.store.query(
                window.table,
                "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi and Decision eq @d",
                pk=window.pk,
                lo=window.prefix,
                hi=window.prefix[:-1] + ".",  # "-" < "." : every row key that starts with the prefix
                d=DIGEST,
            )
        else:
            rows = self.store.query(window.table, "PartitionKey eq @pk and Decision eq @d", pk=window.pk, d=DIGEST)
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
                    dedupe_key=row.get("DedupeKey") or row["RowKey"][len(window.prefix) :],
                    action=doc.get("action", "open"),
                )
            )
        return out
