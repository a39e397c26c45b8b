"""Idempotency records in the `idempotency` table: do an effect once, whatever the redeliveries.

A record moves INPROGRESS -> COMPLETED (keeping the result) and expires after a while. The first
claim is one conditional insert; a failed attempt releases its claim so a retry can run; a claim
left INPROGRESS by a crashed worker can be taken over once its lease has run out. An optional
payload hash catches a key reused for a different payload.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.errors import ConflictError

TABLE = "idempotency"
INPROGRESS = "INPROGRESS"
COMPLETED = "COMPLETED"


class RecordStore(Protocol):
    """The part of `StateStore` the idempotency records need (in-memory fakes implement it too)."""

    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool: ...
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> None: ...
    def delete(self, table: str, partition: str, row: str) -> None: ...


def idempotency_key(*parts: Any) -> str:
    """sha256 of the JSON of the parts, keys sorted: stable across processes and retries."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """`new`: go ahead and call complete()/release(); `completed`: done before, `result` is what it returned;
    `in_progress`: another worker holds it now."""

    status: str
    key: str
    result: dict[str, Any] | None = None


class IdempotencyStore:
    def __init__(
        self,
        store: RecordStore,
        scope: str,
        *,
        expires_after: timedelta = timedelta(days=14),
        lease: timedelta = timedelta(minutes=5),
    ) -> None:
        self.store = store
        self.scope = scope
        self.expires_after = expires_after
        self.lease = lease

    def claim(self, key: str, payload: Any = None, *, now: datetime | None = None) -> Claim:
        now = now or datetime.now(UTC)
        payload_hash = idempotency_key(payload) if payload is not None else ""
        fields = {
            "Status": INPROGRESS,
            "LeaseUntil": (now + self.lease).isoformat(),
            "ExpiresAt": (now + self.expires_after).isoformat(),
            "PayloadHash": payload_hash,
            "Result": "",
        }
        if self.store.insert(TABLE, self.scope, key, fields):
            return Claim("new", key)
        existing = self.store.get(TABLE, self.scope, key)
        if existing is None:  # deleted between our insert and read: try once more
            return Claim("new", key) if self.store.insert(TABLE, self.scope, key, fields) else Claim("in_progress", key)
        if payload_hash and existing.get("PayloadHash") and existing["PayloadHash"] != payload_hash:
            raise ConflictError("the idempotency key was already used for a different request")
        expired = _parse(existing.get("ExpiresAt")) <= now
        if existing.get("Status") == COMPLETED and not expired:
            return Claim("completed", key, json.loads(existing.get("Result") or "null"))
        lease_over = _parse(existing.get("LeaseUntil")) <= now
        if expired or lease_over:
            taken = {**existing, **fields}
            try:
                self.store.replace_if_unchanged(TABLE, taken)
            except ConflictError:
                return Claim("in_progress", key)
            return Claim("new", key)
        return Claim("in_progress", key)

    def complete(self, key: str, result: dict[str, Any] | None = None, *, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        existing = self.store.get(TABLE, self.scope, key)
        record = dict(existing or {"PartitionKey": self.scope, "RowKey": key, "PayloadHash": ""})
        record.update(
            {
                "Status": COMPLETED,
                "Result": json.dumps(result, default=str),
                "CompletedAt": now.isoformat(),
                "ExpiresAt": (now + self.expires_after).isoformat(),
            }
        )
        if existing is None:
            self.store.insert(
                TABLE, self.scope, key, {k: v for k, v in record.items() if k not in ("PartitionKey", "RowKey")}
            )
        else:
            self.store.replace_if_unchanged(TABLE, record)

    def release(self, key: str) -> None:
        """Give up a claim after a failed attempt so that a retry can run."""
        self.store.delete(TABLE, self.scope, key)


def _parse(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
