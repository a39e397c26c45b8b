"""An in-memory StateStore (tables and queues) for the policy unit tests: same semantics, no Azurite."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from shared.errors import ConflictError


class MemoryStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.queues: dict[str, list[Any]] = {}
        self._etags = itertools.count(1)

    def _t(self, table: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.tables.setdefault(table, {})

    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool:
        if (partition, row) in self._t(table):
            return False
        self._t(table)[(partition, row)] = {
            "PartitionKey": partition,
            "RowKey": row,
            **fields,
            "_etag": next(self._etags),
        }
        return True

    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None:
        found = self._t(table).get((partition, row))
        return dict(found) if found else None

    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None:
        clean = {k: v for k, v in fields.items() if k not in ("_etag", "PartitionKey", "RowKey")}
        self._t(table)[(partition, row)] = {
            "PartitionKey": partition,
            "RowKey": row,
            **clean,
            "_etag": next(self._etags),
        }

    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> None:
        key = (entity["PartitionKey"], entity["RowKey"])
        current = self._t(table).get(key)
        if current is None or current["_etag"] != entity["_etag"]:
            raise ConflictError("changed meanwhile")
        self._t(table)[key] = {**entity, "_etag": next(self._etags)}

    def delete(self, table: str, partition: str, row: str) -> None:
        self._t(table).pop((partition, row), None)

    def transact(self, table: str, operations: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """All or nothing within one partition, BatchRejected(index) like StateStore."""
        from shared.errors import BatchRejected

        assert len({op[1]["PartitionKey"] for op in operations}) <= 1, "one partition per transaction"
        staged: dict[tuple[str, str], dict[str, Any] | None] = {}
        answers: list[dict[str, Any]] = []
        for i, op in enumerate(operations):
            kind, entity = op[0], dict(op[1])
            opts = op[2] if len(op) > 2 else {}
            key = (entity["PartitionKey"], entity["RowKey"])
            current = staged[key] if key in staged else self._t(table).get(key)
            if kind == "create" and current is not None:
                raise BatchRejected("exists", i)
            if kind == "update" and (current is None or (opts.get("etag") and current["_etag"] != opts["etag"])):
                raise BatchRejected("changed", i)
            if kind == "delete":
                staged[key] = None
                answers.append({})
                continue
            etag = next(self._etags)
            staged[key] = {**{k: v for k, v in entity.items() if k != "_etag"}, "_etag": etag}
            answers.append({"etag": etag})
        for key, value in staged.items():
            if value is None:
                self._t(table).pop(key, None)
            else:
                self._t(table)[key] = value
        return answers

    def query(self, table: str, filter: str | None = None, **params: Any):
        for entity in list(self._t(table).values()):
            if filter is None or _matches(entity, filter, params):
                yield {k: v for k, v in entity.items() if k != "_etag"}

    def send(self, queue: str, message: Any, **_: Any) -> str:
        self.queues.setdefault(queue, []).append(json.loads(json.dumps(message, default=str)))
        return f"m{len(self.queues[queue])}"

    def sent(self, queue: str) -> list[Any]:
        return list(self.queues.get(queue, []))


def _matches(entity: dict[str, Any], filter: str, params: dict[str, Any]) -> bool:
    for clause in filter.split(" and "):
        field, op, value = re.match(r"(\w+) (eq|ge|lt) (.+)", clause.strip()).groups()
        if value.startswith("@"):
            expected: Any = params[value[1:]]
        elif value in ("true", "false"):
            expected = value == "true"
        else:
            expected = value.strip("'")
        actual = entity.get(field)
        if op == "eq" and actual != expected:
            return False
        if op == "ge" and not (actual is not None and actual >= expected):
            return False
        if op == "lt" and not (actual is not None and actual < expected):
            return False
    return True
