"""Teams incoming webhooks (Workflows "When a Teams webhook request is received", or legacy connectors).

`TeamsWebhook.post(url, payload)` posts one message and raises the project's error types:
- any 2xx is success (Workflows answers 202 with an empty body) unless the body reports a 429
  (legacy connectors answer 200 "Microsoft Teams endpoint returned HTTP error 429" when throttled);
- 429 (with `Retry-After`), 408, 5xx, timeouts and connection errors -> `TransientUpstreamError`;
- 401/403 -> `UpstreamAuthError`; other 4xx -> `UpstreamError` (not worth retrying);
- a host outside `TEAMS_WEBHOOK_ALLOWED_HOSTS` (loopback always allowed) -> `ForbiddenActionError`,
  and nothing is sent.
At most `rate_per_second` (4) requests per webhook URL leave this process (a sliding one-second window per URL),
and after a 429 the URL is left alone until its Retry-After has passed; with a `SharedRateBudget`
the same 4 posts/s hold across scaled-out instances (shares of the rate leased in storage). The URL is a secret: logs
and errors name it by a short hash only. Legacy MessageCards are posted here rather than with
`pymsteams.connectorcard.send()`, which would lose the status code and the Retry-After header.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests

from shared.alerts.routing import host_allowed
from shared.errors import ForbiddenActionError, TransientUpstreamError, UpstreamAuthError, UpstreamError
from shared.retry import retry_after_from
from shared.settings import Settings
from shared.urls import pinned_session

log = logging.getLogger(__name__)

THROTTLED_MARKER = "HTTP error 429"


def webhook_ref(url: str) -> str:
    """How a webhook URL appears in logs and errors: `webhook#<8 hex>` (the URL itself is a secret)."""
    return "webhook#" + hashlib.sha256(url.encode()).hexdigest()[:8]


class RateWindow:
    """At most `rate` requests in any sliding second; `take()` says how long to wait for the next slot."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.limit = max(1, int(rate))
        self.clock = clock
        self.sent: deque[float] = deque()
        self.blocked_until = 0.0
        self.lock = threading.Lock()  # one per URL: posts to other webhooks do not wait for this one

    def take(self) -> float:
        """Take a slot if one is free (returns 0) or return the seconds to wait (takes nothing)."""
        now = self.clock()
        if now < self.blocked_until:
            return self.blocked_until - now
        while self.sent and now - self.sent[0] >= 1.0:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            self.sent.append(now)
            return 0.0
        return 1.0 - (now - self.sent[0])


class SharedRateBudget:
    """At most `rate` posts per webhook in any UTC second across every instance, counted in storage.

    The rate is cut into `rate` shares of one post per second. Table `teamsbudget`, one partition per
    webhook (`webhook-<hash>`), one row per share (`share-<n>`) naming the instance that leases it and
    until when (`lease_seconds`, 30 s). An instance posts as many times per UTC second as it holds
    shares, without touching storage; it leases a share with one etag-checked write (an insert the
    first time) when it holds none, when its shares are used up for this second, or when a lease ends.
    So a webhook that gets a post every few seconds costs one storage write per lease, not one per post;
    and `share_lease()` hands a lease to storm control, which writes it in the same transaction as a
    storm counter of that webhook's partition (a squad's first alert in a window: one write for both).
    A share held by an instance that went away is free again when its lease ends; until then the
    others have the rest of the rate (a new instance waits for a share while all are leased)."""

    TABLE = "teamsbudget"
    MARGIN = 1.0  # seconds before a lease ends that its holder stops using it (clock skew between instances)

    def __init__(
        self, store: Any, rate: float = 4.0, clock: Callable[[], float] = time.time, lease_seconds: float = 30.0
    ) -> None:
        self.store = store
        self.slots = max(1, int(rate))
        self.clock = clock
        self.lease_seconds = max(2 * self.MARGIN + 1, lease_seconds)
        self.holder = uuid.uuid4().hex
        self._known: dict[tuple[str, int], dict[str, Any]] = {}  # (partition, share) -> last entity seen
        self._held: dict[str, dict[int, float]] = {}  # partition -> {share: lease end}
        self._used: dict[str, tuple[int, int]] = {}  # partition -> (second, posts in it)
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _partition_lock(self, partition: str) -> threading.Lock:
        lock = self._locks.get(partition)  # no lock to read (atomic in CPython); one to create
        if lock is None:
            with self._lock:
                lock = self._locks.setdefault(partition, threading.Lock())
        return lock

    def take(self, url: str) -> float:
        """0 when a post may go now (counted), else the seconds to wait before asking again."""
        partition = webhook_ref(url).replace("#", "-")
        lock = self._partition_lock(partition)
        with lock:
            now = self.clock()
            second = int(now)
            held = {n: until for n, until in self._held.get(partition, {}).items() if until - self.MARGIN > now}
            self._held[partition] = held
            used_second, used = self._used.get(partition, (second, 0))
            used = used if used_second == second else 0
            if used >= len(held):
                foreign_until = self._lease(partition, held, now)
                if used >= len(held):
                    if held:
                        return max(0.01, second + 1 - now)
                    return max(0.01, min(foreign_until - now, self.lease_seconds))
            self._used[partition] = (second, used + 1)
            return 0.0

    def share_lease(self, url: str) -> PendingShare | None:
        """The lease of a free share for `url`, as an operation for a caller's transaction in the
        webhook's partition (storm control writes it with its counter: one write for both), when this
        process holds no share of that webhook; None when it holds one or every share it knows of is
        leased by another instance. Nothing is written here; `commit`/`reject` report the outcome."""
        partition = webhook_ref(url).replace("#", "-")
        lock = self._partition_lock(partition)
        with lock:
            now = self.clock()
            if any(until - self.MARGIN > now for until in self._held.get(partition, {}).values()):
                return None
            until = now + self.lease_seconds
            fields = {"Holder": self.holder, "LeaseUntil": until}
            start = int(now * 1000) % self.slots
            for n in range(self.slots):
                share = (start + n) % self.slots
                row = f"share-{share}"
                known = self._known.get((partition, share))
                if known is None:
                    op: tuple[Any, ...] = ("create", {"PartitionKey": partition, "RowKey": row, **fields})
                elif known.get("Holder") == self.holder or float(known.get("LeaseUntil", 0) or 0) <= now:
                    body = {k: v for k, v in known.items() if k != "_etag"}
                    op = ("update", {**body, **fields}, {"mode": "replace", "etag": known["_etag"]})
                else:
                    continue
                return PendingShare(self, partition, share, op, until)
        return None

    def _granted(self, share: PendingShare, answer: dict[str, Any]) -> None:
        lock = self._partition_lock(share.partition)
        with lock:
            self._held.setdefault(share.partition, {})[share.share] = share.until
            self._remember(share.partition, share.share, share.op[1], answer.get("etag"))

    def _refused(self, share: PendingShare) -> None:
        self._known.pop((share.partition, share.share), None)  # read it before trying it again

    def _lease(self, partition: str, held: dict[int, float], now: float) -> float:
        """Lease one more share into `held` if one is free; returns when the earliest other lease ends."""
        from shared.errors import ConflictError

        until = now + self.lease_seconds
        fields = {"Holder": self.holder, "LeaseUntil": until}
        earliest = now + self.lease_seconds
        start = int(now * 1000) % self.slots  # spread concurrent instances over the shares
        for n in range(self.slots):
            share = (start + n) % self.slots
            if share in held:
                continue
            row = f"share-{share}"
            known = self._known.get((partition, share))
            for _ in range(2):
                if known is None:
                    etag = self._insert(partition, row, fields)
                    if etag is not None:
                        self._remember(partition, share, {"PartitionKey": partition, "RowKey": row, **fields}, etag)
                        held[share] = until
                        return earliest
                    known = self.store.get(self.TABLE, partition, row)
                    if known is None:
                        continue
                theirs = float(known.get("LeaseUntil", 0) or 0)
                if known.get("Holder") != self.holder and theirs > now:
                    self._known[(partition, share)] = known
                    earliest = min(earliest, theirs)
                    break  # leased by another instance: try the next share
                try:
                    body = {k: v for k, v in known.items() if k != "_etag"}
                    etag = self.store.replace_if_unchanged(self.TABLE, {**known, **fields})
                except ConflictError:
                    known = self.store.get(self.TABLE, partition, row)  # another instance took it
                    continue
                self._remember(partition, share, {**body, **fields}, etag)
                held[share] = until
                return earliest
        return earliest

    def _insert(self, partition: str, row: str, fields: dict[str, Any]) -> str | None:
        """The new row's etag ("" when the store does not tell), None when the row exists."""
        insert_etag = getattr(self.store, "insert_etag", None)
        if insert_etag is not None:
            found: str | None = insert_etag(self.TABLE, partition, row, fields)
            return found
        return "" if self.store.insert(self.TABLE, partition, row, fields) else None

    def _remember(self, partition: str, share: int, entity: dict[str, Any], etag: Any) -> None:
        if isinstance(etag, str) and etag:
            self._known[(partition, share)] = {**entity, "_etag": etag}
        else:
            self._known.pop((partition, share), None)  # our write changed its etag: read it next time
        if len(self._known) > 50_000:
            self._known.clear()


class PendingShare:
    """A share lease prepared by `SharedRateBudget.share_lease`, written by the caller's transaction."""

    table = SharedRateBudget.TABLE

    def __init__(self, budget: SharedRateBudget, partition: str, share: int, op: tuple[Any, ...], until: float) -> None:
        self.budget = budget
        self.partition = partition
        self.share = share
        self.op = op
        self.until = until

    def commit(self, answer: dict[str, Any]) -> None:
        """The transaction succeeded: the share is ours until `until` (`answer` has its new etag)."""
        self.budget._granted(self, answer)

    def reject(self) -> None:
        """The share was not free (or changed): forget what we knew of it."""
        self.budget._refused(self)


# How many webhook URLs a TeamsWebhook remembers as checked (routes name a few dozen at most).
MAX_CHECKED_URLS = 1024


class TeamsWebhook:
    def __init__(
        self,
        allowed_hosts: tuple[str, ...],
        *,
        timeout: float = 10.0,
        rate_per_second: float = 4.0,
        max_wait: float = 2.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        budget: SharedRateBudget | None = None,
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.timeout = timeout
        self.rate = rate_per_second
        self.max_wait = max_wait
        self.session = session or pinned_session(allowed_hosts, loopback_always=True)
        self.clock = clock
        self.sleep = sleep
        self._buckets: dict[str, RateWindow] = {}
        self._lock = threading.Lock()
        self.budget = budget  # the budget shared by instances (None: this process's window only)
        # URLs already found allowed: the check parses the URL three ways (~80 us), and a worker posts
        # to the same few webhooks all day. Only passes are kept, and at most MAX_CHECKED_URLS of them.
        self._checked: set[str] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, session: requests.Session | None = None, store: Any = None
    ) -> TeamsWebhook:
        """With `store` and TEAMS_RATE_SCOPE=storage, the rate budget holds across instances."""
        budget = SharedRateBudget(store) if store is not None and settings.teams_rate_scope == "storage" else None
        return cls(
            settings.teams_webhook_allowed_hosts,
            timeout=settings.alert_http_timeout_seconds,
            session=session,
            budget=budget,
        )

    def _bucket(self, url: str) -> RateWindow:
        bucket = self._buckets.get(url)  # no lock to read (atomic in CPython); one to create
        if bucket is not None:
            return bucket
        with self._lock:
            bucket = self._buckets.get(url)
            if bucket is None:
                bucket = self._buckets[url] = RateWindow(self.rate, self.clock)
            return bucket

    def _acquire(self, url: str) -> None:
        bucket = self._bucket(url)
        while True:  # this process's window first: no storage operation when it is full anyway
            with bucket.lock:
                wait = bucket.take()
            if wait <= 0:
                break
            if wait > self.max_wait:  # throttled for longer than a function should sleep: retry later
                raise TransientUpstreamError(f"Teams {webhook_ref(url)} is throttled", retry_after=wait)
            self.sleep(wait)
        waited = 0.0
        while self.budget is not None:  # the budget every instance shares
            wait = self.budget.take(url)
            if wait <= 0:
                return
            waited += wait
            if waited > self.max_wait:
                raise TransientUpstreamError(f"Teams {webhook_ref(url)} is at its rate limit", retry_after=wait)
            self.sleep(wait)

    def _throttled(self, url: str, retry_after: float | None) -> TransientUpstreamError:
        delay = retry_after if retry_after is not None else 5.0
        bucket = self._bucket(url)
        with bucket.lock:
            bucket.blocked_until = max(bucket.blocked_until, self.clock() + delay)
        return TransientUpstreamError(f"Teams {webhook_ref(url)} answered 429 (throttled)", retry_after=delay)

    def check_allowed(self, url: str) -> None:
        """ForbiddenActionError when the URL's host is not in the allow-list (names the host, never the URL)."""
        if url in self._checked:
            return
        if not host_allowed(url, self.allowed_hosts):
            host = urlparse(url).hostname or "?"
            raise ForbiddenActionError(
                f"Teams {webhook_ref(url)} on host {host!r} is not in TEAMS_WEBHOOK_ALLOWED_HOSTS; not called"
            )
        if len(self._checked) >= MAX_CHECKED_URLS:
            self._checked = set()  # a new set, not clear(): readers in other threads keep a consistent one
        self._checked.add(url)

    def post(self, url: str, payload: dict[str, Any]) -> int:
        """Post one message; returns the HTTP status. Raises the project's error types (see module doc)."""
        self.check_allowed(url)
        self._acquire(url)
        ref = webhook_ref(url)
        try:
            resp = self.session.post(url, json=payload, timeout=self.timeout, allow_redirects=False)
        except requests.Timeout:
            raise TransientUpstreamError(f"Teams {ref} timed out after {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"Teams {ref} unreachable ({type(exc).__name__})") from None
        status = resp.status_code
        if 200 <= status < 300:
            if THROTTLED_MARKER in (resp.text or "")[:500]:
                raise self._throttled(url, retry_after_from(resp.headers))
            log.info("teams message posted", extra={"webhook": ref, "status": status})
            return status
        if status == 429:
            raise self._throttled(url, retry_after_from(resp.headers))
        if status == 408 or status >= 500:
            raise TransientUpstreamError(f"Teams {ref} answered {status}", retry_after=retry_after_from(resp.headers))
        if status in (401, 403):
            raise UpstreamAuthError(f"Teams {ref} refused the request ({status}): the webhook URL is wrong or revoked")
        raise UpstreamError(f"Teams {ref} rejected the message ({status}): {_snippet(resp.text)}")


def _snippet(text: str | None) -> str:
    text = (text or "").strip().replace("\n", " ")
    return text[:200] or "empty body"
