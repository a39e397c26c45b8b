"""Do an effect once, whatever the redeliveries: `Idempotency.once(scope, key, effect)`.

Records live in the `idempotency` table and move INPROGRESS -> COMPLETED (keeping the result);
they expire after the scope's `expires_after`. Costs, in storage round trips:
- first run: one conditional insert (the claim) and one write (the completion): 2;
- replay of a completed key: the insert fails, one read returns the stored result: 2;
- a failed effect deletes its claim (so the retry runs at once): 3; or, when the caller holds it
  for its own retry (`hold`), keeps it, and the retry re-takes it with one etag-checked write.
Nothing is read before the insert.

A claim held by a worker that crashed is taken over once its per-scope `lease` has run out (an
etag-checked replace, so two workers cannot both take it). Until then the outcome is BUSY with
`retry_after` = the seconds left on the lease: queue callers retry after that, HTTP callers
answer 409 with it. A payload hash catches a key reused for a different payload.

Partitions: a scope's records are spread over `spread` partitions `<scope>-<hex>` by a hash of the
key, so one busy scope does not make one hot partition (Azure Tables serves ~2,000 entities/s per
partition). `spread=1` keeps the old single partition named after the scope, for scopes that are
listed with `PartitionKey eq '<scope>'`; `records()` lists a scope whatever its spread.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from shared.errors import ConflictError, TransientUpstreamError

TABLE = "idempotency"
INPROGRESS = "INPROGRESS"
COMPLETED = "COMPLETED"

T = TypeVar("T")


class RecordStore(Protocol):
    """The part of `StateStore` the idempotency records need (in-memory fakes implement it too)."""

    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool: ...
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> Any: ...
    def delete(self, table: str, partition: str, row: str) -> None: ...


def idempotency_key(*parts: Any) -> str:
    """sha256 of the JSON of the parts, keys sorted: stable across processes and retries."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Scope:
    """A family of idempotent effects: its name, how long a holder may take (`lease`), how long a
    completed record is kept (`expires_after`) and how many partitions its records spread over."""

    name: str
    lease: timedelta = timedelta(minutes=5)
    expires_after: timedelta = timedelta(days=14)
    spread: int = 16

    def partition(self, key: str) -> str:
        if self.spread <= 1:
            return self.name
        bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % self.spread
        return f"{self.name}-{bucket:02x}"


class ClaimStatus(StrEnum):
    NEW = "new"  # ours: run the effect, then complete() or release()
    COMPLETED = "completed"  # done before: `result` is what it returned
    IN_PROGRESS = "in_progress"  # another worker holds it: retry after `retry_after` seconds


@dataclass(frozen=True)
class Claim:
    status: ClaimStatus
    key: str
    result: dict[str, Any] | None = None
    retry_after: float = 0.0
    scope: Scope | None = None
    payload_hash: str = ""
    token: str = ""  # the record's etag after our write, when the store tells (see `once(resume=...)`)


class OnceStatus(StrEnum):
    RAN = "ran"  # the effect ran now; `result` is what it returned
    REPLAYED = "replayed"  # it had run before; `result` is the stored result
    BUSY = "busy"  # another worker is running it; try again after `retry_after` seconds


class _Outcome:
    """`ran` / `replayed` / `busy` for whatever carries a `status` (`Once`, `Held`)."""

    status: OnceStatus

    @property
    def ran(self) -> bool:
        return self.status is OnceStatus.RAN

    @property
    def replayed(self) -> bool:
        return self.status is OnceStatus.REPLAYED

    @property
    def busy(self) -> bool:
        return self.status is OnceStatus.BUSY


@dataclass(frozen=True)
class Once(_Outcome, Generic[T]):
    """The typed outcome of `Idempotency.once()`."""

    status: OnceStatus
    result: T | None = None
    retry_after: float = 0.0

    def raise_if_busy(self, what: str) -> Once[T]:
        """For queue workers: BUSY becomes a TransientUpstreamError that retries after the holder's lease."""
        if self.busy:
            raise TransientUpstreamError(
                f"{what} is being done by another worker; retrying after its lease",
                retry_after=max(1.0, self.retry_after),
            )
        return self


class Idempotency:
    """Idempotency records over a `RecordStore` (build one per process in `Runtime`)."""

    def __init__(self, store: RecordStore, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock

    def once(
        self,
        scope: Scope,
        key: str,
        effect: Callable[[], T],
        *,
        payload: Any = None,
        keep: Callable[[T], bool] | None = None,
        encode: Callable[[T], dict[str, Any]] | None = None,
        decode: Callable[[dict[str, Any]], T] | None = None,
        resume: str = "",
        hold: Callable[[BaseException, str], bool] | None = None,
    ) -> Once[T]:
        """Run `effect()` at most once per (scope, key). An exception releases the claim and propagates
        (the retry runs again); `keep(result)` False also releases it (e.g. an HTTP answer not worth
        replaying). `encode`/`decode` turn the result into the JSON stored (default: the result as is).

        Retries without a release: when `hold(exc, token)` returns True for an exception, the claim is
        kept (still ours, under its lease) and `token` is what the retry passes as `resume`; the retry
        then re-takes the claim with one etag-checked write instead of a release and a new insert.
        A token that no longer matches (the lease ran out and another worker took the key over)
        falls back to an ordinary claim."""
        claim = self.resume(scope, key, resume, payload) if resume else None
        if claim is None:
            claim = self.claim(scope, key, payload)
        if claim.status is ClaimStatus.COMPLETED:
            stored = claim.result
            value = decode(stored) if (decode and stored is not None) else stored
            return Once(OnceStatus.REPLAYED, value)  # type: ignore[arg-type]
        if claim.status is ClaimStatus.IN_PROGRESS:
            return Once(OnceStatus.BUSY, retry_after=claim.retry_after)
        try:
            result = effect()
        except BaseException as exc:
            if not (hold is not None and claim.token and hold(exc, claim.token)):
                self.release(scope, key)
            raise
        if keep is not None and not keep(result):
            self.release(scope, key)
        else:
            self.complete(scope, key, encode(result) if encode else result, payload_hash=claim.payload_hash)  # type: ignore[arg-type]
        return Once(OnceStatus.RAN, result)

    def claim(self, scope: Scope, key: str, payload: Any = None) -> Claim:
        """Insert-first: one conditional insert; a read only when the key exists."""
        now = self.clock()
        partition = scope.partition(key)
        payload_hash = idempotency_key(payload) if payload is not None else ""
        holder = uuid.uuid4().hex  # tells our own claim apart when an insert is repeated after a lost answer
        fields = {
            "Status": INPROGRESS,
            "LeaseUntil": (now + scope.lease).isoformat(),
            "ExpiresAt": (now + scope.expires_after).isoformat(),
            "PayloadHash": payload_hash,
            "Result": "",
            "Holder": holder,
        }
        insert_etag = getattr(self.store, "insert_etag", None)
        for _ in range(3):
            if insert_etag is not None:
                etag = insert_etag(TABLE, partition, key, fields)
                if etag is not None:
                    return Claim(ClaimStatus.NEW, key, scope=scope, payload_hash=payload_hash, token=str(etag))
            elif self.store.insert(TABLE, partition, key, fields):
                return Claim(ClaimStatus.NEW, key, scope=scope, payload_hash=payload_hash)
            existing = self.store.get(TABLE, partition, key)
            if existing is None:
                continue  # released between our insert and read: insert again
            if existing.get("Holder") == holder and existing.get("Status") == INPROGRESS:
                return Claim(ClaimStatus.NEW, key, scope=scope, payload_hash=payload_hash)  # our own insert
            if payload_hash and existing.get("PayloadHash") and existing["PayloadHash"] != payload_hash:
                raise ConflictError("the idempotency key was already used for a different request")
            expired = _parse(existing.get("ExpiresAt")) <= now
            if existing.get("Status") == COMPLETED and not expired:
                result = json.loads(existing.get("Result") or "null")
                return Claim(ClaimStatus.COMPLETED, key, result, scope=scope, payload_hash=payload_hash)
            lease_left = (_parse(existing.get("LeaseUntil")) - now).total_seconds()
            if not expired and lease_left > 0:
                return Claim(ClaimStatus.IN_PROGRESS, key, retry_after=lease_left, scope=scope)
            try:  # the holder crashed (lease over) or the record expired: take it over
                taken = self.store.replace_if_unchanged(TABLE, {**existing, **fields})
            except ConflictError:
                return Claim(ClaimStatus.IN_PROGRESS, key, retry_after=1.0, scope=scope)
            token = taken if isinstance(taken, str) else ""
            return Claim(ClaimStatus.NEW, key, scope=scope, payload_hash=payload_hash, token=token)
        return Claim(ClaimStatus.IN_PROGRESS, key, retry_after=1.0, scope=scope)

    def resume(self, scope: Scope, key: str, token: str, payload: Any = None) -> Claim | None:
        """Re-take a claim this caller kept after a failed attempt (`once(hold=...)`): one write,
        checked against the etag `token`; None when the record changed since (claim it normally)."""
        now = self.clock()
        payload_hash = idempotency_key(payload) if payload is not None else ""
        entity = {
            "PartitionKey": scope.partition(key),
            "RowKey": key,
            "Status": INPROGRESS,
            "LeaseUntil": (now + scope.lease).isoformat(),
            "ExpiresAt": (now + scope.expires_after).isoformat(),
            "PayloadHash": payload_hash,
            "Result": "",
            "Holder": uuid.uuid4().hex,
            "_etag": token,
        }
        try:
            taken = self.store.replace_if_unchanged(TABLE, entity)
        except ConflictError:
            return None
        token = taken if isinstance(taken, str) else ""
        return Claim(ClaimStatus.NEW, key, scope=scope, payload_hash=payload_hash, token=token)

    def complete(self, scope: Scope, key: str, result: Any = None, *, payload_hash: str = "") -> None:
        """Mark our claim COMPLETED in one write (the claim is ours: no read-modify-write)."""
        now = self.clock()
        self.store.upsert(
            TABLE,
            scope.partition(key),
            key,
            {
                "Status": COMPLETED,
                "Result": json.dumps(result, default=str),
                "CompletedAt": now.isoformat(),
                "LeaseUntil": now.isoformat(),
                "ExpiresAt": (now + scope.expires_after).isoformat(),
                "PayloadHash": payload_hash,
            },
        )

    def release(self, scope: Scope, key: str) -> None:
        """Give up a claim after a failed attempt so that a retry can run at once."""
        self.store.delete(TABLE, scope.partition(key), key)

    def record(self, scope: Scope, key: str) -> dict[str, Any] | None:
        """The stored record (for operators and tests), or None."""
        return self.store.get(TABLE, scope.partition(key), key)

    def claiming(self, scope: Scope, key: str, *, payload: Any = None) -> Held:
        """`once` as a context manager, for work that spans several steps or keys (one `with` per key,
        or an ExitStack): `with idem.claiming(scope, key) as held:` — `held.ran`: do the work and set
        `held.result`; a clean exit completes the claim with it, an exception releases it (and
        propagates), `held.release()` gives it up early (nothing was done). `held.replayed`: done
        before, `held.result` is the stored result. `held.busy`: another worker holds it, retry after
        `held.retry_after`. Same records, leases and takeover of a crashed holder as `once`."""
        return Held(self, scope, key, payload)


def records(store: Any, scope: Scope, row_from: str = "", row_to: str = "") -> Iterator[dict[str, Any]]:
    """Every record of a scope (optionally RowKey in [row_from, row_to)), whatever its spread: one
    partition-range query (`<scope>-00` .. `<scope>-ff`) instead of `PartitionKey eq`."""
    if scope.spread <= 1:
        flt, params = "PartitionKey eq @pk", {"pk": scope.name}
    else:
        flt, params = "PartitionKey ge @lo and PartitionKey lt @hi", {"lo": scope.name + "-", "hi": scope.name + "."}
    if row_from:
        flt, params = flt + " and RowKey ge @rlo", {**params, "rlo": row_from}
    if row_to:
        flt, params = flt + " and RowKey lt @rhi", {**params, "rhi": row_to}
    yield from store.query(TABLE, flt, **params)


def _parse(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Held(_Outcome):
    """A claim held for a block of work (`Idempotency.claiming()`); its `status` is `once`'s outcome:
    RAN (ours: the block runs the work), REPLAYED (`result` is the stored result) or BUSY."""

    def __init__(self, idempotency: Idempotency, scope: Scope, key: str, payload: Any = None) -> None:
        self.idempotency, self.scope, self.key, self.payload = idempotency, scope, key, payload
        self.status = OnceStatus.BUSY
        self.result: Any = None
        self.retry_after = 0.0
        self._payload_hash = ""
        self._open = False  # ours and neither completed nor released yet

    def release(self) -> None:
        """Give the claim up now (nothing was done): the next attempt may take it at once."""
        if self._open:
            self._open = False
            self.idempotency.release(self.scope, self.key)

    def __enter__(self) -> Held:
        claim = self.idempotency.claim(self.scope, self.key, self.payload)
        if claim.status is ClaimStatus.NEW:
            self.status, self._payload_hash, self._open = OnceStatus.RAN, claim.payload_hash, True
        elif claim.status is ClaimStatus.COMPLETED:
            self.status, self.result = OnceStatus.REPLAYED, claim.result
        else:
            self.status, self.retry_after = OnceStatus.BUSY, claim.retry_after
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if not self._open:
            return
        if exc_type is not None:
            self.release()
            return
        self._open = False
        self.idempotency.complete(self.scope, self.key, self.result, payload_hash=self._payload_hash)
